"""Teacher-forced probes of a causal LM on stored episodes: how likely a task's reference action is.

`reference_logprob` scores a task's reference reply (`reference_text`: `task.reference["action"]`
written as the tool-call protocol writes it, or a single-turn task's `task.reference["reply"]`) after
given prompt ids: the mean log-prob per token a model gives the
right action, a continuous measure of learning that moves before sampled rewards do. With the
teacher's context inserted (agentsd.sdpo.hindsight.insert_context) the same probe scores the
self-teacher, so their difference is the gap's per-token proxy, mean[log pi(a*|x, c) - log pi(a*|x)].

Not guaranteed: that the reference is the only right action (a task may have several).
"""

from __future__ import annotations

from typing import Any

from agentsd.sdpo.hindsight import tool_call_text
from agentsd.sequences import TurnTokens


def reference_text(task_reference: dict[str, Any]) -> str | None:
    """The text a task's reference reply is, when it has one: a single-turn task's reply, or one
    reference tool call written as the agent writes calls (the learnable suite's tasks have one)."""
    reply = task_reference.get("reply")
    if isinstance(reply, str):
        return reply
    action = task_reference.get("action")
    if isinstance(action, dict) and "name" in action:
        return tool_call_text(str(action["name"]), dict(action.get("arguments") or {}))
    return None


def first_prompts(tokens: dict[str, list[TurnTokens]]) -> dict[str, list[int]]:
    """Per trajectory: the token ids its policy saw before its first reply."""
    return {i: turns[0].prompt_ids.tolist() for i, turns in tokens.items() if turns}


def reference_logprob(model: Any, tokenizer: Any, prompt_ids: list[int], text: str) -> float:
    """Mean log-prob per token of the reference reply's tokens (`reference_text`) after `prompt_ids`
    (temperature 1)."""
    import torch

    target = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    ids = torch.tensor([[*prompt_ids, *target]], dtype=torch.long)
    with torch.inference_mode():
        logp = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float().log_softmax(-1)
    return float(logp.gather(1, torch.tensor(target)[:, None]).mean())
