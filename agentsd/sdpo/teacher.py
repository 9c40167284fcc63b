"""The SDPO teacher's weights φ and how they follow the student θ (docs/objective.md "The teacher").

- live: φ = θ; no copy, the teacher forward is the student's own forward without gradient.
- sync_every N: φ ← θ every N optimizer steps (optionally gated, below).
- ema μ (default, μ 0.01): φ ← (1-μ)φ + μθ after every step.
- trust_region γ: teacher logits = (1-γ)·z_ref + γ·z_θ, z_ref from the frozen initial weights.
- frozen: φ = the initial weights.
Gate (`gate_on_eval`): a hard sync happens only if the latest tracked eval reward is not below the
one at the previous sync; otherwise it is skipped and counted.

Only trainable parameters are copied: with LoRA that is the adapter, so a second teacher is a second
adapter and not a second model; with full fine-tuning it is every weight. The teacher forward runs
inside `swapped(model)`, which puts φ into the model's trainable parameters and restores θ after.

Not guaranteed: ZeRO-3 partitioned parameters (gather them first); thread safety.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from agentsd.config import TeacherConfig


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class Teacher:
    """φ for one student; call after_step after every optimizer step."""

    def __init__(self, config: TeacherConfig, model: torch.nn.Module) -> None:
        self.config = config
        self.mode = config.mode
        self.syncs = 0
        self.gated = 0
        self._synced_reward: float | None = None
        self._latest_reward: float | None = None
        # live needs no copy; trust_region keeps the frozen reference; the others keep φ
        self.weights: dict[str, Tensor] | None = None if self.mode == "live" else _snapshot(model)

    @property
    def needs_reference_forward(self) -> bool:
        """trust_region: the teacher needs a forward with the reference weights and one with θ."""
        return self.mode == "trust_region"

    def observe_eval(self, reward: float) -> None:
        """The tracked eval reward, for the gate on hard syncs."""
        self._latest_reward = reward

    def after_step(self, model: torch.nn.Module, step: int) -> str | None:
        """Update φ after optimizer step `step` (1-based); returns what happened, if anything."""
        if self.mode == "ema":
            assert self.weights is not None
            mu = self.config.ema
            with torch.no_grad():
                for name, param in trainable(model).items():
                    self.weights[name].mul_(1 - mu).add_(param.detach(), alpha=mu)
            return "ema"
        if self.mode == "sync_every" and step % self.config.sync_every == 0:
            if self.config.gate_on_eval and not self._gate_open():
                self.gated += 1
                return "gated"
            self.weights = _snapshot(model)
            self.syncs += 1
            self._synced_reward = self._latest_reward
            return "sync"
        return None

    def _gate_open(self) -> bool:
        if self._latest_reward is None or self._synced_reward is None:
            return True
        return self._latest_reward >= self._synced_reward

    @contextmanager
    def swapped(self, model: torch.nn.Module) -> Iterator[None]:
        """Inside: the model's trainable parameters hold φ (or the trust region's reference).
        Live mode changes nothing."""
        if self.weights is None:
            yield
            return
        params = trainable(model)
        saved = {name: p.detach().clone() for name, p in params.items()}
        try:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(self.weights[name])
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(saved[name])

    def mix_logits(self, reference_logits: Tensor, student_logits: Tensor) -> Tensor:
        """trust_region: (1-γ)·z_ref + γ·z_θ (both without gradient)."""
        gamma = self.config.trust_region
        return (1 - gamma) * reference_logits.detach() + gamma * student_logits.detach()

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "weights": self.weights,
            "syncs": self.syncs,
            "gated": self.gated,
            "synced_reward": self._synced_reward,
            "latest_reward": self._latest_reward,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(
                f"teacher state is for mode {state.get('mode')!r}, this teacher is {self.mode!r}"
            )
        self.weights = state["weights"]
        self.syncs, self.gated = int(state["syncs"]), int(state["gated"])
        self._synced_reward, self._latest_reward = state["synced_reward"], state["latest_reward"]


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in trainable(model).items()}
