#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, lint, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check . || { echo "ruff format: run '.venv/bin/ruff format .'"; exit 1; }
.venv/bin/python -m mypy  # pbnb/, as configured in pyproject.toml
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
