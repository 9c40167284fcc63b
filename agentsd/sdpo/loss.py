"""The SDPO loss over a batch of tokens (docs/objective.md "Objective" 6), from student and teacher logits.

Loss = Σ_t m_t·M_t·K_t·w_t·g_t·λ^k_t·D_t / Σ_t m_t·M_t·K_t, the token mean over the global batch,
where K_t keeps tokens no staler than K_max. In the sampled-token form D_t is replaced by the PPO-style
objective against the behaviour log-prob, which already carries the importance ratio, so w_t is not
applied a second time there. `denominator` lets gradient accumulation divide every micro-batch by
the global batch's Σ m·M·K (then 1 x 8 and 8 x 1 accumulate the same gradient). Data-parallel ranks
learn the global count only after each has its own: they divide the returned numerator by it
(SDPOLoss.divided_by: the all-reduced count / world size).
`SDPOConfig.correction` selects w, M and K (agentsd/sdpo/corrections.py): `full` as above, the
unprotected baselines `is_untruncated` and `none`, and `downweight`, `m2` and `decoupled` for high drift.

Inputs are flattened over the batch: [N] per-token tensors and [N, V] logits at the positions that
predict each token (the logits row t scores y_t). Positions with m_t = 0 may be present; they add
nothing. Not guaranteed: memory bounds (the caller chooses how many rows to pass at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from agentsd.config import SDPOConfig
from agentsd.sdpo.batch import TokenBatch
from agentsd.sdpo.corrections import CORRECTIONS
from agentsd.sdpo.divergence import AdvantageScale, sampled_token_objective, topk_tail_divergence, upcast
from agentsd.sdpo.weights import behaviour_ratio, staleness_weight, turn_weights


@dataclass
class SDPOLoss:
    loss: Tensor  # scalar with gradient: the numerator over the divisor it was computed with
    numerator: Tensor  # scalar with gradient: Σ_t weight_t·term_t over the used tokens
    per_token: Tensor  # [N] the unweighted per-token term (D_t, or the sampled-token objective)
    used: Tensor  # [N] bool: m·M·K
    numerator_weight: Tensor  # [N] the weight each used token entered the numerator with
    metrics: dict[str, float] = field(default_factory=dict)

    def divided_by(self, divisor: float) -> Tensor:
        """The loss with another divisor: the used-token count of the global batch, which
        data-parallel ranks know only once every rank has computed its own."""
        return token_mean(self.numerator, divisor)


def token_mean(numerator: Tensor, divisor: float) -> Tensor:
    """numerator / divisor; without tokens to divide by, a zero that still has a graph (every
    data-parallel rank runs backward)."""
    return numerator / divisor if divisor > 0 else numerator * 0.0


def sdpo_loss(
    batch: TokenBatch,
    student_logits: Tensor,
    teacher_logits: Tensor,
    config: SDPOConfig,
    *,
    version: int,
    temperature: float = 1.0,
    advantage_scale: AdvantageScale | None = None,
    denominator: float | None = None,
) -> SDPOLoss:
    """The loss from full logits rows [N, V] (student with gradient, teacher without)."""
    student_logp = (
        torch.log_softmax(upcast(student_logits) / temperature, dim=-1)
        .gather(-1, batch.tokens[:, None])
        .squeeze(-1)
    )
    teacher_logp = (
        torch.log_softmax(upcast(teacher_logits.detach()) / temperature, dim=-1)
        .gather(-1, batch.tokens[:, None])
        .squeeze(-1)
    )
    divergence = (
        topk_tail_divergence(student_logits, teacher_logits, config.top_k, config.alpha, temperature)
        if config.form == "topk"
        else None
    )
    return sdpo_loss_from_terms(
        batch,
        divergence,
        student_logp,
        teacher_logp,
        config,
        version=version,
        advantage_scale=advantage_scale,
        denominator=denominator,
    )


def sdpo_loss_from_terms(
    batch: TokenBatch,
    divergence: Tensor | None,
    student_logp: Tensor,
    teacher_logp: Tensor,
    config: SDPOConfig,
    *,
    version: int,
    advantage_scale: AdvantageScale | None = None,
    denominator: float | None = None,
) -> SDPOLoss:
    """The loss from per-token terms [N] (as chunked.chunked_head returns them): D_t (topk form),
    log s_t(y_t) with gradient, log q_t(y_t) without."""
    mask = batch.mask.bool()
    rho = behaviour_ratio(student_logp, batch.behaviour_logp)
    terms = CORRECTIONS[config.correction](rho, batch, config, version)  # form sampled_token: full
    weight, accepted, fresh = terms.weight, terms.accepted, terms.fresh
    used = mask & accepted & fresh
    decay = staleness_weight(batch.versions, version, config.staleness_decay, dtype=rho.dtype)

    metrics: dict[str, float] = {}
    if config.form == "topk":
        if divergence is None:
            raise ValueError("the topk form needs the per-token divergence D")
        per_token = divergence
        token_weight = weight * decay
        kl = per_token
    else:
        teacher_logp = teacher_logp.detach()
        raw_advantage = (teacher_logp - student_logp).detach()
        mean_abs = float(raw_advantage[used].abs().mean()) if bool(used.any()) else 0.0
        scale = advantage_scale.update(mean_abs) if advantage_scale is not None else math.inf
        bound = config.advantage_clip * scale if scale > 0 else math.inf
        per_token, _ = sampled_token_objective(
            student_logp,
            teacher_logp,
            batch.behaviour_logp,
            advantage_bound=bound,
            clip_low=config.clip_low,
            clip_high=config.clip_high,
        )
        token_weight = decay
        kl = -raw_advantage  # log s(y) - log q(y): a one-sample estimate of KL(s‖q)
        metrics["advantage/mean_abs"] = mean_abs
        metrics["advantage/bound"] = bound
    if config.turn_weights:
        token_weight = token_weight * turn_weights(
            per_token, batch.turn_index, used, config.turn_weight_delta, batch.trajectory_index
        )
    token_weight = token_weight.detach() * used
    divide_by = denominator if denominator is not None else float(used.sum())
    # Unused tokens enter as exact zeros: their terms may be inf or NaN (0·inf = NaN otherwise).
    numerator = (token_weight * per_token.masked_fill(~used, 0.0)).sum()
    loss = token_mean(numerator, divide_by)
    metrics.update(_metrics(batch, rho, config.is_cap, accepted, fresh, used, kl, version))
    return SDPOLoss(
        loss=loss,
        numerator=numerator,
        per_token=per_token,
        used=used,
        numerator_weight=token_weight,
        metrics=metrics,
    )


# staleness buckets (versions behind) of the per-bucket drift metrics: name, lowest, highest
STALENESS_BUCKETS = (("0", 0, 0), ("1", 1, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8_or_more", 8, math.inf))


def _metrics(
    batch: TokenBatch,
    rho: Tensor,
    cap: float,
    accepted: Tensor,
    fresh: Tensor,
    used: Tensor,
    kl: Tensor,
    version: int,
) -> dict[str, float]:
    """SDPO.md "Metrics" that the loss alone knows, over the trainable tokens (m_t = 1)."""
    mask = batch.mask.bool()
    n = int(mask.sum())
    if n == 0:
        return {"tokens/trainable": 0.0, "tokens/used": 0.0}
    r = rho[mask].double()
    log_r = r.log()
    staleness = (version - batch.versions[mask]).double()
    metrics = {
        "tokens/trainable": float(n),
        "tokens/used": float(used.sum()),
        "kl": float(kl.detach()[used].mean()) if bool(used.any()) else 0.0,
        "rho/mean": float(r.mean()),
        "rho/var": float(r.var(correction=0)),
        "rho/p99": float(r.quantile(0.99)) if n > 1 else float(r.max()),
        "rho/max": float(r.max()),
        "drift/log_ratio_m2": float(log_r.square().mean()),  # what the m2 correction bounds
        "kl_behaviour": float(behaviour_kl(r).mean()),
        "fraction/truncated": float((rho[mask] > cap).double().mean()),  # truncated at C under `full`
        "fraction/rejected": float((~accepted[mask]).double().mean()),
        "fraction/stale_dropped": float((~fresh[mask]).double().mean()),
        "fraction/masked": float((~used[mask]).double().mean()),  # by every rule together
        "staleness/mean": float(staleness.mean()),
        "staleness/max": float(staleness.max()),
    }
    divergence = kl.detach()[mask].double()
    for name, low, high in STALENESS_BUCKETS:
        bucket = (staleness >= low) & (staleness <= high) & divergence.isfinite()
        if bool(bucket.any()):
            metrics[f"kl_by_staleness/{name}"] = float(divergence[bucket].mean())
            metrics[f"kl_behaviour_by_staleness/{name}"] = float(behaviour_kl(r[bucket]).mean())
    return metrics


def behaviour_kl(rho: Tensor) -> Tensor:
    """Per token sampled from the behaviour policy μ: ρ·log ρ - ρ + 1, an unbiased and non-negative
    estimate of KL(student ‖ μ) (E_μ[ρ - 1] = 0, and x·log x - x + 1 ≥ 0)."""
    return rho * rho.log() - rho + 1
