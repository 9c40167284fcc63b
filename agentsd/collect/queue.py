"""The generation queue: concurrent episodes' policy calls, batched into one `generate` call per
round and policy version.

Every episode of a collector awaits `GenerationQueue.generate(prompt, version)`; one worker task
takes what is queued (up to `max_batch`), groups it by the version each request samples with, and
serves each group in a thread, so the event loop never blocks on the model. A failed call fails
every request of its group (or of its round, when the hook before a round fails) and the queue
serves the next round.

How long a round waits for more requests: the backends batch statically (a round's requests start
and end together), so an episode that misses a round waits a whole round (a full decode) for the
next one. Episodes step their environments between turns for tens to hundreds of milliseconds, so
when the collector says how many requests to expect (`expected`: its running episodes), a round
waits for them, up to BATCH_WAIT_S; without it, a short linger (BATCH_LINGER_S).

Not guaranteed: fairness beyond FIFO within a round; that a version asked for lazily (a function)
is the one the episode started with (it is asked when the round is served, after `before_batch`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from agentsd.agent import STOP_STRINGS
from agentsd.config import SamplingConfig
from agentsd.policies.base import Policy
from agentsd.types import Completion

BATCH_LINGER_S = 0.02  # without `expected`: how long the queue waits for more episodes to join a round
BATCH_WAIT_S = 0.25  # with it: the longest a round waits for running episodes still stepping their envs
VersionOf = int | Callable[[], int] | None  # a request's policy version, or how to find it when served


class GenerationQueue:
    """Batches concurrent episodes' policy calls into one `generate` call per round and version.

    Each request names the policy version its episode samples with (or a function giving it, asked
    when the round is served, after `before_batch`); a round serves its requests grouped by version,
    each group by `generate_as(version, prompts)`, which switches the policy and samples with it
    without another switch in between. Without it every request is served by whatever the policy
    serves."""

    def __init__(
        self,
        policy: Policy,
        sampling: SamplingConfig,
        max_batch: int,
        before_batch: Callable[[], None] | None = None,
        generate_as: Callable[[int, list[list[int]]], list[Completion]] | None = None,
        expected: Callable[[], int] | None = None,
    ) -> None:
        self.policy = policy
        self.sampling = sampling
        self.max_batch = max_batch
        self.before_batch = before_batch
        self.generate_as = generate_as
        self.expected = expected
        self._queue: asyncio.Queue[tuple[list[int], VersionOf, asyncio.Future[Completion]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes of generate calls, for tests and the benchmark

    async def generate(self, prompt: list[int], version: VersionOf = None) -> Completion:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve())
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        await self._queue.put((prompt, version, future))
        return await future

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await self._gather(batch)
            try:
                if self.before_batch is not None:
                    await asyncio.to_thread(self.before_batch)
            except Exception as exc:
                _fail(batch, exc)
                continue
            groups: dict[int | None, list[tuple[list[int], VersionOf, asyncio.Future[Completion]]]] = {}
            for request in batch:
                version = request[1]() if callable(request[1]) else request[1]
                groups.setdefault(version, []).append(request)
            for version, group in groups.items():
                await self._serve_group(version, group)

    async def _gather(self, batch: list[tuple[list[int], VersionOf, asyncio.Future[Completion]]]) -> None:
        """Add to `batch` the requests that join this round: those `expected` (as they arrive, up to
        BATCH_WAIT_S), or without it those queued after BATCH_LINGER_S; then whatever else is queued,
        up to `max_batch`."""
        if self.expected is None:
            await asyncio.sleep(BATCH_LINGER_S)
        else:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + BATCH_WAIT_S
            while len(batch) < min(self.max_batch, self.expected()):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _serve_group(
        self, version: int | None, group: list[tuple[list[int], VersionOf, asyncio.Future[Completion]]]
    ) -> None:
        self.batches.append(len(group))
        prompts = [p for p, _, _ in group]
        try:
            if self.generate_as is not None and version is not None:
                completions = await asyncio.to_thread(self.generate_as, version, prompts)
            else:
                completions = await asyncio.to_thread(
                    self.policy.generate, prompts, self.sampling, STOP_STRINGS
                )
        except Exception as exc:
            _fail(group, exc)
            return
        for (_, _, future), completion in zip(group, completions, strict=True):
            if not future.done():
                future.set_result(completion)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


def _fail(requests: Sequence[tuple[Any, Any, asyncio.Future[Completion]]], exc: Exception) -> None:
    for _, _, future in requests:
        if not future.done():
            future.set_exception(exc)
