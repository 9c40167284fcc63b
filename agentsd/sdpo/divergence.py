"""Per-token divergences of SDPO (docs/objective.md "Objective" 2 and 3), as pure tensor functions.

topk_tail_divergence: the student's top-k support plus one tail bin. S_t = top-k ids of s_t, chosen
without gradient; p = [s_t(S_t), 1 - Σ s_t(S_t)], r = [q_t(S_t), 1 - Σ q_t(S_t)], tails clamped at
>= 1e-7. With α = 1 (default) D_t = KL(p‖r) = Σ p (log p - log r); α = 0 gives KL(r‖p); in between
the generalized JSD of GKD/TRL: m = (1-α)·p + α·r, D_t = α·KL(r‖m) + (1-α)·KL(p‖m). Gradient flows
through the student (p) only; teacher logits are detached.

sampled_token_objective: A_t = sg(log q_t(y_t) - log s_t(y_t)) clipped to ±c_A·ē (ē from
AdvantageScale, a bias-corrected EMA of mean |A|), and the PPO-style per-token objective against
the behaviour log-prob: -min(r_t·A_t, clip(r_t, 1-ε_lo, 1+ε_hi)·A_t), r_t = exp(log s_t(y_t) - ℓμ_t).

Both take log-probs at the sampling temperature T_s (divide logits by T_s before calling, or pass
`temperature`). Not guaranteed: memory bounds; these take whatever logits they are given (the
chunked projection that bounds memory lives with the trainer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from agentsd.sdpo.weights import LOG_RATIO_CLAMP

TAIL_FLOOR = 1e-7


def topk_tail_divergence(
    student_logits: Tensor, teacher_logits: Tensor, k: int, alpha: float = 1.0, temperature: float = 1.0
) -> Tensor:
    """D_t for each row of [N, V] logits; returns [N]."""
    student = torch.log_softmax(upcast(student_logits) / temperature, dim=-1)
    teacher = torch.log_softmax(upcast(teacher_logits.detach()) / temperature, dim=-1)
    k = min(k, student.shape[-1])
    support = student.detach().topk(k, dim=-1).indices
    log_p = with_tail(student.gather(-1, support))
    log_r = with_tail(teacher.gather(-1, support))
    return generalized_jsd(log_p, log_r, alpha)


def upcast(logits: Tensor) -> Tensor:
    """Half-precision logits to float32 for the softmax; float32 and float64 stay as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def with_tail(log_top: Tensor) -> Tensor:
    """[N, k] log-probs -> [N, k+1] with log(1 - Σ exp), the tail floored at TAIL_FLOOR."""
    tail = (1.0 - log_top.exp().sum(dim=-1, keepdim=True)).clamp_min(TAIL_FLOOR)
    return torch.cat([log_top, tail.log()], dim=-1)


def generalized_jsd(log_p: Tensor, log_r: Tensor, alpha: float) -> Tensor:
    """Row-wise divergence of student log-probs log_p from teacher log-probs log_r (see module doc)."""
    if alpha == 1.0:
        return (log_p.exp() * (log_p - log_r)).sum(dim=-1)
    if alpha == 0.0:
        return (log_r.exp() * (log_r - log_p)).sum(dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p + math.log(1 - alpha), log_r + math.log(alpha)]), dim=0)
    kl_r = (log_r.exp() * (log_r - log_m)).sum(dim=-1)
    kl_p = (log_p.exp() * (log_p - log_m)).sum(dim=-1)
    return alpha * kl_r + (1 - alpha) * kl_p


@dataclass
class AdvantageScale:
    """ē: a bias-corrected exponential moving average of mean |A| (decay 0.99), one per trainer."""

    decay: float = 0.99
    value: float = 0.0  # the raw EMA, before bias correction
    steps: int = 0

    def update(self, mean_abs_advantage: float) -> float:
        """Fold in one batch's mean |A|; returns the bias-corrected ē."""
        self.steps += 1
        self.value = self.decay * self.value + (1 - self.decay) * mean_abs_advantage
        return self.current

    @property
    def current(self) -> float:
        return self.value / (1 - self.decay**self.steps) if self.steps else 0.0


def sampled_token_objective(
    student_logp: Tensor,
    teacher_logp: Tensor,
    behaviour_logp: Tensor,
    *,
    advantage_bound: float,
    clip_low: float,
    clip_high: float,
) -> tuple[Tensor, Tensor]:
    """Per-token PPO-style objective (to minimize) and the clipped advantages A_t.

    `advantage_bound` is c_A·ē (use math.inf to leave A unclipped)."""
    advantage = (teacher_logp.detach() - student_logp.detach()).clamp(-advantage_bound, advantage_bound)
    # Clamped before exp, as ρ is: a behaviour log-prob of -inf (or far below log s) would make r_t
    # inf, and 0·inf = NaN in the masked sum even though the token is rejected.
    ratio = (student_logp - behaviour_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)
    objective = -(ratio * advantage).minimum(clipped * advantage)
    return objective, advantage
