"""Process identity and signs of life: who writes a trajectory or owns a sandbox, whether that
process still lives, and whether a process that lives still makes progress.

A process is recorded as host:pid:start-ticks. The start time (from /proc) tells a live process from
a reused pid. Liveness is only knowable on the same host; elsewhere it is None and callers fall back
on how long the trajectory has been silent or the sandbox has existed.

Progress is a heartbeat file whose modification time the worker moves from its main loop (`beat`),
never from a thread of its own, which would go on beating while the loop hangs; a watchdog reads how
long it has been silent (`silent_for`) and, before stopping it, asks it for every thread's stack
(`dump_stacks_on`). Standard library only: the store and the sandboxes both use this module, and
importing the sandboxes must not load SQLAlchemy.

Not guaranteed: a heartbeat says the loop turns, not that it does useful work; file times are
compared with this host's clock (watchdog and worker share a host).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import time
from pathlib import Path


def writer_identity() -> str:
    """host:pid:start-ticks of this process; the start time tells a live writer from a reused pid."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start_ticks(pid)}"


def writer_alive(writer: str) -> bool | None:
    """Whether the process named by writer_identity() still runs; None if it ran on another host."""
    host, _, rest = writer.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start == "" or _process_start_ticks(pid) == start


def beat(heartbeat: Path) -> None:
    """A sign of life: `heartbeat`'s modification time becomes now."""
    heartbeat.touch()


def silent_for(heartbeat: Path, since: float) -> float:
    """Seconds since the last beat on `heartbeat`, counting from `since` (a time.time() when the
    watch began) when there was none since: a file left by an earlier process is no sign of life."""
    try:
        last = heartbeat.stat().st_mtime
    except FileNotFoundError:
        last = since
    return time.time() - max(last, since)


def dump_stacks_on(sig: signal.Signals = signal.SIGUSR1) -> None:
    """Write every thread's stack to stderr when `sig` arrives: a watchdog about to stop this
    process as hung asks first, so the reason is in its last words."""
    faulthandler.register(sig, all_threads=True)


def _process_start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22 (starttime) counts after the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]
