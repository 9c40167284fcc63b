"""What both backends share when they build a task's environment (types.EnvironmentBuild) into an
image: the cache key, the host's package-client settings a build runs with, COPY archives, the
failure message of a step, and the stash that carries the workdir past the sandbox's tmpfs.

A build runs like `docker build`: the Dockerfile's steps in order, as root, with the host's network
and the host's package-client settings (CA bundle, pip configuration, apt's Acquire settings, proxy
variables) and the local package sources they name (package_sources: a `file:` index and the wheels
its pages link to, a wheelhouse, a `file:` apt repository; read-only, at their own paths), so it
reaches whatever registries the host reaches. Episodes then start from the built image without
network. Directories the agent writes to are private tmpfs mounts at run time, which would hide what
the build left there: the build copies them to STASH, and the environment copies them back into
place at reset.

Not guaranteed: a build runs the task author's commands as root with the host's network, exactly
the trust `docker build` asks for (import tasks you would build); built environments stay until
pruned (build_cache: `agentsd sandbox prune-builds`, or `sandbox.build_cache_gb` after each
build); what a build leaves in /tmp is not carried over.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from agentsd.sandboxes import package_sources
from agentsd.sandboxes.base import SUPERVISOR_PATH, SandboxError, writable_dirs
from agentsd.types import GRADING_DIRS, BuildStep, SandboxSpec

BUILD_FORMAT = 1  # bumped when the way a recipe becomes an image changes: old images are rebuilt
BUILD_STEP_TIMEOUT_S = 1800.0
STASH = "/.agentsd/stash"
SETTINGS_DIR = "/.agentsd-build"  # the host's package-client settings, only while building
OUTPUT_TAIL = 3000
_CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE")
_CA_USERS = (*_CA_VARIABLES, "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS")
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ftp_proxy")


class BuildError(SandboxError):
    """A task's environment could not be built: a step failed (its Dockerfile line and output are in
    the message), or the backend cannot build here."""


BUILD_LABEL = "agentsd.build"  # on every built image: its build key


def image_name(key: str) -> str:
    """The image a recipe builds to, the same name on both backends."""
    return f"agentsd/task:{key}"


def build_key(spec: SandboxSpec, base_identity: str) -> str:
    """The cache key of a spec's build: the recipe, what it is built on, and the directories the
    image must carry for the agent (stash) and mount over (mountpoints)."""
    assert spec.build is not None
    parts = [str(BUILD_FORMAT), spec.build.key(), base_identity, *stash_dirs(spec), "|", *writable_dirs(spec)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def stash_dirs(spec: SandboxSpec) -> list[str]:
    """Directories whose built content the agent must find although a tmpfs covers them at run time."""
    return [d for d in writable_dirs(spec) if d not in ("/tmp", "/var/tmp", *GRADING_DIRS)]


def finish_script(spec: SandboxSpec) -> str:
    """Run as root at the end of a build: stash the agent's directories (readable to it) and make
    every run-time mountpoint."""
    lines = ["set -e", f"rm -rf {SETTINGS_DIR}"]
    for directory in stash_dirs(spec):
        saved = shlex.quote(STASH + directory)
        lines.append(
            f"if [ -d {shlex.quote(directory)} ]; then mkdir -p {saved} && "
            f"cp -a {shlex.quote(directory)}/. {saved}/ && chmod -R a+rX {saved}; fi"
        )
    supervisor_dir = str(PurePosixPath(SUPERVISOR_PATH).parent)
    mountpoints = [*writable_dirs(spec), "/proc", "/dev", "/dev/shm", supervisor_dir]
    lines.append("mkdir -p " + " ".join(shlex.quote(d) for d in mountpoints))
    lines.append(f"touch {SUPERVISOR_PATH}")  # a bind mount's target on a read-only root
    lines.append("chmod 1777 /tmp /var/tmp")
    return "\n".join(lines)


def restore_script(spec: SandboxSpec) -> str:
    """Run as the agent at reset: the stashed directories copied back into their tmpfs mounts."""
    lines = [
        f"if [ -d {shlex.quote(STASH + d)} ]; then cp -a {shlex.quote(STASH + d)}/. {shlex.quote(d)}/; fi"
        for d in stash_dirs(spec)
    ]
    return "set -e\n" + "\n".join(lines)


def copy_archive(step: BuildStep) -> bytes:
    """A COPY step's files as a tar archive to unpack at / (members relative to it; parents that do
    not exist are made, existing directories keep their owner and mode)."""
    buffer = io.BytesIO()
    contents = {path: text.encode() for path, text in step.files.items()}
    contents.update({path: base64.b64decode(data) for path, data in step.blobs.items()})
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, data in sorted(contents.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            # the context's modes are not carried in a task: scripts are made executable
            info.mode = 0o755 if data.startswith(b"#!") or path.endswith(".sh") else 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def step_failed(step: BuildStep, code: int | None, output: bytes | str) -> BuildError:
    """The error of a failed step: its Dockerfile line, exit status and the tail of its output."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    shown = step.line if len(step.line) <= 300 else step.line[:297] + "..."
    status = "timed out" if code is None else f"exit {code}"
    tail = text.strip()[-OUTPUT_TAIL:]
    return BuildError(
        f"agentsd: setup step {step.where} failed: {shown} ({status})" + (f"\n{tail}" if tail else "")
    )


# ---------------------------------------------------------------------------- host settings


class HostSettings(NamedTuple):
    """What a build needs of the host to reach the registries the host reaches: files to place under
    SETTINGS_DIR (name -> content), the host files and directories the pip settings name (local
    indexes and what their pages link to, wheelhouses, constraints: package_sources) and those the
    apt sources name (`file:` repositories, keyrings; only a build that reads the host's /etc/apt
    needs them), each mounted read-only at its own path where the build can see this machine's
    files, and environment variables."""

    files: dict[str, bytes]
    paths: list[str]
    apt_paths: list[str]
    env: dict[str, str]


def host_settings() -> HostSettings:
    """The host's CA bundle, pip configuration, apt Acquire settings and proxy variables, and the
    local package sources they name."""
    files: dict[str, bytes] = {}
    env: dict[str, str] = {}
    ca = next(
        (
            Path(p)
            for p in [*(os.environ.get(v) for v in _CA_VARIABLES), "/etc/ssl/certs/ca-certificates.crt"]
            if p and Path(p).is_file()
        ),
        None,
    )
    if ca is not None:
        files["ca.crt"] = ca.read_bytes()
        env.update(dict.fromkeys(_CA_USERS, f"{SETTINGS_DIR}/ca.crt"))
    pip = package_sources.pip_settings()
    if pip.conf:
        files["pip.conf"] = pip.conf.encode()
        env["PIP_CONFIG_FILE"] = f"{SETTINGS_DIR}/pip.conf"
    env.update(pip.env)
    # the family image stands in for upstream images whose pip installs into the system Python
    env.update({"PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_ROOT_USER_ACTION": "ignore"})
    for name in _PROXY_VARIABLES:
        for variant in (name, name.upper()):
            if os.environ.get(variant):
                env[variant] = os.environ[variant]
    apt = _apt_acquire()
    if apt:
        files["apt.conf"] = apt.encode()
        env["APT_CONFIG"] = f"{SETTINGS_DIR}/apt.conf"
    return HostSettings(files, pip.paths, package_sources.apt_paths(), env)


def _apt_acquire() -> str:
    """The host's apt Acquire settings (mirrors' validity checks, proxies) as an apt.conf."""
    apt_config = shutil.which("apt-config")
    if apt_config is None:
        return ""
    try:
        dump = subprocess.run(
            [apt_config, "dump", "Acquire"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return "".join(line + "\n" for line in dump.splitlines() if line.startswith("Acquire::"))
