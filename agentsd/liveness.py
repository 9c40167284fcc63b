"""Process identity: who writes a trajectory or owns a sandbox, and whether that process still lives.

A process is recorded as host:pid:start-ticks. The start time (from /proc) tells a live process from
a reused pid. Liveness is only knowable on the same host; elsewhere it is None and callers fall back
on how long the trajectory has been silent or the sandbox has existed. Standard library only: the
store and the sandboxes both use it, and importing the sandboxes must not load SQLAlchemy.
"""

from __future__ import annotations

import os
import socket
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


def _process_start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22 (starttime) counts after the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]
