"""The configs that combine others: `run` (collect and train at once) and learning experiments,
and CONFIG_KINDS, the command name -> config model map `agentsd config` validates against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agentsd.config.base import ConfigModel
from agentsd.config.collect import CollectConfig, EvalConfig
from agentsd.config.sections import ModelConfig, TrackingConfig
from agentsd.config.train import (
    UNBOUNDED_CORRECTIONS,
    CorrectionName,
    HindsightConfig,
    HindsightSource,
    TeacherConfig,
    TrainConfig,
)


class RunConfig(ConfigModel):
    """`agentsd run`: collectors and trainer at once, sharing one store and model."""

    collect: CollectConfig = Field(default_factory=CollectConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    trainer_hang_s: float = Field(
        default=1800.0,
        gt=0,
        description="A trainer whose loop shows no sign of life this long (model loading and the "
        "longest step included) is stopped as hung, after printing its threads' stacks, and the run "
        "stops with it.",
    )

    @model_validator(mode="after")
    def _shared(self) -> RunConfig:
        pacing = self.collect.pacing
        if "enabled" not in pacing.model_fields_set:  # on, unless rollouts are made late on purpose
            pacing.enabled = self.collect.version_lag == 0
        for name, value in (
            ("max_staleness", self.train.sdpo.max_staleness),
            ("batch_trajectories", self.train.batch_trajectories),
            ("train_on", list(self.train.train_on)),
        ):
            if name not in pacing.model_fields_set:
                setattr(pacing, name, value)
        if self.collect.store.url != self.train.store.url:
            raise ValueError(
                f"collect.store.url ({self.collect.store.url}) and "
                f"train.store.url ({self.train.store.url}) differ; "
                "a run needs one store"
            )
        return self


PeerTrainer = Literal["trl-sdpo", "trl-grpo", "trl-sft"]


class PeerConfig(ConfigModel):
    """An arm trained by another library on the same tasks, model and budget (issue: side by side
    with TRL; agentsd.experiments.peers): TRL's SDPOTrainer or GRPOTrainer on the single-turn form
    of the training suite with groups of `num_generations`, or its SFTTrainer on the tasks' reference
    replies. The budget is the experiment's: steps x train.batch_trajectories completions (or, for
    SFT, reference replies). Its LoRA and learning rate are the peer's own, stated per arm."""

    trainer: PeerTrainer
    lr: float = Field(gt=0, description="The peer's learning rate.")
    lora_rank: int = Field(gt=0)
    lora_alpha: int = Field(gt=0)
    lora_targets: list[str] = Field(
        min_length=1, description="Module names, or ['all-linear'] (peft's every linear layer but the head)."
    )
    num_generations: int = Field(default=8, ge=2, description="Group size (SDPO and GRPO).")
    batch_size: int = Field(default=4, gt=0, description="Examples per optimizer step (SFT).")


class ArmConfig(ConfigModel):
    """One arm of a staleness experiment: how late its rollouts arrive and how the loss corrects,
    or (`peer`) another library's trainer on the same tasks."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Directory and MLflow run name.")
    version_lag: int = Field(default=0, ge=0, description="collect.version_lag of this arm (K).")
    correction: CorrectionName = Field(default="full", description="sdpo.correction of this arm.")
    sources: list[HindsightSource] | None = Field(
        default=None,
        min_length=1,
        description="train.hindsight.sources of this arm (None: the experiment's).",
    )
    teacher: TeacherConfig | None = Field(default=None, description="train.teacher of this arm.")
    lr: float | None = Field(default=None, gt=0, description="train.lr of this arm.")
    peer: PeerConfig | None = Field(
        default=None, description="Train this arm with another library instead of agentsd's trainer."
    )


class GapConfig(EvalConfig):
    """`agentsd gap`: the self-teacher's gap on a suite before training. The student pass is an
    eval run; the teacher pass samples the same tasks with the same model, its prompt holding the
    hindsight the trainer's teacher would get (the student's attempt's feedback and the configured
    privileged sources), graded by the same verifiers."""

    hindsight: HindsightConfig = Field(
        default_factory=HindsightConfig, description="What the teacher's context is built from."
    )


class ExperimentConfig(ConfigModel):
    """`scripts/experiments/staleness.py`: arms x seeds of lock-step collect/train rounds on one
    model, each arm's versions evaluated on a held-out suite through the eval path."""

    name: str = Field(default="staleness", pattern=r"^[A-Za-z0-9_-]+$", description="MLflow experiment.")
    work_dir: Path = Field(
        default=Path("runs/experiments/staleness"), description="Stores, checkpoints, per-arm records."
    )
    report_dir: Path = Field(default=Path("docs/results"), description="Where the report is written.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    steps: int = Field(default=12, gt=0, description="Optimizer steps per arm (one collect round each).")
    eval_every: int = Field(
        default=6, gt=0, description="Held-out evaluation every N steps (and at the end)."
    )
    heldout_suite: str = Field(default="learn-heldout", min_length=1)
    eval_tasks: int | None = Field(default=24, gt=0, description="The held-out suite's first N tasks.")
    base: bool = Field(default=True, description="Evaluate the base model (step 0 of every arm).")
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="The one model of every arm (collect, train, eval)."
    )
    collect: CollectConfig = Field(
        default_factory=lambda: CollectConfig(suite="learn-train"),
        description="Rollout settings; a round runs train.batch_trajectories episodes of this suite.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    gap: bool = Field(
        default=False,
        description="Measure the self-teacher's gap on the held-out tasks at step 0 (agentsd gap's "
        "teacher pass beside the base model's evaluation of the first seed) for each arm's hindsight "
        "sources and each set in gap_sources.",
    )
    gap_sources: list[list[HindsightSource]] = Field(
        default_factory=list, description="More sets of hindsight sources to measure the gap of."
    )
    records_dir: Path | None = Field(
        default=None,
        description="Where each finished arm x seed's records go as one small JSON file (commit them): "
        "the runner skips what is recorded there and the report merges it, so an experiment goes on "
        "from what is committed, on a fresh machine. None: <report_dir>/<name>.",
    )
    arms: list[ArmConfig] = Field(min_length=1)
    compare_with: str | None = Field(
        default=None,
        description="The arm every other arm is compared with, paired by task (default: the arm with "
        "no lag and the full correction, when there is one).",
    )

    @model_validator(mode="after")
    def _arms(self) -> ExperimentConfig:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names) or "base" in names:
            raise ValueError(f"arms: names must be unique and not 'base', got {names}")
        if self.compare_with is not None and self.compare_with not in names:
            raise ValueError(f"compare_with: {self.compare_with!r} is not one of the arms {names}")
        for arm in self.arms:
            bounded = arm.correction not in UNBOUNDED_CORRECTIONS
            if bounded and arm.version_lag > self.train.sdpo.max_staleness:
                raise ValueError(
                    f"arms.{arm.name}: version_lag {arm.version_lag} > train.sdpo.max_staleness "
                    f"{self.train.sdpo.max_staleness}: `{arm.correction}` would drop every trajectory "
                    "as stale"
                )
            keep = self.train.keep_versions
            if keep is not None and keep <= arm.version_lag:
                raise ValueError(
                    f"arms.{arm.name}: train.keep_versions {keep} must exceed version_lag "
                    f"{arm.version_lag}, or the version to sample with is pruned before it is used"
                )
        return self


CONFIG_KINDS: dict[str, type[ConfigModel]] = {
    "collect": CollectConfig,
    "gap": GapConfig,
    "train": TrainConfig,
    "run": RunConfig,
    "eval": EvalConfig,
    "experiments": ExperimentConfig,
}
