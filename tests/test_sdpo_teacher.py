"""Teacher modes update φ exactly as docs/objective.md specifies."""

from __future__ import annotations

import pytest
import torch

from agentsd.config import TeacherConfig
from agentsd.sdpo.teacher import Teacher


def model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    layer(net, 1).bias.requires_grad_(False)  # frozen parameters are never copied (LoRA: only the adapter)
    return net


def layer(net: torch.nn.Sequential, index: int) -> torch.nn.Linear:
    """net[index], typed: model()'s layers are linear."""
    linear = net[index]
    assert isinstance(linear, torch.nn.Linear)
    return linear


def step(net: torch.nn.Module, amount: float) -> None:
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(amount)


def teacher_weight(teacher: Teacher, net: torch.nn.Sequential) -> torch.Tensor:
    with teacher.swapped(net):
        return layer(net, 0).weight.detach().clone()


def test_live_teacher_is_the_student() -> None:
    net = model()
    teacher = Teacher(TeacherConfig(mode="live"), net)
    assert teacher.weights is None
    step(net, 1.0)
    assert torch.equal(teacher_weight(teacher, net), layer(net, 0).weight)


def test_frozen_teacher_keeps_the_initial_weights_and_swapping_restores_the_student() -> None:
    net = model()
    initial = layer(net, 0).weight.detach().clone()
    teacher = Teacher(TeacherConfig(mode="frozen"), net)
    assert set(teacher.weights or {}) == {"0.weight", "0.bias", "1.weight"}
    for i in range(1, 4):
        step(net, 0.5)
        assert teacher.after_step(net, i) is None
    assert torch.equal(teacher_weight(teacher, net), initial)
    assert torch.equal(layer(net, 0).weight, initial + 1.5)  # θ is back after the teacher forward


def test_ema_teacher_follows_with_rate_mu() -> None:
    net = model()
    phi = layer(net, 0).weight.detach().clone()
    teacher = Teacher(TeacherConfig(mode="ema", ema=0.01), net)
    for i in range(1, 4):
        step(net, 1.0)
        assert teacher.after_step(net, i) == "ema"
        phi = 0.99 * phi + 0.01 * layer(net, 0).weight.detach()
    torch.testing.assert_close(teacher_weight(teacher, net), phi)


def test_sync_every_copies_on_schedule_and_the_gate_skips_when_eval_falls() -> None:
    net = model()
    teacher = Teacher(TeacherConfig(mode="sync_every", sync_every=2, gate_on_eval=True), net)
    step(net, 1.0)
    assert teacher.after_step(net, 1) is None
    teacher.observe_eval(0.5)
    step(net, 1.0)
    assert teacher.after_step(net, 2) == "sync"
    assert torch.equal(teacher_weight(teacher, net), layer(net, 0).weight)
    synced = layer(net, 0).weight.detach().clone()
    teacher.observe_eval(0.3)  # the student got worse: do not copy it into the teacher
    step(net, 1.0)
    step(net, 1.0)
    assert teacher.after_step(net, 4) == "gated"
    assert torch.equal(teacher_weight(teacher, net), synced)
    teacher.observe_eval(0.6)
    assert teacher.after_step(net, 6) == "sync" and teacher.syncs == 2 and teacher.gated == 1


def test_trust_region_mixes_reference_and_student_logits() -> None:
    net = model()
    teacher = Teacher(TeacherConfig(mode="trust_region", trust_region=0.25), net)
    x = torch.randn(5, 4)
    reference = net(x).detach()
    step(net, 0.3)
    assert teacher.needs_reference_forward
    with teacher.swapped(net):
        torch.testing.assert_close(net(x), reference)
    student = net(x)
    torch.testing.assert_close(
        teacher.mix_logits(reference, student), 0.75 * reference + 0.25 * student.detach()
    )


def test_teacher_state_round_trips_and_refuses_another_mode() -> None:
    net = model()
    teacher = Teacher(TeacherConfig(mode="sync_every", sync_every=1), net)
    step(net, 1.0)
    teacher.after_step(net, 1)
    again = Teacher(TeacherConfig(mode="sync_every", sync_every=1), model())
    again.load_state_dict(teacher.state_dict())
    assert again.syncs == 1 and torch.equal(again.weights["0.weight"], teacher.weights["0.weight"])  # pyright: ignore[reportOptionalSubscript]
    with pytest.raises(ValueError, match="mode"):
        Teacher(TeacherConfig(mode="ema"), net).load_state_dict(teacher.state_dict())
