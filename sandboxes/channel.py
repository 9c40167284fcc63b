"""The host side of the supervisor protocol, shared by every sandbox backend.

A backend provides a Transport (the pipes of a bwrap process, the socket of a docker exec); the
SupervisorClient opens the session with a fresh key, turns sandbox operations into authenticated
request frames (sandboxes/supervisor.py describes the format), and waits for each answer within the
operation's timeout plus a grace period. The answer must be the one to that request: a frame that
announces more than the frame limit, fails its tag (forged, injected, replayed, out of order), is
not a JSON object or does not have the operation's shape kills the sandbox (through the backend's
`kill`) and raises SandboxError naming the violation; so does a missing answer. After that the
client refuses every call, so nothing stale is ever returned.
"""

from __future__ import annotations

import base64
import json
import os
import select
import struct
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self

from agentsd.sandboxes.base import (
    EXEC_GRACE_S,
    SandboxError,
    Snapshot,
    checked_response,
    exec_request,
    exec_result,
    snapshot_from,
)
from agentsd.sandboxes.supervisor import (
    ANSWER,
    REQUEST,
    ProtocolError,
    decode_frame,
    encode_frame,
    frame_size,
    pack_tree,
    unpack_tree,
)
from agentsd.types import ExecResult, SandboxSpec

FILE_OP_TIMEOUT_S = 120.0
KEY_BYTES = 32
_VIOLATION = "protocol violation: {}; it was killed"


def read_exact(fd: int, n: int, deadline: float) -> bytes:
    """Exactly n bytes from a pipe or socket descriptor; EOFError at end of stream, TimeoutError at the
    deadline. The one blocking read both transports use."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, min(n - len(buf), 1 << 20))
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError
            buf += chunk
    return bytes(buf)


def write_all(fd: int, data: bytes, deadline: float) -> None:
    """All of data into a non-blocking pipe or socket descriptor; TimeoutError at the deadline (a
    supervisor that stopped reading must not hang the host), OSError when the other end is gone."""
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        _, ready, _ = select.select([], [fd], [], left)
        if ready:
            try:
                view = view[os.write(fd, view[: 1 << 16]) :]
            except BlockingIOError:
                continue


class Transport(Protocol):
    """A byte pipe to the supervisor."""

    def send(self, data: bytes, deadline: float) -> None:
        """Write all of data; raise OSError when the other end is gone, TimeoutError at the deadline."""
        ...

    def read(self, n: int, deadline: float) -> bytes:
        """Exactly n bytes; raise EOFError when the stream ends, TimeoutError at the deadline."""
        ...


class SupervisorClient:
    """Sandbox operations over one authenticated supervisor session."""

    def __init__(self, name: str, spec: SandboxSpec, transport: Transport, kill: Callable[[], str]) -> None:
        self.name = name
        self.spec = spec
        self._transport = transport
        self._kill = kill  # ends the sandbox; returns what it said on the way out (for the error)
        self._lock = threading.Lock()
        self._key = os.urandom(KEY_BYTES)
        self._seq = 0
        self._broken: str | None = None

    def open(self, timeout: float) -> dict[str, Any]:
        """Hand the supervisor its session key and wait for its ready answer."""
        hello = json.dumps({"key": self._key.hex()}).encode()
        with self._lock:
            deadline = time.monotonic() + timeout
            self._send(struct.pack(">I", len(hello)) + hello, deadline)
            ready = self._receive(deadline)
        if ready.get("ready") is not True:
            self._violation(f"its first answer was {sorted(ready)!r}, not ready")
        return ready

    def request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self._lock:
            try:
                frame = encode_frame(self._key, REQUEST, self._seq + 1, request)
            except ProtocolError as exc:  # the host's own request is too large: refuse it, keep the sandbox
                raise SandboxError(
                    f"sandbox {self.name}: {request.get('op')} request refused: {exc}"
                ) from None
            self._seq += 1
            deadline = time.monotonic() + timeout
            self._send(frame, deadline)
            return self._receive(deadline)

    def _send(self, data: bytes, deadline: float) -> None:
        if self._broken is not None:
            raise SandboxError(f"sandbox {self.name} is gone: {self._broken}")
        try:
            self._transport.send(data, deadline)
        except TimeoutError:
            failure = "it stopped reading its requests; it was killed"
        except OSError as exc:
            failure = f"cannot send to it ({exc})"
        else:
            return
        self._dead(failure)

    def _receive(self, deadline: float) -> dict[str, Any]:
        try:
            size = frame_size(self._transport.read(4, deadline))
            return decode_frame(self._key, ANSWER, self._seq, self._transport.read(size, deadline))
        except ProtocolError as exc:
            failure = _VIOLATION.format(exc)
        except TimeoutError:
            failure = "it did not answer in time; it was killed"
        except EOFError:
            failure = "it closed its output"
        self._dead(failure)

    def _violation(self, what: str) -> NoReturn:
        self._dead(_VIOLATION.format(what))

    def _dead(self, how: str) -> NoReturn:
        self._broken = how
        said = self._kill().strip()
        raise SandboxError(f"sandbox {self.name} died: {how}" + (f"\n{said}" if said else ""))

    def _shaped(self, op: str, answer: dict[str, Any], read: Callable[[dict[str, Any]], Any]) -> Any:
        """read(answer), where an answer without the operation's shape is a protocol violation."""
        try:
            return read(answer)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._violation(f"the answer to {op} has the wrong shape ({type(exc).__name__}: {exc})")

    # ------------------------------------------------------------------ operations

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None,
        env: Mapping[str, str] | None,
        cwd: str | None,
        stdin: bytes | None,
    ) -> ExecResult:
        request = exec_request(self.spec, cmd, timeout=timeout, env=env, cwd=cwd, stdin=stdin)
        answer = self.request(request, request["timeout"] + EXEC_GRACE_S)
        return self._shaped("exec", answer, lambda a: exec_result(a, f"sandbox {self.name}"))

    def write_file(self, path: str, data: bytes, mode: int | None) -> None:
        request = {"op": "write", "path": path, "data": base64.b64encode(data).decode(), "mode": mode}
        answer = self.request(request, FILE_OP_TIMEOUT_S)
        self._shaped("write", answer, lambda a: checked_response(a, f"write {path}"))

    def read_file(self, path: str, max_bytes: int | None) -> bytes:
        answer = self.request({"op": "read", "path": path, "max_bytes": max_bytes}, FILE_OP_TIMEOUT_S)
        data = self._shaped("read", answer, lambda a: _b64(checked_response(a, f"read {path}")["data"]))
        if max_bytes is not None and len(data) > max_bytes:
            self._violation(f"read {path} returned {len(data)} bytes, more than the {max_bytes} asked for")
        return data

    def upload(self, local_dir: Path, remote_dir: str) -> None:
        """Copy a host directory into the sandbox: symlinks go as symlinks, never followed."""
        if not local_dir.is_dir():
            raise FileNotFoundError(f"upload: {local_dir} is not a directory")
        data = base64.b64encode(pack_tree(str(local_dir))).decode()
        answer = self.request({"op": "tar_in", "path": remote_dir, "data": data}, FILE_OP_TIMEOUT_S)
        self._shaped("tar_in", answer, lambda a: checked_response(a, f"upload to {remote_dir}"))

    def download(self, remote_dir: str, local_dir: Path) -> None:
        """Copy a sandbox directory to the host: symlinks arrive as symlinks and are never followed;
        nothing is written outside local_dir."""
        answer = self.request({"op": "tar_out", "path": remote_dir}, FILE_OP_TIMEOUT_S)
        data = self._shaped(
            "tar_out", answer, lambda a: _b64(checked_response(a, f"download of {remote_dir}")["data"])
        )
        try:
            unpack_tree(data, str(local_dir))
        except (ValueError, OSError, tarfile.TarError) as exc:  # refused members, a broken archive
            raise SandboxError(f"download of {remote_dir}: {exc}") from exc

    def snapshot(self, path: str) -> Snapshot:
        answer = self.request({"op": "snapshot", "path": path}, FILE_OP_TIMEOUT_S)
        return self._shaped("snapshot", answer, lambda a: snapshot_from(a, path))

    def kill_agent(self) -> int:
        """Kill every process of the agent's uid; how many there were. Raises SandboxError (and kills
        the sandbox) if any survives: nothing the agent left may run while its work is graded."""
        answer = self.request({"op": "kill_agent"}, FILE_OP_TIMEOUT_S)
        killed, left = self._shaped(
            "kill_agent",
            answer,
            lambda a: (int(checked_response(a, "kill_agent")["killed"]), list(a["left"])),
        )
        if left:
            self._dead(f"{len(left)} agent processes survived kill_agent ({left[:10]}); it was killed")
        return killed


def _b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"data is a {type(text).__name__}, not base64 text")
    return base64.b64decode(text, validate=True)


class SupervisedSandbox:
    """The sandbox operations of a backend whose commands go through a supervisor session.

    A backend sets `id`, `spec` and `_client` (None while not running) and implements start() and
    close(); everything else of the Sandbox protocol is here, once for both backends.
    """

    id: str
    spec: SandboxSpec
    _client: SupervisorClient | None

    def start(self) -> None:
        raise NotImplementedError  # each backend starts its own way

    def close(self) -> None:
        raise NotImplementedError  # each backend releases its own way

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _session(self) -> SupervisorClient:
        if self._client is None:
            raise SandboxError(f"sandbox {self.id} is not running (start() it, or it was closed)")
        return self._client

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        return self._session().exec(cmd, timeout=timeout, env=env, cwd=cwd, stdin=stdin)

    def write_file(self, path: str, data: bytes, mode: int | None = None) -> None:
        self._session().write_file(path, data, mode)

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes:
        return self._session().read_file(path, max_bytes)

    def upload(self, local_dir: Path, remote_dir: str) -> None:
        self._session().upload(local_dir, remote_dir)

    def download(self, remote_dir: str, local_dir: Path) -> None:
        self._session().download(remote_dir, local_dir)

    def snapshot(self, path: str) -> Snapshot:
        return self._session().snapshot(path)

    def kill_agent(self) -> int:
        return self._session().kill_agent()
