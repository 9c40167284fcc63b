"""Staleness-corrected SDPO as pure tensor functions (docs/objective.md "Objective").

weights: behaviour ratios, truncation, rejection masks, staleness, turn weights.
corrections: the off-policy corrections (`sdpo.correction`), one function each: w, M and K per token.
divergence: top-k + tail reverse KL / α-JSD, the sampled-token PPO form, the advantage scale.
chunked: hidden states to per-token terms, one chunk of logits at a time (memory).
loss: the token-mean loss over a batch and the metrics it knows.
teacher: the teacher's weights and how they follow the student (live, sync_every, ema, trust_region, frozen).
These modules import torch when imported: the CLI imports them only inside the commands that train or
score, so `agentsd --help` does not load torch.
"""

from agentsd.sdpo.batch import TokenBatch
from agentsd.sdpo.chunked import chunked_head
from agentsd.sdpo.divergence import (
    AdvantageScale,
    generalized_jsd,
    sampled_token_objective,
    topk_tail_divergence,
)
from agentsd.sdpo.loss import SDPOLoss, sdpo_loss, sdpo_loss_from_terms

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
