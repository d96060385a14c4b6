"""What the local mail stack needs on the machine, and installing its npm part.

Debian packages are installed by ``scripts/bootstrap.sh`` (they need root and apt); this module
only checks for them, so ``dev-stack start`` can say exactly what is missing. The OAuth server's
npm dependencies (oidc-provider) go into a cache directory shared by every stack of the user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from postline.testing.errors import StackError, StackUnavailable

BOOTSTRAP = "scripts/bootstrap.sh"


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """One file the stack needs, and the Debian package that ships it."""

    path: str
    package: str
    purpose: str


REQUIREMENTS = (
    Requirement(path="/usr/sbin/dovecot", package="dovecot-core", purpose="Dovecot"),
    Requirement(path="/usr/lib/dovecot/imap", package="dovecot-imapd", purpose="IMAP server"),
    Requirement(path="/usr/lib/dovecot/pop3", package="dovecot-pop3d", purpose="POP3 server"),
    Requirement(path="/usr/lib/dovecot/lmtp", package="dovecot-lmtpd", purpose="LMTP delivery"),
    Requirement(path="/usr/sbin/postfix", package="postfix", purpose="SMTP server"),
    Requirement(path="/usr/sbin/smtp-sink", package="postfix", purpose="smtp-sink"),
    Requirement(path="/usr/bin/script", package="bsdutils", purpose="Postfix error output"),
)


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$POSTLINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/postline``, else ``~/.cache/postline``."""
    if environ.get("POSTLINE_CACHE_DIR"):
        return Path(environ["POSTLINE_CACHE_DIR"]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "postline"


def oidc_home(cache_dir: Path) -> Path:
    """Directory holding the OAuth server's ``node_modules``."""
    return cache_dir / "oidc"


def _shipped_package_json() -> str:
    return resources.files("postline.testing").joinpath("stackfiles/package.json").read_text()


def installed_oidc_version(cache_dir: Path) -> str | None:
    """Version of oidc-provider in the cache, or None when missing or out of date."""
    home = oidc_home(cache_dir)
    try:
        if (home / "package.json").read_text() != _shipped_package_json():
            return None
        meta = json.loads((home / "node_modules/oidc-provider/package.json").read_text())
    except (OSError, ValueError):
        return None
    version = str(meta.get("version", ""))
    return version if version.startswith("9.") else None


def node_binary() -> str:
    """Path of ``node``. Raises StackUnavailable when Node.js is not installed."""
    node = shutil.which("node")
    if not node:
        raise StackUnavailable(
            "Node.js is not installed (needed by the dev stack's OAuth server); "
            f"install it with {BOOTSTRAP} (or: apt-get install nodejs npm)")
    return node


def install_oidc_deps(cache_dir: Path, *, quiet: bool = False) -> str:
    """Install oidc-provider@9 into ``cache_dir/oidc`` unless it is already there.

    Returns the installed version. Raises StackUnavailable without npm, StackError when npm fails.
    """
    version = installed_oidc_version(cache_dir)
    if version:
        return version
    node_binary()
    npm = shutil.which("npm")
    if not npm:
        raise StackUnavailable(f"npm is not installed; install it with {BOOTSTRAP} "
                               "(or: apt-get install npm)")
    home = oidc_home(cache_dir)
    home.mkdir(parents=True, exist_ok=True)
    (home / "package.json").write_text(_shipped_package_json())
    cmd = [npm, "install", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"]
    if not quiet:
        print(f"installing oidc-provider into {home} ...", flush=True)
    proc = subprocess.run(cmd, cwd=home, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StackError(f"npm install of oidc-provider failed in {home}: {last[0]} "
                         f"(run `cd {home} && npm install` to see the whole output)")
    version = installed_oidc_version(cache_dir)
    if not version:
        raise StackError(f"npm install finished but oidc-provider@9 is not in {home}/node_modules")
    return version


def missing_packages() -> list[str]:
    """Debian packages whose files the stack needs but are not installed (in a stable order)."""
    missing: list[str] = []
    for req in REQUIREMENTS:
        if not os.path.exists(req.path) and req.package not in missing:
            missing.append(req.package)
    return missing


def check_can_run(cache_dir: Path) -> str:
    """Check that every component of the stack can run here. Returns the ``node`` path.

    Raises StackUnavailable naming what is missing and the command that installs it.
    """
    missing = missing_packages()
    if missing:
        raise StackUnavailable(
            f"missing Debian package(s) for the dev stack: {', '.join(missing)}; install them "
            f"with {BOOTSTRAP} (or: apt-get install -y {' '.join(missing)})")
    if os.geteuid() != 0:
        raise StackUnavailable("the dev stack runs Dovecot and Postfix with their own users and "
                               "must be started as root (for example in the dev container)")
    node = node_binary()
    if not installed_oidc_version(cache_dir):
        raise StackUnavailable(
            f"the OAuth server's npm packages are not installed in {oidc_home(cache_dir)}; "
            "run: postline dev-stack install")
    return node
