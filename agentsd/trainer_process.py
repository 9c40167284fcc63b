"""The trainer of `agentsd run` as a supervised child process.

Its stderr passes through to ours line by line while the last lines are kept, so when it dies the
run can say why. `watch` polls it from a daemon thread and calls back once if it exits before it was
told it may (`expect_exit`): `agentsd run` stops its collector within a poll interval of the
trainer's death instead of collecting to the end of the plan for nobody.

Not guaranteed: the trainer's stdout is not captured (it goes to ours); a trainer that hangs without
exiting is not detected (that is the trainer's own timeouts' job).
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

POLL_S = 0.5
TAIL_LINES = 40


class TrainerProcess:
    """A running trainer: its process, the tail of its stderr, and a watch for an early death."""

    def __init__(self, cmd: Sequence[str]) -> None:
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

    def watch(self, on_death: Callable[[int], None]) -> None:
        """Call `on_death(exit status)` (from a daemon thread) if the trainer exits before
        `expect_exit()`."""

        def poll() -> None:
            while not self._expected.is_set():
                code = self.proc.poll()
                if code is not None:
                    if not self._expected.is_set():
                        on_death(code)
                    return
                self._expected.wait(POLL_S)

        threading.Thread(target=poll, name="trainer-watch", daemon=True).start()

    def expect_exit(self) -> None:
        """From now on the trainer may exit (its work is done): no death is reported."""
        self._expected.set()

    def wait(self) -> int:
        code = self.proc.wait()
        self._relay.join(timeout=5)
        return code

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
