"""Where a starting trainer takes its place in the store's numbering of policy versions.

Versions are numbered once per store, and one lineage publishes into a store at a time: a trainer
that would publish next to another lineage's newer versions (a fresh trainer on a store that has
versions, or a checkpoint some other lineage has moved past) refuses with a LineageError unless
`fork`, which starts a new lineage numbered after the store's newest version. `place_in_lineage`
decides, from the store and the trainer's checkpoint (if any), the version to number from, the
lineage, its origin, the version the model's weights are, and whether the checkpoint's version
must be published again (the trainer died between checkpointing and publishing).

Not guaranteed: the decision is a read of the store, not a reservation; two trainers starting at
once may both be placed, and the second to publish is refused then (agentsd.train.publish).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from agentsd.errors import LineageError
from agentsd.store import ReplayStore
from agentsd.train.checkpoint import TrainerState


@dataclass(frozen=True)
class Placement:
    version: int  # the version to number from (the next one published is version + 1)
    lineage: str
    origin: int | None  # the version the lineage's weights started from (None = the base model)
    weights_version: int | None  # the version the weights in the model are (None = the base model)
    republish: bool  # the checkpoint's version never reached the store: publish it first


def new_lineage_id(name: str) -> str:
    """A fresh id for a trainer run or lineage: readable prefix, unique suffix."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def place_in_lineage(
    store: ReplayStore,
    checkpoint: TrainerState | None,
    *,
    fresh_lineage: str,
    name: str,
    fork: bool,
    run_dir: Path,
) -> Placement:
    """The place of a trainer resumed from `checkpoint`, or (None) of a fresh one whose lineage
    would be `fresh_lineage`. `name` prefixes a forked lineage's id; `run_dir` is for messages."""
    newest = store.latest_version()
    if checkpoint is None:
        if newest is None:
            return Placement(0, fresh_lineage, None, None, False)
        if not fork:
            raise LineageError(
                f"train: the store already has policy versions (newest {newest.version}, lineage "
                f"{newest.lineage!r}) and {run_dir} has no checkpoint: this trainer would start "
                f"from the base model and publish it as version {newest.version + 1}, which collectors "
                "would load as the newest policy. Resume the trainer of that lineage (its run_dir), or "
                "pass --fork (train.fork=true) to start a new lineage from the base model"
            )
        return Placement(newest.version, fresh_lineage, None, None, False)
    version, lineage, origin = checkpoint.version, checkpoint.lineage, checkpoint.origin
    mine = store.get_version(version)
    ours = mine is not None and mine.lineage == lineage
    if ours and newest is not None and newest.version == version:
        return Placement(version, lineage, origin, version, False)
    if mine is None and (newest is None or newest.version < version):
        # killed between checkpoint and publish: the model holds exactly that version's weights
        return Placement(version, lineage, origin, version, True)
    if ours and newest is not None and newest.lineage == lineage:
        # this lineage published past its checkpoint: a trainer killed between publishing and
        # checkpointing, as trainers before schema 2 ordered them. Those versions' weights are
        # lost; number on after them so that no number is reused, from the checkpoint's weights.
        logging.getLogger("agentsd.train.trainer").warning(
            "lineage %s published versions %d..%d after its last checkpoint (version %d); they stay "
            "in the store, and training goes on from the checkpoint as version %d",
            lineage,
            version + 1,
            newest.version,
            version,
            newest.version + 1,
        )
        return Placement(newest.version, lineage, origin, version, False)
    if not fork:
        owner = f"lineage {mine.lineage!r}" if mine is not None else "nobody"
        raise LineageError(
            f"train: the checkpoint in {run_dir} is version {version} of lineage "
            f"{lineage!r}, but the store has moved on: version {version} belongs to "
            f"{owner} and the newest is {newest.version if newest else 'none'} (lineage "
            f"{newest.lineage if newest else '-'!r}). Publishing would fork the store's lineage; pass "
            "--fork (train.fork=true) to continue these weights as a new lineage"
        )
    assert newest is not None
    # the checkpoint's weights are its version if that number is ours, else one step past its parent
    weights = version if ours else checkpoint.parent
    return Placement(newest.version, new_lineage_id(name), weights, weights, False)
