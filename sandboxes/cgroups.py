"""Per-sandbox control groups: memory, process count and CPU limits for the local backend.

Works with cgroup v1 (one hierarchy per controller, as on this machine) and v2 (one unified
hierarchy). Every sandbox gets a group named agentsd/<sandbox id>@<owner pid>-<owner start ticks>
in each controller that is mounted and writable: the name itself says which process owns it, from
the moment it exists, so a reaper judges it by that owner's liveness and never by whether some
state directory holds a record of it. `in_force` says which limits were actually applied, so the
caller can log it. A limit that cannot be applied (no controller, no permission) is reported,
never pretended.

Not guaranteed: on a host where agentsd may not write /sys/fs/cgroup (not root, no delegation)
there are no memory, pids or CPU limits at all; the rlimits of the supervisor still apply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP_PARENT = "agentsd"
_CFS_PERIOD_US = 100_000


def _is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


@dataclass
class SandboxCgroup:
    """The control groups of one sandbox."""

    name: str
    dirs: list[Path] = field(default_factory=list)
    in_force: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, sandbox_id: str, *, owner: str, memory_mb: int, pids: int, cpus: float) -> SandboxCgroup:
        """owner: the host:pid:start-ticks of the process the sandbox belongs to (this host's)."""
        group = cls(group_name(sandbox_id, owner))
        wanted = {
            "memory": str(memory_mb * 1024 * 1024),
            "pids": str(pids),
            "cpu": f"{int(cpus * _CFS_PERIOD_US)} {_CFS_PERIOD_US}",
        }
        if _is_v2():
            group._create_v2(wanted)
        else:
            group._create_v1(wanted)
        return group

    def _create_v1(self, wanted: dict[str, str]) -> None:
        files = {
            "memory": ["memory.limit_in_bytes"],
            "pids": ["pids.max"],
            "cpu": ["cpu.cfs_period_us", "cpu.cfs_quota_us"],
        }
        for controller, value in wanted.items():
            base = CGROUP_ROOT / controller
            if not (base / "cgroup.procs").exists():
                self.missing[controller] = f"cgroup v1 controller {controller} is not mounted"
                continue
            directory = base / GROUP_PARENT / self.name
            try:
                directory.mkdir(parents=True, exist_ok=True)
                self.dirs.append(directory)
                if controller == "cpu":
                    quota, period = value.split()
                    (directory / "cpu.cfs_period_us").write_text(period)
                    (directory / "cpu.cfs_quota_us").write_text(quota)
                else:
                    (directory / files[controller][0]).write_text(value)
                    if controller == "memory" and (directory / "memory.memsw.limit_in_bytes").exists():
                        (directory / "memory.memsw.limit_in_bytes").write_text(value)
                self.in_force[controller] = value
            except OSError as exc:
                self.missing[controller] = f"cannot configure {directory}: {exc.strerror or exc}"

    def _create_v2(self, wanted: dict[str, str]) -> None:
        parent = CGROUP_ROOT / GROUP_PARENT
        try:
            parent.mkdir(exist_ok=True)
            available = set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
            enable = " ".join(f"+{c}" for c in ("memory", "pids", "cpu") if c in available)
            (CGROUP_ROOT / "cgroup.subtree_control").write_text(enable)
            (parent / "cgroup.subtree_control").write_text(enable)
            directory = parent / self.name
            directory.mkdir(exist_ok=True)
            self.dirs.append(directory)
        except OSError as exc:
            for controller in wanted:
                self.missing[controller] = (
                    f"cannot create a cgroup v2 group under {parent}: {exc.strerror or exc}"
                )
            return
        names = {"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max"}
        for controller, value in wanted.items():
            try:
                (directory / names[controller]).write_text(value)
                self.in_force[controller] = value
            except OSError as exc:
                self.missing[controller] = f"{names[controller]}: {exc.strerror or exc}"

    def procs_files(self) -> list[Path]:
        """The cgroup.procs files a process writes its pid into to join every group."""
        return [d / "cgroup.procs" for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in procs.read_text().split())
        return found

    def kill_all(self, timeout_s: float = 5.0) -> None:
        """SIGKILL every process in the groups until none is left (a fork bomb included)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for directory in self.dirs:
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # exiting processes still counted for a moment
        self.dirs = []


def group_name(sandbox_id: str, owner: str) -> str:
    _, pid, ticks = owner.split(":")
    return f"{sandbox_id}@{pid}-{ticks}"


def group_owner(name: str) -> tuple[str, str | None]:
    """(sandbox id, owner as host:pid:start-ticks on this host) of a group's name; owner None when
    the name records none."""
    sandbox_id, at, owner = name.partition("@")
    pid, _, ticks = owner.partition("-")
    if not at or not pid.isdigit() or not ticks.isdigit():
        return sandbox_id, None
    return sandbox_id, f"{socket.gethostname()}:{pid}:{ticks}"


def leftover_groups() -> list[Path]:
    """Group directories of sandboxes, in every controller (for the reaper)."""
    parents = [CGROUP_ROOT / GROUP_PARENT] if _is_v2() else list(CGROUP_ROOT.glob(f"*/{GROUP_PARENT}"))
    return [d for parent in parents if parent.is_dir() for d in parent.iterdir() if d.is_dir()]
