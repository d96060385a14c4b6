#!/usr/bin/env bash
# Run the whole test suite on this machine: installs what is missing (scripts/bootstrap.sh), then
# the static checks (ruff, mypy on the modules [tool.mypy] lists, lint-imports: the layer contract
# of docs/ARCHITECTURE.md), then pytest; the pytest fixtures start the local mail stack on random
# ports and stop it afterwards. A failing check stops the run before pytest, with one line naming
# it. Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
#   POSTLINE_SKIP_CHECKS=1 scripts/test.sh ...   # pytest only (while iterating on one test)
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/bootstrap.sh || { echo "test: bootstrap failed" >&2; exit 1; }

check() {  # check NAME COMMAND...: run it, say how long it took, stop the run when it fails
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  if ! "$@"; then
    echo "test: $name failed (fix what it printed above; the tests were not run)" >&2
    exit 1
  fi
  echo "test: $name ok ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
}
if [ -z "${POSTLINE_SKIP_CHECKS:-}" ]; then
  check "ruff (lint: pyproject [tool.ruff])" .venv/bin/ruff check --quiet src tests
  check "mypy (types: pyproject [tool.mypy])" .venv/bin/mypy --no-error-summary
  check "lint-imports (layers: docs/ARCHITECTURE.md)" .venv/bin/lint-imports --no-cache
fi

.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit $rc
