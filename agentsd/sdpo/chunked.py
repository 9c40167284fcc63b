"""Memory-bounded projection of hidden states to the per-token quantities SDPO needs.

A trajectory of tens of thousands of tokens times a vocabulary of 50-150k would need gigabytes of
logits, twice (student and teacher) and again for their gradients. `chunked_head` never holds more
than one chunk of logits: forward projects `chunk` rows at a time (no autograd graph), keeps only
per-token scalars, and backward recomputes each chunk's logits with gradient enabled, so peak memory
grows with chunk x vocab, not tokens x vocab (docs/objective.md "Memory and speed").

Per token it returns D_t (top-k + tail divergence of the student from the teacher, see
divergence.py), log s_t(y_t) and log q_t(y_t), all at the token's sampling temperature (one for all,
or one per row); the first two carry gradient to the student's hidden states and output projection,
the teacher's is a constant.

Not guaranteed: output projections with a bias (none of the supported models has one) and logit
soft-capping; such heads need the unchunked path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from agentsd.sdpo.divergence import generalized_jsd, upcast, with_tail

DEFAULT_CHUNK = 1024


def chunked_head(
    hidden: Tensor,
    weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    tokens: Tensor,
    *,
    k: int,
    alpha: float = 1.0,
    temperature: float | Tensor = 1.0,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor, Tensor]:
    """(D [N], student log-prob of y [N], teacher log-prob of y [N]) for hidden states [N, H].

    `weight` [V, H] is the student's output projection (gradient flows to it and to `hidden`);
    `teacher_hidden` [N, H] and `teacher_weight` [V, H] are used without gradient. k = 0 skips D
    (the sampled-token form needs only the log-probs). `temperature`: a float, or a tensor [N] of
    each row's own."""
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    if not isinstance(temperature, int | float):
        if tuple(temperature.shape) != (hidden.shape[0],):
            raise ValueError(
                f"temperature: expected a float or {hidden.shape[0]} values, got {tuple(temperature.shape)}"
            )
        if not bool((temperature > 0).all()):
            raise ValueError("temperature: every value must be positive (NaN: a temperature not recorded)")
    return ChunkedHead.apply(
        hidden, weight, teacher_hidden, teacher_weight, tokens, k, alpha, temperature, chunk
    )


def _rows(temperature: float | Tensor, part: slice) -> float | Tensor:
    """One chunk's temperature, shaped to divide its [n, V] logits."""
    return temperature if isinstance(temperature, int | float) else temperature[part, None]


def _student_terms(
    h: Tensor,
    w: Tensor,
    y: Tensor,
    support: Tensor | None,
    log_r: Tensor | None,
    alpha: float,
    temperature: float | Tensor,
) -> tuple[Tensor, Tensor]:
    """(D, log s(y)) of one chunk from its hidden rows, given the teacher's side already reduced to
    the support (`support` [n, k] indices, `log_r` [n, k+1] teacher log-probs with the tail bin)."""
    student = torch.log_softmax(upcast(h @ w.T) / temperature, -1)
    logp = student.gather(-1, y[:, None]).squeeze(-1)
    if support is None or log_r is None:
        return torch.zeros_like(logp), logp
    log_p = with_tail(student.gather(-1, support))
    return generalized_jsd(log_p, log_r, alpha), logp


def _chunk_forward(
    h: Tensor,
    w: Tensor,
    th: Tensor,
    tw: Tensor,
    y: Tensor,
    k: int,
    alpha: float,
    temperature: float | Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """One chunk without gradient: (D, log s(y), log q(y), support, log_r). Each side's log-softmax
    is computed once; the support and the teacher's log-probs on it are what backward needs of the
    teacher, so backward never runs the teacher projection again."""
    with torch.no_grad():
        student = torch.log_softmax(upcast(h @ w.T) / temperature, -1)
        teacher = torch.log_softmax(upcast(th @ tw.T) / temperature, -1)
        logp = student.gather(-1, y[:, None]).squeeze(-1)
        teacher_logp = teacher.gather(-1, y[:, None]).squeeze(-1)
        if k <= 0:
            return torch.zeros_like(logp), logp, teacher_logp, None, None
        support = student.topk(min(k, student.shape[-1]), dim=-1).indices
        log_r = with_tail(teacher.gather(-1, support))
        divergence = generalized_jsd(with_tail(student.gather(-1, support)), log_r, alpha)
        return divergence, logp, teacher_logp, support, log_r


class ChunkedHead(torch.autograd.Function):
    """The projection as an autograd function: forward keeps per-token scalars and the teacher's
    side on the support; backward recomputes the student's logits chunk by chunk. `ctx` is typed
    Any: the function stores its own attributes on it (teacher_side, settings)."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        teacher_hidden: Tensor,
        teacher_weight: Tensor,
        tokens: Tensor,
        k: int,
        alpha: float,
        temperature: float | Tensor,
        chunk: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n = hidden.shape[0]
        dtype = upcast(hidden[:0]).dtype
        divergence = torch.empty(n, dtype=dtype, device=hidden.device)
        logp = torch.empty(n, dtype=dtype, device=hidden.device)
        teacher_logp = torch.empty(n, dtype=dtype, device=hidden.device)
        supports, log_rs = [], []
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            d, lp, tlp, support, log_r = _chunk_forward(
                hidden[part],
                weight,
                teacher_hidden[part],
                teacher_weight,
                tokens[part],
                k,
                alpha,
                _rows(temperature, part),
            )
            divergence[part], logp[part], teacher_logp[part] = d, lp, tlp
            supports.append(support)
            log_rs.append(log_r)
        ctx.save_for_backward(hidden, weight, tokens)
        ctx.teacher_side = (supports, log_rs)  # [n, k] ints and [n, k+1] floats per chunk: small
        ctx.settings = (alpha, temperature, chunk)
        ctx.mark_non_differentiable(teacher_logp)
        return divergence, logp, teacher_logp

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        grad_divergence, grad_logp = grad_outputs[0], grad_outputs[1]
        hidden, weight, tokens = ctx.saved_tensors
        supports, log_rs = ctx.teacher_side
        alpha, temperature, chunk = ctx.settings
        grad_hidden, grad_weight = torch.zeros_like(hidden), torch.zeros_like(weight)
        w = weight.detach().requires_grad_(True)
        for index, start in enumerate(range(0, hidden.shape[0], chunk)):
            part = slice(start, start + chunk)
            gd, gl = grad_divergence[part], grad_logp[part]
            if not (bool(gd.any()) or bool(gl.any())):
                continue  # nothing in this chunk is trained on
            h = hidden[part].detach().requires_grad_(True)
            with torch.enable_grad():
                d, lp = _student_terms(
                    h, w, tokens[part], supports[index], log_rs[index], alpha, _rows(temperature, part)
                )
                total = (d * gd).sum() + (lp * gl).sum()
                g_h, g_w = torch.autograd.grad(total, [h, w])
            grad_hidden[part] = g_h
            grad_weight += g_w
        needs = ctx.needs_input_grad
        return (grad_hidden if needs[0] else None, grad_weight if needs[1] else None, *([None] * 7))
