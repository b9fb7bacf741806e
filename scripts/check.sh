#!/bin/sh
# Lint, type-check and test deltalift. Run from the repository root with the venv's tools on PATH
# (the README's test command does this after installing ".[dev]").
set -eu
ruff check src tests benchmarks examples
ruff format --check src tests benchmarks examples
mypy
pytest -n 2 --dist loadfile -q "$@"
