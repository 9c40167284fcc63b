"""A trainer's DeepSpeed checkpoints: what one records besides the engine's state, saving and loading.

A checkpoint (run_dir/checkpoints/stepNNNNNN, DeepSpeed's `latest` naming the newest) holds the
engine's weights, optimizer and scheduler state, and a TrainerState as DeepSpeed's client state:
the step, the version the weights are, the trainer run and its place in the line of versions
(lineage, origin, parent), the teacher, the running advantage scale, and the ids of the
trajectories the step trained on (marked consumed again on resume). Saving is collective: every
rank writes its optimizer partition and waits for the others before rank 0 deletes all but the
newest `keep`.

Not guaranteed: atomicity beyond DeepSpeed's own; client states written by other programs.
Checkpoints written before lineages load with the trainer's name as their run id and lineage and
the version before theirs as their parent.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentsd.sdpo import AdvantageScale
from agentsd.train.ranks import barrier

if TYPE_CHECKING:  # deepspeed is imported by the trainer once it has chosen the accelerator
    from deepspeed.runtime.engine import DeepSpeedEngine

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrainerState:
    """What a checkpoint records of the trainer besides the engine."""

    step: int
    version: int
    advantage_scale: AdvantageScale
    teacher: dict[str, Any]  # Teacher.state_dict(): its mode, weights and gate's state
    trajectories: list[str]  # the step's trajectories
    run_id: str
    lineage: str
    origin: int | None
    parent: int | None

    def client_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "version": self.version,
            "advantage_scale": asdict(self.advantage_scale),
            "teacher": self.teacher,
            "trajectories": self.trajectories,
            "run_id": self.run_id,
            "lineage": self.lineage,
            "origin": self.origin,
            "parent": self.parent,
        }

    @classmethod
    def from_client_state(cls, state: dict[str, Any], name: str) -> TrainerState:
        version = int(state["version"])
        return cls(
            step=int(state["step"]),
            version=version,
            advantage_scale=AdvantageScale(**state["advantage_scale"]),
            teacher=state["teacher"],
            trajectories=state["trajectories"],
            # checkpoints written before lineages: the run's name was its consumer and its lineage
            run_id=str(state.get("run_id", name)),
            lineage=str(state.get("lineage", name)),
            origin=state.get("origin"),
            parent=state.get("parent", version - 1 if version > 0 else None),
        )


def load_checkpoint(engine: DeepSpeedEngine, run_dir: Path, name: str) -> TrainerState | None:
    """The newest checkpoint loaded into `engine` and its TrainerState; None (the engine untouched)
    when there is none. `name`: the trainer's, for checkpoints written before lineages."""
    directory = run_dir / CHECKPOINTS
    if not (directory / "latest").is_file():
        return None
    _, state = engine.load_checkpoint(str(directory))
    return TrainerState.from_client_state(state, name) if state else None


def save_checkpoint(
    engine: DeepSpeedEngine, run_dir: Path, state: TrainerState, *, rank: int, world: int, keep: int
) -> None:
    """A checkpoint of the engine and `state` as step `state.step`; all but the newest `keep` go."""
    directory = run_dir / CHECKPOINTS
    engine.save_checkpoint(str(directory), tag=f"step{state.step:06d}", client_state=state.client_state())
    barrier(world)  # every rank's optimizer partition is on disk before old ones go
    if rank != 0:
        return
    for old in sorted(directory.glob("step*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
