"""The Sandbox protocol every backend implements, and what backends share.

A sandbox is one episode's isolated machine: commands run in it with a timeout and a process-group
kill, output comes back bounded (head and tail kept, the middle elided and flagged), files move in
and out as bytes or directory trees, and a directory can be snapshotted and diffed for graders.
Backends: `local` (bubblewrap, sandboxes/local.py) and `docker` (sandboxes/docker_sandbox.py).
Both run commands through the same in-sandbox supervisor (sandboxes/supervisor.py), so timeouts,
output bounds, rlimits and the authenticated channel behave the same. docs/security.md says what a
sandbox contains and what it does not.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from agentsd.errors import AgentsdError
from agentsd.liveness import writer_identity
from agentsd.types import ExecResult, SandboxSpec

SUPERVISOR_SOURCE = Path(__file__).with_name("supervisor.py")
SUPERVISOR_PATH = "/opt/agentsd/supervisor.py"  # where it lives inside every sandbox
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_OUTPUT_BYTES = 64 * 1024
LABEL = "agentsd.sandbox"  # marks everything the reaper may remove
AGENT_UID = AGENT_GID = 1000  # who the agent's commands run as, inside every sandbox
EXEC_GRACE_S = 10.0  # the host's own guard beyond a command's timeout


class SandboxError(AgentsdError):
    """The sandbox could not be started, or died, or stopped answering."""


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True)
    size: int
    mode: int
    digest: str  # sha256 of the content, or "link:<target>"


class Snapshot(BaseModel):
    """Every regular file and symlink under a directory, by relative path."""

    root: str
    files: dict[str, FileEntry]
    truncated: bool = False


class SnapshotDiff(BaseModel):
    added: list[str]
    removed: list[str]
    modified: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.modified)


def diff(before: Snapshot, after: Snapshot) -> SnapshotDiff:
    old, new = before.files, after.files
    return SnapshotDiff(
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        modified=sorted(p for p in set(old) & set(new) if old[p] != new[p]),
    )


@runtime_checkable
class Sandbox(Protocol):
    """One episode's isolated machine. Use as a context manager; close() always releases it."""

    id: str
    spec: SandboxSpec

    def start(self) -> None: ...

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult: ...

    def write_file(self, path: str, data: bytes, mode: int | None = None) -> None: ...

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes: ...

    def upload(self, local_dir: Path, remote_dir: str) -> None: ...

    def download(self, remote_dir: str, local_dir: Path) -> None: ...

    def snapshot(self, path: str) -> Snapshot: ...

    def kill_agent(self) -> int:
        """Kill every process the agent started (background daemons too) before its work is graded;
        returns how many there were. Raises SandboxError, with the sandbox gone, if any survives."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def owner_identity() -> str:
    """host:pid:start-ticks of this process, recorded on every sandbox for the reaper."""
    return writer_identity()


def command_env(spec: SandboxSpec, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": spec.workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(spec.env)
    env.update(extra or {})
    return env


def writable_dirs(spec: SandboxSpec) -> list[str]:
    """The private, size-limited tmpfs mounts of a sandbox; everything else is read-only."""
    return list(dict.fromkeys([spec.workdir, "/tmp", "/var/tmp", *spec.scratch_dirs]))


def rlimits(spec: SandboxSpec) -> dict[str, int]:
    """rlimits the supervisor applies to every command (CPU time per process, file size, files).

    No RLIMIT_NPROC: it counts per host uid (root for local sandboxes, where the kernel ignores it;
    uid 1000 shared by every container), so the process count is limited by the pids cgroup.
    """
    limits = spec.limits
    return {
        "cpu_s": int(max(limits.timeout_s, limits.command_timeout_s)),
        "file_bytes": limits.disk_mb * 1024 * 1024,
        "open_files": 1024,
    }


def supervisor_config(spec: SandboxSpec) -> str:
    """The supervisor's one argument: the agent's credentials and the rlimits of every command."""
    return json.dumps({"uid": AGENT_UID, "gid": AGENT_GID, "rlimits": rlimits(spec)})


def exec_request(
    spec: SandboxSpec,
    cmd: str | Sequence[str],
    *,
    timeout: float | None,
    env: Mapping[str, str] | None,
    cwd: str | None,
    stdin: bytes | None,
) -> dict[str, Any]:
    import base64

    return {
        "op": "exec",
        "cmd": cmd if isinstance(cmd, str) else list(cmd),
        "timeout": float(timeout if timeout is not None else spec.limits.command_timeout_s),
        "env": command_env(spec, env),
        "cwd": cwd or spec.workdir,
        "stdin": base64.b64encode(stdin).decode() if stdin is not None else None,
        "max_output": MAX_OUTPUT_BYTES,
    }


def exec_result(response: Mapping[str, Any], where: str) -> ExecResult:
    checked = checked_response(response, where)
    return ExecResult.model_validate({k: v for k, v in checked.items() if k in ExecResult.model_fields})


def checked_response(response: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    if not response.get("ok"):
        kind = response.get("kind")
        message = f"{where}: {response.get('error')}"
        if kind == "FileNotFoundError":
            raise FileNotFoundError(message)
        if kind in ("IsADirectoryError", "NotADirectoryError", "PermissionError"):
            raise OSError(message)
        raise SandboxError(message)
    return response


def snapshot_from(response: Mapping[str, Any], root: str) -> Snapshot:
    checked = checked_response(response, f"snapshot of {root}")
    files = {rel: FileEntry(size=v[0], mode=v[1], digest=v[2]) for rel, v in checked["files"].items()}
    return Snapshot(root=root, files=files, truncated=bool(checked.get("truncated")))


class StateFile:
    """A small JSON record per local resource, so the reaper can find what a dead process left."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / f"{name}.json"

    def write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({**data, "host": socket.gethostname(), "at": time.time(), "pid": os.getpid()})
        )
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def state_dir() -> Path:
    """Where local sandboxes record themselves: $AGENTSD_STATE/sandboxes, else /tmp/agentsd-state."""
    return Path(os.environ.get("AGENTSD_STATE") or "/tmp/agentsd-state") / "sandboxes"
