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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentsd.agent import AgentLoop, ChatFormat, EpisodeLimits, EpisodeResult
from agentsd.collect.pacing import expected_staleness
from agentsd.collect.plan import EpisodeLeases, plan
from agentsd.collect.queue import GenerationQueue
from agentsd.collect.stats import CollectStats
from agentsd.collect.versions import EpisodeVersions
from agentsd.collect.writes import EpisodeWrites
from agentsd.config import CollectConfig
from agentsd.envs import env_class
from agentsd.envs.rubric import RubricEnv
from agentsd.envs.rubric_grading import RubricJudge
from agentsd.errors import TrajectoryStateError
from agentsd.policies.base import Policy
from agentsd.sandboxes.fleet import SandboxFleet
from agentsd.sdpo.hindsight import PromptContext, insert_context
from agentsd.store import ReplayStore
from agentsd.store.leases import trajectory_id
from agentsd.tracking import NullTracker, Tracker
from agentsd.types import (
    PROMPT_CONTEXT_META,
    Completion,
    EpisodeClaim,
    Family,
    LeaseState,
    Task,
    Termination,
    Turn,
)

PLAN_POLL_S = 1.0  # how often a collector with nothing to claim looks at the plan again

log = logging.getLogger("agentsd.collect.collector")


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
        judge: RubricJudge | None = None,
        prompt_context: Callable[[Task], PromptContext] | None = None,
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
        # token ids the policy sees in each task's prompt, by layout position (agentsd gap's teacher
        # pass): the stored prompts stay the student's, so such trajectories are marked and never
        # trained on
        self.prompt_context = prompt_context
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
        # new episodes start on the newest version; each running episode samples with its own
        self.versions = EpisodeVersions(policy, store, config, on_load_failure=self._count_load_failure)
        self.leases = EpisodeLeases(store, run_name, config.lease_s, on_takeover=self._count_takeover)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._episode_tasks: list[asyncio.Future[None]] = []
        self.fleet: SandboxFleet | None = None  # the run's sandboxes, while `run` runs

    @property
    def current(self) -> int:
        """The version new episodes start on."""
        return self.versions.current

    @property
    def holder(self) -> str:
        """This collector, as the plan's leases name it."""
        return self.leases.holder

    @property
    def episode_versions(self) -> dict[str, int]:
        """Running trajectory id -> the version it samples with."""
        return self.versions.episode_versions

    def _count_load_failure(self) -> None:
        self.stats.version_load_failures += 1

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
        counts = self.leases.open(len(self.episodes))
        self.stats.skipped = counts[LeaseState.DONE]
        return counts

    def _count_takeover(self) -> None:
        self.stats.interrupted += 1

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
            before_batch=self.versions.pickup_between_turns if self.config.version_pickup == "turn" else None,
            generate_as=self.versions.generate_as,
            expected=lambda: self._running,
        )
        queue.batches = self.stats.batch_sizes  # filled as rounds are served
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
        beating = asyncio.ensure_future(self.leases.keep_alive())
        if self.stats.stopped:  # stopped before the run started
            self._cancel_episodes()
        try:
            outcomes = await asyncio.gather(*self._episode_tasks, return_exceptions=True)
        finally:
            beating.cancel()
            await queue.close()
            # claims a cancelled worker made but never ran go back to the plan
            await asyncio.to_thread(self.leases.release)
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
                        await self.versions.pickup_for_new_episode()
                    if self.config.pacing.enabled:
                        await self._pace()
                    if self.stats.stopped:
                        return
                    claim = await asyncio.to_thread(self.leases.claim)
                    if claim is not None:
                        self._running += 1
            if claim is None:  # others hold the rest (one may die and hand it back), or the plan is done
                if await asyncio.to_thread(self.leases.done):
                    return
                await asyncio.sleep(poll_s)
                continue
            episode = asyncio.ensure_future(self._episode(queue, claim))
            self.leases.hold(claim.episode, episode)
            try:
                await episode
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if (current is not None and current.cancelling()) or not self.leases.was_lost(claim.episode):
                    raise  # the run stops
            finally:
                self._running -= 1
                self.leases.let_go(claim.episode)

    async def _episode(self, queue: GenerationQueue, claim: EpisodeClaim) -> None:
        episode, attempt = claim.episode, claim.attempt
        task = self.episodes[episode]
        tid = trajectory_id(self.run_name, episode, attempt)
        labels = {"run_id": self.run_name, "episode_id": tid}
        version = self.versions.start(tid)
        context = dict(self.prompt_context(task)) if self.prompt_context is not None else {}
        # (the gap builds an example only for a student whose layout placed one: same format, same keys)
        context_tokens = sum(len(ids) for ids in context.values())
        writes = EpisodeWrites()  # this episode's store writes, in order, off the event loop
        await writes.call(
            self.store.begin,
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
                **({PROMPT_CONTEXT_META: context_tokens} if context_tokens else {}),
            },
        )
        started = time.monotonic()
        try:
            result = await self._play(queue, task, tid, labels, context, writes)
        except asyncio.CancelledError:  # stopped (Collector.stop, Ctrl-C) or the lease was lost
            if not self.leases.was_lost(episode):  # the turns so far stay; the episode goes back to the plan
                with contextlib.suppress(TrajectoryStateError):
                    await writes.call(self.store.interrupt, tid, self.stats.stopped or "collector stopped")
                await asyncio.to_thread(self.leases.settle, episode, attempt, LeaseState.WAITING)
            raise
        finally:
            self.versions.finish(tid)
        duration = time.monotonic() - started
        meta = {
            **{k: v for k, v in result.meta.items() if v is not None},
            "duration_s": duration,
            **({"error": result.feedback} if result.reward is None and result.feedback else {}),
        }

        def finish() -> None:  # one thread hop: the plan hears of the outcome right after the store
            self.store.finalize(
                tid,
                termination=result.termination,
                reward=result.reward,
                reward_components=result.reward_components,
                hindsight=result.hindsight,
                meta=meta,
            )
            self.leases.settle(episode, attempt, LeaseState.DONE)

        try:
            await writes.call(finish)
        except TrajectoryStateError:  # closed by a collector that took the episode over
            log.warning(
                "%s: episode %d was taken over before it finished; its result is dropped",
                self.run_name,
                episode,
            )
            return
        self._record(result, duration)

    async def _play(
        self,
        queue: GenerationQueue,
        task: Task,
        tid: str,
        labels: dict[str, str],
        context: PromptContext,
        writes: EpisodeWrites,
    ) -> EpisodeResult:
        """One episode in its environment, every policy call with the episode's own version (and
        `context`, when given, inserted into every prompt at its layout positions)."""
        env = self.make_env(task, labels)
        layout: dict[str, int] = {}

        async def generate(prompt: list[int]) -> Completion:
            if context:  # every prompt, compacted ones too, starts with the first prompt's layout
                # the shared format's layout is this episode's until its first call (no await falls
                # between the first prompt and it): kept, so other episodes' first prompts cannot move it
                if not layout:
                    layout.update(self.fmt.layout)
                prompt = insert_context(prompt, context, layout)
            return await queue.generate(prompt, lambda: self.versions.version_of(tid))

        async def on_turn(turn: Turn) -> None:
            await writes.submit(self.store.append_turn, tid, turn)  # the episode goes on meanwhile
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
                "collect/live_versions": float(self.versions.live()),
                **{f"termination/{k}": float(v) for k, v in stats.terminations.items()},
            },
            step=stats.episodes,
        )
        if self.on_episode is not None:
            self.on_episode(stats)

    # ------------------------------------------------------------------ pacing

    def expected_staleness(self) -> tuple[int, int]:
        """(backlog, the staleness an episode started now would have when trained): see
        agentsd.collect.pacing."""
        cfg = self.config
        return expected_staleness(self.store, self.run_name, cfg.pacing, cfg.lineage, self.versions.current)

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
                await self.versions.pickup_for_new_episode()  # the trainer has likely moved on meanwhile
        if waited_since is not None:
            self.stats.pacing_wait_s += time.monotonic() - waited_since

    def _default_env(self, task: Task, labels: dict[str, str]) -> Any:
        if task.family is Family.RUBRIC:  # one judge for the run, shared by every episode's env
            return RubricEnv(fleet=self.fleet, sandbox=self.config.sandbox, labels=labels, judge=self.judge)
        return env_class(task.family)(fleet=self.fleet, sandbox=self.config.sandbox, labels=labels)
