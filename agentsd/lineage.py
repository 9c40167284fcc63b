"""A trainer's line of versions: which published versions its weights descend from, and how far back.

Version numbers are unique in a store but a store can hold several lineages (forks), so a number is
no measure of staleness: a fork's first version may be numbered 41 while its weights are one step
from the base model. A LineageView lists the versions of one line from the base model (version 0,
depth 0) to its newest, and measures staleness in steps along that line (depth). A version outside
the line (a sibling lineage) has no depth: what it sampled is not this line's behaviour policy.

Not guaranteed: lines whose lineages were published concurrently (refused by the trainer), where
numbers along the line would not be increasing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from agentsd.types import PolicyVersion

BASE_VERSION = 0


@dataclass(frozen=True)
class LineageView:
    ancestry: list[tuple[str, int | None]]  # (lineage, newest version that counts; None = all)
    chain: list[int] = field(default_factory=list)  # version numbers from the base onward, in order

    @cached_property
    def depths(self) -> dict[int, int]:
        """Version number -> optimizer steps from the base model along this line (base: 0)."""
        return {BASE_VERSION: 0, **{number: i + 1 for i, number in enumerate(self.chain)}}

    def oldest_fresh(self, reference: int, max_staleness: int | None) -> int:
        """The lowest version number whose depth is within `max_staleness` of depth `reference`
        (None: no bound, the base model)."""
        if max_staleness is None:
            return BASE_VERSION
        lowest_depth = reference - max_staleness
        return BASE_VERSION if lowest_depth <= 0 else self.chain[min(lowest_depth, len(self.chain)) - 1]


def ancestry(
    versions: Sequence[PolicyVersion], lineage: str, origin: int | None
) -> list[tuple[str, int | None]]:
    """The lineages whose versions a model of `lineage` descends from, as (lineage, newest version
    that counts; None = all): its own, then the lineage of `origin` (the version its weights started
    from; None = the base model) up to that version, and so on to the base."""
    by_number = {v.version: v for v in versions}
    chain: list[tuple[str, int | None]] = [(lineage, None)]
    seen = {lineage}
    while origin is not None and origin in by_number:
        parent = by_number[origin]
        if parent.lineage in seen:
            break  # a cycle only a hand-edited table can make
        seen.add(parent.lineage)
        chain.append((parent.lineage, origin))
        own = [v for v in by_number.values() if v.lineage == parent.lineage]
        origin = min(own, key=lambda v: v.version).parent if own else None
    return chain


def lineage_view(versions: Sequence[PolicyVersion], ancestry: list[tuple[str, int | None]]) -> LineageView:
    def on_line(version: PolicyVersion) -> bool:
        return any(
            version.lineage == name and (upto is None or version.version <= upto) for name, upto in ancestry
        )

    return LineageView(ancestry, sorted(v.version for v in versions if on_line(v)))
