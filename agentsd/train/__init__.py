"""Training: the DeepSpeed SDPO trainer over the replay store, and what it publishes.

- trainer: finalized trajectories from the replay store -> optimizer steps -> policy versions.
- engine: the process it runs in, the model (full or LoRA) and the DeepSpeed engine around it.
- ranks: what data-parallel ranks exchange besides DeepSpeed's gradients.
- checkpoint: what a checkpoint records besides the engine's state; saving and loading.
- lineage: where a starting trainer takes its place in the store's numbering of versions.
- publish: a version's weights on disk, then its row in the store.
- metrics: what a step reports, the headline a published version keeps, its alerts.

The trainer imports torch and deepspeed when imported: `Trainer` is resolved on first use, so that
importing this package for its light modules does not load them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentsd.train.trainer import Trainer

__all__ = ["Trainer"]


def __getattr__(name: str) -> Any:
    if name != "Trainer":
        raise AttributeError(f"module 'agentsd.train' has no attribute {name!r}")
    return importlib.import_module("agentsd.train.trainer").Trainer
