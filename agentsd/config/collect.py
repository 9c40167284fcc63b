"""The `collect` and `eval` command configs, with staleness-aware pacing.

Validation here covers one config at a time; whether a suite or a published version exists is
checked when the run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agentsd.config.base import ConfigModel
from agentsd.config.sections import (
    HFPolicyConfig,
    JudgeConfig,
    LocalSandboxConfig,
    ModelConfig,
    PolicyConfig,
    SamplingConfig,
    SandboxConfig,
    StoreConfig,
    TrackingConfig,
)
from agentsd.types import Termination

TRAINED_TERMINATIONS = [Termination.DONE, Termination.TIMEOUT, Termination.TURNS, Termination.CONTEXT]
"""The endings whose trajectories a trainer learns from by default (`train.train_on`)."""


class PacingConfig(ConfigModel):
    """Staleness-aware pacing: a collector starts an episode only while the staleness it would have
    when trained stays within the trainer's K_max, from the store's backlog of trajectories not yet
    trained on. `agentsd run` turns it on and fills it from its train section (off for a
    `version_lag` experiment); a separate collect feeding a separate trainer sets it by hand."""

    enabled: bool = Field(default=False, description="Pace new episodes by the trainer's backlog.")
    max_staleness: int = Field(default=4, ge=0, description="The trainer's sdpo.max_staleness (K_max).")
    batch_trajectories: int = Field(default=8, gt=0, description="The trainer's batch_trajectories.")
    max_backlog: int = Field(
        default=32, gt=0, description="Untrained trajectories (finished or running) at most, whatever K_max."
    )
    train_on: list[Termination] = Field(
        default_factory=lambda: list(TRAINED_TERMINATIONS),
        description="The trainer's train_on: the endings that count as backlog.",
    )
    poll_s: float = Field(default=1.0, gt=0, description="How often a waiting collector looks again.")


class CollectConfig(ConfigModel):
    """`agentsd collect`: run agents on a task suite and append every turn to the store."""

    run_dir: Path = Field(default=Path("runs/collect"), description="Logs, MLflow database, artifacts.")
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The collect run's name: its trajectories are NAME.EPISODE.ATTEMPT, and a restart "
        "with the same name resumes it. None = the run_dir's name.",
    )
    suite: str = Field(
        default="terminal",
        min_length=1,
        description="A shipped suite name, a task directory (or a directory of them), or "
        "store:SELECTOR: tasks imported into `tasks_store` whose id matches the glob SELECTOR (or "
        "whose hash starts with it).",
    )
    max_tasks: int | None = Field(default=None, gt=0, description="Only the suite's first N tasks.")
    store: StoreConfig = Field(default_factory=StoreConfig)
    tasks_store: StoreConfig | None = Field(
        default=None, description="Where a store:SELECTOR suite is read (default: `store`)."
    )

    @property
    def tasks_url(self) -> str:
        """The store a store:SELECTOR suite is read from."""
        return (self.tasks_store or self.store).url

    model: ModelConfig = Field(default_factory=ModelConfig)
    policy: PolicyConfig = Field(default_factory=HFPolicyConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    sandbox: SandboxConfig = Field(default_factory=LocalSandboxConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    concurrency: int = Field(default=4, gt=0, description="Episodes running at once.")
    repeats: int = Field(default=1, gt=0, description="Attempts per task.")
    shuffle: bool = True
    seed: int = 0
    max_turns: int = Field(default=30, gt=0)
    episode_timeout_s: float = Field(default=3600.0, gt=0)
    grade_on_truncation: bool = Field(
        default=True,
        description="Grade the final state when max_turns, episode_timeout_s or the context ends an "
        "episode (its termination stays turns/timeout/context); false: such episodes score 0 ungraded.",
    )
    demonstration: bool = Field(
        default=False,
        description="Show one worked example of the tool-call protocol (a bash command, then submit) "
        "before the task: small models follow the format far more often. Terminal and SWE tools only; "
        "a single-turn task (no tools) is shown one question answered by its answer instead.",
    )
    version_pickup: Literal["turn", "episode"] = Field(
        default="episode",
        description="episode: each episode samples with the newest version when it starts, to its end "
        "(new episodes start on a new version at once, beside older running ones); turn: every running "
        "episode switches to a new version at its next turn.",
    )
    pacing: PacingConfig = Field(default_factory=PacingConfig)
    max_live_versions: int = Field(
        default=2,
        ge=1,
        description="Versions sampling at once (episode pickup): when a new one would exceed it, the "
        "episodes on the oldest switch to the newest (their turns record it). vLLM with full weights "
        "restarts its engine per switch: set 1 there.",
    )
    lineage: str | None = Field(
        default=None,
        description="Follow the versions of this trainer lineage only (`agentsd replay versions` lists "
        "them); None = the store's newest version, whichever lineage published it.",
    )
    version_lag: int = Field(
        default=0,
        ge=0,
        description="Sample with the version K steps behind the newest of its lineage (the base model "
        "until K+1 versions exist): one machine reproducing a fleet whose rollouts arrive K versions "
        "late, for staleness experiments.",
    )
    judge: JudgeConfig | None = Field(
        default=None, description="The LLM judge of rubric criteria without a programmatic check."
    )
    lease_s: float = Field(
        default=120.0,
        gt=0,
        description="An episode's lease in the store's plan: collectors of one run (any machine) claim "
        "episodes under leases their heartbeat extends every lease_s/4; an episode whose collector "
        "stopped beating for lease_s is rerun by another as a new attempt.",
    )

    @model_validator(mode="after")
    def _versions_fit(self) -> CollectConfig:
        if isinstance(self.policy, HFPolicyConfig) and self.policy.loaded_versions < self.max_live_versions:
            raise ValueError(
                f"policy.loaded_versions ({self.policy.loaded_versions}) < max_live_versions "
                f"({self.max_live_versions}): episodes' versions would be reread from disk at every switch"
            )
        return self


class EvalConfig(CollectConfig):
    """`agentsd eval`: the collect rollout path on a suite, then grading, metrics and reports.

    Its trajectories go to their own store by default (eval tasks must not be trained on). Each eval
    is a new run (`name` None: the run_dir's name and the start time) unless resumed by name."""

    run_dir: Path = Field(default=Path("runs/eval"), description="Results, reports, MLflow database.")
    store: StoreConfig = Field(
        default_factory=lambda: StoreConfig(url="sqlite:///runs/eval/eval.db"),
        description="Where eval trajectories are stored (a separate store by default).",
    )
    shuffle: bool = False
    k: list[int] = Field(default_factory=lambda: [1], description="pass@k and pass^k for these k.")
    version: int | None = Field(
        default=None,
        ge=0,
        description="Evaluate this policy version, published in `versions_store` (its weights are "
        "hash-checked), instead of the base model; 0 = the base model.",
    )
    versions_store: StoreConfig | None = Field(
        default=None, description="The store whose trainer published `version` (the training store)."
    )

    @model_validator(mode="after")
    def _ks(self) -> EvalConfig:
        if "store" not in self.model_fields_set:  # the eval store moves with run_dir
            self.store = StoreConfig(url=f"sqlite:///{self.run_dir / 'eval.db'}")
        bad = [k for k in self.k if k < 1 or k > self.repeats]
        if bad:
            raise ValueError(f"k {bad}: each k must be between 1 and repeats ({self.repeats})")
        if self.version and self.versions_store is None:
            raise ValueError("version: set versions_store.url to the store that published it")
        return self
