"""Per-token weights of staleness-corrected SDPO (docs/objective.md "Objective" 1, 4, 5).

Pure tensor functions on CPU or GPU, shapes [N] over the tokens of a batch (flattened). Nothing here
carries gradient: every weight is computed under no_grad semantics (inputs are detached).

- behaviour_ratio: ρ_t = exp(clamp(log s_t(y_t) - ℓμ_t, -20, 20))
- truncated_weight: w_t = min(ρ_t, C)
- rejection_mask: M_t = ρ_lo <= ρ_t <= ρ_hi
- turn_rejection_mask: the same bounds on the geometric mean of ρ over each turn's masked tokens
- staleness_keep / staleness_weight: k_t = v - b_t > K_max drops (per turn, or the whole trajectory
  when any of its turns is too stale), optional λ^k_t
- turn_weights: g_j = min((d_1 + ε)/(d_j + ε), 1 + δ) with d_j the mean D over turn j (per trajectory)

Not guaranteed: anything about positions that are not trainable (m_t = 0); callers mask them.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOG_RATIO_CLAMP = 20.0


def behaviour_ratio(student_logp: Tensor, behaviour_logp: Tensor) -> Tensor:
    """ρ_t from the student's log-prob of the sampled token and the recorded behaviour log-prob."""
    log_ratio = (student_logp.detach() - behaviour_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return log_ratio.exp()


def truncated_weight(rho: Tensor, cap: float) -> Tensor:
    """w_t = min(ρ_t, C)."""
    return rho.clamp(max=cap)


def rejection_mask(rho: Tensor, low: float, high: float) -> Tensor:
    """M_t as a bool tensor: ρ within [low, high]."""
    return (rho >= low) & (rho <= high)


def turn_rejection_mask(rho: Tensor, turn_index: Tensor, mask: Tensor, low: float, high: float) -> Tensor:
    """Per token: is the geometric mean of ρ over its turn's masked tokens within [low, high]?

    `turn_index` [N] numbers turns uniquely across the batch (e.g. trajectory * 10^6 + turn)."""
    turns, inverse = torch.unique(turn_index, return_inverse=True)
    log_rho = rho.clamp_min(1e-30).log() * mask
    sums = torch.zeros(len(turns), dtype=log_rho.dtype, device=rho.device).index_add_(0, inverse, log_rho)
    counts = torch.zeros(len(turns), dtype=log_rho.dtype, device=rho.device).index_add_(
        0, inverse, mask.to(log_rho.dtype)
    )
    geometric = (sums / counts.clamp_min(1)).exp()
    ok = (geometric >= low) & (geometric <= high)
    return ok[inverse]


def staleness_keep(
    versions: Tensor,
    current: int,
    max_staleness: int,
    trajectory_index: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Per token: k_t = current - b_t <= K_max. With `trajectory_index`, a trajectory with any too
    stale token drops whole (SDPOConfig.staleness_drop = trajectory); with `mask`, only trainable
    tokens count for that (a prompt position's version, e.g. -1, says nothing about staleness)."""
    fresh = (current - versions) <= max_staleness
    if trajectory_index is None:
        return fresh
    counted = ~fresh if mask is None else ~fresh & mask.bool()
    trajectories, inverse = torch.unique(trajectory_index, return_inverse=True)
    stale = torch.zeros(len(trajectories), dtype=torch.bool, device=versions.device)
    stale.index_put_((inverse,), counted, accumulate=True)
    return ~stale[inverse]


def staleness_weight(
    versions: Tensor, current: int, decay: float, dtype: torch.dtype | None = None
) -> Tensor:
    """λ^k_t (all ones when λ = 1), computed in float64 and returned as `dtype` (default float32)."""
    staleness = (current - versions).clamp_min(0).to(torch.float64)
    return staleness.new_full(staleness.shape, decay).pow(staleness).to(dtype or torch.float32)


def turn_weights(
    divergence: Tensor,
    turn_index: Tensor,
    mask: Tensor,
    delta: float,
    trajectory_index: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """g_t of each token's turn: (d_first + ε)/(d_j + ε) capped at 1 + δ, d_j the mean D over turn j's
    masked tokens and d_first that of the first turn (with masked tokens) of the same trajectory.
    Tokens of turns without masked tokens get weight 1."""
    d = divergence.detach() * mask
    trajectories = trajectory_index if trajectory_index is not None else torch.zeros_like(turn_index)
    g = torch.ones_like(d)
    for trajectory in torch.unique(trajectories):
        in_trajectory = trajectories == trajectory
        turns = torch.unique(turn_index[in_trajectory])  # sorted: the first turn comes first
        means = {}
        for turn in turns:
            tokens = in_trajectory & (turn_index == turn) & mask.bool()
            if bool(tokens.any()):
                means[int(turn)] = d[tokens].mean()
        if not means:
            continue
        first = means[min(means)]
        for turn, mean in means.items():
            g[in_trajectory & (turn_index == turn)] = ((first + eps) / (mean + eps)).clamp(max=1.0 + delta)
    return g
