"""The collector: many episodes at once over the sandbox fleet, every turn into the replay store.

A collect run has a name and a plan: the suite's tasks times `repeats`, shuffled with `seed`, so the
plan is the same every time the run starts. The plan lives in the store (agentsd.store.leases): any
number of collectors, on any number of machines, started with the same run name share it, each
claiming one episode at a time under a lease its heartbeat extends. Episode n of run R writes
trajectory `R.n.a` (a = the attempt). An episode whose collector died (a pid gone on this host, or a
lease that expired anywhere) is claimed again: the claimer closes the silent attempt as
`interrupted` (turns kept) and runs the next one. A collector runs until the plan is done, so the
last ones wait for the episodes others hold, in case those die.

Episodes run as asyncio tasks (at most `concurrency` at once), their sandboxes leased from one
SandboxFleet for the run (engines, per-engine limits, warm pool, reaping at start); environments
step in threads; every policy call goes through one GenerationQueue that batches the requests of all
episodes waiting at that moment into one `generate` call. Policy versions: with `version_pickup:
episode` each episode samples with the version that was newest when it started, to its end, while
new episodes start on a new version at once (the queue serves each version's requests as a group and
switches the policy between groups; at most `max_live_versions` sample at once, the oldest episodes
switching to the newest beyond that); with `turn` every running episode moves to a new version at
its next turn.

`stop(reason)` (any thread) ends a run early: no new episode starts and running ones close at once
as `interrupted`, their stored turns kept, and go back to the plan, so another collector or a
restart reruns them as new attempts.

Not guaranteed: fairness between episodes beyond FIFO; a version published mid-episode in `turn`
mode shows up in the turns' versions, which is what the trainer's staleness correction is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentsd.agent import STOP_STRINGS, AgentLoop, ChatFormat, EpisodeLimits, EpisodeResult
from agentsd.config import CollectConfig, SamplingConfig
from agentsd.errors import StoreError, TrajectoryStateError
from agentsd.liveness import writer_identity
from agentsd.policies.base import Policy, PolicyError, base_version, load_checked
from agentsd.sandboxes.fleet import SandboxFleet
from agentsd.store import ReplayStore
from agentsd.store.leases import trajectory_id
from agentsd.tracking import NullTracker, Tracker
from agentsd.types import (
    Completion,
    EpisodeClaim,
    Family,
    LeaseState,
    PolicyVersion,
    Task,
    Termination,
    TrajectoryStatus,
    TrajectorySummary,
    Turn,
)

VERSION_POLL_S = 5.0
LOAD_RETRY_S = (30.0, 600.0)  # a version that failed to load is retried after 30 s, doubling to 10 min
BATCH_LINGER_S = 0.02  # how long the queue waits for more episodes to join a batch
PLAN_POLL_S = 1.0  # how often a collector with nothing to claim looks at the plan again
RECENT_STEPS = 5  # pacing: the trainer's last steps that say how many trajectories a step takes
VersionOf = int | Callable[[], int] | None  # a request's policy version, or how to find it when served

log = logging.getLogger("agentsd.collector")


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
    ) -> None:
        self.policy = policy
        self.sampling = sampling
        self.max_batch = max_batch
        self.before_batch = before_batch
        self.generate_as = generate_as
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
            await asyncio.sleep(BATCH_LINGER_S)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
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
            with _suppress_cancel():
                await self._worker


def _fail(requests: Sequence[tuple[Any, Any, asyncio.Future[Completion]]], exc: Exception) -> None:
    for _, _, future in requests:
        if not future.done():
            future.set_exception(exc)


class _suppress_cancel:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is asyncio.CancelledError


@dataclass
class CollectStats:
    planned: int = 0
    skipped: int = 0
    interrupted: int = 0
    episodes: int = 0
    turns: int = 0  # stored turns of this process's episodes, finished or running
    completion_tokens: int = 0
    rewards: list[float] = field(default_factory=list)
    version_load_failures: int = 0
    terminations: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    stopped: str | None = None  # why the run stopped before its plan was done (Collector.stop)
    backlog: int = 0  # untrained trajectories of this run (finished or running), at the last look
    pacing_waits: int = 0  # episodes that waited for the trainer before starting
    pacing_wait_s: float = 0.0

    @property
    def mean_reward(self) -> float:
        return sum(self.rewards) / len(self.rewards) if self.rewards else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / max(time.monotonic() - self.started, 1e-9)


def plan(tasks: Sequence[Task], repeats: int, shuffle: bool, seed: int) -> list[Task]:
    """The run's episodes in order: every task `repeats` times, shuffled reproducibly."""
    episodes = [task for task in tasks for _ in range(repeats)]
    if shuffle:
        random.Random(seed).shuffle(episodes)
    return episodes


class Collector:
    """Runs a collect run's plan to the end, resuming where an earlier process stopped."""

    def __init__(
        self,
        config: CollectConfig,
        policy: Policy,
        store: ReplayStore,
        tasks: Sequence[Task],
        *,
        run_name: str,
        tracker: Tracker | None = None,
        make_env: Callable[[Task, dict[str, str]], Any] | None = None,
        on_episode: Callable[[CollectStats], None] | None = None,
        judge: Any | None = None,
    ) -> None:
        if not tasks:
            raise ValueError("collect: the suite has no tasks")
        if "." in run_name or not run_name:
            raise ValueError(f"collect: run name {run_name!r} must be non-empty and contain no '.'")
        self.config = config
        self.policy = policy
        self.store = store
        self.run_name = run_name
        self.episodes = plan(tasks, config.repeats, config.shuffle, config.seed)
        self.tracker = tracker or NullTracker()
        self.make_env = make_env or self._default_env
        self.on_episode = on_episode
        self.judge = judge  # agentsd.eval.judge.Judge for rubric tasks' judge criteria, or None
        self.fmt = ChatFormat(policy.tokenizer, demonstration=config.demonstration)
        max_context = min(
            config.model.max_context, int(getattr(policy, "max_context", config.model.max_context))
        )
        self.limits = EpisodeLimits(
            max_turns=config.max_turns,
            timeout_s=config.episode_timeout_s,
            max_context=max_context,
            max_new_tokens=config.sampling.max_new_tokens,
            grade_on_truncation=config.grade_on_truncation,
        )
        self.stats = CollectStats(planned=len(self.episodes))
        self._running = 0
        self._last_poll = 0.0
        self._version_lock = asyncio.Lock()
        # versions: new episodes start on `current`; each running episode samples with its own
        self.current = policy.version
        self.episode_versions: dict[str, int] = {}  # running trajectory id -> the version it samples with
        self._versions: dict[int, PolicyVersion] = {0: base_version(policy.model_name)}
        self._switch_lock = threading.Lock()  # the policy serves one version at a time
        self._load_failures: dict[int, tuple[int, float]] = {}  # version -> (failures, retry after)
        self.holder = f"{writer_identity()}/{uuid.uuid4().hex[:8]}"  # this collector, in the plan's leases
        self._held: dict[int, asyncio.Future[None]] = {}  # episodes running here -> their tasks
        self._lost: set[int] = set()  # held episodes another collector took over
        self._loop: asyncio.AbstractEventLoop | None = None
        self._episode_tasks: list[asyncio.Future[None]] = []
        self.fleet: SandboxFleet | None = None  # the run's sandboxes, while `run` runs

    @property
    def running(self) -> int:
        """Episodes running now."""
        return self._running

    def stop(self, reason: str) -> None:
        """Stop the run from any thread: no new episode starts, running ones end now as
        `interrupted` (their stored turns stay) and `run` returns with `stats.stopped = reason`."""
        self.stats.stopped = self.stats.stopped or reason
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing runs
                loop.call_soon_threadsafe(self._cancel_episodes)

    def _cancel_episodes(self) -> None:
        for task in self._episode_tasks:
            task.cancel()

    # ------------------------------------------------------------------ the plan and its leases

    def open_plan(self) -> dict[LeaseState, int]:
        """Give the run's plan its rows in the store (idempotent; any collector of the run may be
        first) and count where its episodes stand; those done already are `stats.skipped`."""
        self.store.open_plan(self.run_name, len(self.episodes))
        counts = self.store.plan_counts(self.run_name)
        self.stats.skipped = counts[LeaseState.DONE]
        return counts

    def _claim(self) -> EpisodeClaim | None:
        """The next episode to run, claimed in the store. An episode taken over from a collector
        whose lease expired has its silent attempt closed as `interrupted` (turns kept), unless that
        attempt had finished after all (its collector died before saying so): then it is recorded as
        done and the next episode is claimed."""
        while True:
            claim = self.store.claim_episode(self.run_name, self.holder, self.config.lease_s)
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
                    self.stats.interrupted += 1
                    log.warning(
                        "%s: took over episode %d from %s",
                        self.run_name,
                        claim.episode,
                        claim.previous_holder,
                    )
                    return claim
            if summary.termination is Termination.INTERRUPTED:
                return claim
            self.store.settle_episode(
                self.run_name,
                claim.episode,
                self.holder,
                claim.attempt,
                state=LeaseState.DONE,
                attempt_after=claim.taken_over,
            )

    def _summary_or_none(self, tid: str) -> TrajectorySummary | None:
        try:
            return self.store.summary(tid)
        except TrajectoryStateError:
            return None

    def _plan_done(self) -> bool:
        counts = self.store.plan_counts(self.run_name)
        return counts[LeaseState.WAITING] == 0 and counts[LeaseState.RUNNING] == 0

    async def _heartbeats(self) -> None:
        """Extend this collector's leases every lease_s/4; an episode whose lease was taken over
        (this process was silent too long: stopped, partitioned) is cancelled without closing it,
        since the collector that took it over has closed it already."""
        while True:
            await asyncio.sleep(self.config.lease_s / 4)
            # only episodes held before the beat can be missing from its answer: one claimed while the
            # beat was in flight is not in it yet, and is not lost
            running = dict(self._held)
            try:
                held = await asyncio.to_thread(
                    self.store.heartbeat, self.run_name, self.holder, self.config.lease_s
                )
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

    # ------------------------------------------------------------------ running

    async def run(self) -> CollectStats:
        counts = await asyncio.to_thread(self.open_plan)
        self.tracker.log_params(
            {
                "run_name": self.run_name,
                "planned": len(self.episodes),
                "to_run": counts[LeaseState.WAITING] + counts[LeaseState.RUNNING],
                **self.config.model_dump(mode="json"),
            }
        )
        queue = GenerationQueue(
            self.policy,
            self.config.sampling,
            max_batch=getattr(self.config.policy, "max_batch", self.config.concurrency),
            before_batch=self._pickup_between_turns if self.config.version_pickup == "turn" else None,
            generate_as=self._generate_as,
        )
        starting = asyncio.Lock()
        # env steps, resets and closes run in threads: one per episode, plus the policy's calls
        # (the default executor has only cpu_count + 4 threads)
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=self.config.concurrency + 4, thread_name_prefix="episode")
        )
        self._loop = asyncio.get_running_loop()
        self.fleet = SandboxFleet(self.config.sandbox)  # reaps what a dead collector left first
        self._episode_tasks = [
            asyncio.ensure_future(self._worker(queue, starting)) for _ in range(self.config.concurrency)
        ]
        beating = asyncio.ensure_future(self._heartbeats())
        if self.stats.stopped:  # stopped before the run started
            self._cancel_episodes()
        try:
            outcomes = await asyncio.gather(*self._episode_tasks, return_exceptions=True)
        finally:
            beating.cancel()
            await queue.close()
            # claims a cancelled worker made but never ran go back to the plan
            await asyncio.to_thread(self.store.release_episodes, self.run_name, self.holder)
            await asyncio.to_thread(self.fleet.close)
        failures = [
            o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)
        ]
        if failures:
            raise failures[0]
        return self.stats

    async def _worker(self, queue: GenerationQueue, starting: asyncio.Lock) -> None:
        """Claim an episode, run it, repeat, until the plan is done (waiting while other collectors
        hold the last episodes: one of them may die and its episodes come back) or the run stops."""
        poll_s = min(self.config.lease_s / 4, PLAN_POLL_S)
        while not self.stats.stopped:
            claim = None
            # paced starts wait for the trainer: only when there is something to start
            if not self.config.pacing.enabled or await asyncio.to_thread(
                self.store.has_claimable, self.run_name
            ):
                async with starting:  # one start at a time: pacing counts every started episode
                    if self.config.version_pickup == "episode":
                        await self._pickup_for_new_episode()
                    if self.config.pacing.enabled:
                        await self._pace()
                    if self.stats.stopped:
                        return
                    claim = await asyncio.to_thread(self._claim)
                    if claim is not None:
                        self._running += 1
            if claim is None:  # others hold the rest (one may die and hand it back), or the plan is done
                if await asyncio.to_thread(self._plan_done):
                    return
                await asyncio.sleep(poll_s)
                continue
            episode = asyncio.ensure_future(self._episode(queue, claim))
            self._held[claim.episode] = episode
            try:
                await episode
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if (current is not None and current.cancelling()) or claim.episode not in self._lost:
                    raise  # the run stops
            finally:
                self._running -= 1
                self._held.pop(claim.episode, None)
                self._lost.discard(claim.episode)

    async def _episode(self, queue: GenerationQueue, claim: EpisodeClaim) -> None:
        episode, attempt = claim.episode, claim.attempt
        task = self.episodes[episode]
        tid = trajectory_id(self.run_name, episode, attempt)
        labels = {"run_id": self.run_name, "episode_id": tid}
        version = self.current
        self.episode_versions[tid] = version
        self._bound_live_versions()
        self.store.begin(
            task=task,
            policy_model=self.policy.model_name,
            version=version,
            trajectory_id=tid,
            meta={
                "temperature": self.config.sampling.temperature,
                "top_p": self.config.sampling.top_p,
                "collect_run": self.run_name,
                "episode": episode,
                "attempt": attempt,
                "family": task.family.value,
                "collector": self.holder,
            },
        )
        started = time.monotonic()
        try:
            result = await self._play(queue, task, tid, labels)
        except asyncio.CancelledError:  # stopped (Collector.stop, Ctrl-C) or the lease was lost
            if episode not in self._lost:  # the turns so far stay; the episode goes back to the plan
                with contextlib.suppress(TrajectoryStateError):
                    self.store.interrupt(tid, self.stats.stopped or "collector stopped")
                self.store.settle_episode(
                    self.run_name, episode, self.holder, attempt, state=LeaseState.WAITING
                )
            raise
        finally:
            self.episode_versions.pop(tid, None)
        duration = time.monotonic() - started
        try:
            self.store.finalize(
                tid,
                termination=result.termination,
                reward=result.reward,
                reward_components=result.reward_components,
                hindsight=result.hindsight,
                meta={
                    **{k: v for k, v in result.meta.items() if v is not None},
                    "duration_s": duration,
                    **({"error": result.feedback} if result.reward is None and result.feedback else {}),
                },
            )
        except TrajectoryStateError:  # closed by a collector that took the episode over
            log.warning(
                "%s: episode %d was taken over before it finished; its result is dropped",
                self.run_name,
                episode,
            )
            return
        self.store.settle_episode(self.run_name, episode, self.holder, attempt, state=LeaseState.DONE)
        self._record(result, duration)

    async def _play(
        self, queue: GenerationQueue, task: Task, tid: str, labels: dict[str, str]
    ) -> EpisodeResult:
        """One episode in its environment, every policy call with the episode's own version."""
        env = self.make_env(task, labels)

        async def generate(prompt: list[int]) -> Completion:
            return await queue.generate(prompt, lambda: self.episode_versions.get(tid, self.current))

        async def on_turn(turn: Turn) -> None:
            self.store.append_turn(tid, turn)
            self.stats.turns += 1
            self.stats.completion_tokens += len(turn.completion_ids)

        try:
            return await AgentLoop(self.fmt, generate, self.limits).run(env, task, on_turn)
        except Exception as exc:  # a bug in the loop itself: the trajectory still closes
            return EpisodeResult(Termination.AGENT_ERROR, None, [], feedback=f"agent loop failed: {exc!r}")
        finally:
            await asyncio.to_thread(env.close)

    def _record(self, result: EpisodeResult, duration: float) -> None:
        stats = self.stats
        stats.episodes += 1
        tokens = sum(len(t.completion_ids) for t in result.turns)
        if result.reward is not None:
            stats.rewards.append(result.reward)
        stats.terminations[result.termination.value] += 1
        self.tracker.log_metrics(
            {
                "episode/reward": result.reward if result.reward is not None else 0.0,
                "episode/turns": float(len(result.turns)),
                "episode/completion_tokens": float(tokens),
                "episode/duration_s": duration,
                "collect/mean_reward": stats.mean_reward,
                "collect/tokens_per_s": stats.tokens_per_s,
                "collect/version_load_failures": float(stats.version_load_failures),
                "collect/policy_version": float(self.current),
                "pacing/backlog": float(stats.backlog),
                "pacing/waits": float(stats.pacing_waits),
                "pacing/wait_s": stats.pacing_wait_s,
                "collect/live_versions": float(len({*self.episode_versions.values(), self.current})),
                **{f"termination/{k}": float(v) for k, v in stats.terminations.items()},
            },
            step=stats.episodes,
        )
        if self.on_episode is not None:
            self.on_episode(stats)

    # ------------------------------------------------------------------ pacing

    def expected_staleness(self) -> tuple[int, int]:
        """(backlog, the staleness an episode started now would have when trained): the trainer is
        at the newest version and trains the backlog ahead of it first, step by step, each step as
        large as its recent ones were (a trainer that steps on whatever has arrived drains a backlog
        in smaller bites than its batch size), never more than its batch."""
        pacing = self.config.pacing
        running = self.store.plan_counts(self.run_name)[LeaseState.RUNNING]  # every collector's
        backlog = running + self.store.count_untrained(
            id_prefix=f"{self.run_name}.", terminations=pacing.train_on
        )
        newest = self.store.latest_version(self.config.lineage)
        behind = (newest.version if newest else 0) - self.current
        recent = self.store.recent_step_sizes(RECENT_STEPS)
        per_step = (
            min(pacing.batch_trajectories, sum(recent) / len(recent)) if recent else pacing.batch_trajectories
        )
        return backlog, behind + math.ceil((backlog + 1) / max(per_step, 1.0)) - 1

    async def _pace(self) -> None:
        """Hold a new episode until it would be trained within K_max and the backlog is under
        `max_backlog` (running episodes are never held)."""
        pacing, waited_since = self.config.pacing, None
        while not self.stats.stopped:
            backlog, staleness = await asyncio.to_thread(self.expected_staleness)
            self.stats.backlog = backlog
            if staleness <= pacing.max_staleness and backlog < pacing.max_backlog:
                break
            if waited_since is None:
                waited_since = time.monotonic()
                self.stats.pacing_waits += 1
            await asyncio.sleep(pacing.poll_s)
            if self.config.version_pickup == "episode":
                await self._pickup_for_new_episode()  # the trainer has likely moved on meanwhile
        if waited_since is not None:
            self.stats.pacing_wait_s += time.monotonic() - waited_since

    # ------------------------------------------------------------------ versions
    # New episodes start on `current`, the newest version verified here; each running episode keeps
    # sampling with its own (`episode_versions`), and the queue switches the policy between them. A new
    # version is loaded (hash-checked) once when it is picked up; switching back to a version still in
    # use is the backend's cheap path (weights kept in memory, LoRA per request).

    def _newer_version(self) -> PolicyVersion | None:
        now = time.monotonic()
        if now - self._last_poll < VERSION_POLL_S:
            return None
        self._last_poll = now
        return self._loadable_newer()

    def _loadable_newer(self) -> PolicyVersion | None:
        """The newest version of the followed lineage (`version_lag` steps behind it) if it is newer
        than the one new episodes start on and not waiting out a failed load."""
        latest = self.store.latest_version(self.config.lineage)
        if latest is not None and self.config.version_lag:
            line = [v for v in self.store.versions() if v.lineage == latest.lineage]
            latest = line[-1 - self.config.version_lag] if len(line) > self.config.version_lag else None
        if latest is None or latest.version <= self.current:
            return None
        failed = self._load_failures.get(latest.version)
        if failed is not None and time.monotonic() < failed[1]:
            return None
        return latest

    def _load(self, version: PolicyVersion) -> bool:
        """Load `version` (hash-checked) and make it `current`. Any failure (files pruned or corrupt,
        a weights hash that does not match the store's, the backend refusing them) keeps the current
        version; the version is retried later with backoff (a newer one is tried at the next poll),
        and failures are counted in collect/version_load_failures."""
        with self._switch_lock:
            try:
                load_checked(self.policy, version)
            except Exception as exc:  # a bad version must never stop collection
                count = self._load_failures.get(version.version, (0, 0.0))[0] + 1
                delay = min(LOAD_RETRY_S[0] * 2 ** (count - 1), LOAD_RETRY_S[1])
                self._load_failures[version.version] = (count, time.monotonic() + delay)
                self.stats.version_load_failures += 1
                log.warning(
                    "version %d could not be loaded (%s); new episodes stay on version %d, retry in %.0f s",
                    version.version,
                    exc,
                    self.current,
                    delay,
                )
                return False
            self._load_failures.pop(version.version, None)
            self._versions[version.version] = version
            self.current = version.version
            return True

    def _generate_as(self, version: int, prompts: list[list[int]]) -> list[Completion]:
        """Sample `prompts` with `version` (the queue's worker thread): the switch and the sampling
        under one lock, so a version picked up meanwhile cannot swap the weights mid-batch."""
        with self._switch_lock:
            self._activate(version)
            return self.policy.generate(prompts, self.config.sampling, STOP_STRINGS)

    def _activate(self, version: int) -> None:
        """Make the policy serve `version` (the caller holds the switch lock). A version that no
        longer loads (its files pruned) hands its episodes to `current`."""
        if self.policy.version == version:
            return
        try:
            self.policy.load_version(self._version_record(version))
            return
        except Exception as exc:
            log.warning(
                "version %d no longer loads (%s): its episodes switch to version %d",
                version,
                exc,
                self.current,
            )
        self._move_episodes(version, self.current)
        if self.policy.version != self.current:
            self.policy.load_version(self._version_record(self.current))

    def _version_record(self, version: int) -> PolicyVersion:
        record = self._versions.get(version) or self.store.get_version(version)
        if record is None:
            raise PolicyError(f"version {version} is not in the store")
        self._versions[version] = record
        return record

    def _move_episodes(self, old: int, new: int) -> None:
        for tid, version in list(self.episode_versions.items()):
            if version == old:
                self.episode_versions[tid] = new

    def _bound_live_versions(self) -> None:
        """At most `max_live_versions` versions sample at once: episodes on the oldest ones switch to
        `current` (their next turns record it; the trainer's correction handles the mix)."""
        live = sorted({*self.episode_versions.values(), self.current})
        while len(live) > self.config.max_live_versions:
            oldest = live.pop(0)
            log.info(
                "max_live_versions=%d: episodes on version %d switch to version %d",
                self.config.max_live_versions,
                oldest,
                self.current,
            )
            self._move_episodes(oldest, self.current)

    def _pickup_between_turns(self) -> None:
        """turn mode: a newer version takes over every running episode at its next turn."""
        newer = self._newer_version()
        if newer is not None and self._load(newer):
            for tid in self.episode_versions:
                self.episode_versions[tid] = self.current

    async def _pickup_for_new_episode(self) -> None:
        """episode mode: a newer version becomes `current` before the episode starts; running episodes
        keep theirs."""
        async with self._version_lock:  # episodes starting at once load a new version once
            newer = self._newer_version()
            if newer is not None:
                await asyncio.to_thread(self._load, newer)

    def _default_env(self, task: Task, labels: dict[str, str]) -> Any:
        from agentsd.envs import env_class

        if task.family is Family.RUBRIC:  # one judge for the run, shared by every episode's env
            from agentsd.envs.rubric import RubricEnv

            return RubricEnv(fleet=self.fleet, sandbox=self.config.sandbox, labels=labels, judge=self.judge)
        return env_class(task.family)(fleet=self.fleet, sandbox=self.config.sandbox, labels=labels)
