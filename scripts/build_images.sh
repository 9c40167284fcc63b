#!/usr/bin/env bash
# Build the sandbox images on the engine named by DOCKER_HOST, without any image registry:
#   1. agentsd/base:bookworm: a minimal Debian from debootstrap, imported with `docker import`;
#   2. agentsd/{terminal,swe,gui}:latest from sandboxes/images/<family>/Dockerfile on that base
#      (apt reaches the Debian mirror through the host network; the terminal family's offline test
#      tooling is downloaded first with the host's pip, scripts/offline_tools.sh).
# On a machine with a registry the same Dockerfiles build with their default BASE instead.
# usage: DOCKER_HOST=unix:///path/docker.sock scripts/build_images.sh [terminal swe gui]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DOCKER_HOST:?set DOCKER_HOST to the engine that should hold the images}"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=agentsd/base:bookworm
families=("$@")
((${#families[@]})) || families=(terminal swe gui)

if [ "${REBUILD_BASE:-0}" = 1 ] || ! docker image inspect "$BASE" >/dev/null 2>&1; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$root/rootfs" "$MIRROR" >/dev/null
  tar -C "$root/rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  echo "built $BASE"
fi
for family in "${families[@]}"; do
  case "$family" in
    terminal)
      base="$BASE"
      # the offline test tooling comes from the host's pip (the build's RUN steps lack its settings)
      bash scripts/offline_tools.sh sandboxes/images/terminal/offline >/dev/null
      ;;
    *) base=agentsd/terminal:latest ;;
  esac
  docker build --quiet --network host --build-arg "BASE=$base" -t "agentsd/$family:latest" \
    "sandboxes/images/$family" >/dev/null
  echo "built agentsd/$family:latest"
done
