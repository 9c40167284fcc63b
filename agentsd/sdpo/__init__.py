"""Self-Distillation Policy Optimization: the objective, one training step, the teacher's context
(docs/objective.md).

The objective, as pure tensor functions:
- weights: behaviour ratios, truncation, rejection masks, staleness, turn weights.
- corrections: the off-policy corrections (`sdpo.correction`), one function each: w, M and K per token.
- divergence: top-k + tail reverse KL / α-JSD, the sampled-token PPO form, the advantage scale.
- chunked: hidden states to per-token terms, one chunk of logits at a time (memory).
- loss: the token-mean loss over a batch and the metrics it knows.
- teacher: the teacher's weights and how they follow the student (ema, live, sync_every,
  trust_region, frozen).
Around it:
- hindsight: the teacher's hindsight context (feedback, solutions, worked examples) and where it
  goes in the teacher's view of a segment; no torch.
- step: trajectories to token batches, and one batch's loss through student and teacher forwards.

The objective's modules import torch when imported. This package's face (the names below) is
therefore resolved on first use, so that the collector, which needs only `hindsight`, and the CLI's
`--help` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentsd.sdpo.batch import TokenBatch
    from agentsd.sdpo.chunked import chunked_head
    from agentsd.sdpo.divergence import (
        AdvantageScale,
        generalized_jsd,
        sampled_token_objective,
        topk_tail_divergence,
    )
    from agentsd.sdpo.loss import SDPOLoss, sdpo_loss, sdpo_loss_from_terms

_FACE = {
    "AdvantageScale": "agentsd.sdpo.divergence",
    "SDPOLoss": "agentsd.sdpo.loss",
    "TokenBatch": "agentsd.sdpo.batch",
    "chunked_head": "agentsd.sdpo.chunked",
    "generalized_jsd": "agentsd.sdpo.divergence",
    "sampled_token_objective": "agentsd.sdpo.divergence",
    "sdpo_loss": "agentsd.sdpo.loss",
    "sdpo_loss_from_terms": "agentsd.sdpo.loss",
    "topk_tail_divergence": "agentsd.sdpo.divergence",
}

__all__ = [
    "AdvantageScale",
    "SDPOLoss",
    "TokenBatch",
    "chunked_head",
    "generalized_jsd",
    "sampled_token_objective",
    "sdpo_loss",
    "sdpo_loss_from_terms",
    "topk_tail_divergence",
]


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'agentsd.sdpo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
