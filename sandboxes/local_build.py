"""Building a task's environment for the local backend: writable overlay layers over the host's root.

A built environment is a directory `<cache>/<key>/` holding `root/` (the sandbox's root: the
symlinks and mountpoints of the host's top directories, and every top directory the build made
itself, /app, /srv ...), `layers/<name>/` (what the build changed in /usr, /etc and /var) and
`lowers.json` (what each layer lies over: the host's /usr and /etc, and a copy of the host's package
databases for /var, shared by every build on this host). Each step runs in a private mount namespace
where overlays join the host directories and the layers, writable, under bubblewrap as root with
Docker's default capabilities less CAP_MKNOD, new PID, IPC and UTS namespaces, the host's network,
/proc/sys read-only, the host's package-client settings, and the local package sources they and the
host's apt sources name bound read-only at their own paths (the build's apt reads the host's
/etc/apt); the episode's sandbox later mounts the same overlays read-only (`mount_script`), without
those sources. A build goes into a temporary directory renamed into place when it succeeds, under a
lock, so a failed or killed build leaves nothing a later one would reuse.

Not guaranteed: building needs root (mounting overlays; apt and dpkg need a real root); the build
runs with the host's kernel and network and without memory limits, as `docker build` does by
default; the cache key covers the host's package database, not every file of /usr, so an
environment built before a host upgrade is reused over the upgraded host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path, PurePosixPath

from agentsd.filelock import exclusive_lock
from agentsd.sandboxes import package_sources
from agentsd.sandboxes.base import DEFAULT_PATH
from agentsd.sandboxes.builds import (
    BUILD_STEP_TIMEOUT_S,
    SETTINGS_DIR,
    BuildError,
    HostSettings,
    build_key,
    copy_archive,
    finish_script,
    host_settings,
    step_failed,
)
from agentsd.types import BuildStep, SandboxSpec

log = logging.getLogger("agentsd.sandbox")

HOST_DIRS = ("usr", "bin", "lib", "lib32", "lib64", "libx32", "sbin", "etc")
# What apt and dpkg need of /var to see the host's installed packages (copied once per host state).
_VAR_PARTS = ("lib/dpkg", "lib/apt", "cache/debconf", "lib/ucf", "lib/systemd", "lib/pam")
_VAR_DIRS = ("log", "tmp", "cache/apt/archives/partial", "lib/apt/lists/partial")
# Docker's default capabilities, less CAP_MKNOD (a device node would reach the host's disks here).
_BUILD_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
)


def cache_root() -> Path:
    """$AGENTSD_BUILD_CACHE, else /var/cache/agentsd/envs (every directory on the way readable by the
    sandboxes' unprivileged host user)."""
    return Path(os.environ.get("AGENTSD_BUILD_CACHE") or "/var/cache/agentsd/envs")


def ensure_built(spec: SandboxSpec) -> Path:
    """The spec's built environment directory, built first if this host does not have it."""
    assert spec.build is not None
    if os.geteuid() != 0:
        raise BuildError(
            "building a task's environment on the local backend needs root (overlay mounts, a real root "
            "for apt and dpkg): run agentsd as root or use the docker backend"
        )
    root = cache_root()
    _check_path(root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    varbase = _varbase(root)
    key = build_key(spec, f"local:{varbase.name}")
    built = root / key
    with exclusive_lock(root / f"{key}.lock"):
        if not built.is_dir():  # complete: a build is renamed into place only when it succeeded
            _build_in_place(spec, root, key, varbase)
        used_marker(root, key).touch()  # what build_cache prunes last
    return built


def _build_in_place(spec: SandboxSpec, root: Path, key: str, varbase: Path) -> None:
    """Build `spec` as `root/key`, under the key's lock: in a temporary directory renamed into place
    only when the build succeeded."""
    assert spec.build is not None
    for stale in root.glob(f"{key}.building-*"):  # a builder killed mid-build (we hold its lock)
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    log.info("building local environment %s (%d steps)", key, len(spec.build.steps))
    work = root / f"{key}.building-{uuid.uuid4().hex[:8]}"
    try:
        _build(spec, work, varbase)
        shutil.rmtree(work / "work")
        os.rename(work, root / key)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log.info("built local environment %s in %.1f s", key, time.monotonic() - started)


def used_marker(root: Path, key: str) -> Path:
    """The file whose modification time says when a sandbox last started from build `key`."""
    return root / f"{key}.used"


def mount_script(built: Path, *, writable: bool) -> str:
    """Shell lines (run as root in a private mount namespace) that overlay a built environment's
    layers on the host directories under its root: writable ones for a build, read-only for an
    episode."""
    lowers: dict[str, str] = json.loads((built / "lowers.json").read_text())
    lines = []
    for name, lower in lowers.items():
        layer, target = built / "layers" / name, built / "root" / name
        if writable:
            work = built / "work" / name
            options = f"lowerdir={lower},upperdir={layer},workdir={work}"
        else:
            options = f"ro,lowerdir={layer}:{lower}"
        lines.append(
            f"mount -t overlay overlay -o {shlex.quote(options)} {shlex.quote(str(target))} || exit 96"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the build


def _build(spec: SandboxSpec, work: Path, varbase: Path) -> None:
    assert spec.build is not None
    lowers = _lowers(varbase)
    root = work / "root"
    for name in ("layers", "work"):
        for lower in lowers:
            (work / name / lower).mkdir(parents=True)
    root.mkdir(mode=0o755)
    for name in HOST_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
    tops = [root / name for name in [*lowers, "proc", "dev", "tmp", "root", "run", SETTINGS_DIR.lstrip("/")]]
    for top in tops:
        top.mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (work / "lowers.json").write_text(json.dumps(lowers))
    settings = host_settings()
    for name, data in settings.files.items():
        (root / SETTINGS_DIR.lstrip("/") / name).write_bytes(data)
    settings = settings._replace(paths=_binds(settings, lowers), apt_paths=[])  # what _run binds
    # mountpoints of the settings' paths made here, readable (bwrap would make parents 0700)
    made = [p for p in settings.paths if PurePosixPath(p).parts[1] not in lowers]
    for path in made:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir(exist_ok=True) if Path(path).is_dir() else target.touch()
    for step in spec.build.steps:
        _step(work, step, settings)
    finish = BuildStep(
        kind="run", where="agentsd", line="finish the build", argv=["/bin/sh", "-c", finish_script(spec)]
    )
    _step(work, finish, settings)
    for path in made:  # the empty mountpoints go, and their parents the build left empty
        target = root / path.lstrip("/")
        with contextlib.suppress(OSError):  # a directory that is not empty stops the walk
            if target.is_file() and not target.is_symlink() and target.stat().st_size == 0:
                target.unlink()
                target = target.parent
            while target != root and target not in tops:  # the root's own (/tmp) stay
                target.rmdir()
                target = target.parent
    for path in (work, root, work / "layers"):
        path.chmod(0o755)


def _step(work: Path, step: BuildStep, settings: HostSettings) -> None:
    if step.kind == "copy":
        _run(
            work,
            ["tar", "-x", "-f", "-", "-C", "/", "--no-overwrite-dir"],
            "/",
            {},
            settings,
            step,
            copy_archive(step),
        )
        return
    _run(work, ["mkdir", "-p", step.workdir], "/", {}, settings, step)
    if step.kind == "run":
        _run(work, step.argv, step.workdir, step.env, settings, step)


def _run(
    work: Path,
    argv: list[str],
    workdir: str,
    env: dict[str, str],
    settings: HostSettings,
    step: BuildStep,
    stdin: bytes = b"",
) -> None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise BuildError("the local backend needs bubblewrap: apt-get install bubblewrap")
    args = [
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--bind",
        str(work / "root"),
        "/",
        "--proc",
        "/proc",
        "--ro-bind",
        "/proc/sys",
        "/proc/sys",
        "--ro-bind-try",
        "/proc/sysrq-trigger",
        "/proc/sysrq-trigger",
        "--dev",
        "/dev",
        "--cap-drop",
        "ALL",
    ]
    for cap in _BUILD_CAPS:
        args += ["--cap-add", cap]
    for path in settings.paths:
        args += ["--ro-bind", path, path]
    args += ["--clearenv", "--setenv", "PATH", DEFAULT_PATH, "--setenv", "HOME", "/root"]
    for name, value in {**settings.env, **env}.items():
        args += ["--setenv", name, value]
    args += ["--chdir", workdir, "--", *argv]
    script = mount_script(work, writable=True) + '\nexec "$@"'
    launcher = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        script,
        "agentsd-build",
    ]
    proc = subprocess.Popen(
        [*launcher, bwrap, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd="/",
        env={"PATH": DEFAULT_PATH},
    )
    try:
        output, _ = proc.communicate(stdin, timeout=BUILD_STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise step_failed(step, None, output) from None
    if proc.returncode != 0:
        raise step_failed(step, proc.returncode, output)


# ---------------------------------------------------------------------------- shared pieces


def _binds(settings: HostSettings, lowers: dict[str, str]) -> list[str]:
    """The host paths a local build is bound read-only: what the pip settings name, and what the apt
    sources name (this build's apt reads the host's /etc/apt), less what the overlays of the host's
    own directories show already (a read-only bind there would fail a package upgrade that
    replaces the file, a keyring under /usr)."""
    paths = package_sources.visible([*settings.paths, *settings.apt_paths])
    return [p for p in paths if lowers.get(PurePosixPath(p).parts[1]) != "/" + PurePosixPath(p).parts[1]]


def _lowers(varbase: Path) -> dict[str, str]:
    """Each overlay's name -> what it lies over: the host's real top directories, and /var's base."""
    lowers = {
        name: f"/{name}"
        for name in HOST_DIRS
        if Path(f"/{name}").is_dir() and not Path(f"/{name}").is_symlink()
    }
    lowers["var"] = str(varbase)
    return lowers


def _varbase(root: Path) -> Path:
    """The host's package databases as /var's lowest layer, one copy per state of the host's dpkg."""
    status = Path("/var/lib/dpkg/status")
    digest = hashlib.sha256(status.read_bytes() if status.is_file() else b"").hexdigest()[:16]
    base = root / f"_var-{digest}"
    with exclusive_lock(root / f"_var-{digest}.lock"):
        if base.is_dir():
            return base
        work = root / f"_var-{digest}.building-{uuid.uuid4().hex[:8]}"
        try:
            for part in _VAR_PARTS:
                if (Path("/var") / part).is_dir():
                    (work / part).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(Path("/var") / part, work / part, symlinks=True)
            for part in _VAR_DIRS:
                (work / part).mkdir(parents=True, exist_ok=True)
            (work / "tmp").chmod(0o1777)
            work.chmod(0o755)
            os.rename(work, base)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return base


def _check_path(root: Path) -> None:
    # overlay options separate paths with ',' and ':'
    if any(c in str(root) for c in ",:") or not root.is_absolute():
        raise BuildError(f"AGENTSD_BUILD_CACHE {str(root)!r}: expected an absolute path without ',' or ':'")
