#!/usr/bin/env bash
# The static checks .ci/run runs: lint, format, types. Run before every commit.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pyright reads agentsd.envs and agentsd.sandboxes through the tree this script lays out
.venv/bin/python scripts/typecheck_tree.py >/dev/null 2>&1
.venv/bin/pyright
