#!/usr/bin/env bash
# Install everything postline and its tests need on a fresh Debian machine (run as root),
# idempotently: Debian packages for the local mail stack, a Python venv with postline and its
# test dependencies, and the npm packages of the local OAuth server. PostgreSQL (the shared state
# of a fleet, see docs/cluster.md) comes from Debian too; its stock cluster is never started.
#   scripts/bootstrap.sh            # everything
#   POSTLINE_SKIP_APT=1 ...         # skip the Debian packages (no root, or already there)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

apt_pkgs=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix openssl postgresql)
# the console's browser tests: Debian's chromium driven by Playwright (never `playwright install`),
# and CJK fonts so screenshots of non-Latin names show glyphs, not boxes
apt_pkgs+=(chromium fonts-noto-cjk)
# the local OAuth server (oidc-provider 9) runs on Node.js 20+; take Debian's only when none is there
command -v node >/dev/null || apt_pkgs+=(nodejs)
command -v npm >/dev/null || apt_pkgs+=(npm)
if [ -z "${POSTLINE_SKIP_APT:-}" ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    # never let the packages start the stock daemons on 0.0.0.0 (postgresql's postinst also
    # creates a stock cluster in /var/lib/postgresql; the dev stack initdb's its own instead)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$py" -m venv .venv
fi
stamp=.venv/.postline-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing postline and its test dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
# An editable install compiles nothing, and PYTHONDONTWRITEBYTECODE (set on some machines)
# keeps imports from caching bytecode: every start-up would compile postline's ~100 modules
# again (~0.1 s of each 'postline run'). Compile them now; stale files are recompiled.
.venv/bin/python -m compileall -q src/postline >/dev/null

# npm packages of the local OAuth server (oidc-provider) into ~/.cache/postline/oidc
# (POSTLINE_CACHE_DIR overrides); a no-op when they are there already
.venv/bin/postline dev-stack install --quiet
