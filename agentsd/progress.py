"""Live progress of collect, eval, train and run: what is happening, where a person looks.

`LiveStatus(title, snapshot)` asks `snapshot()` for the current figures (name -> text) every
second. On a terminal it shows them as a live table under the run's log lines (Rich Live; what other
threads write to stderr scrolls above it); anywhere else (a pipe, a log file, CI) it writes one line
of `name=value` pairs every `interval_s` seconds, and a last one when it stops.

Not guaranteed: figures are as fresh as the snapshot's sources (store queries are the caller's);
a snapshot that raises is shown as its error, never stops the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

REFRESH_S = 1.0
LOG_INTERVAL_S = 30.0

Snapshot = Callable[[], dict[str, str]]


class LiveStatus:
    """A status display fed by a snapshot function, live on a terminal, periodic lines elsewhere."""

    def __init__(
        self,
        title: str,
        snapshot: Snapshot,
        console: Console,
        *,
        interval_s: float = LOG_INTERVAL_S,
        live: bool | None = None,
    ) -> None:
        self.title = title
        self.snapshot = snapshot
        self.console = console
        self.interval_s = interval_s
        self.live = console.is_terminal if live is None else live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    def figures(self) -> dict[str, str]:
        try:
            return self.snapshot()
        except Exception as exc:  # the display must never stop the run
            return {"status": f"unavailable ({type(exc).__name__}: {exc})"}

    def table(self) -> Table:
        table = Table(title=self.title, show_header=False, box=None, padding=(0, 2), title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for name, value in self.figures().items():
            table.add_row(name, value)
        return table

    def line(self) -> str:
        return f"{self.title}: " + "  ".join(f"{k}={v}" for k, v in self.figures().items())

    def __enter__(self) -> LiveStatus:
        if self.live:
            self._live = Live(
                self.table(),
                console=self.console,
                refresh_per_second=2,
                transient=False,
                redirect_stderr=True,
                redirect_stdout=False,
            )
            self._live.__enter__()
        self._thread = threading.Thread(target=self._loop, name="agentsd-progress", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        last_line = time.monotonic()
        while not self._stop.wait(REFRESH_S):
            if self._live is not None:
                self._live.update(self.table())
            elif (now := time.monotonic()) - last_line >= self.interval_s:
                last_line = now
                self.console.print(self.line(), highlight=False, soft_wrap=True)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._live is not None:
            self._live.update(self.table())
            self._live.__exit__(kind, exc, tb)
        else:
            self.console.print(self.line(), highlight=False, soft_wrap=True)
