"""A deterministic scripted policy: replies chosen by a function of the decoded prompt.

For tests and demos that must drive environments fast and reproducibly through the real agent loop
and store. Each reply is tokenized with the model's tokenizer and ended with the end-of-turn token;
its log-probs are 0.0, which is exact: a scripted reply is a point mass, sampled with probability 1.

Not guaranteed: anything a model would do; the reply function sees only the prompt text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentsd.config import SamplingConfig
from agentsd.policies.base import end_of_turn_ids
from agentsd.types import Completion, PolicyVersion


class ScriptedPolicy:
    """Answers each prompt with `respond(decoded prompt)`."""

    def __init__(
        self, tokenizer: Any, respond: Callable[[str], str], *, model_name: str = "scripted"
    ) -> None:
        self.tokenizer = tokenizer
        self.respond = respond
        self.model_name = model_name
        self.end_id = min(end_of_turn_ids(tokenizer))
        self.calls = 0
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop: Sequence[str] = ()
    ) -> list[Completion]:
        out = []
        for prompt in prompts:
            self.calls += 1
            reply = self.respond(self.tokenizer.decode(list(prompt), skip_special_tokens=False))
            ids = list(self.tokenizer(reply, add_special_tokens=False)["input_ids"])[
                : sampling.max_new_tokens - 1
            ]
            ids.append(self.end_id)
            out.append(
                Completion(
                    token_ids=ids,
                    logprobs=[0.0] * len(ids),
                    finish_reason="stop",
                    policy_version=self._version,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                )
            )
        return out

    def load_version(self, version: PolicyVersion) -> None:
        self._version = version.version

    def close(self) -> None:
        pass
