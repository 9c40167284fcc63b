"""What a trainer step reports: its metrics, the headline a published version keeps, its alerts.

`step_metrics` is the one place a step's metrics are assembled, from what the step's phases return:
what this rank's shard dropped and what its loss measured (`shard_metrics`), their totals over
data-parallel ranks, the trajectories still waiting, the teacher's follow-up, the optimizer's
gradient norm and learning rate, the reward and age of the step's trajectories with their running
quantiles (agentsd.histograms), and the throughput. `published_metrics` is the part a published
version records (collectors show it as progress); `alerts` warns about a step that cannot learn or
has drifted too far.

Not guaranteed: metrics other than the loss and the token and drop counts describe this rank's
shard only (rank 0's is the one logged); ages in seconds compare this host's clock with the store's
finalize times.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from agentsd.histograms import TrainingHistograms
from agentsd.lineage import LineageView
from agentsd.sdpo import SDPOLoss
from agentsd.sdpo.step import PreparedBatch
from agentsd.tracking import Tracker
from agentsd.types import Trajectory

SHARD_COUNTS = (  # per-rank counts of a step's shard, summed over ranks
    "dropped/no_hindsight",
    "dropped/unreproducible_sampling",
    "dropped/segments_nothing_inserted",
    "dropped/segments_no_trainable_tokens",
)
SUMMED_OVER_RANKS = ("loss", "tokens/used", "tokens/trainable", *SHARD_COUNTS)
# What a published version records of the step that made it (collectors show it as progress).
PUBLISHED_METRICS = ("loss", "kl", "rho/p99", "rho/max", "age_versions/mean", "reward/mean")

log = logging.getLogger("agentsd.train.trainer")


@dataclass(frozen=True)
class TeacherReport:
    """How the teacher followed the student after a step."""

    syncs: int
    gated: int
    event: str | None  # what after_step did: "sync", "gated", "ema" or nothing
    tracked_reward: float | None  # the reward the gate compared (gate on and a reward known), else None


@dataclass(frozen=True)
class TrajectoryAges:
    """Per trajectory of a step: its age in optimizer steps along the line and in seconds, and the
    rewards of those that have one."""

    versions: list[float]
    seconds: list[float]
    rewards: list[float]


def trajectory_ages(trajectories: list[Trajectory], view: LineageView, reference: int) -> TrajectoryAges:
    now = time.time()
    depths = view.depths  # age in optimizer steps along this line (off the line: as old as the base)
    return TrajectoryAges(
        versions=[float(reference - depths.get(t.version_start, 0)) for t in trajectories],
        seconds=[now - (t.finalized_at or now) for t in trajectories],
        rewards=[t.reward for t in trajectories if t.reward is not None],
    )


def shard_metrics(batch: PreparedBatch, loss: SDPOLoss | None, loss_value: float | None) -> dict[str, float]:
    """What this rank measured of its shard: what it dropped, and the loss's own metrics."""
    metrics = {
        "dropped/no_hindsight": float(len(batch.no_hindsight)),
        "dropped/unreproducible_sampling": float(len(batch.unreproducible)),
        "dropped/segments_nothing_inserted": float(batch.nothing_inserted),
        "dropped/segments_no_trainable_tokens": float(batch.no_trainable_tokens),
    }
    if loss is not None and loss_value is not None:
        metrics.update(loss.metrics)
        metrics["loss"] = loss_value
    return metrics


def step_metrics(
    shard: dict[str, float],
    summed: dict[str, float],
    *,
    trajectories: int,
    waiting: dict[str, float],
    teacher: TeacherReport,
    grad_norm: float | None,
    lr: float,
    ages: TrajectoryAges,
    quantiles: dict[str, float],
    started: float,
) -> dict[str, float]:
    """The step's metrics. `summed` (the totals over ranks) replaces the shard's values; `waiting`
    is rank 0's gauges of the store; `quantiles` those of TrainingHistograms, the step's ages
    included; `started` is the step's time.perf_counter()."""
    metrics = {**shard, "trajectories": float(trajectories), **waiting, **summed}
    if teacher.tracked_reward is not None:
        metrics["teacher/tracked_reward"] = teacher.tracked_reward
    metrics["teacher/syncs"] = float(teacher.syncs)
    metrics["teacher/gated"] = float(teacher.gated)
    metrics["teacher/event_sync"] = float(teacher.event == "sync")
    if grad_norm is not None:
        metrics["grad_norm"] = float(grad_norm)
    metrics["lr"] = lr
    rewards, seconds = ages.rewards, ages.seconds
    metrics["reward/mean"] = sum(rewards) / len(rewards) if rewards else 0.0
    metrics["age_s/mean"], metrics["age_s/max"] = sum(seconds) / len(seconds), max(seconds)
    metrics["age_versions/mean"] = sum(ages.versions) / len(ages.versions)
    metrics.update(quantiles)
    trained_tokens = metrics.get("tokens/used", 0.0)
    metrics["tokens_per_s"] = trained_tokens / max(time.perf_counter() - started, 1e-9)
    return metrics


def published_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {f"step_{k.replace('/', '_')}": metrics[k] for k in PUBLISHED_METRICS if k in metrics}


def alerts(metrics: dict[str, float], step: int, drift_warning: float) -> None:
    """Warnings about a step whose gradient cannot teach much, or whose student has drifted far from
    the policies that sampled its data (mean squared log-ratio above `drift_warning`)."""
    if "advantage/mean_abs" in metrics and metrics["advantage/mean_abs"] < 1e-3:
        log.warning("step %d: |mean A| < 1e-3: the gradient is dead", step)
    if metrics.get("fraction/truncated", 0.0) > 0.2:
        log.warning(
            "step %d: %.0f%% of the weights truncated at C", step, 100 * metrics["fraction/truncated"]
        )
    drift = metrics.get("drift/log_ratio_m2", 0.0)
    if drift > drift_warning:
        log.warning(
            "step %d: drift: mean (log rho)^2 = %.3f > sdpo.drift_warning %.3f (KL to the behaviour "
            "policy %.3f): the student is far from the policies that sampled its data; see "
            "kl_behaviour_by_staleness/* and consider sdpo.correction m2 or decoupled",
            step,
            drift,
            drift_warning,
            metrics.get("kl_behaviour", 0.0),
        )


def log_histograms(histograms: TrainingHistograms, run_dir: Path, step: int, tracker: Tracker) -> None:
    """The age and reward distributions so far, as artifacts of step `step`."""
    if not histograms.reward.values and not histograms.age_seconds.values:
        return
    where = f"histograms/step_{step:06d}"
    for path in histograms.write(run_dir / where):
        tracker.log_artifact(path, where)
