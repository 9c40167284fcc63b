"""Sandbox behaviour, security and faults, on both backends, against real sandboxes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_fixtures import SMALL, backend_config, spec

from agentsd.envs.verifiers import OFFLINE_WHEELS
from agentsd.sandboxes.base import MAX_OUTPUT_BYTES, Sandbox, diff, owner_identity
from agentsd.sandboxes.cgroups import group_owner
from agentsd.sandboxes.reaper import list_docker, list_local

HERE = Path(__file__).parent


# ---------------------------------------------------------------------------- behaviour


def test_exec_reports_exit_output_cwd_env_and_stdin(sandbox: Sandbox) -> None:
    result = sandbox.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (3, "out\n", "err\n", False)
    assert sandbox.exec("pwd").stdout == "/workspace\n"
    sandbox.exec("mkdir -p sub")
    assert sandbox.exec("pwd", cwd="/workspace/sub").stdout == "/workspace/sub\n"
    assert sandbox.exec("echo $GREETING", env={"GREETING": "hello"}).stdout == "hello\n"
    assert sandbox.exec(["cat"], stdin=b"piped \x00 bytes").stdout == "piped \x00 bytes"
    missing = sandbox.exec(["/no/such/binary"])
    assert missing.exit_code == 127 and "/no/such/binary" in missing.stderr


def family_provides() -> list[tuple[str, str]]:
    """(package, command) of the terminal family's one list (sandboxes/images/terminal/provides.txt)."""
    text = (Path(__file__).parents[1] / "sandboxes" / "images" / "terminal" / "provides.txt").read_text()
    return [
        (line.split()[0], line.split()[1]) for line in text.splitlines() if line.strip() and line[0] != "#"
    ]


def test_the_family_provides_the_same_tools_on_both_backends(sandbox: Sandbox) -> None:
    # a task that works on one backend must not fail setup on the other for a missing tool
    provided = family_provides()
    assert ("python3-pip", "pip3") in provided and ("python3-pytest", "pytest") in provided
    commands = " ".join(command for _, command in provided if command != "-")
    found = sandbox.exec(f"for c in {commands}; do command -v $c >/dev/null || echo missing $c; done")
    assert found.exit_code == 0 and found.stdout == "", found.stdout
    imports = sandbox.exec(
        "python3 -c 'import venv, ensurepip, pytest, pip' && test -s /etc/ssl/certs/ca-certificates.crt"
    )
    assert imports.exit_code == 0, imports.stderr
    # the offline test tooling (offline.txt): uv, uvx, and every pinned wheel
    offline = (Path(__file__).parents[1] / "sandboxes" / "images" / "terminal" / "offline.txt").read_text()
    pins = [line.split()[0] for line in offline.splitlines() if line.strip() and line[0] != "#"]
    uv = next(pin for pin in pins if pin.startswith("uv=="))
    assert sandbox.exec("uv --version && uvx --version").stdout.split()[1] == uv.removeprefix("uv==")
    wheels = sandbox.exec(f"ls {OFFLINE_WHEELS}").stdout
    for pin in pins:
        if pin != uv:
            name, version = pin.split("==")
            assert f"{name.replace('-', '_')}-{version}-" in wheels, (pin, wheels)


def test_output_keeps_head_and_tail_and_flags_truncation(sandbox: Sandbox) -> None:
    n = MAX_OUTPUT_BYTES * 3
    result = sandbox.exec(f"python3 -c \"import sys; sys.stdout.write('H' * 100 + 'x' * {n} + 'T' * 100)\"")
    assert result.stdout_truncated and not result.stderr_truncated
    assert result.stdout.startswith("H" * 100) and result.stdout.endswith("T" * 100)
    elided = n + 200 - MAX_OUTPUT_BYTES
    assert f"[... {elided} bytes elided ...]" in result.stdout


def test_background_processes_survive_between_commands(sandbox: Sandbox) -> None:
    started = sandbox.exec("nohup python3 -m http.server 8123 >/dev/null 2>&1 & echo started", timeout=10)
    # exec returned without waiting for the server (not a time bound: a loaded machine is slow)
    assert started.stdout == "started\n" and not started.timed_out
    fetch = "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8123/').status)\""
    deadline = time.monotonic() + 60
    while (result := sandbox.exec(fetch)).stdout != "200\n" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result.stdout == "200\n"  # a service started by one command answers the next


def test_files_round_trip_and_snapshots_diff(sandbox: Sandbox, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 64
    sandbox.write_file("/workspace/data/blob.bin", blob, mode=0o600)
    assert sandbox.read_file("/workspace/data/blob.bin") == blob
    assert sandbox.exec("stat -c %a data/blob.bin").stdout == "600\n"
    with pytest.raises(FileNotFoundError):
        sandbox.read_file("/workspace/absent")

    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "mod.py").write_text("print('hi')\n")
    (tree / "README").write_text("readme\n")
    sandbox.upload(tree, "/workspace/repo")
    assert sandbox.exec("python3 repo/pkg/mod.py").stdout == "hi\n"

    before = sandbox.snapshot("/workspace/repo")
    assert before.files["README"].digest == hashlib.sha256(b"readme\n").hexdigest()
    sandbox.exec("echo changed > repo/README && rm repo/pkg/mod.py && echo new > repo/NEW")
    changes = diff(before, sandbox.snapshot("/workspace/repo"))
    assert (changes.added, changes.removed, changes.modified) == (["NEW"], ["pkg/mod.py"], ["README"])

    sandbox.download("/workspace/repo", tmp_path / "back")
    assert (tmp_path / "back" / "README").read_text() == "changed\n"
    assert (tmp_path / "back" / "NEW").read_text() == "new\n"
    assert not (tmp_path / "back" / "pkg" / "mod.py").exists()


def test_timeout_kills_the_whole_process_group(sandbox: Sandbox) -> None:
    start = time.monotonic()
    result = sandbox.exec("sleep 300 & sleep 301 & (sleep 302; echo never) ; wait", timeout=1.5)
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 60  # far below the sleeps, far above a loaded machine's delays
    left = sandbox.exec("ps -eo args").stdout
    assert "sleep 30" not in left, left
    assert sandbox.exec("echo still usable").stdout == "still usable\n"


# ---------------------------------------------------------------------------- security


@pytest.fixture
def host_tcp_server() -> Iterator[int]:
    """A TCP service on the host's loopback; yields its port."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.sendall(b"secret-service")
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def outside_host() -> Iterator[tuple[str, int]]:
    """A host outside this machine's root network namespace: a netns of its own, reached by a veth
    pair, serving TCP. Yields (address, port); the test process itself can reach it."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("creating a network namespace needs root and iproute2")
    tag = f"{os.getpid() % 10000}"
    ns, host_if, peer_if = f"agentsd-out-{tag}", f"agto{tag}", f"agtp{tag}"
    subnet = 16 + os.getpid() % 200
    addr_host, addr_peer = f"10.251.{subnet}.1", f"10.251.{subnet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", ns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        ip("link", "set", peer_if, "netns", ns)
        ip("addr", "add", f"{addr_host}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{addr_peer}/30", "dev", peer_if)
        ip("netns", "exec", ns, "ip", "link", "set", peer_if, "up")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('{addr_peer}',9));s.listen()\nprint('up',flush=True)\n"
                "while True:\n c,_=s.accept();c.sendall(b'outside');c.close()",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        try:
            yield addr_peer, 9
        finally:
            server.kill()
            server.wait()
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


CONNECT = (
    'python3 -c "import socket,sys\n'
    "try:\n socket.create_connection(('{host}', {port}), timeout=3).recv(64); print('CONNECTED')\n"
    "except OSError as e: print('BLOCKED', e)\""
)


def test_no_network_outside_or_to_host_loopback(
    sandbox: Sandbox, host_tcp_server: int, outside_host: tuple[str, int]
) -> None:
    address, port = outside_host
    with socket.create_connection((address, port), timeout=3) as control:  # reachable from the host
        assert control.recv(16) == b"outside"
    with socket.create_connection(("127.0.0.1", host_tcp_server), timeout=3) as control:
        assert control.recv(32) == b"secret-service"

    assert sandbox.exec(CONNECT.format(host=address, port=port)).stdout.startswith("BLOCKED")
    assert sandbox.exec(CONNECT.format(host="127.0.0.1", port=host_tcp_server)).stdout.startswith("BLOCKED")
    dev = sandbox.exec("tail -n +3 /proc/net/dev").stdout  # the interfaces of its network namespace
    assert [line.split(":")[0].strip() for line in dev.splitlines()] == ["lo"]


def test_host_files_are_invisible_and_the_root_is_read_only(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    home_secret = Path.home() / f".agentsd-test-secret-{os.getpid()}"
    home_secret.write_text("top secret")
    try:
        for path in (secret, home_secret):
            result = sandbox.exec(f"cat {path}")
            assert result.exit_code != 0 and "top secret" not in result.stdout
            with pytest.raises((FileNotFoundError, OSError)):
                sandbox.read_file(str(path))
    finally:
        home_secret.unlink()
    marker = f"/usr/agentsd-escape-{os.getpid()}"
    for target in (marker, "/etc/agentsd-escape", "/agentsd-escape"):
        result = sandbox.exec(f"echo pwned > {target}")
        assert result.exit_code != 0, target
    assert not Path(marker).exists() and not Path("/etc/agentsd-escape").exists()
    assert not Path("/agentsd-escape").exists()


# ---------------------------------------------------------------------------- faults


def _host_and_neighbour_fine(neighbour: Sandbox) -> None:
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host can still fork
    assert neighbour.exec("echo fine", timeout=20).stdout == "fine\n"


def test_fork_bomb_is_contained(sandbox_factory: Callable[..., Sandbox]) -> None:
    victim, neighbour = sandbox_factory(), sandbox_factory()
    result = victim.exec("bomb() { bomb | bomb & }; bomb; sleep 5", timeout=4)
    assert result.timed_out or result.exit_code != 0
    _host_and_neighbour_fine(neighbour)
    assert victim.exec("echo recovered", timeout=20).stdout == "recovered\n"


def test_memory_bomb_is_contained(sandbox_factory: Callable[..., Sandbox]) -> None:
    victim, neighbour = sandbox_factory(), sandbox_factory()
    bomb = 'python3 -c "x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))"'
    result = victim.exec(bomb, timeout=60)
    assert result.exit_code != 0 and not result.timed_out  # killed (OOM) or MemoryError, quickly
    _host_and_neighbour_fine(neighbour)


def test_disk_filling_loop_is_contained(sandbox_factory: Callable[..., Sandbox]) -> None:
    victim, neighbour = sandbox_factory(), sandbox_factory()
    free_before = shutil.disk_usage("/").free
    fill = (
        "i=0; while head -c 4194304 /dev/zero > fill$i 2>/dev/null; do i=$((i+1)); done; du -sk . | cut -f1"
    )
    result = victim.exec(fill, timeout=60)
    used_kb = int(result.stdout.strip())
    assert used_kb <= SMALL.disk_mb * 1024 + 64, result
    assert shutil.disk_usage("/").free > free_before - 2 * SMALL.disk_mb * 1024 * 1024
    _host_and_neighbour_fine(neighbour)


def test_eight_concurrent_sandboxes_do_not_see_each_other(sandbox_factory: Callable[..., Sandbox]) -> None:
    boxes: list[Sandbox] = [None] * 8  # pyright: ignore[reportAssignmentType]

    def start(i: int) -> None:
        boxes[i] = sandbox_factory(spec(slot=str(i)))
        boxes[i].exec(f"echo {i} > /workspace/mine-{i}; echo {i} > /tmp/tmp-{i}; sleep 3600 & echo")

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, box in enumerate(boxes):
        seen = box.exec("ls /workspace /tmp; ps -eo args").stdout
        others = [j for j in range(8) if j != i and (f"mine-{j}" in seen or f"tmp-{j}" in seen)]
        assert not others and f"mine-{i}" in seen
        assert seen.count("sleep 3600") == 1  # its own background job, nobody else's


def test_a_killed_owner_leaves_nothing_after_reap(backend: str, tmp_path: Path) -> None:
    config = backend_config(backend)
    owner = subprocess.Popen(
        [sys.executable, str(HERE / "sandbox_owner.py"), config.model_dump_json()],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    assert owner.stdout is not None
    ids = [owner.stdout.readline().strip() for _ in range(2)]
    assert all(i.startswith("sbx-") for i in ids), ids
    owner.kill()
    owner.wait()

    def present() -> set[str]:
        records = list_local() if backend == "local" else list_docker(config.engines[0])  # pyright: ignore[reportAttributeAccessIssue]
        return {r.id for r in records} & set(ids)

    assert present() == set(ids)  # left behind by the dead owner ...
    engine_args = [] if backend == "local" else ["--engine", config.engines[0]]  # pyright: ignore[reportAttributeAccessIssue]
    reaped = subprocess.run(
        [sys.executable, "-m", "agentsd.cli.main", "sandbox", "reap", *engine_args],
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(i in reaped.stdout for i in ids), reaped.stdout
    assert present() == set()  # ... and gone after reap
    if backend == "local":
        time.sleep(0.2)
        procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert not any(i in procs for i in ids)
        assert not [d for d in Path("/sys/fs/cgroup").glob("*/agentsd/*") if group_owner(d.name)[0] in ids]


# ---------------------------------------------------------------------------- bad input and leaks


def test_a_missing_image_or_rootfs_is_named(backend: str, tmp_path: Path) -> None:
    from agentsd.config import LocalSandboxConfig
    from agentsd.sandboxes.base import SandboxError
    from agentsd.sandboxes.fleet import make_sandbox

    config = backend_config(backend)
    if backend == "local":
        config = LocalSandboxConfig(rootfs=tmp_path / "empty-rootfs")
        expected = r"empty-rootfs has no usr/bin/python3"
        sandbox = make_sandbox(config, spec())
    else:
        expected = r"image agentsd/no-such-family:latest is not on the engine .*build_images\.sh"
        sandbox = make_sandbox(config, spec().model_copy(update={"image": "agentsd/no-such-family:latest"}))
    with pytest.raises(SandboxError, match=expected):
        sandbox.start()
    sandbox.close()


@pytest.mark.docker
def test_reap_removes_containers_stuck_in_created_of_dead_owners() -> None:
    config = backend_config("docker")
    from agentsd.sandboxes.base import LABEL
    from agentsd.sandboxes.docker_sandbox import docker_client
    from agentsd.sandboxes.reaper import reap_docker

    client = docker_client(config.engines[0])  # pyright: ignore[reportAttributeAccessIssue]

    def create(name: str, owner: str) -> Any:  # created, never started: what a crash mid-start leaves
        labels = {LABEL: name, "agentsd.owner": owner, "agentsd.created": "0"}
        return client.containers.create(
            "agentsd/terminal:latest",
            command=["true"],
            name=f"agentsd-{name}",
            labels=labels,
            network_mode="none",
        )

    stuck = create(f"sbx-stuck{os.getpid()}", f"{socket.gethostname()}:999999:0")  # owner pid long gone
    live = create(f"sbx-live{os.getpid()}", owner_identity())
    try:
        assert stuck.status == "created"
        removed = {r.id for r in reap_docker(config.engines[0])}  # pyright: ignore[reportAttributeAccessIssue]
        assert f"sbx-stuck{os.getpid()}" in removed and f"sbx-live{os.getpid()}" not in removed
        names = {c.name for c in client.containers.list(all=True)}
        assert stuck.name not in names and live.name in names
    finally:
        with contextlib.suppress(Exception):
            live.remove(force=True)
        client.close()
