"""The off-policy corrections of the topk form (`sdpo.correction`), one function each, chosen by name
from CORRECTIONS (docs/objective.md "Objective" 1, 4 and "Corrections at high drift").

Each returns, per token [N] and without gradient, the weight w_t, the trust-region mask M_t and the
staleness keep K_t that the loss combines as Σ m·M·K·w·D / Σ m·M·K:

- full: w = min(ρ, C); M = ρ_lo ≤ ρ ≤ ρ_hi (and the turn-level bound when configured); K = k ≤ K_max.
- is_untruncated: w = ρ; M = K = 1 (importance weighting unprotected: a baseline).
- none: w = 1; M = K = 1 (staleness ignored: a baseline).
- downweight: w = min(ρ, 1); M = 1; K = k ≤ K_max. Staleness can lower a token's pull, never raise it.
- m2 (M2PO): w = ρ on the tokens a batch-level mask keeps: the fewest tokens with the largest
  (log ρ)² are masked so that the kept tokens' mean (log ρ)² (the second moment of the log-ratio)
  is at most `m2_threshold`; K = k ≤ K_max.
- decoupled (AReaL's decoupled objective): a proximal policy π_prox stands between the behaviour
  policy and the student, here the version just before the current one, approximated in log space
  by interpolating along the versions: log π_prox = ℓμ + a·(log s - ℓμ), a = (k - 1)/k (0 for
  k ≤ 1, where the proximal policy is the behaviour policy itself). The behaviour-to-proximal ratio
  only re-weights, capped: w = min(ρ^a, C); the trust region is centred on π_prox: M = ρ_lo ≤
  ρ^(1-a) ≤ ρ_hi; K = k ≤ K_max. The exact π_prox (log-probs under the previous version's weights)
  would cost one more forward pass of the batch per step and keeping the previous weights; this
  interpolation costs nothing, and is the approximation AReaL documents.

Not guaranteed: the m2 mask is over the tokens one `sdpo_loss_from_terms` call sees (the trainer
passes a data-parallel rank's whole batch: with one rank, the global batch as M2PO defines it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from agentsd.config import SDPOConfig
from agentsd.sdpo.batch import TokenBatch
from agentsd.sdpo.weights import (
    LOG_RATIO_CLAMP,
    rejection_mask,
    staleness_keep,
    truncated_weight,
    turn_rejection_mask,
)


@dataclass(frozen=True)
class CorrectionTerms:
    """Per token [N]: the weight w_t, the trust-region mask M_t and the staleness keep K_t."""

    weight: Tensor
    accepted: Tensor
    fresh: Tensor


Correction = Callable[[Tensor, TokenBatch, SDPOConfig, int], CorrectionTerms]


def _fresh(batch: TokenBatch, config: SDPOConfig, version: int) -> Tensor:
    trajectory = batch.trajectory_index if config.staleness_drop == "trajectory" else None
    return staleness_keep(batch.versions, version, config.max_staleness, trajectory, batch.mask.bool())


def _everything(rho: Tensor) -> Tensor:
    return torch.ones(rho.shape, dtype=torch.bool, device=rho.device)


def full(rho: Tensor, batch: TokenBatch, config: SDPOConfig, version: int) -> CorrectionTerms:
    accepted = rejection_mask(rho, config.rho_low, config.rho_high)
    if config.turn_level_mask:
        turn_key = batch.trajectory_index * (1 << 32) + batch.turn_index
        accepted = accepted & turn_rejection_mask(
            rho, turn_key, batch.mask.bool(), config.rho_low, config.rho_high
        )
    return CorrectionTerms(truncated_weight(rho, config.is_cap), accepted, _fresh(batch, config, version))


def is_untruncated(rho: Tensor, batch: TokenBatch, config: SDPOConfig, version: int) -> CorrectionTerms:
    return CorrectionTerms(rho, _everything(rho), _everything(rho))


def none(rho: Tensor, batch: TokenBatch, config: SDPOConfig, version: int) -> CorrectionTerms:
    return CorrectionTerms(torch.ones_like(rho), _everything(rho), _everything(rho))


def downweight(rho: Tensor, batch: TokenBatch, config: SDPOConfig, version: int) -> CorrectionTerms:
    return CorrectionTerms(rho.clamp(max=1.0), _everything(rho), _fresh(batch, config, version))


def second_moment_mask(log_ratio: Tensor, candidates: Tensor, threshold: float) -> Tensor:
    """M2PO's batch mask: of the `candidates`, keep all but the fewest tokens with the largest
    (log ρ)² such that the kept tokens' mean (log ρ)² is at most `threshold`."""
    squared = log_ratio.detach().double().square()
    index = torch.nonzero(candidates, as_tuple=True)[0]
    keep = torch.zeros_like(candidates, dtype=torch.bool)
    if len(index) == 0:
        return keep
    order = torch.argsort(squared[index], stable=True)  # smallest first: the prefix means only grow
    running_mean = squared[index][order].cumsum(0) / torch.arange(
        1, len(index) + 1, dtype=squared.dtype, device=squared.device
    )
    kept = int((running_mean <= threshold).sum())
    keep[index[order[:kept]]] = True
    return keep


def m2(rho: Tensor, batch: TokenBatch, config: SDPOConfig, version: int) -> CorrectionTerms:
    fresh = _fresh(batch, config, version)
    accepted = second_moment_mask(rho.log(), batch.mask.bool() & fresh, config.m2_threshold)
    return CorrectionTerms(rho, accepted, fresh)


def proximal_share(versions: Tensor, version: int) -> Tensor:
    """a_t = (k - 1)/k for k = version - b_t ≥ 1, else 0: how far along the way from the behaviour
    policy to the student the proximal policy (the version before the current one) lies."""
    k = (version - versions).to(torch.float64)
    return ((k - 1) / k.clamp(min=1)).clamp(min=0)


def decoupled(rho: Tensor, batch: TokenBatch, config: SDPOConfig, version: int) -> CorrectionTerms:
    log_rho = rho.log().double()
    share = proximal_share(batch.versions, version).to(log_rho.device)
    behaviour_to_proximal = (share * log_rho).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    proximal_to_student = ((1 - share) * log_rho).exp()
    return CorrectionTerms(
        truncated_weight(behaviour_to_proximal, config.is_cap).to(rho.dtype),
        rejection_mask(proximal_to_student, config.rho_low, config.rho_high),
        _fresh(batch, config, version),
    )


CORRECTIONS: dict[str, Correction] = {
    "full": full,
    "is_untruncated": is_untruncated,
    "none": none,
    "downweight": downweight,
    "m2": m2,
    "decoupled": decoupled,
}
