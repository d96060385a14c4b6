#!/usr/bin/env bash
# Run the whole test suite on this machine: installs what is missing (scripts/bootstrap.sh), then
# pytest; the pytest fixtures start the local mail stack on random ports and stop it afterwards.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/bootstrap.sh || { echo "test: bootstrap failed" >&2; exit 1; }
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit $rc
