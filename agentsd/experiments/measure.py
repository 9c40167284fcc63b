"""What a learning experiment measures on stored trajectories: tool-call validity and KL to the base.

`turn_validity` reads the agent turns of a run's trajectories: a turn is valid when the environment
parsed a tool call from it (its recorded action has no `parse_error`). `kl_to_base` re-scores the
agent tokens of a run's trajectories under two models and averages KL(student || base) over them,
exactly, over the whole vocabulary, at temperature 1 (the models' own distributions, not the
sampling temperature's).

The reference action's log-prob is agentsd.eval.probes'.

Not guaranteed: that the trajectories were sampled by the student (the experiment runner measures
KL on the student's own held-out rollouts, so it is an on-policy estimate there, and only there).
"""

from __future__ import annotations

import resource
from typing import Any

from agentsd.sequences import TurnTokens, segments
from agentsd.store import ReplayStore
from agentsd.types import Trajectory, TrajectoryStatus, TurnSource


def run_trajectory_ids(store: ReplayStore, run_name: str) -> list[str]:
    """The finalized trajectories of collect (or eval) run `run_name`, oldest first."""
    return [
        s.id
        for s in store.list(id_prefix=f"{run_name}.", limit=None, newest_first=False)
        if s.status is TrajectoryStatus.FINALIZED
    ]


def turn_validity(trajectories: list[Trajectory]) -> dict[str, tuple[int, int]]:
    """Per trajectory: (agent turns whose reply parsed as a tool call, agent turns)."""
    out: dict[str, tuple[int, int]] = {}
    for trajectory in trajectories:
        turns = [t for t in trajectory.turns if t.source is TurnSource.AGENT]
        valid = sum(1 for t in turns if t.action is not None and "parse_error" not in t.action)
        out[trajectory.id] = (valid, len(turns))
    return out


def kl_to_base(student: Any, base: Any, tokens: dict[str, list[TurnTokens]]) -> dict[str, float]:
    """Per trajectory (`tokens`: ReplayStore.load_tokens): mean over its agent tokens of
    KL(student || base), both causal LMs (torch modules taking input_ids); trajectories without
    agent tokens are left out."""
    import torch

    out: dict[str, float] = {}
    with torch.inference_mode():
        for trajectory_id, turns in tokens.items():
            total, count = 0.0, 0
            for segment in segments(turns):
                # position t's token was predicted at t - 1
                scored = torch.from_numpy(segment.loss_mask[1:].copy()).nonzero().squeeze(1)
                if scored.numel() == 0:
                    continue
                ids = torch.from_numpy(segment.input_ids.astype("int64"))[None]
                student_logp = student(input_ids=ids).logits[0, scored].float().log_softmax(-1)
                base_logp = base(input_ids=ids).logits[0, scored].float().log_softmax(-1)
                per_token = (student_logp.exp() * (student_logp - base_logp)).sum(-1)
                total += float(per_token.sum())
                count += int(scored.numel())
            if count:
                out[trajectory_id] = total / count
    return out


def cpu_seconds() -> float:
    """CPU time (user + system) of this process's threads and of its children that have ended
    (sandboxes, verifiers): what a step cost on the machine, which wall time under load does not say."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
