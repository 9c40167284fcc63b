"""Per-token credit: what SDPO learns from a trajectory, as the teacher-student log-ratio of each
agent token, log q_t(y_t) - log s_t(y_t) (positive: the hindsight teacher likes the token more than
the acting student did, so SDPO pushes it up; negative: pushed down).

The student and teacher are the given model (the live teacher of docs/objective.md) on the segment and
on its hindsight view (agentsd.sdpo.hindsight), at each turn's sampling temperature. Rendered for a
terminal (rich Text, red to green) and as a standalone HTML page.

Not guaranteed: that the model given is the one that sampled the trajectory; the picture shows what
SDPO would learn from it with these weights.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.text import Text

from agentsd.sdpo.hindsight import HindsightBuilder
from agentsd.sdpo.step import prepare
from agentsd.sequences import TurnTokens
from agentsd.types import Trajectory


@dataclass(frozen=True)
class TokenCredit:
    turn_index: int
    token_id: int
    text: str
    log_ratio: float


def token_credit(
    model: torch.nn.Module,
    tokenizer: Any,  # any Hugging Face tokenizer, as HindsightBuilder takes it
    trajectory: Trajectory,
    tokens: list[TurnTokens],
    *,
    success: Trajectory | None = None,
    budget_tokens: int = 4096,
) -> list[TokenCredit]:
    """The log-ratio of every trainable agent token, in order (empty when there is no hindsight)."""
    batch = prepare(
        [trajectory],
        {trajectory.id: tokens},
        HindsightBuilder(tokenizer, budget_tokens),
        {trajectory.task_id: success} if success is not None else None,
    )
    out: list[TokenCredit] = []
    for item in batch.items:
        trained = np.flatnonzero(item.segment.loss_mask)
        student_ids = torch.from_numpy(item.segment.input_ids.astype(np.int64))[None]
        teacher_ids = torch.from_numpy(item.view.input_ids.astype(np.int64))[None]
        with torch.no_grad():
            s = model(student_ids).logits[0, torch.from_numpy(trained - 1)]
            q = model(teacher_ids).logits[0, torch.from_numpy(item.view.position[trained] - 1)]
        y = torch.from_numpy(item.segment.input_ids[trained].astype(np.int64))
        temperature = torch.from_numpy(item.segment.temperatures[trained].astype(np.float32))[:, None]
        log_s = torch.log_softmax(s.float() / temperature, -1).gather(-1, y[:, None]).squeeze(-1)
        log_q = torch.log_softmax(q.float() / temperature, -1).gather(-1, y[:, None]).squeeze(-1)
        for position, token, ratio in zip(trained, y.tolist(), (log_q - log_s).tolist(), strict=True):
            out.append(
                TokenCredit(int(item.segment.turn_index[position]), token, tokenizer.decode([token]), ratio)
            )
    return out


def _colour(ratio: float, scale: float = 2.0) -> tuple[int, int, int]:
    """Red (pushed down) through white to green (pushed up), saturating at |ratio| = scale."""
    x = max(-1.0, min(1.0, ratio / scale))
    if x >= 0:
        return (int(255 * (1 - x)), 255, int(255 * (1 - x)))
    return (255, int(255 * (1 + x)), int(255 * (1 + x)))


def render_terminal(credits: list[TokenCredit]) -> Text:
    """A rich Text: each token on a background from red to green by its log-ratio."""
    text = Text()
    turn = None
    for credit in credits:
        if credit.turn_index != turn:
            turn = credit.turn_index
            text.append(f"\n[turn {turn}]\n", style="bold")
        r, g, b = _colour(credit.log_ratio)
        text.append(credit.text, style=f"black on rgb({r},{g},{b})")
    return text


def render_html(trajectory: Trajectory, credits: list[TokenCredit]) -> str:
    """A standalone page: tokens coloured by log-ratio, the value on hover."""
    rows = []
    turn = None
    for credit in credits:
        if credit.turn_index != turn:
            if turn is not None:
                rows.append("</pre>")
            turn = credit.turn_index
            rows.append(f"<h3>turn {turn}</h3><pre>")
        r, g, b = _colour(credit.log_ratio)
        rows.append(
            f'<span style="background:rgb({r},{g},{b})" title="{credit.log_ratio:+.3f}">'
            f"{html.escape(credit.text)}</span>"
        )
    if turn is not None:
        rows.append("</pre>")
    mean = sum(c.log_ratio for c in credits) / len(credits) if credits else 0.0
    return (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>credit {html.escape(trajectory.id)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{white-space:pre-wrap;font-size:14px}</style>"
        f"<h2>{html.escape(trajectory.id)}: task {html.escape(trajectory.task_id)}, "
        f"reward {trajectory.reward}</h2>"
        "<p>Each agent token on a background by log q(y) - log s(y): green, the hindsight teacher prefers "
        f"it (SDPO pushes it up); red, pushed down. Mean {mean:+.3f} over {len(credits)} tokens.</p>"
        + "".join(rows)
    )
