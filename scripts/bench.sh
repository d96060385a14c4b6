#!/usr/bin/env bash
# Run every benchmark under bench/ and print their tables. Not part of the test suite.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
.venv/bin/python -m pip install -q -e ".[test,bench]"
status=0
for b in bench/send.py bench/ingest.py bench/memory.py bench/idle_latency.py bench/scale.py \
         bench/ledger_scale.py; do
  [ -f "$b" ] || continue
  echo "== $b"
  .venv/bin/python "$b" || status=1
done
exit $status
