#!/usr/bin/env bash
# The benchmark environment for scripts/bench_sdpo.py: a second venv (.venv-bench) holding TRL and
# what it needs, with the same torch and transformers as the project's .venv, so that TRL's SDPO loss
# runs on the same kernels without touching the project's own dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
transformers_version="$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')"
[ -x .venv-bench/bin/python ] || python3.11 -m venv .venv-bench
.venv-bench/bin/python -m pip install -q --upgrade pip
.venv-bench/bin/python -m pip install -q 'torch==2.13.0' "transformers==${transformers_version}" \
  'trl>=1.16' safetensors
.venv-bench/bin/python -c 'import trl, torch, transformers; print("bench env: trl", trl.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
