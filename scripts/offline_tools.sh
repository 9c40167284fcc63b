#!/usr/bin/env bash
# Download the terminal family's offline test tooling (sandboxes/images/terminal/offline.txt) with
# this machine's pip: uv and uvx into DEST/bin, every other pin and its dependencies into
# DEST/wheels. Idempotent; needs the network the host's pip reaches.
# usage: scripts/offline_tools.sh DEST
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:?usage: scripts/offline_tools.sh DEST}
pins=$(grep -v '^#' sandboxes/images/terminal/offline.txt | awk 'NF {print $1}')
uv_pin=$(grep '^uv==' <<<"$pins")
python3 -m pip download -q --disable-pip-version-check --only-binary :all: --no-deps \
  -d "$dest/dist" "$uv_pin"
python3 -m pip download -q --disable-pip-version-check --only-binary :all: \
  -d "$dest/wheels" $(grep -v '^uv==' <<<"$pins")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$dest/dist" "$tmp" "${uv_pin#uv==}" <<'PY'
import sys, zipfile, pathlib
dist, out, version = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = dist.glob(f"uv-{version}-*.whl")
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.split("/")[-2:-1] == ["scripts"]:
            (out / name.split("/")[-1]).write_bytes(archive.read(name))
PY
install -d "$dest/bin"
install -m 0755 "$tmp/uv" "$tmp/uvx" "$dest/bin/"
rm -rf "$dest/dist"
echo "offline tools in $dest: $(ls "$dest/bin" | tr '\n' ' ')and $(ls "$dest/wheels" | wc -l) wheels"
