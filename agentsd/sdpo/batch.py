"""The per-token fields a loss is computed on (the type the loss and the corrections share)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class TokenBatch:
    """The per-token fields of the tokens a loss is computed on, all [N]."""

    tokens: Tensor  # y_t, int64
    behaviour_logp: Tensor  # ℓμ_t, float
    mask: Tensor  # m_t, bool: agent-sampled and trainable
    versions: Tensor  # b_t, int64
    turn_index: Tensor  # the turn of each token within its trajectory
    trajectory_index: Tensor  # which trajectory of the batch
