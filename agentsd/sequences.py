"""The token-array view of a trajectory: what the policy saw, as training consumes it.

A trajectory's turns concatenate into context segments. Each turn appends its prompt delta and its
completion to the running context; a turn with `context_reset` (compaction rewrote the context)
starts a new segment whose first prompt is the whole context the model then saw. Within a segment,
every agent-sampled token carries its behaviour log-prob, policy version and trainability, aligned
position by position with input_ids.

This module only rearranges arrays. It never tokenizes, so positions are exact by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NOT_SAMPLED = -1
"""Version marker of positions the policy did not sample (prompt, observation, template tokens)."""


@dataclass(frozen=True, slots=True)
class TurnTokens:
    """One stored turn as arrays (what ReplayStore.load_tokens returns)."""

    index: int
    prompt_ids: np.ndarray  # int32 [P]
    completion_ids: np.ndarray  # int32 [C]
    logprobs: np.ndarray  # float32 [C], behaviour log-probs
    trainable: np.ndarray  # bool [C]: agent-sampled and not masked out
    policy_version: int
    context_reset: bool
    temperature: float | None = None  # sampling parameters; None = not recorded
    top_p: float | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """One contiguous context the model saw, with per-position training fields."""

    input_ids: np.ndarray  # int32 [L]
    behaviour_logprobs: np.ndarray  # float32 [L], 0 where not sampled
    loss_mask: np.ndarray  # bool [L], True where the token may be trained on
    versions: np.ndarray  # int32 [L], policy version of sampled tokens, NOT_SAMPLED elsewhere
    turn_index: np.ndarray  # int32 [L], the turn each position belongs to
    temperatures: (
        np.ndarray
    )  # float32 [L], sampling temperature of sampled tokens (NaN: not recorded), 1 elsewhere

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def segments(turns: Sequence[TurnTokens]) -> list[Segment]:
    """Split turns into context segments (at every context_reset) and assemble each one."""
    groups: list[list[TurnTokens]] = []
    for turn in turns:
        if turn.context_reset or not groups:
            groups.append([])
        groups[-1].append(turn)
    return [_assemble(group) for group in groups]


def _assemble(group: Sequence[TurnTokens]) -> Segment:
    ids, logprobs, mask, versions, owner, temperatures = [], [], [], [], [], []
    for turn in group:
        n_p, n_c = turn.prompt_ids.shape[0], turn.completion_ids.shape[0]
        ids += [turn.prompt_ids, turn.completion_ids]
        logprobs += [np.zeros(n_p, np.float32), turn.logprobs.astype(np.float32, copy=False)]
        mask += [np.zeros(n_p, bool), turn.trainable]
        versions += [np.full(n_p, NOT_SAMPLED, np.int32), np.full(n_c, turn.policy_version, np.int32)]
        owner.append(np.full(n_p + n_c, turn.index, np.int32))
        sampled_at = np.nan if turn.temperature is None else turn.temperature
        temperatures += [np.ones(n_p, np.float32), np.full(n_c, sampled_at, np.float32)]
    return Segment(
        input_ids=np.concatenate(ids).astype(np.int32, copy=False),
        behaviour_logprobs=np.concatenate(logprobs),
        loss_mask=np.concatenate(mask),
        versions=np.concatenate(versions),
        turn_index=np.concatenate(owner),
        temperatures=np.concatenate(temperatures),
    )


def context_before(turns: Sequence[TurnTokens], turn_position: int) -> np.ndarray:
    """Exactly the token ids the policy saw when it sampled turns[turn_position]."""
    start = 0
    for i in range(turn_position, -1, -1):
        if turns[i].context_reset:
            start = i
            break
    parts = []
    for turn in turns[start:turn_position]:
        parts += [turn.prompt_ids, turn.completion_ids]
    parts.append(turns[turn_position].prompt_ids)
    return np.concatenate(parts).astype(np.int32, copy=False)
