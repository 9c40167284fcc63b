#!/usr/bin/env bash
# The benchmarks' peers (scripts/bench_learning.py, scripts/bench_sdpo.py): TRL, installed into the
# project's .venv as the optional `bench` extra. TRL pins nothing the project pins (torch,
# transformers and peft stay as scripts/setup.sh installed them); the main install never has it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
.venv/bin/python -m pip install -q -e '.[bench]' 'torch==2.13.0'
.venv/bin/python -c 'import trl, torch, transformers; print("bench extra: trl", trl.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
