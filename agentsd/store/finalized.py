"""Queries on finalized trajectories: what a trainer may train on, and a collect run's backlog.

`conditions` turns the FinalizedFilters given into WHERE conditions (all must hold), `untrained` a
collect run's finalized trajectories no trainer has consumed; both are built before any transaction,
so bad filters fail first. `find` and `count` run them on a connection inside the caller's read
transaction; `ReplayStore` is their face.

Not guaranteed: staleness is judged on a trajectory's newest turn only (per-turn staleness is the
trainer's to apply), and a result is one transaction's snapshot: a trajectory found here may be
consumed or discarded by someone else before it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from sqlalchemy import Connection, and_, exists, func, or_, select

from agentsd.store.rows import SUMMARY_COLUMNS, summary_from_row
from agentsd.store.schema import consumed, policy_versions, trajectories
from agentsd.types import Termination, TrajectoryStatus, TrajectorySummary


class FinalizedFilters(TypedDict, total=False):
    """What find_finalized and count_finalized filter on; each given filter must hold.

    Staleness is judged on the newest turn (version_end): current_version - version_end <=
    max_staleness, or version_end >= min_version; stale_before keeps the ones below a version
    instead (per-turn staleness is the trainer's to apply). `terminations` keeps trajectories that
    ended one of those ways; `sampled_by` (agentsd.lineage.ancestry) those whose first and newest
    turns were sampled by the base model or by those lineages (the trainer makes any turn in between
    sampled elsewhere too stale to train on)."""

    current_version: int
    max_staleness: int
    min_version: int
    stale_before: int
    task_ids: Sequence[str]
    min_reward: float
    max_reward: float
    not_consumed_by: str
    terminations: Sequence[Termination]
    sampled_by: Sequence[tuple[str, int | None]]


def find(
    conn: Connection, conds: list[Any], *, limit: int | None, oldest_first: bool
) -> list[TrajectorySummary]:
    """Summaries of the trajectories that meet `conds` (from `conditions`), by finalization time."""
    order = trajectories.c.finalized_at.asc() if oldest_first else trajectories.c.finalized_at.desc()
    query = select(*SUMMARY_COLUMNS).where(and_(*conds)).order_by(order, trajectories.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [summary_from_row(row._mapping) for row in conn.execute(query)]


def count(conn: Connection, conds: list[Any]) -> int:
    """How many trajectories meet `conds` (from `conditions`)."""
    return int(conn.execute(select(func.count()).select_from(trajectories).where(and_(*conds))).scalar_one())


def untrained(*, id_prefix: str, terminations: Sequence[Termination]) -> list[Any]:
    """The conditions of finalized trajectories whose id starts with `id_prefix`, ended in one of
    `terminations`, that no consumer has trained on (a collect run's backlog)."""
    return [
        trajectories.c.status == TrajectoryStatus.FINALIZED.value,
        trajectories.c.id.startswith(id_prefix, autoescape=True),
        trajectories.c.termination.in_([Termination(t).value for t in terminations]),
        ~exists().where(consumed.c.trajectory_id == trajectories.c.id),
    ]


def conditions(filters: FinalizedFilters) -> list[Any]:
    """The WHERE conditions of `filters` on the trajectories table (finalized ones only)."""
    current_version, max_staleness = filters.get("current_version"), filters.get("max_staleness")
    min_version, stale_before = filters.get("min_version"), filters.get("stale_before")
    task_ids, terminations = filters.get("task_ids"), filters.get("terminations")
    min_reward, max_reward = filters.get("min_reward"), filters.get("max_reward")
    sampled_by, not_consumed_by = filters.get("sampled_by"), filters.get("not_consumed_by")
    conds = [trajectories.c.status == TrajectoryStatus.FINALIZED.value]
    if max_staleness is not None:
        if current_version is None:
            raise ValueError("find_finalized: max_staleness needs current_version")
        conds.append(trajectories.c.version_end >= current_version - max_staleness)
    if min_version is not None:
        conds.append(trajectories.c.version_end >= min_version)
    if stale_before is not None:
        conds.append(trajectories.c.version_end < stale_before)
    if task_ids is not None:
        conds.append(trajectories.c.task_id.in_(list(task_ids)))
    if min_reward is not None:
        conds.append(trajectories.c.reward >= min_reward)
    if max_reward is not None:
        conds.append(trajectories.c.reward <= max_reward)
    if terminations is not None:
        conds.append(trajectories.c.termination.in_([Termination(t).value for t in terminations]))
    if sampled_by is not None:
        # sampled by the base model (version 0) or by versions of these lineages
        lines = [
            and_(policy_versions.c.lineage == lineage, policy_versions.c.version <= upto)
            if upto is not None
            else policy_versions.c.lineage == lineage
            for lineage, upto in sampled_by
        ]
        ours = select(policy_versions.c.version).where(or_(*lines))
        for end in (trajectories.c.version_start, trajectories.c.version_end):
            conds.append(or_(end == 0, end.in_(ours)))
    if not_consumed_by is not None:
        conds.append(
            ~exists().where(
                and_(consumed.c.consumer == not_consumed_by, consumed.c.trajectory_id == trajectories.c.id)
            )
        )
    return conds
