"""Attacks on the sandbox boundary, each written as the attack, on both backends.

Every test here fails the day its hole reopens: the agent as host root, the agent reaching or
impersonating the supervisor, forged, injected, oversized and malformed frames, unbounded output
on the host's disk, reaping that kills live sandboxes, agentsd's labels overwritten, symlinks
followed on the host, and processes the agent leaves running while it is graded.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sandbox_fixtures import SMALL, backend_config, spec

from agentsd.sandboxes.base import Sandbox, SandboxError
from agentsd.sandboxes.channel import SupervisorClient
from agentsd.sandboxes.supervisor import (
    ANSWER,
    MAX_FRAME_BYTES,
    MAX_READ_BYTES,
    MAX_TREE_MEMBERS,
    encode_frame,
    frame_tag,
    unpack_tree,
)
from agentsd.types import SandboxSpec

# Finds the supervisor from inside: python3 with "supervisor" in its arguments (both backends).
FIND_SUPERVISOR = """
import os
def supervisor():
    for pid in os.listdir('/proc'):
        try:
            argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')
        except OSError:
            continue
        if argv and argv[0].endswith(b'python3') and any(b'supervisor' in a for a in argv[1:]):
            return int(pid)
    raise SystemExit('no supervisor found')
"""


def run_python(sandbox: Sandbox, program: str, timeout: float = 60) -> dict[str, Any]:
    """Run a Python program as the agent; it prints one JSON object as its last line."""
    result = sandbox.exec(["python3", "-"], stdin=program.encode(), timeout=timeout)
    assert result.exit_code == 0, result
    return json.loads(result.stdout.strip().splitlines()[-1])


def host_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def host_pids_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def gone(sandbox: Sandbox) -> bool:
    """The sandbox no longer exists: its process tree (local) or its container (docker) is gone."""
    alive = getattr(sandbox, "alive", None)
    if alive is not None:
        return not alive
    return getattr(sandbox, "container", None) is None


# ---------------------------------------------------------------------------- no host root


def test_agent_processes_never_have_host_uid_0(sandbox: Sandbox, backend: str) -> None:
    marker = f"agentsd-uid-probe-{os.getpid()}"
    sandbox.exec(f"nohup sh -c 'sleep 600; : {marker}' >/dev/null 2>&1 & echo")
    deadline = time.monotonic() + 60
    while not (pids := host_pids_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids, "the probe process is not visible from the host"
    for pid in pids:
        status = host_status(pid)
        for field in ("Uid", "Gid"):
            assert "0" not in status[field].split(), (field, status[field])  # real, effective, saved, fs
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
        if backend == "local":  # the user namespace's map, as the host sees it: never onto host uid 0
            for line in Path(f"/proc/{pid}/uid_map").read_text().splitlines():
                _inside, outside, count = (int(x) for x in line.split())
                assert not outside <= 0 < outside + count, line


def test_proc_sys_and_sysrq_cannot_be_opened_for_writing(sandbox: Sandbox) -> None:
    opened = run_python(
        sandbox,
        """
import json, os
opened = []
paths = ['/proc/sysrq-trigger']
for d, _, files in os.walk('/proc/sys'):
    paths += [os.path.join(d, f) for f in files]
for path in paths:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        continue
    os.close(fd)
    opened.append(path)
print(json.dumps({"opened": opened, "checked": len(paths)}))
""",
    )
    assert opened["checked"] > 100  # /proc/sys was really walked
    assert opened["opened"] == []


def test_root_only_host_files_cannot_be_read(sandbox: Sandbox, backend: str, tmp_path: Path) -> None:
    paths = ["/etc/shadow"]
    secret = Path(f"/etc/agentsd-root-only-{os.getpid()}")
    if backend == "local":  # the host's /etc is the sandbox's: a file only root (user or group) may read
        secret.write_text("root only")
        secret.chmod(0o640)
        paths.append(str(secret))
    try:
        for path in paths:
            result = sandbox.exec(["cat", path])
            assert result.exit_code != 0 and "Permission denied" in result.stderr, result
            with pytest.raises(OSError, match="Permission denied"):
                sandbox.read_file(path)
    finally:
        secret.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- the supervisor's channel


def test_commands_cannot_reach_or_trace_the_supervisor(sandbox: Sandbox, backend: str) -> None:
    tried = run_python(
        sandbox,
        FIND_SUPERVISOR
        + """
import ctypes, json
pid = supervisor()
reached = []
for name, flags in [('fd/0', os.O_WRONLY), ('fd/1', os.O_WRONLY), ('fd/1', os.O_RDONLY),
                    ('fd/2', os.O_WRONLY), ('mem', os.O_RDONLY), ('environ', os.O_RDONLY)]:
    try:
        os.close(os.open(f'/proc/{pid}/{name}', flags))
        reached.append(name)
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
traced = [req for req in (PTRACE_ATTACH, PTRACE_SEIZE) if libc.ptrace(req, pid, 0, 0) == 0]
try:
    os.listdir(f'/proc/{pid}/fd')
    reached.append('fd/')
except OSError:
    pass
try:
    os.kill(pid, 0)
    signalled = True
except PermissionError:
    signalled = False
print(json.dumps({"pid": pid, "reached": reached, "traced": traced, "signalled": signalled}))
""",
    )
    assert tried["reached"] == [] and tried["traced"] == [], tried
    if backend == "docker":  # another uid there: the agent cannot even signal it
        assert tried["signalled"] is False
    assert sandbox.exec("echo still answered").stdout == "still answered\n"


def test_ps_in_the_sandbox_does_not_return_the_supervisors_source(sandbox: Sandbox) -> None:
    """An agent's `ps` is one of its commonest commands: the supervisor's command line must not pour
    its source (20 KB, once passed with -c on docker) into the agent's observation and context."""
    listing = sandbox.exec("ps -eo args").stdout
    assert "def serve" not in listing and "encode_frame" not in listing, listing[:2000]
    assert len(listing) < 2048, listing[:2000]
    assert sandbox.exec("echo still answered").stdout == "still answered\n"


def host_pid_of_supervisor(sandbox: Sandbox, backend: str) -> int:
    """The supervisor's pid as the host sees it."""
    if backend == "docker":
        top = sandbox.container.top()  # pyright: ignore[reportAttributeAccessIssue]
        column = top["Titles"].index("PID")
        cmd = top["Titles"].index("CMD")
        return next(int(row[column]) for row in top["Processes"] if row[cmd].startswith("python3"))
    root = sandbox._proc.pid  # pyright: ignore[reportAttributeAccessIssue]
    for pid in host_pids_with("supervisor"):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        parent = int(host_status(pid)["PPid"])
        if argv[0].endswith(b"python3") and parent == root:
            return pid
    raise AssertionError("no supervisor under the sandbox's bwrap")


def test_pid_1_cannot_be_traced_signalled_or_taken_over(sandbox: Sandbox) -> None:
    """The sandbox's init is the non-dumpable supervisor (local) or root's init (docker): the agent
    cannot ptrace it (the way to run its own code as an unkillable init), nor kill or stop it."""
    tried = run_python(
        sandbox,
        """
import ctypes, json, os, signal
libc = ctypes.CDLL(None, use_errno=True)
traced = [req for req in (16, 0x4206) if libc.ptrace(req, 1, 0, 0) == 0]
try:
    os.close(os.open('/proc/1/mem', os.O_RDONLY))
    mem = True
except OSError:
    mem = False
for sig in (signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
    try:
        os.kill(1, sig)
    except PermissionError:
        pass
print(json.dumps({"traced": traced, "mem": mem}))
""",
    )
    assert tried == {"traced": [], "mem": False}
    assert sandbox.exec("echo init untouched", timeout=20).stdout == "init untouched\n"
    assert sandbox.kill_agent() == 0


def test_a_supervisor_that_stops_reading_cannot_hang_the_host(sandbox: Sandbox, backend: str) -> None:
    pid = host_pid_of_supervisor(sandbox, backend)
    os.kill(pid, signal.SIGSTOP)  # what the agent itself can no longer do; the host must cope anyway
    client = sandbox._session()  # pyright: ignore[reportAttributeAccessIssue]
    blob = base64.b64encode(os.urandom(4 << 20)).decode()  # far more than a pipe or socket buffer holds
    raised: list[BaseException] = []

    def write() -> None:
        try:
            client.request({"op": "write", "path": "/workspace/x", "data": blob}, timeout=3)
        except BaseException as exc:
            raised.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(120)  # a liveness bound, 40x the request's own timeout: without one the host hangs
    assert not writer.is_alive(), "the host hung on a supervisor that stopped reading"
    assert len(raised) == 1 and isinstance(raised[0], SandboxError), raised
    assert re.search(r"stopped reading|did not answer", str(raised[0]))
    assert gone(sandbox)


def test_the_agent_cannot_kill_the_supervisor(sandbox: Sandbox, backend: str) -> None:
    program = (FIND_SUPERVISOR + "\nos.kill(supervisor(), 9)\nprint('sent')").encode()
    result = sandbox.exec(["python3", "-"], stdin=program, timeout=20)
    if backend == "docker":
        assert "PermissionError" in result.stderr  # another uid: the kill is refused
    else:
        assert result.stdout == "sent\n"  # same uid, but the supervisor is init: the kernel drops it
    assert sandbox.exec("echo alive").stdout == "alive\n"


class Injecting:
    """Wraps a sandbox's transport: bytes queued with `inject` are read before the real stream, and
    what the client asks to read is recorded (an oversized header must never be read)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.queued = bytearray()
        self.asked: list[int] = []
        self.recorded = bytearray()

    def inject(self, data: bytes) -> None:
        self.queued += data

    def send(self, data: bytes, deadline: float) -> None:
        self.inner.send(data, deadline)

    def read(self, n: int, deadline: float) -> bytes:
        self.asked.append(n)
        if self.queued:
            take = bytes(self.queued[:n])
            del self.queued[:n]
            if len(take) < n:
                take += self.inner.read(n - len(take), deadline)
            return take
        data = self.inner.read(n, deadline)
        self.recorded += data
        return data


def wrap(sandbox: Sandbox) -> tuple[SupervisorClient, Injecting]:
    client = sandbox._session()  # pyright: ignore[reportAttributeAccessIssue]
    transport = Injecting(client._transport)
    client._transport = transport
    return client, transport


def signed(client: SupervisorClient, seq: int, body: bytes) -> bytes:
    """A frame with a valid tag for `seq` around an arbitrary body (what only the supervisor can make)."""
    tag = frame_tag(client._key, ANSWER, seq, body)
    return struct.pack(">I", len(tag) + len(body)) + tag + body


def _forged(client: SupervisorClient) -> bytes:
    body = json.dumps({"ok": True, "exit_code": 0, "stdout": "forged", "stderr": ""}).encode()
    return struct.pack(">I", 32 + len(body)) + os.urandom(32) + body


def _replayed(client: SupervisorClient) -> bytes:
    return encode_frame(client._key, ANSWER, client._seq, {"ok": True, "exit_code": 0, "stdout": "old"})


def _oversized(client: SupervisorClient) -> bytes:
    return struct.pack(">I", 0x7FFFFFF0)


def _garbage(client: SupervisorClient) -> bytes:
    return signed(client, client._seq + 1, b"\xff\xfe not json at all")


def _deep_json(client: SupervisorClient) -> bytes:
    return signed(client, client._seq + 1, b"[" * 200_000 + b"]" * 200_000)


def _json_list(client: SupervisorClient) -> bytes:
    return signed(client, client._seq + 1, b'[{"ok": true}]')


def _wrong_shape(client: SupervisorClient) -> bytes:
    return signed(client, client._seq + 1, json.dumps({"ok": True, "exit_code": "zero"}).encode())


ATTACKS: dict[str, tuple[Callable[[SupervisorClient], bytes], str]] = {
    "forged": (_forged, "failed authentication"),
    "replayed": (_replayed, "failed authentication"),
    "oversized header": (_oversized, "over the .* limit"),
    "garbage": (_garbage, "not valid JSON"),
    "200k-deep JSON": (_deep_json, "not valid JSON"),
    "JSON list": (_json_list, "JSON list, not an object"),
    "wrong shape": (_wrong_shape, "wrong shape"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_bad_answer_frame_kills_the_sandbox(sandbox: Sandbox, attack: str) -> None:
    make, message = ATTACKS[attack]
    assert sandbox.exec("echo first").stdout == "first\n"
    client, transport = wrap(sandbox)
    transport.inject(make(client))
    with pytest.raises(SandboxError, match=f"protocol violation: .*{message}"):
        sandbox.exec("echo second")
    assert max(transport.asked) <= MAX_FRAME_BYTES  # an oversized header is refused before reading
    assert gone(sandbox)
    with pytest.raises(SandboxError):
        sandbox.exec("echo third")  # nothing stale, ever: the session is over


def test_an_injected_request_ends_the_session(sandbox: Sandbox) -> None:
    _, transport = wrap(sandbox)
    body = json.dumps({"op": "exec", "cmd": "echo injected", "timeout": 5}).encode()
    forged = struct.pack(">I", 32 + len(body)) + os.urandom(32) + body  # no valid tag
    transport.inner.send(forged, time.monotonic() + 10)
    with pytest.raises(SandboxError, match="died"):
        sandbox.exec("echo real")
    assert gone(sandbox)
    assert b"injected" not in transport.recorded


def test_an_oversized_request_is_refused_and_the_sandbox_kept(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError, match="request refused"):
        sandbox.write_file("/workspace/big", b"x" * (MAX_FRAME_BYTES // 4 * 3 + 1024))
    assert sandbox.exec("echo kept").stdout == "kept\n"


def test_a_file_too_large_for_one_answer_is_an_error_and_the_sandbox_kept(sandbox: Sandbox) -> None:
    size = MAX_READ_BYTES + 1
    assert size < SMALL.disk_mb * 1024 * 1024  # it fits the sandbox's disk
    sandbox.exec(f"head -c {size} /dev/zero > big; echo")
    with pytest.raises(SandboxError, match=r"more than the \d+ one read may carry"):
        sandbox.read_file("/workspace/big")
    with pytest.raises(SandboxError, match="more than the 1000 one read may carry"):
        sandbox.read_file("/workspace/big", max_bytes=1000)
    assert sandbox.exec("echo kept").stdout == "kept\n"


# ---------------------------------------------------------------------------- nothing left running at grading


def test_kill_agent_leaves_no_agent_process(sandbox: Sandbox) -> None:
    sandbox.exec(
        "nohup sleep 300 >/dev/null 2>&1 & (setsid sleep 301 &) ; "
        "nohup sh -c 'while :; do sleep 302 & sleep 0.05; done' >/dev/null 2>&1 & echo",
    )
    time.sleep(0.5)
    assert sandbox.kill_agent() >= 3
    left = sandbox.exec("ps -eo uid=,args=").stdout
    assert not [line for line in left.splitlines() if "sleep 30" in line], left
    assert sandbox.exec("echo usable").stdout == "usable\n"


def test_a_daemon_forging_the_reward_gets_nothing(backend: str) -> None:
    """The attack that used to score 1.0: one bash call starts a daemon that keeps writing reward 1
    and tries every way into the supervisor's channel; the task's tests fail. The reward must be 0,
    and with the kill turned off the same daemon does disturb grading (so the test measures it)."""
    from agentsd.envs.oracle import tool_call
    from agentsd.envs.task_formats import load_suite
    from agentsd.envs.terminal import TerminalEnv

    task = next(t for t in load_suite("terminal") if t.id == "count-lines")
    daemon = (
        FIND_SUPERVISOR
        + """
import json, struct, time
pid = supervisor()
forged = json.dumps({"ok": True, "exit_code": 0, "stdout": "", "stderr": ""}).encode()
if os.fork() == 0:
    os.setsid()
    while True:
        for fd in (1, 2):
            try:
                out = os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY)
                os.write(out, struct.pack('>I', 32 + len(forged)) + bytes(32) + forged)
                os.close(out)
            except OSError:
                pass
        try:
            os.makedirs('/logs/verifier', exist_ok=True)
            with open('/logs/verifier/.forged', 'w') as f:
                f.write('1')
            os.replace('/logs/verifier/.forged', '/logs/verifier/reward.txt')
        except OSError:
            pass
"""
    )
    start = tool_call("bash", command=f"python3 - <<'EOF'\n{daemon}\nEOF\necho started")

    def episode(defended: bool) -> tuple[float, bool, str]:
        env = TerminalEnv(sandbox=backend_config(backend))
        env.kill_agent_before_grading = defended
        try:
            env.reset(options={"task": task})
            obs, *_ = env.step(start)
            assert "started" in obs, obs
            _, reward, terminated, _, info = env.step(tool_call("submit"))
            return reward, terminated, info["termination"]
        finally:
            env.close()

    assert episode(defended=True) == (0.0, True, "done")
    # The control: left running, the same daemon forges the reward or breaks grading outright. It
    # races the verifier, so on a loaded machine one try can miss: any of three that lands shows it.
    controls = []
    for _ in range(3):
        controls.append(episode(defended=False))
        if controls[-1] != (0.0, True, "done"):
            break
    assert controls[-1] != (0.0, True, "done"), controls


PLANTED = {
    "a read-only reward file": (
        "mkdir -p /logs/verifier && echo 1 > /logs/verifier/reward.txt && "
        "chmod 444 /logs/verifier/reward.txt && chmod 555 /logs/verifier"
    ),
    "a .pth in the user site": (
        'd=$(python3 -c "import site; print(site.getusersitepackages())") && mkdir -p "$d" && '
        "echo 'import atexit, os; atexit.register(lambda: os._exit(0))' > \"$d/agentsd-forge.pth\""
    ),
    "a conftest.py in /tests": "echo 'import os; os._exit(0)' > /tests/conftest.py",
    "a .bashrc and .profile": "printf 'echo 1 > /logs/verifier/reward.txt; exit 0\\n' | tee .bashrc .profile",
}


@pytest.mark.parametrize("plant", list(PLANTED))
def test_files_planted_where_grading_looks_do_not_forge_the_reward(backend: str, plant: str) -> None:
    from agentsd.envs.oracle import run_nothing, tool_call
    from agentsd.envs.task_formats import load_suite
    from agentsd.envs.terminal import TerminalEnv

    task = next(t for t in load_suite("terminal") if t.id == "count-lines")
    env = TerminalEnv(sandbox=backend_config(backend))
    try:
        assert run_nothing(env, task)[0] == 0.0
        env.reset(options={"task": task})
        obs, *_ = env.step(tool_call("bash", command=PLANTED[plant]))
        assert "[exit code 0]" in obs, obs
        _, reward, _, _, info = env.step(tool_call("submit"))
    finally:
        env.close()
    assert (reward, info["termination"]) == (0.0, "done"), info["verifier_output"]


# ---------------------------------------------------------------------------- resources on the host


def test_dev_shm_is_bounded(sandbox: Sandbox) -> None:
    result = sandbox.exec(
        f"head -c {2 * SMALL.disk_mb}M /dev/zero > /dev/shm/fill; du -sm /dev/shm | cut -f1"
    )
    assert int(result.stdout.strip().splitlines()[-1]) <= SMALL.disk_mb + 1, result


@pytest.mark.parametrize("backend", ["local"])
def test_the_host_witnesses_kill_agent_through_the_cgroup(backend: str) -> None:
    """A process in the sandbox's cgroup that the supervisor cannot see (here: one the host put
    there) fails kill_agent with the sandbox gone: grading never trusts the supervisor alone."""
    from agentsd.sandboxes.fleet import make_sandbox

    with make_sandbox(backend_config(backend), spec(test="1")) as sandbox:
        cgroup = sandbox._cgroup  # pyright: ignore[reportAttributeAccessIssue]
        if cgroup is None or not cgroup.dirs:
            pytest.skip("no writable cgroups here")
        hidden = subprocess.Popen(["sleep", "60"])
        try:
            for procs in cgroup.procs_files():
                procs.write_text(str(hidden.pid))
            with pytest.raises(SandboxError, match="outlived kill_agent"):
                sandbox.kill_agent()
            assert gone(sandbox)
        finally:
            hidden.kill()
            hidden.wait()


@pytest.mark.parametrize("backend", ["local"])
def test_local_supervisor_output_never_reaches_the_host_disk(backend: str) -> None:
    config = backend_config(backend)
    from agentsd.sandboxes.fleet import make_sandbox

    with make_sandbox(config, spec(test="1")) as sandbox:
        proc = sandbox._proc  # pyright: ignore[reportAttributeAccessIssue]
        for fd in (1, 2):
            assert os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("pipe:")


# ---------------------------------------------------------------------------- reaping and labels


@pytest.mark.parametrize("backend", ["local"])
def test_reap_with_another_state_dir_kills_nothing_live(backend: str, tmp_path: Path) -> None:
    from agentsd.sandboxes.fleet import make_sandbox

    with make_sandbox(backend_config(backend), spec(test="1")) as sandbox:
        reaped = subprocess.run(
            [sys.executable, "-m", "agentsd.cli.main", "sandbox", "reap"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "AGENTSD_STATE": str(tmp_path / "elsewhere")},
        )
        assert sandbox.id not in reaped.stdout
        assert sandbox.exec("echo alive", timeout=20).stdout == "alive\n"


def test_a_label_named_like_agentsd_own_is_refused() -> None:
    for key in ("owner", "created", "sandbox"):
        with pytest.raises(ValueError, match="reserved"):
            SandboxSpec(labels={key: "x"})


@pytest.mark.docker
def test_agentsd_labels_win_over_a_spec_label() -> None:
    config = backend_config("docker")
    from agentsd.sandboxes.base import owner_identity
    from agentsd.sandboxes.docker_sandbox import DockerSandbox

    sandbox = DockerSandbox(spec(run_id="r1"), engine=config.engines[0])  # pyright: ignore[reportAttributeAccessIssue]
    labels = sandbox.labels()
    assert labels["agentsd.owner"] == owner_identity() and labels["agentsd.run_id"] == "r1"


# ---------------------------------------------------------------------------- symlinks in transfers


def test_symlinks_travel_as_symlinks_both_ways(sandbox: Sandbox, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "mod.py").write_text("x = 1\n")
    (tree / "rel").symlink_to("pkg/mod.py")
    (tree / "abs").symlink_to("/etc/hostname")
    (tree / "dirlink").symlink_to("pkg")
    sandbox.upload(tree, "/workspace/up")
    listing = sandbox.exec("readlink up/rel up/abs up/dirlink; cat up/rel").stdout
    assert listing == "pkg/mod.py\n/etc/hostname\npkg\nx = 1\n"

    outside = tmp_path / "outside"
    outside.mkdir()
    sandbox.exec(
        f"mkdir -p down/d && echo data > down/d/f && ln -s /etc/shadow down/shadow && "
        f"ln -s {outside} down/escape && ln -s / down/root && ln -s ../d/f down/d/rel; echo"
    )
    back = tmp_path / "back"
    sandbox.download("/workspace/down", back)
    assert os.readlink(back / "shadow") == "/etc/shadow"
    assert os.readlink(back / "escape") == str(outside) and os.readlink(back / "root") == "/"
    assert (back / "d" / "f").read_text() == "data\n"
    assert list(outside.iterdir()) == []  # nothing was written through a link


def _tar(*members: tuple[str, str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
                tar.addfile(info)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ((("../escape", "file", b"x"),), "leaves"),
        ((("/abs", "file", b"x"),), "leaves"),
        ((("link", "sym", "{outside}"), ("link/pwned", "file", b"x")), "not a directory"),
        ((("hard", "hard", "/etc/passwd"),), "hard link"),
    ],
)
def test_a_hostile_archive_never_writes_outside_its_target(
    tmp_path: Path, members: tuple[tuple[str, str, Any], ...], message: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    resolved = tuple((n, k, p.format(outside=outside) if isinstance(p, str) else p) for n, k, p in members)
    with pytest.raises(ValueError, match=message):
        unpack_tree(_tar(*resolved), str(tmp_path / "target"))
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape").exists()


def test_an_archive_of_too_many_entries_is_refused(tmp_path: Path) -> None:
    """Empty directories cost nothing on the sandbox's tmpfs and a block each on the host's disk."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(MAX_TREE_MEMBERS + 1):
            info = tarfile.TarInfo(f"d{i}")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    with pytest.raises(ValueError, match=f"more than {MAX_TREE_MEMBERS} entries"):
        unpack_tree(buf.getvalue(), str(tmp_path / "target"))


def test_an_existing_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    target, victim = tmp_path / "target", tmp_path / "victim"
    target.mkdir()
    victim.write_text("untouched")
    (target / "f").symlink_to(victim)
    unpack_tree(_tar(("f", "file", b"new")), str(target))
    assert victim.read_text() == "untouched" and (target / "f").read_text() == "new"
    assert not (target / "f").is_symlink()


def test_importing_the_sandboxes_loads_no_store() -> None:
    """Process identity lives outside agentsd.store: a sandbox host need not load SQLAlchemy."""
    modules = (
        "agentsd.sandboxes.local, agentsd.sandboxes.docker_sandbox, agentsd.sandboxes.fleet, "
        "agentsd.sandboxes.reaper, agentsd.sandboxes.channel"
    )
    probe = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
