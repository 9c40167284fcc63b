"""A collect run's plan and this collector's leases on its episodes (agentsd.store.leases holds
the rows).

The plan is the suite's tasks times `repeats`, shuffled with `seed` (`plan`): the same list every
time a run of that name starts, on any machine. `EpisodeLeases` is one collector's side of it: it
opens the plan's rows, claims the next episode (closing the silent attempt of a collector whose
lease expired as `interrupted`, or recording it done when it had finished after all), keeps its
leases alive with a heartbeat every lease_s/4, and cancels the local task of an episode whose lease
another collector took over.

Not guaranteed: that a lease is never lost while its episode still runs here (a process silent for
longer than lease_s loses it; the episode's result is then dropped, and the taker reruns it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Sequence

from agentsd.errors import StoreError, TrajectoryStateError
from agentsd.liveness import writer_identity
from agentsd.store import ReplayStore
from agentsd.store.leases import trajectory_id
from agentsd.types import EpisodeClaim, LeaseState, Task, Termination, TrajectoryStatus, TrajectorySummary

log = logging.getLogger("agentsd.collect.collector")


def plan(tasks: Sequence[Task], repeats: int, shuffle: bool, seed: int) -> list[Task]:
    """The run's episodes in order: every task `repeats` times, shuffled reproducibly."""
    episodes = [task for task in tasks for _ in range(repeats)]
    if shuffle:
        random.Random(seed).shuffle(episodes)
    return episodes


class EpisodeLeases:
    """One collector's leases on the episodes of run `run_name` (module doc)."""

    def __init__(
        self,
        store: ReplayStore,
        run_name: str,
        lease_s: float,
        on_takeover: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.run_name = run_name
        self.lease_s = lease_s
        self.on_takeover = on_takeover  # a silent attempt of another collector was closed here
        self.holder = f"{writer_identity()}/{uuid.uuid4().hex[:8]}"  # this collector, in the leases
        self._held: dict[int, asyncio.Future[None]] = {}  # episodes running here -> their tasks
        self._lost: set[int] = set()  # held episodes another collector took over

    def hold(self, episode: int, task: asyncio.Future[None]) -> None:
        """`task` runs `episode` here: the heartbeat cancels it if another collector takes it over."""
        self._held[episode] = task

    def let_go(self, episode: int) -> None:
        """`episode`'s task has ended here (settled, handed back or lost)."""
        self._held.pop(episode, None)
        self._lost.discard(episode)

    def was_lost(self, episode: int) -> bool:
        """Whether `episode`, held here, was taken over by another collector (its task cancelled)."""
        return episode in self._lost

    def open(self, episodes: int) -> dict[LeaseState, int]:
        """Give the plan's `episodes` their rows (idempotent; any collector of the run may be first)
        and count where they stand."""
        self.store.open_plan(self.run_name, episodes)
        return self.store.plan_counts(self.run_name)

    def claim(self) -> EpisodeClaim | None:
        """The next episode to run, claimed in the store. An episode taken over from a collector
        whose lease expired has its silent attempt closed as `interrupted` (turns kept), unless that
        attempt had finished after all (its collector died before saying so): then it is recorded as
        done and the next episode is claimed."""
        while True:
            claim = self.store.claim_episode(self.run_name, self.holder, self.lease_s)
            if claim is None or claim.taken_over is None:
                return claim
            old = trajectory_id(self.run_name, claim.episode, claim.taken_over)
            summary = self._summary_or_none(old)
            if summary is None:  # its collector claimed it and died before beginning it
                return claim
            if summary.status is TrajectoryStatus.RUNNING:
                try:
                    self.store.interrupt(
                        old,
                        f"the lease of collector {claim.previous_holder} expired (it died or fell silent)",
                    )
                except TrajectoryStateError:  # it finished while we looked
                    summary = self.store.summary(old)
                else:
                    self.on_takeover()
                    log.warning(
                        "%s: took over episode %d from %s",
                        self.run_name,
                        claim.episode,
                        claim.previous_holder,
                    )
                    return claim
            if summary.termination is Termination.INTERRUPTED:
                return claim
            self.settle(claim.episode, claim.attempt, LeaseState.DONE, attempt_after=claim.taken_over)

    def settle(
        self, episode: int, attempt: int, state: LeaseState, *, attempt_after: int | None = None
    ) -> bool:
        """End this collector's lease on `episode`: DONE, or WAITING to hand it back to the plan
        (ReplayStore.settle_episode); False when the lease is no longer this collector's."""
        return self.store.settle_episode(
            self.run_name, episode, self.holder, attempt, state=state, attempt_after=attempt_after
        )

    def release(self) -> int:
        """Hand back every episode this collector still holds (claimed but not settled); how many."""
        return self.store.release_episodes(self.run_name, self.holder)

    def _summary_or_none(self, tid: str) -> TrajectorySummary | None:
        try:
            return self.store.summary(tid)
        except TrajectoryStateError:
            return None

    def done(self) -> bool:
        """Every episode of the plan is done (none waits, none runs anywhere)."""
        counts = self.store.plan_counts(self.run_name)
        return counts[LeaseState.WAITING] == 0 and counts[LeaseState.RUNNING] == 0

    async def keep_alive(self) -> None:
        """Extend this collector's leases every lease_s/4; an episode whose lease was taken over
        (this process was silent too long: stopped, partitioned) is cancelled without closing it,
        since the collector that took it over has closed it already."""
        while True:
            await asyncio.sleep(self.lease_s / 4)
            # only episodes held before the beat can be missing from its answer: one claimed while the
            # beat was in flight is not in it yet, and is not lost
            running = dict(self._held)
            try:
                held = await asyncio.to_thread(self.store.heartbeat, self.run_name, self.holder, self.lease_s)
            except StoreError as exc:  # the store is unreachable: beat again soon, leases may expire
                log.warning("%s: heartbeat failed: %s", self.run_name, exc)
                continue
            for episode, task in running.items():
                if episode not in held and not task.done() and self._held.get(episode) is task:
                    log.warning(
                        "%s: lost the lease on episode %d; another collector reruns it",
                        self.run_name,
                        episode,
                    )
                    self._lost.add(episode)
                    task.cancel()
