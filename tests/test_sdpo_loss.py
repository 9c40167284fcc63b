"""SDPO loss functions pinned to naive per-token reference implementations (float64, seeded CPU
tensors): values and gradients, plus the invariants of docs/objective.md."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from agentsd.config import SDPOConfig
from agentsd.config.train import CorrectionName
from agentsd.sdpo import AdvantageScale, TokenBatch, sdpo_loss, topk_tail_divergence
from agentsd.sdpo.corrections import CORRECTIONS
from agentsd.sdpo.weights import behaviour_ratio, staleness_keep, turn_rejection_mask, turn_weights

V = 12


def naive_divergence(
    s_row: torch.Tensor, q_row: torch.Tensor, k: int, alpha: float, temperature: float
) -> torch.Tensor:
    """One token, written out: softmax, top-k by sorting, tail bins, the divergence as a sum."""
    s = torch.softmax(s_row / temperature, dim=0)
    q = torch.softmax(q_row.detach() / temperature, dim=0)
    order = sorted(range(len(s)), key=lambda i: -float(s[i].detach()))[:k]
    p = [s[i] for i in order]
    r = [q[i] for i in order]
    # sum() of tensors is a tensor (torch.as_tensor returns it as is); typeshed types it Tensor | int
    p.append(torch.clamp(1 - torch.as_tensor(sum(p)), min=1e-7))
    r.append(torch.clamp(1 - torch.as_tensor(sum(r)), min=1e-7))
    if alpha == 1.0:
        return torch.as_tensor(sum(pi * (torch.log(pi) - torch.log(ri)) for pi, ri in zip(p, r, strict=True)))
    if alpha == 0.0:
        return torch.as_tensor(sum(ri * (torch.log(ri) - torch.log(pi)) for pi, ri in zip(p, r, strict=True)))
    m = [(1 - alpha) * pi + alpha * ri for pi, ri in zip(p, r, strict=True)]
    kl_r = torch.as_tensor(sum(ri * (torch.log(ri) - torch.log(mi)) for ri, mi in zip(r, m, strict=True)))
    kl_p = torch.as_tensor(sum(pi * (torch.log(pi) - torch.log(mi)) for pi, mi in zip(p, m, strict=True)))
    return alpha * kl_r + (1 - alpha) * kl_p


def make_batch(
    n: int = 10, seed: int = 0, versions: list[int] | None = None
) -> tuple[TokenBatch, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n, V, generator=g, dtype=torch.float64) * 2
    teacher = student + torch.randn(n, V, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, V, (n,), generator=g)
    current = torch.log_softmax(student, -1).gather(-1, tokens[:, None]).squeeze(-1)
    behaviour = current + torch.randn(n, generator=g, dtype=torch.float64) * 0.5
    mask = torch.ones(n, dtype=torch.bool)
    mask[0] = False  # a prompt position
    batch = TokenBatch(
        tokens=tokens,
        behaviour_logp=behaviour,
        mask=mask,
        versions=torch.tensor(versions if versions is not None else [5] * n),
        turn_index=torch.arange(n) // 3,
        trajectory_index=torch.zeros(n, dtype=torch.long),
    )
    return batch, student.requires_grad_(True), teacher


@pytest.mark.parametrize("alpha", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_topk_tail_divergence_matches_the_naive_reference(alpha: float, temperature: float) -> None:
    _, student, teacher = make_batch()
    fast = topk_tail_divergence(student, teacher, k=4, alpha=alpha, temperature=temperature)
    (grad_fast,) = torch.autograd.grad(fast.sum(), student)
    naive = torch.stack(
        [naive_divergence(student[i], teacher[i], 4, alpha, temperature) for i in range(len(student))]
    )
    (grad_naive,) = torch.autograd.grad(naive.sum(), student)
    torch.testing.assert_close(fast, naive, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad_fast, grad_naive, rtol=1e-9, atol=1e-12)


def test_full_support_is_the_exact_reverse_kl_and_the_teacher_gets_no_gradient() -> None:
    _, student, teacher = make_batch()
    teacher.requires_grad_(True)
    d = topk_tail_divergence(student, teacher, k=V)
    s, q = torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)
    exact = (s.exp() * (s - q)).sum(-1)
    torch.testing.assert_close(d, exact, rtol=1e-5, atol=1e-6)  # tail floored at 1e-7
    d.sum().backward()
    assert teacher.grad is None and student.grad is not None
    assert float(topk_tail_divergence(student.detach(), student.detach(), k=4).abs().max()) < 1e-6


def naive_loss(
    batch: TokenBatch, student: torch.Tensor, teacher: torch.Tensor, cfg: SDPOConfig, version: int
) -> torch.Tensor:
    """Objective 1, 2, 4 and 6 token by token (topk form, no turn weights)."""
    numerator, count = 0.0, 0
    for t in range(len(batch.tokens)):
        if not batch.mask[t]:
            continue
        log_s = torch.log_softmax(student[t], 0)[batch.tokens[t]]
        rho = math.exp(max(-20.0, min(20.0, float(log_s) - float(batch.behaviour_logp[t]))))
        if not cfg.rho_low <= rho <= cfg.rho_high:
            continue
        k_t = version - int(batch.versions[t])
        if k_t > cfg.max_staleness:
            continue
        w = min(rho, cfg.is_cap) * cfg.staleness_decay**k_t
        numerator = numerator + w * naive_divergence(student[t], teacher[t], cfg.top_k, cfg.alpha, 1.0)
        count += 1
    return torch.as_tensor(numerator / count)  # a tensor as soon as one token counts


@pytest.mark.parametrize("decay", [1.0, 0.8])
def test_sdpo_loss_matches_the_naive_reference(decay: float) -> None:
    batch, student, teacher = make_batch(n=16, versions=[5, 5, 4, 3, 1, 0, 5, 5, 2, 5, 4, 5, 5, 3, 5, 5])
    cfg = SDPOConfig(top_k=4, staleness_decay=decay, rho_low=0.5, rho_high=1.8)
    out = sdpo_loss(batch, student, teacher, cfg, version=5)
    (grad_fast,) = torch.autograd.grad(out.loss, student)
    naive = naive_loss(batch, student, teacher, cfg, version=5)
    (grad_naive,) = torch.autograd.grad(naive, student)
    torch.testing.assert_close(out.loss, naive, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad_fast, grad_naive, rtol=1e-9, atol=1e-12)
    assert out.metrics["fraction/stale_dropped"] > 0 and out.metrics["fraction/rejected"] > 0


def test_on_policy_tokens_have_weight_one_and_give_the_plain_token_mean() -> None:
    batch, student, teacher = make_batch()
    batch.behaviour_logp = (
        torch.log_softmax(student.detach(), -1).gather(-1, batch.tokens[:, None]).squeeze(-1)
    )
    rho = behaviour_ratio(
        torch.log_softmax(student, -1).gather(-1, batch.tokens[:, None]).squeeze(-1), batch.behaviour_logp
    )
    torch.testing.assert_close(rho, torch.ones_like(rho))
    out = sdpo_loss(batch, student, teacher, SDPOConfig(top_k=4), version=5)
    d = topk_tail_divergence(student, teacher, k=4)
    torch.testing.assert_close(out.loss, d[batch.mask].mean())
    assert out.metrics["fraction/truncated"] == 0 and out.metrics["fraction/rejected"] == 0


def test_truncation_bounds_weights_of_old_samples() -> None:
    batch, student, teacher = make_batch()
    batch.behaviour_logp = batch.behaviour_logp - 3.0  # sampled by a policy that liked these far less
    cfg = SDPOConfig(top_k=4, rho_high=1e9)
    out = sdpo_loss(batch, student, teacher, cfg, version=5)
    assert float(out.numerator_weight.max()) <= cfg.is_cap and out.metrics["rho/max"] > cfg.is_cap
    assert out.metrics["fraction/truncated"] == 1.0


def test_gradient_accumulation_1x8_equals_8x1() -> None:
    batch, student, teacher = make_batch(n=32, seed=3)
    cfg = SDPOConfig(top_k=5)
    whole = sdpo_loss(batch, student, teacher, cfg, version=5)
    (grad_whole,) = torch.autograd.grad(whole.loss, student)
    total = float(whole.used.sum())
    grad_acc = torch.zeros_like(student)
    for part in torch.arange(32).chunk(8):
        micro = TokenBatch(**{k: v[part] for k, v in vars(batch).items()})
        leaf = student.detach()[part].requires_grad_(True)
        out = sdpo_loss(micro, leaf, teacher[part], cfg, version=5, denominator=total)
        (g,) = torch.autograd.grad(out.loss, leaf)
        grad_acc[part] += g
    torch.testing.assert_close(grad_acc, grad_whole, rtol=1e-6, atol=1e-9)


def test_no_trainable_tokens_contribute_nothing() -> None:
    batch, student, teacher = make_batch()
    batch.mask = torch.zeros_like(batch.mask)
    out = sdpo_loss(batch, student, teacher, SDPOConfig(top_k=4), version=5)
    assert float(out.loss) == 0.0
    (grad,) = torch.autograd.grad(out.loss, student)
    assert float(grad.abs().max()) == 0.0


def test_sampled_token_form_matches_the_naive_reference() -> None:
    batch, student, teacher = make_batch(n=12, seed=5)
    cfg = SDPOConfig(form="sampled_token", rho_low=1e-6, rho_high=1e6, advantage_clip=1.0)
    scale = AdvantageScale()
    out = sdpo_loss(batch, student, teacher, cfg, version=5, advantage_scale=scale)
    (grad_fast,) = torch.autograd.grad(out.loss, student)
    used = [t for t in range(12) if batch.mask[t]]
    log_s = [torch.log_softmax(student[t], 0)[batch.tokens[t]] for t in range(12)]
    log_q = [torch.log_softmax(teacher[t], 0)[batch.tokens[t]] for t in range(12)]
    raw = [float(log_q[t] - log_s[t]) for t in used]
    e_bar = sum(abs(a) for a in raw) / len(raw)  # the first update of a bias-corrected EMA is the value
    assert scale.current == pytest.approx(e_bar)
    total = 0.0
    for t in used:
        a = max(-e_bar, min(e_bar, float(log_q[t] - log_s[t])))
        r = torch.exp(log_s[t] - batch.behaviour_logp[t])
        total = total - torch.minimum(r * a, torch.clamp(r, 1 - cfg.clip_low, 1 + cfg.clip_high) * a)
    naive = torch.as_tensor(total / len(used))  # a tensor: every term is
    (grad_naive,) = torch.autograd.grad(naive, student)
    torch.testing.assert_close(out.loss, naive, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad_fast, grad_naive, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("form", ["sampled_token", "topk"])
@pytest.mark.parametrize("extreme", [-math.inf, -1e4])
def test_an_extreme_behaviour_logp_is_rejected_without_nan_in_fp32(form: str, extreme: float) -> None:
    """One behaviour log-prob of -inf, or far below log s, must reject its token and leave the loss
    and gradients exactly those of the batch without it (0·inf = NaN used to poison the batch)."""
    batch, student64, teacher64 = make_batch(n=10, seed=3)
    student = student64.detach().float().requires_grad_(True)
    teacher = teacher64.detach().float()
    batch.behaviour_logp = batch.behaviour_logp.float()
    cfg = SDPOConfig(form=form, top_k=4)  # pyright: ignore[reportArgumentType]
    poisoned = TokenBatch(**{**batch.__dict__, "behaviour_logp": batch.behaviour_logp.clone()})
    poisoned.behaviour_logp[4] = extreme
    without = TokenBatch(**{**batch.__dict__, "mask": batch.mask.clone()})
    without.mask[4] = False

    out = sdpo_loss(poisoned, student, teacher, cfg, version=5, advantage_scale=AdvantageScale())
    (grad,) = torch.autograd.grad(out.loss, student)
    ref = sdpo_loss(without, student, teacher, cfg, version=5, advantage_scale=AdvantageScale())
    (grad_ref,) = torch.autograd.grad(ref.loss, student)
    assert not bool(out.used[4]) and bool(torch.isfinite(out.loss)) and bool(torch.isfinite(grad).all())
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(grad, grad_ref)


def test_trajectory_staleness_drop_ignores_prompt_positions() -> None:
    """Prompt positions carry version -1: they must not make a fresh trajectory count as stale."""
    versions = torch.tensor([-1, 5, 5, -1, 5, 0])
    trajectories = torch.tensor([0, 0, 0, 1, 1, 1])
    mask = torch.tensor([False, True, True, False, True, True])
    kept = staleness_keep(versions, 5, 4, trajectories, mask)
    assert kept.tolist() == [True] * 3 + [False] * 3
    batch, student, teacher = make_batch(n=6, versions=[-1, 5, 5, -1, 5, 5])
    batch.trajectory_index, batch.mask = trajectories, mask
    per_trajectory = sdpo_loss(
        batch, student, teacher, SDPOConfig(top_k=4, staleness_drop="trajectory"), version=5
    )
    per_turn = sdpo_loss(batch, student, teacher, SDPOConfig(top_k=4, staleness_drop="turn"), version=5)
    assert per_trajectory.used.tolist() == per_turn.used.tolist() and bool(per_turn.used[[1, 2, 4, 5]].any())
    torch.testing.assert_close(per_trajectory.loss, per_turn.loss)


def test_advantage_scale_is_a_bias_corrected_ema() -> None:
    scale = AdvantageScale(decay=0.99)
    assert scale.update(2.0) == pytest.approx(2.0)
    second = scale.update(4.0)
    raw = 0.99 * (0.01 * 2.0) + 0.01 * 4.0
    assert second == pytest.approx(raw / (1 - 0.99**2))


def test_staleness_drops_turns_or_whole_trajectories() -> None:
    versions = torch.tensor([5, 5, 0, 5, 5, 5])
    trajectories = torch.tensor([0, 0, 0, 1, 1, 1])
    assert staleness_keep(versions, 5, 4).tolist() == [True, True, False, True, True, True]
    assert staleness_keep(versions, 5, 4, trajectories).tolist() == [False] * 3 + [True] * 3


def test_turn_level_mask_uses_the_geometric_mean_of_the_turn() -> None:
    rho = torch.tensor([4.0, 4.0, 0.5, 0.5, 20.0, 0.01])
    turns = torch.tensor([0, 0, 1, 1, 2, 2])
    mask = torch.ones(6)
    # turn 0: 4 (in [0.1, 10]); turn 1: 0.5; turn 2: sqrt(0.2) ~ 0.447 (in range even though 20 is not)
    assert turn_rejection_mask(rho, turns, mask, 0.1, 10.0).tolist() == [True] * 6
    assert turn_rejection_mask(rho, turns, mask, 1.0, 10.0).tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_turn_weights_follow_the_first_turn_and_are_capped() -> None:
    d = torch.tensor([1.0, 1.0, 2.0, 2.0, 0.5, 0.5, 3.0, 3.0])
    turns = torch.tensor([0, 0, 1, 1, 2, 2, 0, 0])
    trajectories = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    g = turn_weights(d, turns, torch.ones(8), delta=0.2, trajectory_index=trajectories)
    eps = 1e-6
    expected = [1.0, 1.0, (1 + eps) / (2 + eps), (1 + eps) / (2 + eps), 1.2, 1.2, 1.0, 1.0]
    torch.testing.assert_close(g, torch.tensor(expected))


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunked_projection_agrees_with_full_logits(chunk: int) -> None:
    from agentsd.sdpo.chunked import chunked_head

    g = torch.Generator().manual_seed(11)
    n, h = 20, 6
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, h, generator=g, dtype=torch.float64, requires_grad=True)
    teacher_hidden = hidden.detach() + 0.3 * torch.randn(n, h, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, V, (n,), generator=g)
    coef_d = torch.rand(n, generator=g, dtype=torch.float64)
    coef_l = torch.rand(n, generator=g, dtype=torch.float64)
    coef_d[:4] = 0  # chunks with nothing to train are skipped in backward
    coef_l[:4] = 0

    d, lp, tlp = chunked_head(
        hidden, weight, teacher_hidden, weight.detach(), tokens, k=4, temperature=0.8, chunk=chunk
    )
    gh, gw = torch.autograd.grad((d * coef_d).sum() + (lp * coef_l).sum(), [hidden, weight])

    logits = hidden @ weight.T
    teacher_logits = teacher_hidden @ weight.detach().T
    d_ref = topk_tail_divergence(logits, teacher_logits, 4, temperature=0.8)
    lp_ref = torch.log_softmax(logits / 0.8, -1).gather(-1, tokens[:, None]).squeeze(-1)
    tlp_ref = torch.log_softmax(teacher_logits / 0.8, -1).gather(-1, tokens[:, None]).squeeze(-1)
    gh_ref, gw_ref = torch.autograd.grad((d_ref * coef_d).sum() + (lp_ref * coef_l).sum(), [hidden, weight])
    for got, want in ((d, d_ref), (lp, lp_ref), (tlp, tlp_ref), (gh, gh_ref), (gw, gw_ref)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert not tlp.requires_grad


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_each_row_at_its_own_temperature_equals_the_rows_one_by_one(chunk: int) -> None:
    """Per-row temperatures (turns sampled at different temperatures in one batch): values and
    gradients equal projecting each row alone at its own temperature."""
    from agentsd.sdpo.chunked import chunked_head

    g = torch.Generator().manual_seed(5)
    n, h = 9, 6
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, h, generator=g, dtype=torch.float64, requires_grad=True)
    teacher_hidden = hidden.detach() + 0.3 * torch.randn(n, h, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, V, (n,), generator=g)
    temperatures = torch.tensor([0.5, 0.5, 1.0, 1.0, 1.0, 2.0, 0.7, 0.7, 1.3], dtype=torch.float32)
    d, lp, tlp = chunked_head(
        hidden, weight, teacher_hidden, weight.detach(), tokens, k=4, temperature=temperatures, chunk=chunk
    )
    grads = torch.autograd.grad(d.sum() + lp.sum(), [hidden, weight])
    rows = [
        chunked_head(
            hidden[i : i + 1],
            weight,
            teacher_hidden[i : i + 1],
            weight.detach(),
            tokens[i : i + 1],
            k=4,
            temperature=float(temperatures[i]),
            chunk=chunk,
        )
        for i in range(n)
    ]
    one_by_one = [torch.cat([r[j] for r in rows]) for j in range(3)]
    want = torch.autograd.grad(one_by_one[0].sum() + one_by_one[1].sum(), [hidden, weight])
    for got, ref in (
        (d, one_by_one[0]),
        (lp, one_by_one[1]),
        (tlp, one_by_one[2]),
        *zip(grads, want, strict=True),
    ):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="must be positive"):
        chunked_head(
            hidden,
            weight,
            teacher_hidden,
            weight.detach(),
            tokens,
            k=4,
            temperature=torch.full((n,), float("nan")),
        )


@pytest.mark.parametrize("form", ["topk", "sampled_token"])
def test_loss_from_chunked_terms_equals_the_loss_from_logits(form: str) -> None:
    from agentsd.sdpo import chunked_head, sdpo_loss_from_terms

    g = torch.Generator().manual_seed(2)
    n, h = 16, 5
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, h, generator=g, dtype=torch.float64, requires_grad=True)
    teacher_hidden = hidden.detach() + 0.5 * torch.randn(n, h, generator=g, dtype=torch.float64)
    batch, _, _ = make_batch(n=n, seed=4)
    cfg = SDPOConfig(form=form, top_k=4)  # pyright: ignore[reportArgumentType]
    d, lp, tlp = chunked_head(hidden, weight, teacher_hidden, weight.detach(), batch.tokens, k=4, chunk=5)
    batch.behaviour_logp = lp.detach() + 0.1
    chunked = sdpo_loss_from_terms(batch, d, lp, tlp, cfg, version=5, advantage_scale=AdvantageScale())
    grads = torch.autograd.grad(chunked.loss, [hidden, weight])
    full = sdpo_loss(
        batch,
        hidden @ weight.T,
        teacher_hidden @ weight.detach().T,
        cfg,
        version=5,
        advantage_scale=AdvantageScale(),
    )
    grads_full = torch.autograd.grad(full.loss, [hidden, weight])
    torch.testing.assert_close(chunked.loss, full.loss, rtol=1e-9, atol=1e-12)
    for got, want in zip(grads, grads_full, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_each_correction_variant_weights_tokens_exactly_as_defined() -> None:
    """full: w = min(rho, C) on tokens within the rejection bounds and K_max; is_untruncated: w = rho on
    every trainable token; none: w = 1 on every trainable token. Same tokens, same divergence."""
    batch, student, teacher = make_batch(n=12, seed=9, versions=[5] * 6 + [0] * 6)  # half 5 versions old
    current = torch.log_softmax(student.detach(), -1).gather(-1, batch.tokens[:, None]).squeeze(-1)
    shifts = torch.tensor(
        [0.0, 0.0, -3.0, 3.0, 0.5, -0.5, 0.0, 0.0, -3.0, 3.0, 0.5, -0.5], dtype=torch.float64
    )
    batch.behaviour_logp = current + shifts  # rho = exp(-shift): 1, 1, 20, 0.05, 0.61, 1.6, ...
    rho = torch.exp(-shifts)
    trainable = batch.mask.bool()
    d = topk_tail_divergence(student, teacher, k=4)
    expected = {
        "full": (rho.clamp(max=2.0), trainable & (rho >= 0.1) & (rho <= 10.0) & (batch.versions >= 5 - 4)),
        "is_untruncated": (rho, trainable),
        "none": (torch.ones_like(rho), trainable),
    }
    for correction, (weight, used) in expected.items():
        cfg = SDPOConfig(top_k=4, is_cap=2.0, max_staleness=4, correction=correction)  # pyright: ignore[reportArgumentType]
        out = sdpo_loss(batch, student, teacher, cfg, version=5)
        assert torch.equal(out.used, used), correction
        torch.testing.assert_close(out.numerator_weight, (weight * used).to(out.numerator_weight.dtype))
        want = (weight * used * d).sum() / used.sum()
        torch.testing.assert_close(out.loss, want.to(out.loss.dtype), rtol=1e-9, atol=1e-12)
        assert out.metrics["fraction/truncated"] == pytest.approx(
            float((rho[trainable] > 2.0).double().mean())
        )
    with pytest.raises(ValueError, match="defined for form topk"):
        SDPOConfig(form="sampled_token", correction="none")
    assert set(CORRECTIONS) == set(get_args(CorrectionName))  # every name the config takes has its function


def _naive_second_moment_keep(log_ratio: list[float], candidates: list[bool], threshold: float) -> list[bool]:
    """M2PO's mask written as its definition: drop the largest (log rho)^2 until the mean fits."""
    kept = [i for i, c in enumerate(candidates) if c]
    while kept and sum(log_ratio[i] ** 2 for i in kept) / len(kept) > threshold:
        kept.remove(max(kept, key=lambda i: log_ratio[i] ** 2))
    return [i in kept for i in range(len(log_ratio))]


def _naive_decoupled(
    student: float, behaviour: float, staleness: int, cap: float, low: float, high: float
) -> tuple[float, bool]:
    """AReaL's decoupled weight and trust region for one token, the proximal policy the version
    before the current one, interpolated in log space along the versions."""
    share = (staleness - 1) / staleness if staleness >= 1 else 0.0
    proximal = behaviour + share * (student - behaviour)
    weight = min(math.exp(proximal - behaviour), cap)
    return weight, low <= math.exp(student - proximal) <= high


def test_the_high_drift_corrections_weight_tokens_exactly_as_defined() -> None:
    """downweight: w = min(rho, 1) within K_max; m2: w = rho on the tokens M2PO's second-moment mask
    keeps within K_max; decoupled: w = min((pi_prox / mu), C) and the trust region on pi / pi_prox,
    pi_prox interpolated to the previous version. Each against a naive per-token reference."""
    versions = [5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0]  # staleness 0..5 at version 5
    batch, student, teacher = make_batch(n=12, seed=11, versions=versions)
    current = torch.log_softmax(student.detach(), -1).gather(-1, batch.tokens[:, None]).squeeze(-1)
    shifts = torch.tensor(
        [0.1, -0.3, 3.0, -3.0, 0.5, -0.5, -2.5, -1.2, 0.05, 4.0, -0.2, 0.0], dtype=torch.float64
    )
    batch.behaviour_logp = current + shifts
    rho = torch.exp(-shifts)
    trainable = batch.mask.bool()
    fresh = batch.versions >= 5 - 4
    d = topk_tail_divergence(student, teacher, k=4)
    m2_keep = torch.tensor(_naive_second_moment_keep((-shifts).tolist(), (trainable & fresh).tolist(), 0.5))
    assert 0 < int(m2_keep.sum()) < int((trainable & fresh).sum())  # the mask bites, and keeps some
    decoupled = [
        _naive_decoupled(float(c), float(b), 5 - int(v), 2.0, 0.1, 10.0)
        for c, b, v in zip(current, batch.behaviour_logp, batch.versions, strict=True)
    ]
    expected = {
        "downweight": (rho.clamp(max=1.0), trainable & fresh),
        "m2": (rho, m2_keep & trainable & fresh),
        "decoupled": (
            torch.tensor([w for w, _ in decoupled], dtype=torch.float64),
            torch.tensor([ok for _, ok in decoupled]) & trainable & fresh,
        ),
    }
    for correction, (weight, used) in expected.items():
        cfg = SDPOConfig(top_k=4, is_cap=2.0, max_staleness=4, m2_threshold=0.5, correction=correction)  # pyright: ignore[reportArgumentType]
        out = sdpo_loss(batch, student, teacher, cfg, version=5)
        assert torch.equal(out.used, used), correction
        torch.testing.assert_close(out.numerator_weight, (weight * used).to(out.numerator_weight.dtype))
        want = (weight * used * d).sum() / used.sum()
        torch.testing.assert_close(out.loss, want.to(out.loss.dtype), rtol=1e-9, atol=1e-12)
    # the trust region of `decoupled` is centred on the previous version: a token 3 versions old
    # whose ratio to the behaviour policy (rho = e^2.5) is outside [0.1, 10] is still kept, since
    # only a third of that drift happened after the proximal version; `full` rejects it
    assert bool(expected["decoupled"][1][6]) and float(rho[6]) > 10.0


def test_drift_metrics_follow_their_definitions_and_a_drifted_step_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per step: the second moment of log rho, rho's variance, KL(student || behaviour) estimated as
    rho log rho - rho + 1, everything masked, and both KLs per staleness bucket; `alerts` warns past
    sdpo.drift_warning and stays quiet below it."""
    import logging

    from agentsd.train.metrics import alerts

    versions = [9, 9, 8, 8, 7, 6, 5, 4, 3, 2, 1, 0]  # staleness 0, 0, 1, 1, 2, 3, 4, ..., 9 at version 9
    batch, student, teacher = make_batch(n=12, seed=5, versions=versions)
    cfg = SDPOConfig(top_k=4, max_staleness=4)
    out = sdpo_loss(batch, student, teacher, cfg, version=9)
    trainable = batch.mask.bool()
    current = torch.log_softmax(student.detach(), -1).gather(-1, batch.tokens[:, None]).squeeze(-1)
    log_rho = (current - batch.behaviour_logp)[trainable]
    rho = log_rho.exp()
    m = out.metrics
    assert m["drift/log_ratio_m2"] == pytest.approx(float((log_rho**2).mean()))
    assert m["rho/var"] == pytest.approx(float(((rho - rho.mean()) ** 2).mean()))
    assert m["kl_behaviour"] == pytest.approx(float((rho * log_rho - rho + 1).mean()))
    assert m["fraction/masked"] == pytest.approx(1 - int(out.used.sum()) / int(trainable.sum()))
    d = topk_tail_divergence(student, teacher, k=4).detach()
    staleness = 9 - batch.versions
    for name, low, high in (("0", 0, 0), ("1", 1, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8_or_more", 8, 99)):
        bucket = trainable & (staleness >= low) & (staleness <= high)
        assert m[f"kl_by_staleness/{name}"] == pytest.approx(float(d[bucket].mean())), name
        r = (current - batch.behaviour_logp)[bucket].exp()
        assert m[f"kl_behaviour_by_staleness/{name}"] == pytest.approx(float((r * r.log() - r + 1).mean()))
    with caplog.at_level(logging.WARNING, logger="agentsd.train.trainer"):
        alerts(m, 3, drift_warning=m["drift/log_ratio_m2"] * 2)
        assert not caplog.records
        alerts(m, 3, drift_warning=m["drift/log_ratio_m2"] / 2)
        assert len(caplog.records) == 1 and "drift" in caplog.records[0].getMessage()
