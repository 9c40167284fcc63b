"""The SDPO trainer: finalized trajectories from the replay store -> optimizer steps -> policy versions.

Each step takes up to `batch_trajectories` finalized trajectories this trainer run has not consumed
(oldest first, within K_max of the current version, sampled by the base model or this trainer's
lineage), builds their hindsight and teacher views, computes the SDPO loss (agentsd.sdpo_step) and
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

Not guaranteed: ZeRO-3 with a teacher that keeps its own weights (sync_every, ema, trust_region,
frozen) or with LoRA (refused at start); per-rank metrics other than loss and token counts are rank 0's shard;
the running advantage scale (sampled-token form) is kept per rank.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentsd.config import TrainConfig, deepspeed_config_path
from agentsd.errors import ConfigError, LineageError, TrajectoryStateError
from agentsd.hindsight import HindsightBuilder
from agentsd.histograms import TrainingHistograms
from agentsd.lineage import LineageView, ancestry, lineage_view
from agentsd.modelcache import resolve_model
from agentsd.sdpo import AdvantageScale
from agentsd.sdpo.teacher import Teacher
from agentsd.sdpo_step import batch_loss, head_module, prepare
from agentsd.sequences import TurnTokens
from agentsd.store import ReplayStore
from agentsd.tracking import NullTracker, Tracker
from agentsd.types import PolicyVersion, Termination, Trajectory
from agentsd.weights import weights_hash

CHECKPOINTS = "checkpoints"
SHARD_COUNTS = (  # per-rank counts of a step's shard, summed over ranks
    "dropped/no_hindsight",
    "dropped/unreproducible_sampling",
    "dropped/segments_nothing_inserted",
    "dropped/segments_no_trainable_tokens",
)
VERSIONS = "versions"


@dataclass
class StepResult:
    step: int
    version: int
    trajectories: list[str]
    metrics: dict[str, float] = field(default_factory=dict)


def new_lineage_id(name: str) -> str:
    """A fresh id for a trainer run or lineage: readable prefix, unique suffix."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def single_process_env() -> None:
    """torch.distributed's environment for one process, unless a launcher set up several.

    A single process needs no agreed port, so it always takes a free one: a port inherited from a
    parent that trains too (a test process, `agentsd run`) would still be bound there."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        return  # the deepspeed launcher (or torchrun) set everything for its ranks
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def set_mmap_threshold(size: int) -> bool:
    """glibc's M_MMAP_THRESHOLD, fixed at `size` bytes (mallopt); False where there is no glibc.

    With glibc's dynamic threshold, freed tensors raise it up to 32 MB, after which activations just
    below that size come from the heap and fragment it: the trainer's peak RSS doubled at 8k tokens."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-3, int(size)))  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


# What a published version records of the step that made it (collectors show it as progress).
PUBLISHED_METRICS = ("loss", "kl", "rho/p99", "rho/max", "age_versions/mean", "reward/mean")


def published_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {f"step_{k.replace('/', '_')}": metrics[k] for k in PUBLISHED_METRICS if k in metrics}


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

    def _deepspeed_config(self) -> dict[str, Any]:
        path = deepspeed_config_path(self.config.deepspeed)
        try:
            ds = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"deepspeed config {path}: cannot be read as JSON ({exc})") from None
        stage = int(ds.get("zero_optimization", {}).get("stage", 0))
        self.zero3 = stage >= 3
        if self.zero3 and (self.config.teacher.mode != "live" or self.config.lora is not None):
            raise ConfigError(
                f"deepspeed config {path}: ZeRO-3 partitions the weights, which the teacher copies of "
                f"teacher.mode={self.config.teacher.mode} and LoRA adapters do not support yet; use "
                "teacher.mode=live without lora, or ZeRO-1/2"
            )
        ds["gradient_clipping"] = self.config.grad_clip
        ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
        ds["optimizer"].setdefault("params", {})["lr"] = self.config.effective_lr
        ds["train_micro_batch_size_per_gpu"] = 1
        ds["gradient_accumulation_steps"] = 1
        return ds

    def _setup(self) -> None:
        if self.config.mmap_threshold_bytes is not None:
            set_mmap_threshold(self.config.mmap_threshold_bytes)
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        single_process_env()
        import deepspeed
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = resolve_model(self.config.model.name)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        dtype = getattr(torch, self.config.model.dtype)
        model: Any = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        if self.config.lora is not None:
            from peft import LoraConfig, get_peft_model

            lora = self.config.lora
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora.rank,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=lora.target_modules,
                    task_type="CAUSAL_LM",
                ),
            )
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
        ds_config = self._deepspeed_config()
        if self.zero3:  # the chunked head runs in a module that gathers the partitioned projection
            model.sdpo_head = head_module(model.get_output_embeddings().weight, zero3=True)
        params: Any = [p for p in model.parameters() if p.requires_grad]
        self.engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config)
        self.model: Any = self.engine.module
        import torch.distributed as dist

        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        try:
            self.teacher = Teacher(self.config.teacher, self.model)
            self.builder = HindsightBuilder(self.tokenizer, self.config.hindsight.budget_tokens)
            self._resume()
        except BaseException:  # a refused start must not keep the engine's memory alive
            self.close()
            raise

    def _resume(self) -> None:
        """Load the last checkpoint, if any, and take this trainer's place in the store's lineage."""
        directory = self.run_dir / CHECKPOINTS
        state: dict[str, Any] | None = None
        if (directory / "latest").is_file():
            _, state = self.engine.load_checkpoint(str(directory))
        if state:
            self.step_count = int(state["step"])
            self.version = int(state["version"])
            self.advantage_scale = AdvantageScale(**state["advantage_scale"])
            self.teacher.load_state_dict(state["teacher"])
            # checkpoints written before lineages: the run's name was its consumer and its lineage
            self.run_id = str(state.get("run_id", self.name))
            self.lineage = str(state.get("lineage", self.name))
            self.parent = state.get("parent", self.version - 1 if self.version > 0 else None)
            self.origin = state.get("origin")
            self.weights_version = self.version
        decision = self._broadcast(self._place_in_lineage(state) if self.rank == 0 else None)
        self.version, self.lineage, self.origin, self.weights_version, republish = decision
        if republish:  # the last checkpoint's version never reached the store: publish it now
            self._publish()
        # the last checkpoint's trajectories were trained on: mark them even if the process died first
        if state and self.rank == 0:
            self.store.mark_consumed(self.run_id, state["trajectories"], self.version)

    def _place_in_lineage(
        self, state: dict[str, Any] | None
    ) -> tuple[int, str, int | None, int | None, bool]:
        """(version to number from, lineage, its origin, the version the model's weights are,
        republish the checkpoint's version?).

        One lineage publishes into a store at a time, and a number is never reused: a trainer that
        would publish next to another lineage's newer versions (a fresh trainer on a store that has
        versions, or a checkpoint some other lineage has moved past) refuses unless `fork`, which
        starts a new lineage numbered after the store's newest version."""
        newest = self.store.latest_version()
        fork = self.config.fork
        if state is None:
            if newest is None:
                return 0, self.lineage, None, None, False
            if not fork:
                raise LineageError(
                    f"train: the store already has policy versions (newest {newest.version}, lineage "
                    f"{newest.lineage!r}) and {self.run_dir} has no checkpoint: this trainer would start "
                    f"from the base model and publish it as version {newest.version + 1}, which collectors "
                    "would load as the newest policy. Resume the trainer of that lineage (its run_dir), or "
                    "pass --fork (train.fork=true) to start a new lineage from the base model"
                )
            return newest.version, self.lineage, None, None, False
        mine = self.store.get_version(self.version)
        ours = mine is not None and mine.lineage == self.lineage
        if ours and newest is not None and newest.version == self.version:
            return self.version, self.lineage, self.origin, self.version, False
        if mine is None and (newest is None or newest.version < self.version):
            # killed between checkpoint and publish: the model holds exactly that version's weights
            return self.version, self.lineage, self.origin, self.version, True
        if ours and newest is not None and newest.lineage == self.lineage:
            # this lineage published past its checkpoint: a trainer killed between publishing and
            # checkpointing, as trainers before schema 2 ordered them. Those versions' weights are
            # lost; number on after them so that no number is reused, from the checkpoint's weights.
            logging.getLogger("agentsd.trainer").warning(
                "lineage %s published versions %d..%d after its last checkpoint (version %d); they stay "
                "in the store, and training goes on from the checkpoint as version %d",
                self.lineage,
                self.version + 1,
                newest.version,
                self.version,
                newest.version + 1,
            )
            return newest.version, self.lineage, self.origin, self.version, False
        if not fork:
            owner = f"lineage {mine.lineage!r}" if mine is not None else "nobody"
            raise LineageError(
                f"train: the checkpoint in {self.run_dir} is version {self.version} of lineage "
                f"{self.lineage!r}, but the store has moved on: version {self.version} belongs to "
                f"{owner} and the newest is {newest.version if newest else 'none'} (lineage "
                f"{newest.lineage if newest else '-'!r}). Publishing would fork the store's lineage; pass "
                "--fork (train.fork=true) to continue these weights as a new lineage"
            )
        assert newest is not None
        # the checkpoint's weights are its version if that number is ours, else one step past its parent
        weights = self.version if ours else self.parent
        return newest.version, new_lineage_id(self.name), weights, weights, False

    # ------------------------------------------------------------------ steps

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
        cfg = self.config
        chosen: tuple[LineageView, list[str]] | None = None
        if self.rank == 0:
            view = self.line()
            summaries = self.store.find_finalized(
                min_version=view.oldest_fresh(self.reference_depth(view), cfg.sdpo.staleness_bound),
                not_consumed_by=self.run_id,
                terminations=cfg.train_on,
                sampled_by=view.ancestry,
                limit=cfg.batch_trajectories,
            )
            chosen = (view, [s.id for s in summaries])
        view, ids = self._broadcast(chosen)
        return view, [self.store.get(i) for i in ids]

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

    def in_steps(self, tokens: dict[str, list[TurnTokens]], view: LineageView) -> dict[str, list[TurnTokens]]:
        """The turns with their versions as depths along this line, so that the loss measures
        staleness in optimizer steps; a turn sampled off the line is made too stale to train on."""
        depths = view.depths
        off_line = self.reference_depth(view) - self.config.sdpo.max_staleness - 1
        return {
            tid: [replace(t, policy_version=depths.get(t.policy_version, off_line)) for t in turns]
            for tid, turns in tokens.items()
        }

    def _successes(self, trajectories: list[Trajectory]) -> dict[str, Trajectory]:
        if not self.config.hindsight.use_success:
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

    def step(self) -> StepResult | None:
        """One optimizer step on new trajectories; None when the store has none to train on."""
        view, trajectories = self.select()
        if not trajectories:
            return None
        reference = self.reference_depth(view)
        started = time.perf_counter()
        ids = [t.id for t in trajectories]
        mine = trajectories[self.rank :: self.world]  # this rank's data-parallel shard
        tokens = self.in_steps(self.store.load_tokens([t.id for t in mine]), view)
        batch = prepare(mine, tokens, self.builder, self._successes(mine))
        cfg = self.config
        counted: list[float] = []
        out = batch_loss(
            self.model,
            self.teacher,
            batch,
            cfg.sdpo,
            version=reference,
            chunk=cfg.chunk_tokens,
            advantage_scale=self.advantage_scale,
            denominator=(lambda count: self._global_count(count, counted)) if self.world > 1 else None,
        )
        if self.world > 1 and not counted:  # every rank joins the all-reduce, with or without tokens
            self._global_count(0.0, counted)
        metrics: dict[str, float] = {
            "dropped/no_hindsight": float(len(batch.no_hindsight)),
            "dropped/unreproducible_sampling": float(len(batch.unreproducible)),
            "dropped/segments_nothing_inserted": float(batch.nothing_inserted),
            "dropped/segments_no_trainable_tokens": float(batch.no_trainable_tokens),
            "trajectories": float(len(trajectories)),
        }
        for trajectory_id, reason in batch.unreproducible.items():
            logging.getLogger("agentsd.trainer").warning("not training on %s: %s", trajectory_id, reason)
        if self.rank == 0:
            metrics.update(self.waiting_unused(view))
        if out is not None:
            self.engine.backward(out.loss)
            metrics.update(out.metrics)
            metrics["loss"] = float(out.loss.detach())
        elif self.world > 1:  # the gradient all-reduce needs every rank, so a zero gradient it is
            self.engine.backward(sum((p * 0.0).sum() for p in self.model.parameters() if p.requires_grad))
        if self.world > 1:
            metrics.update(self._summed(metrics, ("loss", "tokens/used", "tokens/trainable", *SHARD_COUNTS)))
        self.engine.step()
        self.step_count += 1
        self.version += 1
        self.parent, self.weights_version = self.weights_version, self.version
        if self.config.teacher.gate_on_eval:
            tracked = self._broadcast(self.tracked_reward() if self.rank == 0 else None)
            if tracked is not None:
                self.teacher.observe_eval(tracked)
                metrics["teacher/tracked_reward"] = tracked
        event = self.teacher.after_step(self.model, self.step_count)
        metrics["teacher/syncs"] = float(self.teacher.syncs)
        metrics["teacher/gated"] = float(self.teacher.gated)
        metrics["teacher/event_sync"] = float(event == "sync")
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        metrics["lr"] = float(self.engine.get_lr()[0])
        rewards = [t.reward for t in trajectories if t.reward is not None]
        metrics["reward/mean"] = sum(rewards) / len(rewards) if rewards else 0.0
        ages = [time.time() - (t.finalized_at or time.time()) for t in trajectories]
        metrics["age_s/mean"], metrics["age_s/max"] = sum(ages) / len(ages), max(ages)
        depths = view.depths  # age in optimizer steps along this line (off the line: as old as the base)
        age_versions = [float(reference - depths.get(t.version_start, 0)) for t in trajectories]
        metrics["age_versions/mean"] = sum(age_versions) / len(age_versions)
        self.histograms.add(age_versions, ages, rewards)
        metrics.update(self.histograms.quantiles())
        trained_tokens = metrics.get("tokens/used", 0.0)
        metrics["tokens_per_s"] = trained_tokens / max(time.perf_counter() - started, 1e-9)
        # checkpoint before publishing: a trainer killed in between republishes the checkpoint's
        # weights under the same number, so a number never names two sets of weights
        self._checkpoint(ids)
        self._publish(metrics)
        if self.rank == 0:
            self.store.mark_consumed(self.run_id, ids, self.version)
            self.tracker.log_metrics(metrics, step=self.step_count)
            if self.step_count % self.config.histogram_every == 0:
                self.log_histograms()
            self._alerts(metrics)
        return StepResult(self.step_count, self.version, ids, metrics)

    # ------------------------------------------------------------------ data parallel

    def _broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (store reads that decide what all ranks do)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _global_count(self, count: float, counted: list[float]) -> float:
        """The divisor that makes DeepSpeed's mean over ranks the token mean over the global batch:
        Σ_ranks count / world."""
        import torch
        import torch.distributed as dist

        total = torch.tensor([count], dtype=torch.float64)
        dist.all_reduce(total)
        counted.append(float(total))
        return float(total) / self.world

    def _summed(self, metrics: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
        """Totals over ranks (the loss as DeepSpeed averages it: the mean of the ranks' losses)."""
        import torch
        import torch.distributed as dist

        values = torch.tensor([metrics.get(k, 0.0) for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        out = dict(zip(keys, values.tolist(), strict=True))
        if "loss" in out:
            out["loss"] /= self.world
        return out

    def tracked_reward(self) -> float | None:
        """The reward the gate on hard syncs tracks: the mean over the newest finalized trajectories
        (sampled by the newest versions the collectors run), None before any has a reward."""
        newest = self.store.find_finalized(limit=self.config.teacher.gate_window, oldest_first=False)
        rewards = [s.reward for s in newest if s.reward is not None]
        return sum(rewards) / len(rewards) if rewards else None

    def log_histograms(self) -> None:
        """The age and reward distributions so far, as MLflow artifacts of this step."""
        if not self.histograms.reward.values and not self.histograms.age_seconds.values:
            return
        directory = self.run_dir / "histograms" / f"step_{self.step_count:06d}"
        for path in self.histograms.write(directory):
            self.tracker.log_artifact(path, f"histograms/step_{self.step_count:06d}")

    def _alerts(self, metrics: dict[str, float]) -> None:
        log = logging.getLogger("agentsd.trainer")
        if "advantage/mean_abs" in metrics and metrics["advantage/mean_abs"] < 1e-3:
            log.warning("step %d: |mean A| < 1e-3: the gradient is dead", self.step_count)
        if metrics.get("fraction/truncated", 0.0) > 0.2:
            log.warning(
                "step %d: %.0f%% of the weights truncated at C",
                self.step_count,
                100 * metrics["fraction/truncated"],
            )

    # ------------------------------------------------------------------ persistence

    def _publish(self, metrics: dict[str, float] | None = None) -> None:
        """Write version `self.version` atomically and register it in the store with the step's
        headline metrics (rank 0; under ZeRO-3 every rank takes part in gathering the weights)."""
        if self.zero3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
                if self.rank == 0:
                    self._write_version(metrics or {})
        elif self.rank == 0:
            self._write_version(metrics or {})

    def _write_version(self, metrics: dict[str, float]) -> None:
        versions = self.run_dir / VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        final = versions / f"v{self.version:06d}"
        tmp = versions / f".v{self.version:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, safe_serialization=True)
        if self.config.lora is None:
            self.tokenizer.save_pretrained(tmp)
        registered = self.store.get_version(self.version)
        if registered is not None and registered.lineage == self.lineage:
            shutil.rmtree(tmp)  # killed after registering, before marking: published already
            return
        newest = self.store.latest_version()
        if registered is not None or (newest is not None and newest.version > self.version):
            shutil.rmtree(tmp)
            raise self._moved_on(registered or newest)
        if final.exists():  # a publish redone after a crash before its registration
            shutil.rmtree(final)
        tmp.rename(final)
        try:
            self.store.register_version(
                self.version,
                model=self.config.model.name,
                checkpoint_uri=str(final.absolute()),
                lineage=self.lineage,
                parent=self.parent,
                weights_hash=weights_hash(final),
                meta={
                    "trainer": self.name,
                    "run_id": self.run_id,
                    "step": self.step_count,
                    "lora": self.config.lora is not None,
                    **published_metrics(metrics),
                },
            )
        except TrajectoryStateError:  # another lineage registered this number a moment ago
            raise self._moved_on(self.store.get_version(self.version)) from None
        self._prune_versions(versions)

    def _moved_on(self, other: PolicyVersion | None) -> LineageError:
        owner = (
            f"version {other.version} of lineage {other.lineage!r}"
            if other is not None
            else "another lineage"
        )
        return LineageError(
            f"train: {owner} was published into the store while this trainer (lineage {self.lineage!r}) "
            f"trained version {self.version}; two lineages cannot publish into one store at once. Its "
            f"checkpoint in {self.run_dir} is kept: restart with --fork to continue it as a new lineage"
        )

    def _prune_versions(self, versions: Path) -> None:
        """Delete the files of all but the newest `keep_versions` versions: a collector loads the
        newest, and a full copy of the weights per step would fill the disk of a long run."""
        keep = self.config.keep_versions
        if keep is None:
            return
        published = sorted(p for p in versions.glob("v[0-9]*") if p.is_dir())
        for old in published[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _checkpoint(self, trajectory_ids: list[str]) -> None:
        state = {
            "step": self.step_count,
            "version": self.version,
            "advantage_scale": {
                "decay": self.advantage_scale.decay,
                "value": self.advantage_scale.value,
                "steps": self.advantage_scale.steps,
            },
            "teacher": self.teacher.state_dict(),
            "trajectories": trajectory_ids,
            "run_id": self.run_id,
            "lineage": self.lineage,
            "origin": self.origin,
            "parent": self.parent,
        }
        directory = self.run_dir / CHECKPOINTS
        self.engine.save_checkpoint(str(directory), tag=f"step{self.step_count:06d}", client_state=state)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank's optimizer partition is on disk before old ones go
        if self.rank != 0:
            return
        for old in sorted(directory.glob("step*"))[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

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
    ) -> list[StepResult]:
        """Step until `max_steps`, or until the store runs dry; with `wait`, until the store is dry
        and `stop()` says so (forever without `stop`)."""
        results: list[StepResult] = []
        while max_steps is None or len(results) < max_steps:
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
