"""Config sections several commands share: store, model, tracking, sandboxes, sampling, policies, judge.

Each section validates its own fields; cross-section rules live with the command config that holds
both sections.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from agentsd.config.base import DEFAULT_MODEL, DEFAULT_STORE_URL, ConfigModel


class StoreConfig(ConfigModel):
    url: str = Field(
        default=DEFAULT_STORE_URL,
        description="SQLAlchemy URL of the replay store: sqlite:///path (default) or postgresql+psycopg://...",
    )


class ModelConfig(ConfigModel):
    name: str = Field(
        default=DEFAULT_MODEL,
        description="'default' (SmolLM2-135M-Instruct from the local cache), a model directory, "
        "or a Hugging Face id.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="Weights and compute dtype."
    )
    max_context: int = Field(default=8192, gt=0, description="Context window the agent may fill, in tokens.")


class TrackingConfig(ConfigModel):
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


BUILD_CACHE_GB_DOC = (
    "Keep the task environments built from Dockerfiles ({where}) within this many GB: after a sandbox "
    "starts from one, the least recently used builds no sandbox uses (idle 10 min or more) are removed "
    "until the rest fit. None = keep every build (`agentsd sandbox prune-builds` prunes by hand)."
)


class LocalSandboxConfig(ConfigModel):
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
    build_cache_gb: float | None = Field(
        default=None, gt=0, description=BUILD_CACHE_GB_DOC.format(where="this machine's build cache")
    )


class DockerSandboxConfig(ConfigModel):
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
    build_cache_gb: float | None = Field(
        default=None, gt=0, description=BUILD_CACHE_GB_DOC.format(where="each engine's built images")
    )


SandboxConfig = Annotated[LocalSandboxConfig | DockerSandboxConfig, Field(discriminator="backend")]


class SamplingConfig(ConfigModel):
    temperature: float = Field(
        default=0.7,
        gt=0,
        description="T_s; behaviour log-probs are recorded at this temperature. 0.7: at 1.0 the default "
        "model writes unrelated prose turn after turn (docs/results).",
    )
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=512, gt=0, description="Per turn.")


class HFPolicyConfig(ConfigModel):
    backend: Literal["hf"] = "hf"
    device: str = Field(default="cpu", description="torch device.")
    max_batch: int = Field(default=8, gt=0, description="Concurrent episodes batched into one generate call.")
    loaded_versions: int = Field(
        default=2,
        ge=1,
        description="Weights of this many policy versions kept in memory, so episodes sampling with "
        "different versions switch without reading disk (at least collect.max_live_versions).",
    )
    attention: Literal["grouped", "sdpa"] = Field(
        default="grouped",
        description="grouped: grouped-query heads read each key/value head once (agentsd/policies/"
        "attention.py); sdpa: transformers' own, which copies the cache per query head under a mask.",
    )
    prefix_cache_mb: float = Field(
        default=1024.0,
        ge=0,
        description="Memory for keeping finished sequences' attention keys and values, so an episode's "
        "next turn prefills only its new tokens (least recently used evicted); 0 turns reuse off.",
    )
    decode_cache: Literal["reserved", "dynamic"] = Field(
        default="reserved",
        description="reserved: each generate call allocates its keys and values once at its longest "
        "sequence and decode steps write in place (agentsd/policies/kv_buffer.py); dynamic: "
        "transformers' DynamicCache, which copies every layer's cache at every step.",
    )


class VLLMPolicyConfig(ConfigModel):
    backend: Literal["vllm"] = "vllm"
    gpu_memory_utilization: float = Field(default=0.8, gt=0, le=1)
    max_num_seqs: int = Field(default=64, gt=0)
    enable_lora: bool = Field(default=False, description="Start the engine able to serve LoRA versions.")
    max_lora_rank: int = Field(default=64, gt=0)
    enforce_eager: bool = Field(default=True, description="No CUDA graphs / compilation: faster start.")
    enable_prefix_caching: bool = Field(
        default=True, description="Reuse the KV blocks of a shared prefix: an episode's turns share theirs."
    )
    kv_cache_gib: float | None = Field(
        default=None,
        gt=0,
        description="On CPU, the KV cache's memory (GiB). None: what max_num_seqs sequences of "
        "model.max_context tokens need, capped at kv_cache_max_fraction of the machine's memory.",
    )
    kv_cache_max_fraction: float = Field(
        default=0.25,
        gt=0,
        le=0.8,
        description="The most of the machine's memory a derived CPU KV cache may take.",
    )


class OpenAIPolicyConfig(ConfigModel):
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


class JudgeConfig(ConfigModel):
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
