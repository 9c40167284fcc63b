"""Policies: inference backends that sample token ids with behaviour log-probs (see base.Policy).

`make_policy` builds the configured backend; each backend module imports its heavy dependencies
only when constructed.
"""

from __future__ import annotations

from agentsd.config import HFPolicyConfig, ModelConfig, OpenAIPolicyConfig, PolicyConfig
from agentsd.policies.base import Policy, PolicyError

__all__ = ["Policy", "PolicyError", "make_policy"]


def make_policy(config: PolicyConfig, model: ModelConfig, *, seed: int | None = None) -> Policy:
    """The backend named by `config.backend`, serving `model` at version 0."""
    if isinstance(config, HFPolicyConfig):
        from agentsd.policies.hf import HFPolicy

        return HFPolicy(model, config, seed=seed)
    if isinstance(config, OpenAIPolicyConfig):
        from agentsd.policies.openai import OpenAIPolicy

        return OpenAIPolicy(model, config, seed=seed)
    from agentsd.policies.vllm import VLLMPolicy

    return VLLMPolicy(model, config, seed=seed)
