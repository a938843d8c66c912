#!/usr/bin/env bash
# Set up (if needed), lint, and run the test suite. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=$(bash scripts/setup.sh)
"$py" -m ruff check asc tests scripts
# the layers point one way (data -> features -> nn -> models -> tasks -> runs -> eval/train -> predict -> cli)
layers=$("$py" -c 'from importlinter.cli import lint_imports_command; lint_imports_command()' .importlinter \
  --no-cache 2>&1) || { echo "$layers"; exit 1; }
echo "$layers" | tail -n 1
# two workers: most tests wait on processes and files, so the two cores of a small machine overlap them
"$py" -m pytest -q -n "${ASC_TEST_WORKERS:-2}" "$@"
