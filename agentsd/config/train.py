"""The `train` command config: the SDPO objective, the teacher, hindsight, LoRA and DeepSpeed.

The SDPO section's defaults are docs/objective.md's. Not checked here: that a DeepSpeed preset fits
the machine, or that a learning rate suits the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agentsd.config.base import ConfigModel
from agentsd.config.collect import TRAINED_TERMINATIONS
from agentsd.config.sections import ModelConfig, StoreConfig, TrackingConfig
from agentsd.types import Termination


class TeacherConfig(ConfigModel):
    mode: Literal["live", "sync_every", "ema", "trust_region", "frozen"] = Field(
        default="ema",
        description="How teacher weights follow the student (docs/objective.md 'The teacher'; ema was "
        "measured best among the modes that follow it).",
    )
    sync_every: int = Field(
        default=10, gt=0, description="Optimizer steps between hard copies (mode sync_every)."
    )
    ema: float = Field(
        default=0.01, gt=0, le=1, description="μ of φ <- (1-μ)φ + μθ (mode ema); safe band μ <= 0.01."
    )
    trust_region: float = Field(default=0.5, ge=0, le=1, description="γ mixing reference and student logits.")
    gate_on_eval: bool = Field(
        default=False, description="Hard syncs only when tracked eval reward has not fallen."
    )
    gate_window: int = Field(
        default=32,
        gt=0,
        description="The tracked reward for the gate: mean over the newest finalized trajectories.",
    )


CorrectionName = Literal["full", "is_untruncated", "none", "downweight", "m2", "decoupled"]
UNBOUNDED_CORRECTIONS = frozenset({"is_untruncated", "none"})  # they train on tokens of any age


class SDPOConfig(ConfigModel):
    form: Literal["topk", "sampled_token"] = Field(
        default="topk", description="Logit-level top-k KL or sampled-token form."
    )
    top_k: int = Field(default=100, gt=0, description="Student top-k support (plus one tail bin).")
    alpha: float = Field(default=1.0, ge=0, le=1, description="α of the generalized JSD; 1 = reverse KL.")
    is_cap: float = Field(default=2.0, gt=0, description="C: truncation of the behaviour importance weight.")
    rho_low: float = Field(default=0.1, gt=0, description="Rejection mask lower bound on ρ.")
    rho_high: float = Field(default=10.0, gt=0, description="Rejection mask upper bound on ρ.")
    turn_level_mask: bool = Field(
        default=False, description="Also reject whole turns by the geometric mean of ρ."
    )
    max_staleness: int = Field(
        default=4, ge=0, description="K_max: turns sampled more than this many versions ago drop."
    )
    staleness_drop: Literal["turn", "trajectory"] = "turn"
    staleness_decay: float = Field(default=1.0, gt=0, le=1, description="λ of the optional λ^k weight.")
    clip_low: float = Field(default=0.2, ge=0, description="ε_lo of the sampled-token PPO clip.")
    clip_high: float = Field(default=0.28, ge=0, description="ε_hi of the sampled-token PPO clip.")
    advantage_clip: float = Field(
        default=3.0, gt=0, description="c_A: advantage clip in units of the running mean |A|."
    )
    turn_weights: bool = Field(default=False, description="Optional per-turn weight g (position bias).")
    turn_weight_delta: float = Field(default=0.2, ge=0)
    correction: CorrectionName = Field(
        default="full",
        description="Off-policy correction of the topk form. full: w = min(rho, C), the rejection mask "
        "and K_max; is_untruncated: w = rho, no mask, no K_max (importance weighting unprotected); "
        "none: w = 1, no mask, no K_max (staleness ignored); downweight: w = min(rho, 1) and K_max; "
        "m2: w = rho under a batch mask keeping the mean squared log-ratio <= m2_threshold, and K_max; "
        "decoupled: the trust region centred on the previous version (interpolated), the "
        "behaviour-to-proximal weight capped at C, and K_max.",
    )
    m2_threshold: float = Field(
        default=0.04,
        gt=0,
        description="correction m2: the bound on the kept tokens' mean squared log-ratio (M2PO's 0.04).",
    )
    drift_warning: float = Field(
        default=0.5,
        gt=0,
        description="The trainer warns when a step's mean squared log-ratio of student to behaviour "
        "policy (drift/log_ratio_m2) passes this: the student has moved far from what sampled its data.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> SDPOConfig:
        if self.rho_low >= self.rho_high:
            raise ValueError(f"rho_low ({self.rho_low}) must be below rho_high ({self.rho_high})")
        if self.correction != "full" and self.form != "topk":
            raise ValueError(
                f"correction {self.correction!r} is defined for form topk; the sampled_token form's "
                "own PPO ratio and clip are its correction"
            )
        return self

    @property
    def staleness_bound(self) -> int | None:
        """K_max, or None when the correction variant ignores staleness."""
        return None if self.correction in UNBOUNDED_CORRECTIONS else self.max_staleness


HindsightSource = Literal["feedback", "success", "solution", "demonstration", "example"]


class HindsightConfig(ConfigModel):
    budget_tokens: int = Field(default=4096, gt=0, description="Token budget of the hindsight context c.")
    sources: list[HindsightSource] = Field(
        default_factory=lambda: ["feedback", "success"],
        min_length=1,
        description="What the teacher's context is built from. feedback: the verifier's verdict, rubric "
        "verdicts, user and environment replies, what followed each turn; success: a successful "
        "trajectory of the same task, if stored; solution: the task's reference in plain form; "
        "demonstration: the reference as the agent's tool calls; example: the task asked and answered "
        "by its reference, as an earlier exchange of the conversation (real chat turns before the "
        "task's message). solution, demonstration and example are privileged: the teacher alone sees "
        "them, never the student's prompt, an eval or the sandbox.",
    )

    @field_validator("sources")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value}: name each source once")
        return value


class LoraConfig(ConfigModel):
    rank: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


DEEPSPEED_PRESETS = Path(__file__).parent.parent / "templates" / "deepspeed"


def deepspeed_config_path(value: str) -> Path:
    """A DeepSpeed preset's shipped file (zero1, zero2, zero3), or `value` as a path."""
    preset = DEEPSPEED_PRESETS / f"{value}.json"
    return preset if "/" not in value and preset.is_file() else Path(value)


class TrainConfig(ConfigModel):
    """`agentsd train`: SDPO on finalized trajectories from the store."""

    run_dir: Path = Field(
        default=Path("runs/train"), description="Checkpoints, published versions, MLflow database."
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    sdpo: SDPOConfig = Field(default_factory=SDPOConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    hindsight: HindsightConfig = Field(default_factory=HindsightConfig)
    lora: LoraConfig | None = Field(default=None, description="Train a LoRA adapter instead of all weights.")
    lr: float | None = Field(
        default=None, gt=0, description="None = 1e-6 for full fine-tuning, 1e-5 for LoRA."
    )
    grad_clip: float = Field(default=1.0, gt=0)
    batch_trajectories: int = Field(default=8, gt=0, description="Trajectories per optimizer step.")
    train_on: list[Termination] = Field(
        default_factory=lambda: list(TRAINED_TERMINATIONS),
        min_length=1,
        description="How a trajectory must have ended to be trained on. env_error (the verifier or the "
        "sandbox failed: its reward and verdict mean nothing), agent_error and interrupted (partial "
        "runs) are left out by default; how many wait unused is logged every step (dropped/*).",
    )
    chunk_tokens: int = Field(default=1024, gt=0, description="Positions projected to logits at once.")
    fork: bool = Field(
        default=False,
        description="Start a new lineage of versions where this trainer would otherwise refuse: a "
        "run_dir without a checkpoint on a store that has versions (the new lineage starts from the base "
        "model), or a checkpoint another lineage has moved past (it continues those weights). Version "
        "numbers continue after the store's newest either way.",
    )
    max_steps: int | None = Field(
        default=None, gt=0, description="Stop after this many optimizer steps; None = run on."
    )
    deepspeed: str = Field(
        default="zero2",
        min_length=1,
        description="DeepSpeed config: a preset shipped with agentsd (zero1, zero2, zero3) or the path "
        "of a JSON file.",
    )
    histogram_every: int = Field(
        default=10, ge=1, description="Write age and reward histograms to MLflow every N steps."
    )
    mmap_threshold_bytes: int | None = Field(
        default=1 << 20,
        ge=0,
        description="glibc: allocations from this size are mmapped and returned to the OS when freed "
        "(fixed, instead of the dynamic threshold under which tensors just below 32 MB fragment the "
        "heap: 2x peak RSS seen at 8k tokens). None = leave the allocator alone.",
    )
    keep_checkpoints: int = Field(
        default=2, ge=1, description="DeepSpeed checkpoints kept on disk (weights + optimizer each)."
    )
    keep_versions: int | None = Field(
        default=4,
        ge=1,
        description="Published versions kept on disk (newest first); older ones stay in the store's "
        "versions table with their files deleted. None = keep all.",
    )

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_exists(cls, value: str) -> str:
        if not deepspeed_config_path(value).is_file():
            presets = ", ".join(sorted(p.stem for p in DEEPSPEED_PRESETS.glob("*.json")))
            raise ValueError(f"{value!r} is neither a preset ({presets}) nor an existing JSON file")
        return value

    @property
    def effective_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-5 if self.lora is not None else 1e-6
