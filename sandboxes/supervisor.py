"""The in-sandbox supervisor: runs commands and file operations for the host, over stdin/stdout.

It is started as the sandbox's first process (python3 supervisor.py '<config json>') and lives as
long as the sandbox, so processes an agent starts in the background keep running between commands,
as in a real terminal. Commands run in their own session (process group) with the sandbox's
rlimits; a command past its timeout is killed with its whole process group.

The channel. The host's first frame carries a fresh per-session key; every later frame, both ways,
is `4-byte big-endian length | HMAC-SHA256 tag (32 bytes) | JSON body`, the tag computed over the
direction, the request's sequence number and the body. A frame that is too long, fails its tag (forged,
injected, replayed or out of order) or is not a JSON object of the expected shape ends the session:
the supervisor exits, and the host (sandboxes/channel.py) kills the sandbox. No answer is ever
matched to the wrong request.

Who can reach it. The supervisor makes itself non-dumpable (PR_SET_DUMPABLE 0) before it reads a
frame, so processes it starts cannot open its /proc/<pid>/fd, read its memory or ptrace it. Where
it runs as a different uid from the agent (the docker backend: container root with only CAP_SETUID,
CAP_SETGID and CAP_KILL), commands and file operations run with the agent's uid, gid and no
supplementary groups, and the agent cannot signal it either. Where both share a uid (the local
backend, whose whole sandbox is one unprivileged host uid), the supervisor is the sandbox's init
(pid 1): the kernel drops every signal the agent sends it that it has no handler for, KILL and STOP
included, and there is no other init an agent could ptrace and take over. As init it reaps orphans.

`kill_agent` kills every process of the agent's uid (background daemons included) before a
verifier runs, so grading sees nothing the agent left running.

This file must stay standard-library only and importable on its own: it runs under whatever
python3 the sandbox has. The host side imports HeadTail, the frame codec and the tree codec from it.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import hmac
import io
import json
import os
import resource
import select
import selectors
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

ELIDED = "\n[... {n} bytes elided ...]\n"
MAX_FRAME_BYTES = 64 * 1024 * 1024  # tag + body of one frame, either way
MAX_READ_BYTES = (MAX_FRAME_BYTES - 65536) // 4 * 3  # the largest file one answer carries (base64)
TAG_BYTES = 32
REQUEST, ANSWER = b"Q", b"A"  # the direction, inside every tag: an answer cannot pass as a request
_DRAIN_AFTER_EXIT_S = 0.2  # output still buffered when the command exits; background jobs keep the pipe
_PR_SET_DUMPABLE, _PR_GET_DUMPABLE = 4, 3
_KILL_ROUNDS = 50
_IDLE_REAP_S = 1.0
MAX_TREE_MEMBERS = 50_000  # entries one archive may hold: empty directories cost the host blocks too


class ProtocolError(Exception):
    """A frame broke the protocol: the session must end."""


# ---------------------------------------------------------------------------- frames


def frame_tag(key: bytes, direction: bytes, seq: int, body: bytes) -> bytes:
    return hmac.new(key, direction + struct.pack(">Q", seq) + body, hashlib.sha256).digest()


def encode_frame(key: bytes, direction: bytes, seq: int, message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    size = TAG_BYTES + len(body)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return struct.pack(">I", size) + frame_tag(key, direction, seq, body) + body


def frame_size(header: bytes) -> int:
    """The size a frame header announces, refused past the limit before anything is read."""
    (size,) = struct.unpack(">I", header)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame header announces {size} bytes, over the {MAX_FRAME_BYTES}-byte limit")
    if size < TAG_BYTES:
        raise ProtocolError(f"frame of {size} bytes is shorter than its {TAG_BYTES}-byte tag")
    return size


def decode_frame(key: bytes, direction: bytes, seq: int, frame: bytes) -> dict[str, Any]:
    """The JSON object of one frame (without its length header), or ProtocolError naming the violation."""
    tag, body = frame[:TAG_BYTES], frame[TAG_BYTES:]
    if not hmac.compare_digest(tag, frame_tag(key, direction, seq, body)):
        raise ProtocolError(f"frame {seq} failed authentication (forged, injected, replayed or out of order)")
    return parse_object(body, f"frame {seq}")


def parse_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{what} is a JSON {type(message).__name__}, not an object")
    return message


def _read_exact(fd: int, n: int) -> bytes | None:
    """n bytes from the host (None at end of stream); while it waits, orphans are reaped."""
    buf = bytearray()
    while len(buf) < n:
        ready, _, _ = select.select([fd], [], [], _IDLE_REAP_S)
        if not ready:
            _reap_orphans()
            continue
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------------------- output


class HeadTail:
    """Keeps the first and last `limit // 2` bytes of a stream and counts what fell between."""

    def __init__(self, limit: int) -> None:
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail += chunk
        excess = len(self.tail) - self.half
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def text(self) -> str:
        middle = ELIDED.format(n=self.dropped).encode() if self.dropped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------- directory trees


def pack_tree(root: str) -> bytes:
    """A tar of the tree under root: directories, regular files and symlinks (as links, never
    followed); other file types are left out. Nothing outside root is read."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in _walk(Path(root)):
            st = path.lstat()
            info = tarfile.TarInfo(arcname)
            info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
            if stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as handle:
                    info.size = os.fstat(fd).st_size
                    tar.addfile(info, handle)
    return buf.getvalue()


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    if not root.is_dir() or root.is_symlink():
        raise NotADirectoryError(f"{root} is not a directory")
    yield root, "."
    for dirpath, dirnames, filenames in os.walk(root):  # never descends into symlinked directories
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            yield base / name, str((base / name).relative_to(root))


def unpack_tree(data: bytes, target: str) -> None:
    """Extract a tar made by pack_tree into target. Symlinks are created as symlinks whatever they
    point at, and nothing is ever written through one: every member's parent directories must be
    real directories inside target, and files are opened with O_NOFOLLOW (an existing symlink in
    the way is replaced). Absolute names, `..`, hard links and devices are refused by name."""
    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for count, member in enumerate(tar):
            if count >= MAX_TREE_MEMBERS:
                raise ValueError(f"the archive holds more than {MAX_TREE_MEMBERS} entries")
            parts = [p for p in member.name.split("/") if p not in ("", ".")]
            if member.name.startswith("/") or ".." in parts:
                raise ValueError(f"archive member {member.name!r} leaves {target}")
            if not parts:
                continue
            if not (member.isdir() or member.isreg() or member.issym()):
                raise ValueError(f"archive member {member.name!r} is a hard link, device or fifo")
            parent = root
            for part in parts[:-1]:
                parent = parent / part
                if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                    raise ValueError(f"archive member {member.name!r}: {parent} is not a directory")
                parent.mkdir(exist_ok=True)
            path = parent / parts[-1]
            mode = member.mode & 0o777  # never setuid/setgid/sticky from an archive
            if member.isdir():
                if path.is_symlink() or (path.exists() and not path.is_dir()):
                    path.unlink()
                path.mkdir(exist_ok=True)
                path.chmod(mode | 0o700)
                continue
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                path.unlink()
            elif path.is_dir():
                raise ValueError(f"archive member {member.name!r}: {path} is a directory")
            if member.issym():
                os.symlink(member.linkname, path)
                continue
            source = tar.extractfile(member)
            assert source is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
                os.fchmod(out.fileno(), mode)


# ---------------------------------------------------------------------------- the agent's credentials


class Identity:
    """The agent's uid and gid, and whether the supervisor must switch to them (it runs as another)."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid, self.gid = uid, gid
        self.switch = os.getuid() != uid

    def popen_credentials(self) -> tuple[int | None, int | None, list[int] | None]:
        """Popen's (user, group, extra_groups): the agent's, or None (keep the supervisor's)."""
        return (self.uid, self.gid, []) if self.switch else (None, None, None)

    def become(self) -> None:
        """Drop to the agent's credentials for good (in a forked child)."""
        if self.switch:
            os.setgroups([])
            os.setresgid(self.gid, self.gid, self.gid)
            os.setresuid(self.uid, self.uid, self.uid)

    def run(self, op: Callable[[dict[str, Any]], dict[str, Any]], req: dict[str, Any]) -> dict[str, Any]:
        """op(req) with the agent's credentials: in a forked child when the supervisor is another
        uid, so a path the agent controls is only ever opened with the agent's rights."""
        if not self.switch:
            return op(req)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                os.close(read_end)
                self.become()
                answer = _answer(op, req)
                with os.fdopen(write_end, "wb") as out:
                    out.write(json.dumps(answer).encode())
            except BaseException:
                code = 70
            os._exit(code)
        os.close(write_end)
        body = bytearray()
        with os.fdopen(read_end, "rb") as pipe:
            while chunk := pipe.read(1 << 20):
                body += chunk
                if len(body) > MAX_FRAME_BYTES:  # it would never fit a frame: stop it, don't buffer it
                    os.kill(pid, signal.SIGKILL)
                    break
        _, status = os.waitpid(pid, 0)
        if len(body) > MAX_FRAME_BYTES:
            raise ValueError(f"the answer exceeds the {MAX_FRAME_BYTES}-byte frame limit")
        if status != 0:
            raise RuntimeError(f"the file operation's worker failed (wait status {status})")
        answer = parse_object(bytes(body), "the worker's answer")
        if not answer.get("ok"):
            raise _Relayed(answer)
        return answer


class _Relayed(Exception):
    """An error a worker already reported, passed on unchanged."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer.get("error"))
        self.answer = answer


def _uid_of(pid: str) -> int | None:
    """The real uid of a live (non-zombie) process, None if it is gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip().startswith(("Z", "X")):
        return None
    return int(fields["Uid"].split()[0])


def agent_processes(identity: Identity) -> list[int]:
    """Live processes of the agent's uid, other than this one and the sandbox's init."""
    me = os.getpid()
    return [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and int(pid) not in (1, me) and _uid_of(pid) == identity.uid
    ]


def _kill_agent(identity: Identity) -> dict[str, Any]:
    """SIGKILL every process of the agent's uid until none is left. kill(-1) from a process with the
    agent's credentials reaches all of them at once (a fork bomb cannot outrun it) and never the
    supervisor (another uid, or the caller itself) nor the sandbox's init."""
    found = left = agent_processes(identity)
    for _ in range(_KILL_ROUNDS):
        if identity.switch:
            pid = os.fork()
            if pid == 0:
                try:
                    identity.become()
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
        _reap_children()
        time.sleep(0.01)
        left = agent_processes(identity)
        if not left:
            return {"killed": len(found), "left": []}
    return {"killed": len(found), "left": left}


def _reap_children() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _reap_orphans(running: int | None = None) -> None:
    """Reap exited orphans, which are the supervisor's children when it is the sandbox's init (the
    local backend), so they never pile up as zombies against the pids limit. `running`: the command
    being waited on, whose exit status must stay for its own wait."""
    if running is None:  # between requests no child of the supervisor's own is running
        _reap_children()
        return
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == running:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(pid), os.WNOHANG)


# ---------------------------------------------------------------------------- operations


def _rlimit_setter(limits: dict[str, int]) -> Callable[[], None]:
    table = {
        "cpu_s": resource.RLIMIT_CPU,
        "file_bytes": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE,
    }

    def apply() -> None:
        for name, value in limits.items():
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(table[name], (value, value))

    return apply


def _exec(req: dict[str, Any], limits: dict[str, int], identity: Identity) -> dict[str, Any]:
    cmd = req["cmd"]
    argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd]
    env = {str(k): str(v) for k, v in dict(req.get("env") or {}).items()}
    limit = int(req.get("max_output", 65536))
    out, err = HeadTail(limit), HeadTail(limit)
    user, group, extra_groups = identity.popen_credentials()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if req.get("stdin") is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=req.get("cwd") or None,
            env=env,
            start_new_session=True,
            preexec_fn=_rlimit_setter(limits),
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
    except OSError as exc:
        return {
            "exit_code": 127,
            "stdout": "",
            "stderr": f"{argv[0]}: {exc.strerror or exc}\n",
            "duration_s": time.monotonic() - start,
        }
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(base64.b64decode(req["stdin"]))
        proc.stdin.close()
    timeout = req.get("timeout")
    deadline = start + float(timeout) if timeout else None
    timed_out = _pump(proc, {proc.stdout: out, proc.stderr: err}, deadline)  # pyright: ignore[reportArgumentType]
    if timed_out:
        _kill_group(proc)
    code = proc.wait()
    return {
        "exit_code": None if timed_out else code,
        "stdout": out.text(),
        "stderr": err.text(),
        "stdout_truncated": out.truncated,
        "stderr_truncated": err.truncated,
        "timed_out": timed_out,
        "duration_s": time.monotonic() - start,
    }


def _pump(proc: subprocess.Popen[bytes], sinks: dict[BinaryIO, HeadTail], deadline: float | None) -> bool:
    """Copy output into the sinks until the command exits (plus a short drain) or the deadline passes."""
    sel = selectors.DefaultSelector()
    for stream in sinks:
        os.set_blocking(stream.fileno(), False)
        sel.register(stream, selectors.EVENT_READ)
    exited_at: float | None = None
    reaped_at = time.monotonic()
    try:
        while sel.get_map():
            now = time.monotonic()
            if now - reaped_at > _IDLE_REAP_S:  # a long command: its orphans are reaped meanwhile
                _reap_orphans(running=proc.pid)
                reaped_at = now
            if deadline is not None and now >= deadline:
                return True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _DRAIN_AFTER_EXIT_S:
                break
            wait = 0.05
            if deadline is not None:
                wait = min(wait, max(deadline - now, 0.0))
            for key, _ in sel.select(wait):
                stream = key.fileobj
                chunk = os.read(stream.fileno(), 65536)  # pyright: ignore[reportAttributeAccessIssue]
                if chunk:
                    sinks[stream].feed(chunk)  # pyright: ignore[reportArgumentType]
                else:
                    sel.unregister(stream)
        if deadline is None:
            return False
        # Output closed; wait for the exit itself within the deadline.
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.005)
        return False
    finally:
        sel.close()
        for stream in sinks:
            stream.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's process group until it is empty (children that fork keep appearing)."""
    for _ in range(500):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.poll()  # reap the leader: a zombie still counts as a member of the group
        time.sleep(0.002)


def _write(req: dict[str, Any]) -> dict[str, Any]:
    path = Path(req["path"])
    if req.get("mkdirs", True):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(req["data"]))
    if req.get("mode") is not None:
        path.chmod(int(req["mode"]))
    return {}


def _read(req: dict[str, Any]) -> dict[str, Any]:
    path = req["path"]
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a fifo must not block the supervisor
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        limit = (
            min(int(req["max_bytes"]), MAX_READ_BYTES) if req.get("max_bytes") is not None else MAX_READ_BYTES
        )
        if st.st_size > limit:
            raise ValueError(f"{path} is {st.st_size} bytes, more than the {limit} one read may carry")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} grew past the {limit} bytes one read may carry while it was read")
    return {"data": base64.b64encode(data).decode()}


def _tar_out(req: dict[str, Any]) -> dict[str, Any]:
    return {"data": base64.b64encode(pack_tree(req["path"])).decode()}


def _tar_in(req: dict[str, Any]) -> dict[str, Any]:
    unpack_tree(base64.b64decode(req["data"]), req["path"])
    return {}


def _snapshot(req: dict[str, Any]) -> dict[str, Any]:
    root = Path(req["path"])
    files: dict[str, list[Any]] = {}
    limit = int(req.get("max_files", 100_000))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            try:
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    digest = "link:" + os.readlink(full)
                elif stat.S_ISREG(st.st_mode):
                    digest = _sha256(full)
                else:
                    continue
            except OSError:
                continue
            files[rel] = [st.st_size, stat.S_IMODE(st.st_mode), digest]
            if len(files) >= limit:
                return {"files": files, "truncated": True}
    return {"files": files, "truncated": False}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_FILE_OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "write": _write,
    "read": _read,
    "tar_out": _tar_out,
    "tar_in": _tar_in,
    "snapshot": _snapshot,
}


def _answer(op: Callable[[dict[str, Any]], dict[str, Any]], req: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, **op(req)}
    except _Relayed as relayed:
        return relayed.answer
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": type(exc).__name__}


def handle(req: dict[str, Any], limits: dict[str, int], identity: Identity) -> dict[str, Any]:
    """One request -> one response (never raises)."""
    op = req.get("op")
    if op == "exec":
        return _answer(lambda r: _exec(r, limits, identity), req)
    if op == "kill_agent":
        return _answer(lambda _: _kill_agent(identity), req)
    if op == "ping":
        return {"ok": True}
    if isinstance(op, str) and op in _FILE_OPS:
        return _answer(lambda r: identity.run(_FILE_OPS[op], r), req)
    return {"ok": False, "error": f"unknown op {op!r}", "kind": "ValueError"}


# ---------------------------------------------------------------------------- the session


def make_non_dumpable() -> None:
    """PR_SET_DUMPABLE 0: processes this one starts cannot open its /proc/<pid>/fd or ptrace it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 or libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def serve(config: dict[str, Any]) -> None:
    limits = {str(k): int(v) for k, v in dict(config.get("rlimits") or {}).items()}
    identity = Identity(int(config["uid"]), int(config["gid"]))
    make_non_dumpable()
    # As the sandbox's init (local backend), signals from inside reach it only where it has a
    # handler: Python's SIGINT handler would let the agent interrupt it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if identity.switch:
        os.setgroups([])  # the supervisor itself keeps no supplementary groups either
    stdin = sys.stdin.fileno()
    # Commands must never write into the protocol stream: give fd 1 to stderr for everything else.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), 1)
    header = _read_exact(stdin, 4)
    if header is None:
        return
    (size,) = struct.unpack(">I", header)
    if size > 4096:
        raise ProtocolError(f"the hello frame announces {size} bytes")
    hello = parse_object(_read_exact(stdin, size) or b"", "the hello frame")
    key = bytes.fromhex(str(hello.get("key", "")))
    if len(key) < 32:
        raise ProtocolError("the hello frame carries no session key")
    seq = 0
    protocol.write(encode_frame(key, ANSWER, seq, {"ok": True, "ready": True, "pid": os.getpid()}))
    protocol.flush()
    while True:
        header = _read_exact(stdin, 4)
        if header is None:
            return
        seq += 1
        frame = _read_exact(stdin, frame_size(header))
        if frame is None:
            return
        answer = handle(decode_frame(key, REQUEST, seq, frame), limits, identity)
        try:
            data = encode_frame(key, ANSWER, seq, answer)
        except ProtocolError as exc:  # too large to send: say so instead
            data = encode_frame(key, ANSWER, seq, {"ok": False, "error": str(exc), "kind": "ValueError"})
        protocol.write(data)
        protocol.flush()


def main(argv: list[str]) -> None:
    """`supervisor.py CONFIG_JSON` ({"uid", "gid", "rlimits"}) serves frames on stdin/stdout until
    EOF, or until a frame breaks the protocol (then it says why on stderr and exits 3)."""
    try:
        serve(json.loads(argv[1]))
    except ProtocolError as exc:
        sys.stderr.write(f"supervisor: {exc}; ending the session\n")
        sys.stderr.flush()
        os._exit(3)


if __name__ == "__main__":
    main(sys.argv)
