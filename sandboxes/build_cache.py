"""The task environments both backends have built, and pruning them: least recently used first,
never one a sandbox uses.

Every task with a Dockerfile builds once per host (local: a directory under the build cache) or per
engine (docker: an `agentsd/task:<key>` image), and nothing else removes them: a long run over many
task images fills the disk. A build is *used* each time a sandbox starts from it: the local backend
touches `<key>.used` beside it, the docker backend re-tags the image (its LastTagTime). A build is
*in use* while a sandbox runs on it: a local one while any process's mounts name it (the sandbox's
overlay layers and root), a docker one while any container, running or not, was created from it.

`prune` removes builds not in use and idle for at least `min_idle_s` (which covers the moment
between a sandbox asking for its build and mounting or creating from it): every build unused for
`unused_for_s`, then the least recently used until the rest fits in `keep_bytes`. A local build is
removed under its build lock (a sandbox asking for it at that moment waits, then rebuilds it);
a docker image is re-checked, then removed by id without force, so the engine refuses if a
container was created from it meanwhile (and a sandbox that asked for it just before builds it
again).

Not guaranteed: on docker engines with the containerd image store a re-tag leaves LastTagTime
alone, so "last used" is the build's time there; sizes are the disk blocks of a local build's own
files (the layers, not the host directories under them) and the docker engine's unique size of an
image (layers shared with other images are not counted); a local sandbox of another mount
namespace whose processes all exited while the sandbox lives on is not seen (none does: its
supervisor runs for its life).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agentsd.filelock import exclusive_lock
from agentsd.sandboxes.builds import BUILD_LABEL, image_name
from agentsd.sandboxes.local_build import cache_root, used_marker

log = logging.getLogger("agentsd.sandbox")

MIN_IDLE_S = 600.0
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")
_ENGINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


@dataclass(frozen=True)
class BuildRecord:
    """One built environment: where it lives, what removing it frees, when a sandbox last asked
    for it, and whether one runs on it now."""

    backend: str  # local | docker
    engine: str  # "local", or the docker engine's URL
    key: str
    size_bytes: int
    last_used: float  # time.time()
    in_use: bool

    def idle_s(self, now: float) -> float:
        return now - self.last_used


def _idle_floor(min_idle_s: float | None) -> float:
    """`min_idle_s`, MIN_IDLE_S when not given (read at call time: tests and operators move it)."""
    return MIN_IDLE_S if min_idle_s is None else min_idle_s


def choose(
    records: Iterable[BuildRecord],
    *,
    keep_bytes: int | None,
    unused_for_s: float | None,
    min_idle_s: float | None = None,
    keys: Collection[str] | None = None,
    now: float | None = None,
) -> list[BuildRecord]:
    """The builds to remove, oldest use first: of those not in use and idle at least `min_idle_s`
    (default MIN_IDLE_S), and among `keys` when given, every one unused for `unused_for_s`, then the
    least recently used until what is left (in use or not) fits in `keep_bytes`."""
    now = time.time() if now is None else now
    min_idle_s = _idle_floor(min_idle_s)
    ordered = sorted(records, key=lambda r: r.last_used)
    removable = [
        r for r in ordered if not r.in_use and r.idle_s(now) >= min_idle_s and (keys is None or r.key in keys)
    ]
    chosen = [r for r in removable if unused_for_s is not None and r.idle_s(now) >= unused_for_s]
    if keep_bytes is not None:
        left = sum(r.size_bytes for r in ordered) - sum(r.size_bytes for r in chosen)
        for record in removable:
            if left <= keep_bytes:
                break
            if record not in chosen:
                chosen.append(record)
                left -= record.size_bytes
    return sorted(chosen, key=lambda r: r.last_used)


# ---------------------------------------------------------------------------- local


def list_local(root: Path | None = None) -> list[BuildRecord]:
    """The complete builds in the local build cache (a build in progress is not listed)."""
    root = cache_root() if root is None else root
    if not root.is_dir():
        return []
    mounted = _mounted_text()
    found = (_local_record(root, path.name, mounted) for path in sorted(root.iterdir()))
    return [record for record in found if record is not None]


def _local_record(root: Path, key: str, mounted: str) -> BuildRecord | None:
    """Build `key` of the local cache; None if it is not a complete build (or not one at all)."""
    path = root / key
    if "." in key or not (path / "lowers.json").exists():
        return None
    used = used_marker(root, key)
    try:
        last = (used if used.exists() else path).stat().st_mtime
    except FileNotFoundError:  # pruned while we looked
        return None
    in_use = f"{path.resolve()}/" in mounted  # the kernel shows real paths
    return BuildRecord("local", "local", key, _size(root, key), last, in_use)


def _size(root: Path, key: str) -> int:
    """A local build's disk blocks, counted once and kept beside it (a build never changes)."""
    known = _size_file(root, key)
    with contextlib.suppress(OSError, ValueError):
        return int(known.read_text())
    size = _disk_bytes(root / key)
    with contextlib.suppress(OSError):
        known.write_text(str(size))
    return size


def _size_file(root: Path, key: str) -> Path:
    return root / f"{key}.size"


def prune_local(
    *,
    keep_bytes: int | None,
    unused_for_s: float | None,
    min_idle_s: float | None = None,
    keys: Collection[str] | None = None,
    root: Path | None = None,
    dry_run: bool = False,
) -> list[BuildRecord]:
    """Remove what `choose` picks from the local build cache; what was removed."""
    root = cache_root() if root is None else root
    min_idle_s = _idle_floor(min_idle_s)
    picked = choose(
        list_local(root), keep_bytes=keep_bytes, unused_for_s=unused_for_s, min_idle_s=min_idle_s, keys=keys
    )
    if dry_run:
        return picked
    for stale in root.glob("*.pruning-*"):  # a pruner killed while it deleted
        shutil.rmtree(stale, ignore_errors=True)
    removed = []
    for record in picked:
        with exclusive_lock(root / f"{record.key}.lock"):
            fresh = _local_record(root, record.key, _mounted_text())
            if fresh is None or fresh.in_use or fresh.idle_s(time.time()) < min_idle_s:
                continue  # used or gone since it was chosen
            doomed = root / f"{record.key}.pruning-{uuid.uuid4().hex[:8]}"
            os.rename(root / record.key, doomed)  # gone for ensure_built the moment the lock is free
            used_marker(root, record.key).unlink(missing_ok=True)
            _size_file(root, record.key).unlink(missing_ok=True)
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("pruned local environment %s (%d bytes)", record.key, record.size_bytes)
        removed.append(record)
    return removed


def _mounted_text() -> str:
    """The mount table of every mount namespace on this host, joined, escapes decoded: a local
    sandbox's overlays and root name its build."""
    tables, namespaces = [], set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                namespace: str | None = os.readlink(proc / "ns" / "mnt")
            except OSError:  # not ours to read: its table is read whatever namespace it is in
                namespace = None
            if namespace is None or namespace not in namespaces:
                with contextlib.suppress(OSError):
                    tables.append((proc / "mountinfo").read_text())
                namespaces.add(namespace)
    # the kernel writes space, tab, newline and backslash (and '=' in options) as \ooo
    return _MOUNT_ESCAPE.sub(lambda m: chr(int(m[1], 8)), "\n".join(tables))


def _disk_bytes(path: Path) -> int:
    """The disk blocks under `path`, each file once (hard links), symlinks not followed."""
    total, seen = 0, set()
    for directory, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(directory, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


# ---------------------------------------------------------------------------- docker


def list_docker(client: Any, engine: str) -> list[BuildRecord]:
    """The built images on a docker engine."""
    records = []
    for image in client.df().get("Images") or []:
        key = (image.get("Labels") or {}).get(BUILD_LABEL)
        if not key:
            continue
        with contextlib.suppress(Exception):  # removed while we looked
            meta = client.api.inspect_image(image["Id"]).get("Metadata") or {}
            size = max(int(image.get("Size", 0)) - max(int(image.get("SharedSize", 0)), 0), 0)
            last = _docker_time(meta.get("LastTagTime")) or float(image.get("Created", 0))
            in_use = int(image.get("Containers", 0)) != 0
            records.append(BuildRecord("docker", engine, key, size, last, in_use))
    return records


def prune_docker(
    client: Any,
    engine: str,
    *,
    keep_bytes: int | None,
    unused_for_s: float | None,
    min_idle_s: float | None = None,
    keys: Collection[str] | None = None,
    dry_run: bool = False,
) -> list[BuildRecord]:
    """Remove what `choose` picks from a docker engine's built images; what was removed."""
    import docker.errors

    min_idle_s = _idle_floor(min_idle_s)
    picked = choose(
        list_docker(client, engine),
        keep_bytes=keep_bytes,
        unused_for_s=unused_for_s,
        min_idle_s=min_idle_s,
        keys=keys,
    )
    if dry_run:
        return picked
    removed = []
    for record in picked:
        try:
            image = client.api.inspect_image(image_name(record.key))
            last = _docker_time((image.get("Metadata") or {}).get("LastTagTime")) or record.last_used
            if time.time() - last < min_idle_s:
                continue  # a sandbox asked for it since it was chosen
            # by id, without force: the engine refuses an image a container was created from since
            client.images.remove(image["Id"], noprune=False)
        except docker.errors.DockerException as exc:
            log.info("kept %s on %s: %s", record.key, engine, exc)
            continue
        log.info("pruned %s on %s (%d bytes)", record.key, engine, record.size_bytes)
        removed.append(record)
    return removed


def _docker_time(text: str | None) -> float | None:
    """An engine timestamp (RFC 3339, nanoseconds) as time.time(); None for none or the zero time."""
    match = _ENGINE_TIME.match(text or "")
    if match is None or match[1].startswith("0001-"):
        return None
    zone = "+00:00" if match[3] in (None, "Z") else match[3]
    return datetime.fromisoformat(match[1] + zone).timestamp() + float(match[2] or 0.0)
