"""Configuration: pydantic models for every command, loaded from YAML files plus key=value overrides.

`load_config(Model, files, overrides)` merges the files in order (later wins, mappings merge
deeply), applies `a.b.c=value` overrides (values parsed as YAML), and validates the result once.
Any problem raises ConfigError naming the file or override, the field path, the value given and
what was expected. Nothing starts before a config validates.

Defaults are the embedded ones: local sandbox, SQLite store, CPU, the default model. The values of
the SDPO section are docs/objective.md's defaults.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentsd.errors import ConfigError
from agentsd.types import Termination

DEFAULT_STORE_URL = "sqlite:///runs/replay.db"
DEFAULT_MODEL = "default"


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- shared sections


class StoreConfig(_Cfg):
    url: str = Field(
        default=DEFAULT_STORE_URL,
        description="SQLAlchemy URL of the replay store: sqlite:///path (default) or postgresql+psycopg://...",
    )


class ModelConfig(_Cfg):
    name: str = Field(
        default=DEFAULT_MODEL,
        description="'default' (SmolLM2-135M-Instruct from the local cache), a model directory, "
        "or a Hugging Face id.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="Weights and compute dtype."
    )
    max_context: int = Field(default=8192, gt=0, description="Context window the agent may fill, in tokens.")


class TrackingConfig(_Cfg):
    enabled: bool = Field(default=True, description="Log to MLflow; False uses the no-op tracker.")
    uri: str | None = Field(
        default=None, description="MLflow tracking URI; None = sqlite:///<run_dir>/mlflow.db."
    )
    experiment: str = Field(default="agentsd", min_length=1, description="MLflow experiment name.")
    parent_run_id: str | None = Field(
        default=None,
        description="Nest this run under that MLflow run (`agentsd run` nests its collector and trainer "
        "under one parent run).",
    )


class LocalSandboxConfig(_Cfg):
    """bubblewrap sandboxes on this machine (sandboxes/local.py)."""

    backend: Literal["local"] = "local"
    rootfs: Path | None = Field(
        default=None,
        description="A prepared root filesystem (e.g. debootstrap); None = the host's /usr and /etc.",
    )
    max_sandboxes: int = Field(default=8, gt=0, description="Sandboxes running at once on this machine.")
    warm_pool: int = Field(default=0, ge=0, description="Sandboxes started ahead of need.")
    host_user: str = Field(
        default="agentsd-sandbox",
        min_length=1,
        description="The unprivileged host user (name or uid) sandboxes run as when agentsd runs as root "
        "(scripts/setup.sh creates it); as any other user, sandboxes run as that user.",
    )


class DockerSandboxConfig(_Cfg):
    """One container per episode on one or more Docker engines (sandboxes/docker_sandbox.py)."""

    backend: Literal["docker"] = "docker"
    engines: list[str] = Field(
        default_factory=lambda: [os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"],
        min_length=1,
        description="DOCKER_HOST of each engine; a fleet is several engines.",
    )
    max_per_engine: int = Field(default=8, gt=0, description="Concurrent sandboxes per engine.")
    warm_pool: int = Field(default=0, ge=0, description="Sandboxes started ahead of need, per engine.")
    network_mode: str = Field(
        default="bridge", description="Docker network of tasks that ask for network (the rest get none)."
    )


SandboxConfig = Annotated[LocalSandboxConfig | DockerSandboxConfig, Field(discriminator="backend")]


class SamplingConfig(_Cfg):
    temperature: float = Field(
        default=1.0, gt=0, description="T_s; behaviour log-probs are recorded at this temperature."
    )
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=512, gt=0, description="Per turn.")


class HFPolicyConfig(_Cfg):
    backend: Literal["hf"] = "hf"
    device: str = Field(default="cpu", description="torch device.")
    max_batch: int = Field(default=8, gt=0, description="Concurrent episodes batched into one generate call.")
    loaded_versions: int = Field(
        default=2,
        ge=1,
        description="Weights of this many policy versions kept in memory, so episodes sampling with "
        "different versions switch without reading disk (at least collect.max_live_versions).",
    )


class VLLMPolicyConfig(_Cfg):
    backend: Literal["vllm"] = "vllm"
    gpu_memory_utilization: float = Field(default=0.8, gt=0, le=1)
    max_num_seqs: int = Field(default=64, gt=0)
    enable_lora: bool = Field(default=False, description="Start the engine able to serve LoRA versions.")
    max_lora_rank: int = Field(default=64, gt=0)
    enforce_eager: bool = Field(default=True, description="No CUDA graphs / compilation: faster start.")


class OpenAIPolicyConfig(_Cfg):
    backend: Literal["openai"] = "openai"
    base_url: str | list[str] = Field(
        description="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 of `vllm serve`, or a list of "
        "them serving the same model: each request goes to the least-loaded healthy one; a failing server "
        "is taken out and retried later; versions are loaded on every server."
    )
    api_key: str = "EMPTY"
    timeout_s: float = Field(default=600.0, gt=0)
    served_model: str | None = Field(
        default=None, description="The model name to request; None = the first the server lists."
    )
    max_concurrent_requests: int = Field(default=64, gt=0, description="Requests in flight at once.")

    @property
    def urls(self) -> list[str]:
        """The servers, each without a trailing slash."""
        return [u.rstrip("/") for u in ([self.base_url] if isinstance(self.base_url, str) else self.base_url)]

    @model_validator(mode="after")
    def _servers(self) -> OpenAIPolicyConfig:
        urls = self.urls
        if not urls or not all(urls) or len(set(urls)) != len(urls):
            raise ValueError(
                f"base_url: expected one server URL or a list of distinct ones, got {self.base_url!r}"
            )
        return self


PolicyConfig = Annotated[
    HFPolicyConfig | VLLMPolicyConfig | OpenAIPolicyConfig, Field(discriminator="backend")
]


class JudgeConfig(_Cfg):
    """The LLM judge of rubric criteria that have no programmatic check."""

    backend: Literal["openai", "policy"] = Field(
        default="openai",
        description="openai: an OpenAI-compatible chat endpoint; policy: a local policy backend.",
    )
    base_url: str | None = Field(default=None, description="openai: e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(default="judge", description="openai: the model name to request.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="openai: env var with the key.")
    policy: PolicyConfig = Field(default_factory=HFPolicyConfig, description="policy: the backend.")
    policy_model: ModelConfig = Field(default_factory=ModelConfig, description="policy: the model.")
    votes: int = Field(default=1, gt=0, description="Independent judgements per criterion.")
    threshold: float = Field(
        default=0.5, gt=0, le=1, description="Met when at least this fraction of valid votes say met."
    )
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=512, gt=0)
    batch: bool = Field(default=True, description="All judge criteria of a task in one request.")
    timeout_s: float = Field(default=120.0, gt=0)
    attempts: int = Field(default=4, gt=0, description="Tries on connection errors and 5xx (tenacity).")
    evidence_chars: int = Field(default=12_000, gt=0, description="Bound on the output shown.")

    @model_validator(mode="after")
    def _endpoint(self) -> JudgeConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("judge.base_url is required for the openai judge backend")
        return self


# ---------------------------------------------------------------------------- commands


TRAINED_TERMINATIONS = [Termination.DONE, Termination.TIMEOUT, Termination.TURNS, Termination.CONTEXT]
"""The endings whose trajectories a trainer learns from by default (`train.train_on`)."""


class PacingConfig(_Cfg):
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


class CollectConfig(_Cfg):
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
        "before the task: small models follow the format far more often. Terminal and SWE tools only.",
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


class TeacherConfig(_Cfg):
    mode: Literal["live", "sync_every", "ema", "trust_region", "frozen"] = Field(
        default="live",
        description="How teacher weights follow the student (docs/objective.md 'The teacher').",
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


class SDPOConfig(_Cfg):
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
    correction: Literal["full", "is_untruncated", "none"] = Field(
        default="full",
        description="Off-policy correction of the topk form. full: w = min(rho, C), the rejection mask "
        "and K_max; is_untruncated: w = rho, no mask, no K_max (importance weighting unprotected); "
        "none: w = 1, no mask, no K_max (staleness ignored). The last two exist to measure what the "
        "protection buys.",
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
        return self.max_staleness if self.correction == "full" else None


class HindsightConfig(_Cfg):
    budget_tokens: int = Field(default=4096, gt=0, description="Token budget of the hindsight context c.")
    use_success: bool = Field(
        default=True, description="Include a successful trajectory of the same task if stored."
    )


class LoraConfig(_Cfg):
    rank: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


DEEPSPEED_PRESETS = Path(__file__).parent / "templates" / "deepspeed"


def deepspeed_config_path(value: str) -> Path:
    """A DeepSpeed preset's shipped file (zero1, zero2, zero3), or `value` as a path."""
    preset = DEEPSPEED_PRESETS / f"{value}.json"
    return preset if "/" not in value and preset.is_file() else Path(value)


class TrainConfig(_Cfg):
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


class RunConfig(_Cfg):
    """`agentsd run`: collectors and trainer at once, sharing one store and model."""

    collect: CollectConfig = Field(default_factory=CollectConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

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


class ArmConfig(_Cfg):
    """One arm of a staleness experiment: how late its rollouts arrive and how the loss corrects."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Directory and MLflow run name.")
    version_lag: int = Field(default=0, ge=0, description="collect.version_lag of this arm (K).")
    correction: Literal["full", "is_untruncated", "none"] = Field(
        default="full", description="sdpo.correction of this arm."
    )


class ExperimentConfig(_Cfg):
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
            if arm.correction == "full" and arm.version_lag > self.train.sdpo.max_staleness:
                raise ValueError(
                    f"arms.{arm.name}: version_lag {arm.version_lag} > train.sdpo.max_staleness "
                    f"{self.train.sdpo.max_staleness}: `full` would drop every trajectory as stale"
                )
            keep = self.train.keep_versions
            if keep is not None and keep <= arm.version_lag:
                raise ValueError(
                    f"arms.{arm.name}: train.keep_versions {keep} must exceed version_lag "
                    f"{arm.version_lag}, or the version to sample with is pruned before it is used"
                )
        return self


CONFIG_KINDS: dict[str, type[_Cfg]] = {
    "collect": CollectConfig,
    "train": TrainConfig,
    "run": RunConfig,
    "eval": EvalConfig,
    "experiments": ExperimentConfig,
}

# ---------------------------------------------------------------------------- loading

C = TypeVar("C", bound=BaseModel)
_Path = tuple[str, ...]


def load_config(kind: type[C], files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> C:
    """Merge YAML files and key.path=value overrides, then validate once against `kind`."""
    merged: dict[str, Any] = {}
    origin: dict[_Path, str] = {}
    for file in files:
        _merge(merged, read_yaml_mapping(Path(file)), (), str(file), origin)
    for item in overrides:
        key, value = _parse_override(item)
        _merge(merged, _nest(key, value), (), f"override {item!r}", origin)
    try:
        return kind.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(kind, exc, merged, origin)) from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping of sections at the top, got {type(data).__name__}"
        )
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _merge(
    dst: dict[str, Any], src: dict[str, Any], prefix: _Path, source: str, origin: dict[_Path, str]
) -> None:
    for key, value in src.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, path, source, origin)
        else:
            dst[key] = value
            origin[path] = source


def _field_path(loc: tuple[Any, ...], data: Any) -> _Path:
    """The error location as the user spells it: without the union tags pydantic inserts."""
    path: list[str] = []
    for i, part in enumerate(loc):
        tags = {v for v in data.values() if isinstance(v, str)} if isinstance(data, dict) else set()
        if isinstance(data, dict) and part not in data and part in tags and i + 1 < len(loc):
            continue  # a discriminated-union tag (the value of `backend`), not a key of the input
        path.append(str(part))
        data = data.get(part) if isinstance(data, dict) else None
    return tuple(path)


def _explain(
    kind: type[BaseModel], exc: ValidationError, data: dict[str, Any], origin: dict[_Path, str]
) -> str:
    lines = [f"invalid {kind.__name__} ({exc.error_count()} problem{'s' if exc.error_count() > 1 else ''}):"]
    for err in exc.errors(include_url=False):
        loc = _field_path(err["loc"], data)
        field = ".".join(loc) or "<top>"
        source = next((origin[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origin), "defaults")
        if err["type"] == "missing":
            lines.append(f"  {field}: required but not given")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field (from {source})")
        else:
            lines.append(f"  {field} = {err.get('input')!r} (from {source}): expected {_expected(err)}")
    return "\n".join(lines)


def _expected(err: Any) -> str:
    msg = str(err["msg"])
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg
