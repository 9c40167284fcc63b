"""One episode's store writes, in order, off the collector's event loop.

Every episode of a collector shares one event loop; a store call made on it (a busy SQLite lock, a
slow PostgreSQL round trip) would stall every episode at once. `EpisodeWrites` runs an episode's
writes in worker threads, one after another in the order they were submitted, and lets the
episode go on while the newest one runs: `submit` first waits for the write before it, so at
most one write per episode is in flight (an episode whose store is slower than its turns slows
itself, never the others, and holds at most one unwritten turn). `flush` waits for the last write
and raises the first failure; a failed write fails every write after it (they are not attempted),
so the stored turns stay a prefix of the episode's.

Not guaranteed: ordering between episodes (only within one); that a write submitted before the
collector's process died reached the store (the turns a restart finds are a prefix, as after any
crash).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class EpisodeWrites:
    """A chain of store writes for one episode (see the module docstring)."""

    def __init__(self) -> None:
        self._last: asyncio.Future[Any] | None = None

    async def submit(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Start `write(*args, **kwargs)` in a thread once the write before it has finished; return
        as soon as it has started (raising the earlier write's failure, if it failed)."""
        await self.flush()
        self._last = asyncio.ensure_future(asyncio.to_thread(write, *args, **kwargs))
        # marked as seen: a write left running by a cancelled episode must not log "never retrieved"
        self._last.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def flush(self) -> None:
        """Wait for the last write submitted; its failure, if any, is raised here (and again on
        every later call: a chain that failed stays failed)."""
        if self._last is not None:
            await asyncio.shield(self._last)  # a cancelled episode still lets its write finish

    async def call(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `write` after every earlier write and wait for its result."""
        await self.submit(write, *args, **kwargs)
        assert self._last is not None
        return await asyncio.shield(self._last)
