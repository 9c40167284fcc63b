"""The SDPO trainer: finalized trajectories from the replay store -> optimizer steps -> policy versions.

Each step takes up to `batch_trajectories` finalized trajectories this trainer run has not consumed
(oldest first, within K_max of the current version, sampled by the base model or this trainer's
lineage), builds their hindsight and teacher views, computes the SDPO loss (agentsd.sdpo.step) and
steps a DeepSpeed engine (CPU accelerator with gloo here; presets zero1-3 ship with agentsd). Then, in
this order: the teacher follows the student; a DeepSpeed checkpoint records the weights, optimizer,
scheduler, version, lineage, teacher, advantage scale and the step's trajectory ids; the new
version's weights (or LoRA adapter) are written atomically and registered in the store's versions
table with their lineage, parent and content hash; only then are the trajectories marked consumed.
A trainer killed at any point resumes from its last checkpoint, publishes that checkpoint's version
if it never reached the store (same number, same weights), re-marks its trajectories as consumed
(idempotent), and never trains a trajectory twice or skips one.

Lineage: versions are numbered once per store. A trainer whose publishing would put other weights
next to another lineage's (no checkpoint on a store that has versions, or a checkpoint another
lineage has moved past) refuses unless `fork` (see TrainConfig.fork).

Data parallel (the `deepspeed` launcher, one process per rank): rank 0 chooses each step's
trajectories and broadcasts them, every rank trains its shard (every world-th trajectory), the loss
divisor is the used-token count all-reduced over ranks (so DeepSpeed's gradient mean is the token mean
over the global batch), and rank 0 alone publishes versions, marks trajectories consumed and logs.

ZeRO-3 (the zero3 preset): the chunked head runs in a module that registers the output
projection as an external parameter, so DeepSpeed gathers it there; publishing gathers the weights
on every rank and rank 0 writes them.

This module chooses each step's trajectories and runs the step's phases in order (Trainer.step);
each job has its own module: the engine (agentsd.train.engine), collectives between ranks
(agentsd.train.ranks), checkpoints (agentsd.train.checkpoint), the place in the store's
lineage (agentsd.train.lineage), publishing versions (agentsd.train.publish), and metrics and
alerts (agentsd.train.metrics).

Not guaranteed: ZeRO-3 with a teacher that keeps its own weights (sync_every, ema, trust_region,
frozen) or with LoRA (refused at start); per-rank metrics other than loss and token counts are rank 0's
shard; the running advantage scale (sampled-token form) is kept per rank.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agentsd.config import TrainConfig
from agentsd.histograms import TrainingHistograms
from agentsd.lineage import LineageView, ancestry, lineage_view
from agentsd.sdpo import AdvantageScale, SDPOLoss
from agentsd.sdpo.hindsight import HindsightBuilder
from agentsd.sdpo.step import PreparedBatch, batch_loss, prepare
from agentsd.sdpo.teacher import Teacher
from agentsd.sequences import TurnTokens
from agentsd.store import ReplayStore
from agentsd.tracking import NullTracker, Tracker
from agentsd.train.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from agentsd.train.engine import build_engine
from agentsd.train.lineage import new_lineage_id, place_in_lineage
from agentsd.train.metrics import (
    SUMMED_OVER_RANKS,
    TeacherReport,
    alerts,
    log_histograms,
    shard_metrics,
    step_metrics,
    trajectory_ages,
)
from agentsd.train.publish import NewVersion, VersionPublisher
from agentsd.train.ranks import from_rank0, summed_over_ranks, token_mean_divisor
from agentsd.types import Task, Termination, Trajectory

log = logging.getLogger("agentsd.train.trainer")


@dataclass
class StepResult:
    step: int
    version: int
    trajectories: list[str]
    metrics: dict[str, float] = field(default_factory=dict)


class Trainer:
    def __init__(
        self, config: TrainConfig, store: ReplayStore, *, name: str, tracker: Tracker | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.name = name  # for people: the tracker's run name and the prefix of the ids below
        self.tracker = tracker or NullTracker()
        self.run_dir = config.run_dir
        self.step_count = 0
        self.version = 0  # the newest version this trainer published (the staleness reference)
        self.run_id = new_lineage_id(name)  # the consumer in the store's ledger: one per trainer run
        self.lineage = self.run_id  # the line of versions it publishes
        self.origin: int | None = None  # the version the lineage's weights started from (None = base)
        self.parent: int | None = None  # the version the weights in the model were trained from
        self.weights_version: int | None = None  # the version the weights in the model are (None = base)
        self.advantage_scale = AdvantageScale()
        self.histograms = TrainingHistograms()
        self.waited_s = 0.0  # time spent waiting for trajectories (wait mode), logged as train/waited_s
        self._setup()

    # ------------------------------------------------------------------ setup

    def _setup(self) -> None:
        built = build_engine(self.config)
        self.engine, self.model, self.tokenizer = built.engine, built.model, built.tokenizer
        self.model_path, self.zero3 = built.model_path, built.zero3
        self.rank, self.world = built.rank, built.world
        self.publisher = VersionPublisher(
            self.config, self.store, self.model, self.tokenizer, zero3=self.zero3, rank=self.rank
        )
        try:
            self.teacher = Teacher(self.config.teacher, self.model)
            hindsight = self.config.hindsight
            self.builder = HindsightBuilder(self.tokenizer, hindsight.budget_tokens, hindsight.sources)
            self._resume()
        except BaseException:  # a refused start must not keep the engine's memory alive
            self.close()
            raise

    def _resume(self) -> None:
        """Load the last checkpoint, if any, and take this trainer's place in the store's lineage."""
        saved = load_checkpoint(self.engine, self.run_dir, self.name)
        if saved is not None:
            self.step_count, self.version = saved.step, saved.version
            self.advantage_scale = saved.advantage_scale
            self.teacher.load_state_dict(saved.teacher)
            self.run_id, self.lineage = saved.run_id, saved.lineage
            self.parent, self.origin = saved.parent, saved.origin
            self.weights_version = saved.version
        place = from_rank0(
            lambda: place_in_lineage(
                self.store,
                saved,
                fresh_lineage=self.lineage,
                name=self.name,
                fork=self.config.fork,
                run_dir=self.run_dir,
            ),
            self.rank,
            self.world,
        )
        self.version, self.lineage, self.origin = place.version, place.lineage, place.origin
        self.weights_version = place.weights_version
        if place.republish:  # the last checkpoint's version never reached the store: publish it now
            self._publish()
        # the last checkpoint's trajectories were trained on: mark them even if the process died first
        if saved is not None and self.rank == 0:
            self.store.mark_consumed(self.run_id, saved.trajectories, self.version)

    # ------------------------------------------------------------------ the step

    def step(self) -> StepResult | None:
        """One optimizer step on new trajectories; None when the store has none to train on."""
        view, trajectories = self.select()
        if not trajectories:
            return None
        started = time.perf_counter()
        reference = self.reference_depth(view)
        batch = self.prepare_shard(trajectories[self.rank :: self.world], view)  # data-parallel shard
        loss = self.shard_loss(batch, reference)
        used_tokens = float(loss.used.sum()) if loss is not None else 0.0
        # all-reduce (every rank, tokens or not): DeepSpeed's mean over ranks becomes the token mean
        divisor = token_mean_divisor(used_tokens, self.world)
        loss_value = self.backward(loss, divisor)
        shard = shard_metrics(batch, loss, loss_value)
        summed = summed_over_ranks(shard, SUMMED_OVER_RANKS, self.world)  # all-reduce: global counts
        waiting = self.waiting_unused(view) if self.rank == 0 else {}
        grad_norm, lr = self.optimizer_step()
        teacher = self.follow_teacher()
        ages = trajectory_ages(trajectories, view, reference)
        self.histograms.add(ages.versions, ages.seconds, ages.rewards)
        metrics = step_metrics(
            shard,
            summed,
            trajectories=len(trajectories),
            waiting=waiting,
            teacher=teacher,
            grad_norm=grad_norm,
            lr=lr,
            ages=ages,
            quantiles=self.histograms.quantiles(),
            started=started,
        )
        ids = [t.id for t in trajectories]
        # checkpoint before publishing: a trainer killed in between republishes the checkpoint's
        # weights under the same number, so a number never names two sets of weights
        self._checkpoint(ids)
        self._publish(metrics)
        if self.rank == 0:
            self.store.mark_consumed(self.run_id, ids, self.version)
            self.report(metrics)
        return StepResult(self.step_count, self.version, ids, metrics)

    def line(self) -> LineageView:
        """This trainer's line of versions, as the store has it now."""
        versions = self.store.versions()
        return lineage_view(versions, ancestry(versions, self.lineage, self.origin))

    def reference_depth(self, view: LineageView) -> int:
        """The depth of the weights in the model: what staleness is measured from."""
        return view.depths.get(self.weights_version or 0, len(view.chain))

    def select(self) -> tuple[LineageView, list[Trajectory]]:
        """The line of versions and the step's trajectories, chosen by rank 0 so that every rank
        shards the same list: sampled by the base model or this line, within K_max steps of it."""
        view, ids = from_rank0(self._choose, self.rank, self.world)
        return view, [self.store.get(i) for i in ids]

    def _choose(self) -> tuple[LineageView, list[str]]:
        cfg = self.config
        view = self.line()
        summaries = self.store.find_finalized(
            min_version=view.oldest_fresh(self.reference_depth(view), cfg.sdpo.staleness_bound),
            not_consumed_by=self.run_id,
            terminations=cfg.train_on,
            sampled_by=view.ancestry,
            limit=cfg.batch_trajectories,
        )
        return view, [s.id for s in summaries]

    def prepare_shard(self, shard: list[Trajectory], view: LineageView) -> PreparedBatch:
        """This rank's trajectories as segments with their hindsight teacher views."""
        tokens = self.in_steps(self.store.load_tokens([t.id for t in shard]), view)
        batch = prepare(shard, tokens, self.builder, self._successes(shard), self._tasks(shard))
        for trajectory_id, reason in batch.unreproducible.items():
            log.warning("not training on %s: %s", trajectory_id, reason)
        return batch

    def in_steps(self, tokens: dict[str, list[TurnTokens]], view: LineageView) -> dict[str, list[TurnTokens]]:
        """The turns with their versions as depths along this line, so that the loss measures
        staleness in optimizer steps; a turn sampled off the line is made too stale to train on."""
        depths = view.depths
        off_line = self.reference_depth(view) - self.config.sdpo.max_staleness - 1
        return {
            tid: [replace(t, policy_version=depths.get(t.policy_version, off_line)) for t in turns]
            for tid, turns in tokens.items()
        }

    def _tasks(self, trajectories: list[Trajectory]) -> dict[str, Task]:
        """Trajectory id -> its task as stored with it, for the privileged hindsight sources."""
        if not self.builder.privileged:
            return {}
        found = {t.id: self.store.get_task(t.task_hash) for t in trajectories if t.task_hash}
        return {tid: task for tid, task in found.items() if task is not None}

    def _successes(self, trajectories: list[Trajectory]) -> dict[str, Trajectory]:
        if "success" not in self.config.hindsight.sources:
            return {}
        found: dict[str, Trajectory] = {}
        chosen = {t.id for t in trajectories}
        for task_id in {t.task_id for t in trajectories}:
            # A trusted, graded success only: an env_error or an interrupted run's reward is no verdict.
            successes = self.store.find_finalized(
                task_ids=[task_id], min_reward=1.0, terminations=[Termination.DONE], limit=5
            )
            for summary in successes:
                if summary.id not in chosen:
                    found[task_id] = self.store.get(summary.id)
                    break
        return found

    def shard_loss(self, batch: PreparedBatch, reference: int) -> SDPOLoss | None:
        """The SDPO loss of this rank's shard, staleness measured from depth `reference`."""
        cfg = self.config
        return batch_loss(
            self.model,
            self.teacher,
            batch,
            cfg.sdpo,
            version=reference,
            chunk=cfg.chunk_tokens,
            advantage_scale=self.advantage_scale,
        )

    def backward(self, loss: SDPOLoss | None, divisor: float) -> float | None:
        """Gradients of the loss over `divisor` (the global batch's used tokens); its value."""
        if loss is not None:
            total = loss.divided_by(divisor)
            self.engine.backward(total)
            return float(total.detach())
        if self.world > 1:  # the gradient all-reduce needs every rank, so a zero gradient it is
            self.engine.backward(sum((p * 0.0).sum() for p in self.model.parameters() if p.requires_grad))
        return None

    def optimizer_step(self) -> tuple[float | None, float]:
        """The optimizer step: the model's weights become the next version. Returns the gradient
        norm (None when DeepSpeed has none) and the learning rate."""
        self.engine.step()
        self.step_count += 1
        self.version += 1
        self.parent, self.weights_version = self.weights_version, self.version
        return self.engine.get_global_grad_norm(), float(self.engine.get_lr()[0])

    def follow_teacher(self) -> TeacherReport:
        """The teacher follows the student; a gated teacher first sees rank 0's tracked reward."""
        tracked = None
        if self.config.teacher.gate_on_eval:
            tracked = from_rank0(self.tracked_reward, self.rank, self.world)
            if tracked is not None:
                self.teacher.observe_eval(tracked)
        event = self.teacher.after_step(self.model, self.step_count)
        return TeacherReport(self.teacher.syncs, self.teacher.gated, event, tracked)

    def waiting_unused(self, view: LineageView) -> dict[str, float]:
        """Trajectories this trainer has not trained on and will not: ended in a way `train_on`
        excludes (within the staleness bound), or already too stale. Gauges, logged every step."""
        cfg = self.config
        oldest = view.oldest_fresh(self.reference_depth(view), cfg.sdpo.staleness_bound)
        mine = {"not_consumed_by": self.run_id, "sampled_by": view.ancestry}
        pending = self.store.count_finalized(**mine, min_version=oldest)
        trusted = self.store.count_finalized(**mine, min_version=oldest, terminations=cfg.train_on)
        stale = self.store.count_finalized(**mine, stale_before=oldest)
        return {"dropped/untrusted_waiting": float(pending - trusted), "dropped/stale_waiting": float(stale)}

    def tracked_reward(self) -> float | None:
        """The reward the gate on hard syncs tracks: the mean over the newest finalized trajectories
        (sampled by the newest versions the collectors run), None before any has a reward."""
        newest = self.store.find_finalized(limit=self.config.teacher.gate_window, oldest_first=False)
        rewards = [s.reward for s in newest if s.reward is not None]
        return sum(rewards) / len(rewards) if rewards else None

    def report(self, metrics: dict[str, float]) -> None:
        """Rank 0: the step's metrics to the tracker, the histograms when due, and alerts."""
        self.tracker.log_metrics(metrics, step=self.step_count)
        if self.step_count % self.config.histogram_every == 0:
            self.log_histograms()
        alerts(metrics, self.step_count, self.config.sdpo.drift_warning)

    def log_histograms(self) -> None:
        """The age and reward distributions so far, as MLflow artifacts of this step."""
        log_histograms(self.histograms, self.run_dir, self.step_count, self.tracker)

    # ------------------------------------------------------------------ persistence

    def _checkpoint(self, trajectory_ids: list[str]) -> None:
        state = TrainerState(
            step=self.step_count,
            version=self.version,
            advantage_scale=self.advantage_scale,
            teacher=self.teacher.state_dict(),
            trajectories=trajectory_ids,
            run_id=self.run_id,
            lineage=self.lineage,
            origin=self.origin,
            parent=self.parent,
        )
        keep = self.config.keep_checkpoints
        save_checkpoint(self.engine, self.run_dir, state, rank=self.rank, world=self.world, keep=keep)

    def _publish(self, metrics: dict[str, float] | None = None) -> None:
        """Publish version `self.version`, the weights in the model, with the step's metrics."""
        self.publisher.publish(
            NewVersion(
                number=self.version,
                lineage=self.lineage,
                parent=self.parent,
                trainer=self.name,
                run_id=self.run_id,
                step=self.step_count,
                metrics=metrics or {},
            )
        )

    def close(self) -> None:
        """Release the engine's memory (weights, optimizer states, gradients): DeepSpeed keeps them
        reachable until destroyed, so a process that makes several trainers must close each."""
        destroy = getattr(self.engine, "destroy", None)
        if callable(destroy):
            destroy()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        max_steps: int | None = None,
        poll_s: float = 5.0,
        wait: bool = False,
        stop: Callable[[], bool] | None = None,
        alive: Callable[[], None] | None = None,
    ) -> list[StepResult]:
        """Step until `max_steps`, or until the store runs dry; with `wait`, until the store is dry
        and `stop()` says so (forever without `stop`). `alive()` is called before every step and
        every wait: a watchdog's heartbeat."""
        results: list[StepResult] = []
        while max_steps is None or len(results) < max_steps:
            if alive is not None:
                alive()
            result = self.step()
            if result is None:
                if not wait or (stop is not None and stop()):
                    break
                time.sleep(poll_s)
                self.waited_s += poll_s  # the backlog was empty: collection is the bottleneck
                continue
            if self.rank == 0:
                self.tracker.log_metrics({"train/waited_s": self.waited_s}, step=self.step_count)
            results.append(result)
        return results
