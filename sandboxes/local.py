"""The `local` sandbox backend: bubblewrap namespaces on this machine, no container engine needed.

Each sandbox is one bwrap process tree: new user, PID, network, IPC, UTS and mount namespaces; the
host's /usr, /etc and library directories (or a prepared rootfs, or a task's built environment: its
overlay layers mounted read-only over the host's in a mount namespace of the sandbox's own,
sandboxes/local_build.py) mounted read-only; private, size-limited tmpfs mounts for the workspace,
/tmp, /var/tmp and /dev/shm; all capabilities dropped; uid 1000 inside. The whole tree runs as one
unprivileged host user (`host_user`, created by scripts/setup.sh) when agentsd runs as root: the
cgroup is joined as root, then the launcher drops to that user (setpriv: uid, gid, no supplementary
groups, no capabilities) before bwrap starts, so nothing inside has host uid 0 behind it: /proc/sys,
/proc/sysrq-trigger and root-only host files are closed to it by the kernel's own owner checks. It
dies with the process that started it (--die-with-parent). Memory, process count and CPU are limited
by a per-sandbox cgroup where the host allows it (sandboxes/cgroups.py), whose name records the
owner process, so the reaper judges a sandbox by its owner's liveness alone; the log says which
limits are in force. Inside runs the supervisor (sandboxes/supervisor.py), non-dumpable, over an
authenticated channel; what bwrap and it write to stderr goes into a pipe (at most a pipe buffer,
never the host's disk).

Not protected against: kernel exploits (namespaces share the host kernel); reading world-readable
files under the host's /usr and /etc; CPU contention beyond the cgroup quota; what the kernel
counts per uid (every local sandbox is the same host user). The supervisor shares the agent's uid
but is the sandbox's init (--as-pid-1) and non-dumpable: the agent can neither signal nor trace it.
Without writable cgroups there is no memory or process-count limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from agentsd.sandboxes.base import (
    AGENT_GID,
    AGENT_UID,
    DEFAULT_PATH,
    SUPERVISOR_PATH,
    SUPERVISOR_SOURCE,
    SandboxError,
    StateFile,
    owner_identity,
    rlimits,
    state_dir,
    supervisor_config,
    writable_dirs,
)
from agentsd.sandboxes.cgroups import SandboxCgroup
from agentsd.sandboxes.channel import SupervisedSandbox, SupervisorClient, read_exact, write_all
from agentsd.sandboxes.local_build import HOST_DIRS, ensure_built, mount_script
from agentsd.types import SandboxSpec

log = logging.getLogger("agentsd.sandbox")

DEFAULT_HOST_USER = "agentsd-sandbox"
_START_TIMEOUT_S = 30.0
_STDERR_KEEP = 4096
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def host_credentials(host_user: str) -> tuple[int, int] | None:
    """(uid, gid) to drop to before bwrap starts; None when agentsd is not root (it already is
    unprivileged). Refuses uid 0 and a user that does not exist, naming the fix."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwuid(int(host_user)) if host_user.isdigit() else pwd.getpwnam(host_user)
    except (KeyError, ValueError):
        if host_user.isdigit():
            return int(host_user), int(host_user)
        raise SandboxError(
            f"sandbox.host_user {host_user!r} does not exist: local sandboxes started by root run as an "
            f"unprivileged host user; create it (scripts/setup.sh does: useradd --system {host_user}) "
            "or set sandbox.host_user to another unprivileged user or uid"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SandboxError(f"sandbox.host_user {host_user!r} is root: it must be an unprivileged user")
    return entry.pw_uid, entry.pw_gid


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen from one long-lived thread: --die-with-parent fires when the *thread* that started
    bwrap exits, so sandboxes must not be started from short-lived worker threads."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentsd-sandbox-spawner")
    return cast("subprocess.Popen[bytes]", _spawner.submit(subprocess.Popen, argv, **kwargs).result())


class _PipeTransport:
    """The supervisor's stdin/stdout pipes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._in, self._out = proc.stdin.fileno(), proc.stdout.fileno()
        os.set_blocking(self._in, False)

    def send(self, data: bytes, deadline: float) -> None:
        write_all(self._in, data, deadline)

    def read(self, n: int, deadline: float) -> bytes:
        return read_exact(self._out, n, deadline)


class LocalSandbox(SupervisedSandbox):
    """One bubblewrap sandbox driven through its supervisor."""

    def __init__(
        self,
        spec: SandboxSpec,
        *,
        rootfs: Path | None = None,
        sandbox_id: str | None = None,
        host_user: str = DEFAULT_HOST_USER,
    ) -> None:
        self.id = sandbox_id or f"sbx-{uuid.uuid4().hex[:12]}"
        if not _SANDBOX_ID.match(self.id):
            raise ValueError(f"sandbox id {self.id!r}: expected 1-64 letters, digits, '_' or '-'")
        self.spec = spec
        self.rootfs = rootfs
        self.host_user = host_user
        self.limits_in_force: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: SupervisorClient | None = None
        self._cgroup: SandboxCgroup | None = None
        self._state = StateFile(state_dir(), self.id)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        if self._proc is not None:
            return
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError("the local sandbox needs bubblewrap: apt-get install bubblewrap")
        built = ensure_built(self.spec) if self.spec.build is not None else None
        if built is not None:
            self.rootfs = built / "root"
        elif self.rootfs is not None and not (self.rootfs / "usr/bin/python3").exists():
            raise SandboxError(f"rootfs {self.rootfs} has no usr/bin/python3 (the supervisor needs it)")
        credentials = host_credentials(self.host_user)
        launcher = [bwrap]
        if credentials is not None:
            setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
            uid, gid = credentials
            launcher = [
                setpriv,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                bwrap,
            ]
        if built is not None:  # the build's layers, read-only, in a mount namespace of this sandbox's own
            mounts = mount_script(built, writable=False) + '\nexec "$@"'
            unshare = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", mounts]
            launcher = [*unshare, "agentsd-layers", *launcher]
        limits = self.spec.limits
        owner = owner_identity()
        self._state.write({"id": self.id, "owner": owner, "labels": self.spec.labels, "backend": "local"})
        self._cgroup = SandboxCgroup.create(
            self.id, owner=owner, memory_mb=limits.memory_mb, pids=limits.pids, cpus=limits.cpus
        )
        self.limits_in_force = {
            **self._cgroup.in_force,
            **{f"rlimit_{k}": str(v) for k, v in rlimits(self.spec).items()},
            "disk_tmpfs_bytes": str(limits.disk_mb * 1024 * 1024),
            "network": "host network" if self.spec.network else "none",
            "host_uid": str(credentials[0] if credentials else os.geteuid()),
        }
        for controller, why in self._cgroup.missing.items():
            log.warning("sandbox %s: no %s limit: %s", self.id, controller, why)
        log.info("sandbox %s: limits in force %s", self.id, self.limits_in_force)
        # A shell joins the cgroups as root, then becomes the launcher: nothing runs outside the
        # limits, and nothing past the join keeps root.
        join = 'for f in $AGENTSD_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; exec "$@"'
        procs = " ".join(str(p) for p in self._cgroup.procs_files())
        # The supervisor's source travels as a memfd, so the unprivileged user need not read the
        # checkout (which may sit under a private home directory).
        source = os.memfd_create("agentsd-supervisor", 0)
        try:
            os.write(source, SUPERVISOR_SOURCE.read_bytes())
            os.lseek(source, 0, os.SEEK_SET)
            self._proc = _spawn(
                ["/bin/sh", "-c", join, "agentsd-sandbox", *launcher, *self._bwrap_args(source)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"AGENTSD_CGROUP_PROCS": procs, "PATH": DEFAULT_PATH},
                cwd="/",
                pass_fds=(source,),
                start_new_session=True,
            )
            assert self._proc.stderr is not None
            os.set_blocking(self._proc.stderr.fileno(), False)
            self._client = SupervisorClient(self.id, self.spec, _PipeTransport(self._proc), self._kill)
            self._client.open(_START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(source)

    def _bwrap_args(self, source_fd: int) -> list[str]:
        limits = self.spec.limits
        tmpfs_bytes = str(limits.disk_mb * 1024 * 1024)
        args = [
            "--die-with-parent",
            "--new-session",
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(AGENT_UID),
            "--gid",
            str(AGENT_GID),
            "--cap-drop",
            "ALL",
            "--hostname",
            "sandbox",
            "--as-pid-1",  # the supervisor is init: no other init for the agent (same uid) to take over
        ]
        if self.spec.network:
            args.append("--share-net")
        if self.rootfs is not None:
            args += ["--ro-bind", str(self.rootfs), "/"]
        else:
            for name in HOST_DIRS:
                host = Path("/") / name
                if host.is_symlink():
                    args += ["--symlink", os.readlink(host), f"/{name}"]
                elif host.is_dir():
                    args += ["--ro-bind", str(host), f"/{name}"]
        # /proc/sys read-only: a bind of the host's, whose files answer with the reader's own
        # namespaces (ipc, net, pid sysctls of the sandbox) but can no longer be written at all.
        args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]
        args += ["--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger", "--dev", "/dev"]
        args += ["--size", tmpfs_bytes, "--perms", "1777", "--tmpfs", "/dev/shm"]
        for mount in writable_dirs(self.spec):
            args += ["--size", tmpfs_bytes, "--tmpfs", mount]
        args += ["--perms", "0444", "--ro-bind-data", str(source_fd), SUPERVISOR_PATH]
        args += ["--remount-ro", "/", "--chdir", self.spec.workdir]  # bwrap's own root tmpfs, too
        args += ["--", "/usr/bin/python3", "-I", "-S", SUPERVISOR_PATH, supervisor_config(self.spec)]
        return args

    def kill_agent(self) -> int:
        """The supervisor's kill_agent, then the host's own witness: the sandbox's cgroup must hold
        nothing but bwrap's monitor and the supervisor."""
        killed = self._session().kill_agent()
        if self._cgroup is None or not self._cgroup.dirs:
            return killed
        deadline = time.monotonic() + 2.0
        while len(left := self._cgroup.pids()) > 2:
            if time.monotonic() > deadline:
                said = self._kill().strip()
                raise SandboxError(
                    f"sandbox {self.id}: {len(left) - 2} processes outlived kill_agent in its cgroup; "
                    f"it was killed" + (f"\n{said}" if said else "")
                )
            time.sleep(0.02)
        return killed

    def _kill(self) -> str:
        """End the sandbox; returns the tail of what bwrap and the supervisor wrote to stderr."""
        said = b""
        if self._proc is not None and self._proc.stderr is not None:
            with contextlib.suppress(OSError, TypeError):
                said = os.read(self._proc.stderr.fileno(), 1 << 16) or b""
        self.close()
        return said[-_STDERR_KEEP:].decode(errors="replace")

    def close(self) -> None:
        self._client = None
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        self._state.remove()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None
