"""The trainer of `agentsd run` as a supervised child process.

Its stderr passes through to ours line by line while the last lines are kept, so when it dies the
run can say why. `watch` polls it from a daemon thread and calls back once if it exits before it was
told it may (`expect_exit`), or if it hangs: given a heartbeat file and a limit, a trainer whose
heartbeat has been silent longer than the limit is asked for its threads' stacks (SIGUSR1; they land
in its stderr tail), then stopped, and reported as hung. `agentsd run` stops its collector within a
poll interval of the trainer's death or hang instead of collecting to the end of the plan for
nobody. `wait` applies the same limit while the trainer trains what is left after collection.

Not guaranteed: the trainer's stdout is not captured (it goes to ours); a hang shorter than the
limit, or one inside a single step whose loop never comes back to beat, is found only at the limit
(the limit must exceed the longest step, model loading included).
"""

from __future__ import annotations

import collections
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agentsd.liveness import silent_for

POLL_S = 0.5
TAIL_LINES = 120  # a death's message, or a hung trainer's stacks (a few threads, ~20 frames each)
DUMP_WAIT_S = 3.0  # time for a hung trainer's stack dump to reach our tail before it is stopped
STOP_WAIT_S = 10.0  # SIGTERM, then SIGKILL


class TrainerProcess:
    """A running trainer: its process, the tail of its stderr, and a watch for an early death or a
    hang (no beat on `heartbeat` for `hang_s` seconds)."""

    def __init__(
        self, cmd: Sequence[str], *, heartbeat: Path | None = None, hang_s: float | None = None
    ) -> None:
        if (heartbeat is None) != (hang_s is None):
            raise ValueError("TrainerProcess: heartbeat and hang_s go together")
        self.heartbeat, self.hang_s = heartbeat, hang_s
        self.hung: str | None = None  # why it was stopped as hung, once it was
        self._hang_lock = threading.Lock()
        self._started = time.time()
        self.proc = subprocess.Popen(list(cmd), stderr=subprocess.PIPE)
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._expected = threading.Event()
        self._relay = threading.Thread(target=self._pass_stderr, name="trainer-stderr", daemon=True)
        self._relay.start()

    def _pass_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace")
            self._tail.append(line.rstrip("\n"))
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line)
                sys.stderr.flush()

    def watch(self, on_death: Callable[[str], None]) -> None:
        """Call `on_death(what happened)` (from a daemon thread) if the trainer exits before
        `expect_exit()` ("exited with status N") or hangs (what `hung` says)."""

        def poll() -> None:
            while not self._expected.is_set():
                code = self.proc.poll()
                if code is not None:
                    if not self._expected.is_set():
                        on_death(f"exited with status {code}")
                    return
                if self._stopped_if_hung():
                    assert self.hung is not None
                    on_death(self.hung)
                    return
                self._expected.wait(POLL_S)

        threading.Thread(target=poll, name="trainer-watch", daemon=True).start()

    def _stopped_if_hung(self) -> bool:
        """Whether the trainer hung; the first caller to find it so dumps its stacks and stops it."""
        if self.heartbeat is None or self.hang_s is None:
            return False
        with self._hang_lock:
            if self.hung is not None:
                return True
            silent = silent_for(self.heartbeat, self._started)
            if silent <= self.hang_s or self.proc.poll() is not None:
                return False
            self.hung = (
                f"hung: no sign of life for {silent:.0f} s (limit {self.hang_s:g} s), stopped after "
                "dumping its threads' stacks"
            )
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(DUMP_WAIT_S)  # it should not exit; this only gives the dump time
            self.proc.terminate()
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:  # hung where SIGTERM cannot reach it
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(STOP_WAIT_S)
            if self.proc.poll() is None:  # stuck in the kernel (a dead mount, a driver call)
                self.hung += f"; it does not die even of SIGKILL (pid {self.proc.pid}), left behind"
            return True

    def expect_exit(self) -> None:
        """From now on the trainer may exit (its work is done): no death is reported."""
        self._expected.set()

    def wait(self) -> int:
        """Its exit status, once it exits; a trainer that hangs meanwhile is stopped (see `hung`),
        and one that even SIGKILL cannot end is left behind (status -SIGKILL)."""
        while self.proc.poll() is None:
            if self._stopped_if_hung():
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(POLL_S)
        code = self.proc.poll()
        self._relay.join(timeout=5)
        return -signal.SIGKILL if code is None else code

    def stop(self) -> None:
        """Terminate it (it resumes from its last checkpoint next time)."""
        self._expected.set()
        if self.proc.poll() is None:
            self.proc.terminate()
        self.wait()

    def tail(self) -> str:
        """The last lines it wrote to stderr."""
        self._relay.join(timeout=2)
        return "\n".join(self._tail)
