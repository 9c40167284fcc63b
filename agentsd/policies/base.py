"""The Policy protocol every inference backend implements, and the pieces they share.

A policy turns token-id prompts into completions: the sampled token ids, the behaviour log-prob of
each (under the distribution actually sampled from, after temperature and top-p), a finish reason
and the exact policy version whose weights produced them. Prompts are token ids, never text, so the
agent loop decides every token the model sees and training never re-tokenizes.

Versions: weights are published as numbered versions (agentsd.types.PolicyVersion: a directory of
full weights, or a LoRA adapter over the base model). `load_version` switches a backend to one;
between switches every completion reports the version it was sampled with. Version 0 is the base
model as configured (`base_version`: no checkpoint). A collector switches back and forth between
the versions its running episodes sample with, so backends keep switching cheap where they can: the
hf backend keeps the weights of its last `loaded_versions` versions in memory, vLLM and `vllm serve`
switch LoRA adapters per request; full weights on vLLM restart its engine.

Not guaranteed here: batching across callers (the collector's GenerationQueue does it) and
thread safety (one generate call at a time per policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentsd.config import SamplingConfig
from agentsd.errors import AgentsdError
from agentsd.types import Completion, PolicyVersion
from agentsd.weights import weights_hash


class PolicyError(AgentsdError):
    """A policy backend failed: the model, the server or a published version is unusable."""


@runtime_checkable
class Policy(Protocol):
    model_name: str
    """What trajectories record as `policy_model`."""

    tokenizer: Any
    """The model's Hugging Face tokenizer: chat template, special tokens, decoding."""

    @property
    def version(self) -> int:
        """The policy version the next completion will be sampled with."""
        ...

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop: Sequence[str] = ()
    ) -> list[Completion]:
        """One completion per prompt; a completion ends at end-of-turn, a stop string (kept), or
        sampling.max_new_tokens."""
        ...

    def load_version(self, version: PolicyVersion) -> None:
        """Serve `version` from now on (weights from its checkpoint_uri)."""
        ...

    def close(self) -> None: ...


BASE_CHECKPOINT = ""
"""The checkpoint_uri of version 0: the base model as the policy was configured."""


def base_version(model: str) -> PolicyVersion:
    """Version 0, the configured base model, as a version a policy can switch back to."""
    return PolicyVersion(version=0, model=model, checkpoint_uri=BASE_CHECKPOINT, created_at=0.0)


def is_base(version: PolicyVersion) -> bool:
    return version.version == 0 and version.checkpoint_uri == BASE_CHECKPOINT


def load_checked(policy: Policy, version: PolicyVersion) -> None:
    """Switch `policy` to `version` after checking its files are there and hash to what the store
    recorded; PolicyError otherwise (the policy keeps its current weights)."""
    if not Path(version.checkpoint_uri).exists():
        raise PolicyError(f"{version.checkpoint_uri} is gone from disk (pruned by the trainer?)")
    if version.weights_hash is not None:
        actual = weights_hash(version.checkpoint_uri)
        if actual != version.weights_hash:
            raise PolicyError(
                f"the weights in {version.checkpoint_uri} hash to {actual[:12]}, the store "
                f"records {version.weights_hash[:12]} for version {version.version}"
            )
    policy.load_version(version)


def checkpoint_kind(uri: str) -> str:
    """'full' (a model directory) or 'lora' (a peft adapter directory) for a published version."""
    path = Path(uri)
    if (path / "adapter_config.json").is_file():
        return "lora"
    if (path / "config.json").is_file():
        return "full"
    raise PolicyError(
        f"policy version checkpoint {uri}: expected a model directory (config.json) "
        "or a LoRA adapter (adapter_config.json)"
    )


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Token ids that end an assistant turn: the tokenizer's eos and the chat template's end marker."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token, int) and token != tokenizer.unk_token_id and token >= 0:
            ids.add(token)
    return ids


def validate_prompts(prompts: Sequence[Sequence[int]], vocab_size: int, max_context: int) -> None:
    """Reject what would make a backend fail obscurely: empty prompts, unknown ids, overlong ones."""
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise PolicyError(f"prompt {i} is empty")
        if len(prompt) >= max_context:
            raise PolicyError(f"prompt {i} has {len(prompt)} tokens; the context window is {max_context}")
        bad = next((t for t in prompt if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise PolicyError(f"prompt {i} holds token id {bad}, outside the vocabulary (size {vocab_size})")
