"""The `docker` sandbox backend: one container per episode on a Docker engine (DOCKER_HOST).

The container runs the family's image (or the task's built image, sandboxes/docker_build.py) with no
network (unless the task asks), memory, CPU and process limits, no-new-privileges, a read-only root
filesystem, size-limited tmpfs for the workspace, /tmp and /var/tmp (owned by the agent, uid 1000)
and a bounded /dev/shm, with an init that reaps orphans. Every capability is dropped except
CAP_SETUID, CAP_SETGID and CAP_KILL, which only the supervisor holds: it runs as container root,
started over one `docker exec` session whose stdin brings its source (never its command line, which
any `ps` would show the agent) and then, with stdout, carries the authenticated protocol, and runs
every command and file operation as uid 1000 with no supplementary groups (root-to-1000 clears the
capabilities). The agent therefore cannot signal, ptrace or read the supervisor, nor the container's
init. The session itself runs under `timeout -k` for the episode's limit, and every command has its
own deadline and process-group kill inside. Containers carry labels (sandbox id, owner process, run
and episode ids, creation time; agentsd's own always win over a spec's) so `agentsd sandbox reap`
finds what a dead collector left. Engine calls retry (tenacity) on transient engine errors only:
connection failures and 5xx answers.

Not protected against: what the engine itself allows (a misconfigured daemon, kernel exploits);
without user-namespace remapping on the engine, container root is host uid 0 (only the supervisor
runs as it, with the three capabilities above); an image that is not built
(`scripts/build_images.sh`) fails start() with its name.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from agentsd.sandboxes.base import (
    AGENT_GID,
    AGENT_UID,
    LABEL,
    SUPERVISOR_SOURCE,
    SandboxError,
    owner_identity,
    supervisor_config,
    writable_dirs,
)
from agentsd.sandboxes.channel import SupervisedSandbox, SupervisorClient, read_exact, write_all
from agentsd.sandboxes.docker_build import ensure_image
from agentsd.sandboxes.supervisor import MAX_FRAME_BYTES, ProtocolError
from agentsd.types import SandboxSpec

T = TypeVar("T")
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
_START_TIMEOUT_S = 60.0
_STDOUT, _STDERR = 1, 2
_SUPERVISOR_CAPS = ["SETUID", "SETGID", "KILL"]
_STDERR_KEEP = 4096
# The supervisor's source comes over the session's stdin ahead of the protocol (8 hex digits of
# length, then the source), read with os.read so no buffer swallows the hello frame after it: its
# command line stays this short, so every `ps` the agent runs does not return 20 KB of source.
_BOOTSTRAP = """import os
def take(n):
    got = b''
    while len(got) < n:
        part = os.read(0, n - len(got))
        if not part:
            raise SystemExit(3)
        got += part
    return got
exec(compile(take(int(take(8), 16)), 'agentsd-supervisor', 'exec'))"""


def engine_url(engine: str | None = None) -> str:
    return engine or os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE


def docker_client(engine: str | None = None) -> Any:
    """A DockerClient for one engine; raises SandboxError with the install hint if docker is absent."""
    try:
        import docker
        import docker.errors
    except ImportError as exc:
        raise SandboxError(
            "the docker backend needs the docker extra: pip install 'agentsd[docker]'"
        ) from exc
    try:
        return docker.DockerClient(base_url=engine_url(engine), timeout=120)
    except docker.errors.DockerException as exc:
        raise SandboxError(f"cannot reach the Docker engine at {engine_url(engine)}: {exc}") from exc


def _transient(exc: BaseException) -> bool:
    import docker.errors
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    return isinstance(exc, docker.errors.APIError) and exc.is_server_error()


def retrying(call: Callable[..., T]) -> Callable[..., T]:
    """`call` with retries on transient engine errors (never on 4xx: missing image, bad request)."""
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    return retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )(call)


class _ExecSocketTransport:
    """A docker exec's hijacked socket: writes go to the process's stdin, reads are demultiplexed."""

    def __init__(self, sock: Any) -> None:
        self._sock: socket.socket = getattr(sock, "_sock", sock)
        self._sock.setblocking(False)
        self._stdout = bytearray()
        self.stderr = bytearray()

    def send(self, data: bytes, deadline: float) -> None:
        write_all(self._sock.fileno(), data, deadline)

    def read(self, n: int, deadline: float) -> bytes:
        while len(self._stdout) < n:
            stream, payload = self._frame(deadline)
            (self._stdout if stream == _STDOUT else self.stderr).extend(payload)
            del self.stderr[:-_STDERR_KEEP]
        out = bytes(self._stdout[:n])
        del self._stdout[:n]
        return out

    def _frame(self, deadline: float) -> tuple[int, bytes]:
        # Docker's stream framing without a TTY: 1 byte stream id, 3 zero bytes, 4-byte size.
        header = read_exact(self._sock.fileno(), 8, deadline)
        size = int.from_bytes(header[4:8], "big")
        if size > MAX_FRAME_BYTES:
            raise ProtocolError(f"the engine's stream frame announces {size} bytes")
        return header[0], read_exact(self._sock.fileno(), size, deadline)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class DockerSandbox(SupervisedSandbox):
    """One container on one engine, driven through its supervisor session."""

    def __init__(
        self,
        spec: SandboxSpec,
        *,
        engine: str | None = None,
        network_mode: str = "bridge",
        sandbox_id: str | None = None,
    ) -> None:
        self.id = sandbox_id or f"sbx-{uuid.uuid4().hex[:12]}"
        self.spec = spec
        self.engine = engine_url(engine)
        self.image = spec.image or f"agentsd/{spec.family.value}:latest"
        self.network_mode = network_mode if spec.network else "none"
        self.container: Any = None
        self._client: SupervisorClient | None = None
        self._transport: _ExecSocketTransport | None = None
        self._docker: Any = None

    def labels(self) -> dict[str, str]:
        """The spec's labels under agentsd., then agentsd's own, which always win."""
        labels = {f"agentsd.{k}": str(v) for k, v in self.spec.labels.items()}
        labels.update(
            {LABEL: self.id, "agentsd.owner": owner_identity(), "agentsd.created": f"{time.time():.3f}"}
        )
        return labels

    def start(self) -> None:
        if self.container is not None:
            return
        import docker.errors

        self._docker = docker_client(self.engine)
        family_image = self.image
        for attempt in (1, 2):
            if self.spec.build is not None:
                self.image = ensure_image(self._docker, self.engine, self.spec, family_image)
            try:
                self.container = self._create()
                break
            except docker.errors.ImageNotFound as exc:
                if self.spec.build is not None and attempt == 1:
                    continue  # pruned (build_cache) between ensure_image and now: built again, once
                raise SandboxError(
                    f"image {self.image} is not on the engine {self.engine}: "
                    "build it with scripts/build_images.sh"
                ) from exc
            except docker.errors.DockerException as exc:
                raise SandboxError(f"cannot create a sandbox on {self.engine}: {exc}") from exc
        assert self.container is not None
        try:
            retrying(self.container.start)()
            self._open_session()
        except BaseException:
            self.close()
            raise

    def _create(self) -> Any:
        """The episode's container, created (not started) from self.image."""
        from docker.types import Ulimit

        limits = self.spec.limits
        file_bytes = limits.disk_mb * 1024 * 1024
        tmpfs_opts = f"rw,exec,nosuid,size={limits.disk_mb}m,uid={AGENT_UID},gid={AGENT_GID}"
        return retrying(self._docker.containers.create)(
            self.image,
            command=["sleep", "infinity"],
            name=f"agentsd-{self.id}",
            labels=self.labels(),
            network_mode=self.network_mode,
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            nano_cpus=int(limits.cpus * 1e9),
            pids_limit=limits.pids,
            cap_drop=["ALL"],
            cap_add=_SUPERVISOR_CAPS,
            security_opt=["no-new-privileges"],
            user="0:0",  # init and its sleep: out of the agent's reach (it is uid 1000)
            shm_size=f"{limits.disk_mb}m",
            read_only=True,
            tmpfs={path: tmpfs_opts for path in writable_dirs(self.spec)},
            working_dir=self.spec.workdir,
            init=True,
            ulimits=[
                Ulimit(name="nofile", soft=1024, hard=1024),
                Ulimit(name="fsize", soft=file_bytes, hard=file_bytes),
            ],
        )

    def _open_session(self) -> None:
        api = self._docker.api
        session = [
            "timeout",
            "-k",
            "5",
            str(int(self.spec.limits.timeout_s) + 60),
            "python3",
            "-I",
            "-S",
            "-c",
            _BOOTSTRAP,
            supervisor_config(self.spec),
        ]
        exec_id = retrying(api.exec_create)(
            self.container.id,
            session,
            stdin=True,
            stdout=True,
            stderr=True,
            user="0:0",
            workdir=self.spec.workdir,
        )["Id"]
        self._transport = _ExecSocketTransport(retrying(api.exec_start)(exec_id, socket=True))
        source = SUPERVISOR_SOURCE.read_bytes()
        self._transport.send(b"%08x" % len(source) + source, time.monotonic() + _START_TIMEOUT_S)
        self._client = SupervisorClient(self.id, self.spec, self._transport, self._kill)
        self._client.open(_START_TIMEOUT_S)

    def _kill(self) -> str:
        said = bytes(self._transport.stderr).decode(errors="replace") if self._transport else ""
        self.close()
        return said

    def close(self) -> None:
        self._client = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        container, self.container = self.container, None
        if container is not None:
            import docker.errors

            with contextlib.suppress(docker.errors.NotFound):
                retrying(container.remove)(force=True, v=True)
