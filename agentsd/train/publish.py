"""Publishing a trainer's policy versions: weights on disk, then a row in the store's versions table.

`VersionPublisher.publish` writes the model's weights (or its LoRA adapter; the tokenizer with full
weights) to run_dir/versions/.vNNNNNN.tmp, renames it to vNNNNNN, and registers it in the store with
its lineage, parent, content hash (agentsd.weights) and the step's headline metrics; then it deletes
the files of all but the newest `keep_versions`. Republishing a version this lineage registered
already is a no-op; a number another lineage registered (or a newer one) is refused with a
LineageError, and the trainer's checkpoint is kept. Under ZeRO-3 every rank takes part in gathering
the partitioned weights and rank 0 writes them; otherwise only rank 0 does anything.

Not guaranteed: the files of a version whose registration failed are not removed (a retry replaces
them); collectors that still load a pruned version find its files gone.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedModel

from agentsd.config import TrainConfig
from agentsd.errors import LineageError, TrajectoryStateError
from agentsd.store import ReplayStore
from agentsd.train.metrics import published_metrics
from agentsd.types import PolicyVersion
from agentsd.weights import weights_hash

if TYPE_CHECKING:  # peft is imported only by trainers that train a LoRA adapter
    from peft import PeftModel

VERSIONS = "versions"


@dataclass(frozen=True)
class NewVersion:
    """A version to publish and what its row records of the trainer that made it."""

    number: int
    lineage: str
    parent: int | None  # the version its weights were trained from (None = the base model)
    trainer: str  # the trainer's name
    run_id: str
    step: int
    metrics: dict[str, float]  # the step's; its headline (agentsd.train.metrics.PUBLISHED_METRICS) is kept


class VersionPublisher:
    """Publishes the versions of one trainer's model into one store."""

    def __init__(
        self,
        config: TrainConfig,
        store: ReplayStore,
        model: PreTrainedModel | PeftModel,  # a LoRA adapter's wrapper publishes the adapter
        tokenizer: Any,  # whichever tokenizer class the trainer loaded; saved next to full weights
        *,
        zero3: bool,
        rank: int,
    ) -> None:
        self.config = config
        self.store = store
        self.model = model
        self.tokenizer = tokenizer
        self.zero3 = zero3
        self.rank = rank
        self.directory = config.run_dir / VERSIONS

    def publish(self, version: NewVersion) -> None:
        """Write `version` atomically and register it (rank 0; under ZeRO-3 every rank must call
        this, to gather the weights)."""
        if self.zero3:
            # here, not at the top: deepspeed is imported once the trainer has chosen its accelerator
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
                if self.rank == 0:
                    self._write(version)
        elif self.rank == 0:
            self._write(version)

    def _write(self, version: NewVersion) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"v{version.number:06d}"
        tmp = self.directory / f".v{version.number:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(str(tmp), safe_serialization=True)
        if self.config.lora is None:
            self.tokenizer.save_pretrained(tmp)
        registered = self.store.get_version(version.number)
        if registered is not None and registered.lineage == version.lineage:
            shutil.rmtree(tmp)  # killed after registering, before marking: published already
            return
        newest = self.store.latest_version()
        if registered is not None or (newest is not None and newest.version > version.number):
            shutil.rmtree(tmp)
            raise self._moved_on(version, registered or newest)
        if final.exists():  # a publish redone after a crash before its registration
            shutil.rmtree(final)
        tmp.rename(final)
        try:
            self.store.register_version(
                version.number,
                model=self.config.model.name,
                checkpoint_uri=str(final.absolute()),
                lineage=version.lineage,
                parent=version.parent,
                weights_hash=weights_hash(final),
                meta={
                    "trainer": version.trainer,
                    "run_id": version.run_id,
                    "step": version.step,
                    "lora": self.config.lora is not None,
                    # what its teacher saw: every result names the context it was trained with
                    "hindsight_sources": list(self.config.hindsight.sources),
                    "teacher": self.config.teacher.mode,
                    **published_metrics(version.metrics),
                },
            )
        except TrajectoryStateError:  # another lineage registered this number a moment ago
            raise self._moved_on(version, self.store.get_version(version.number)) from None
        self._prune()

    def _moved_on(self, version: NewVersion, other: PolicyVersion | None) -> LineageError:
        owner = (
            f"version {other.version} of lineage {other.lineage!r}"
            if other is not None
            else "another lineage"
        )
        return LineageError(
            f"train: {owner} was published into the store while this trainer (lineage "
            f"{version.lineage!r}) trained version {version.number}; two lineages cannot publish into one "
            f"store at once. Its checkpoint in {self.config.run_dir} is kept: restart with --fork to "
            "continue it as a new lineage"
        )

    def _prune(self) -> None:
        """Delete the files of all but the newest `keep_versions` versions: a collector loads the
        newest, and a full copy of the weights per step would fill the disk of a long run."""
        keep = self.config.keep_versions
        if keep is None:
            return
        published = sorted(p for p in self.directory.glob("v[0-9]*") if p.is_dir())
        for old in published[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
