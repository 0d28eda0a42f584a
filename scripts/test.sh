#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite. Extra arguments go to pytest:
#   scripts/test.sh --fast    the fast tier: no browser, Ray, TensorFlow or long media (tests/support/fast_tier.py)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" test
cd "$root"
exec .venv/bin/python -m pytest "$@"
