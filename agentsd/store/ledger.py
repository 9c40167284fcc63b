"""The consumption ledger: which consumer (a trainer run) trained on which trajectory, at which version.

One row per (consumer, trajectory), written when a training step has used the trajectory; marking
it again is a no-op, so a step retried after a crash records nothing twice. Every step publishes one
version, so the rows of one (consumer, version) are one step. Functions on a connection inside the
caller's transaction; `ReplayStore` is their face.

Not guaranteed: the ledger records what a consumer says it trained on; it does not stop two
consumers, or one consumer twice under different names, from training on the same trajectory.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, and_, func, insert, select

from agentsd.store.schema import consumed


def mark(conn: Connection, consumer: str, trajectory_ids: Sequence[str], version: int, now: float) -> None:
    """Record that `consumer` trained on these trajectories at `version` (those not recorded yet)."""
    already = set(
        conn.execute(
            select(consumed.c.trajectory_id).where(
                and_(consumed.c.consumer == consumer, consumed.c.trajectory_id.in_(list(trajectory_ids)))
            )
        ).scalars()
    )
    rows = [
        {"consumer": consumer, "trajectory_id": t, "version": version, "at": now}
        for t in dict.fromkeys(trajectory_ids)
        if t not in already
    ]
    if rows:
        conn.execute(insert(consumed), rows)


def consumed_by(conn: Connection, consumer: str) -> set[str]:
    return set(
        conn.execute(select(consumed.c.trajectory_id).where(consumed.c.consumer == consumer)).scalars()
    )


def recent_step_sizes(conn: Connection, steps: int) -> list[int]:
    """How many trajectories each of the last `steps` training steps took, newest first."""
    query = (
        select(func.count())
        .select_from(consumed)
        .group_by(consumed.c.consumer, consumed.c.version)
        .order_by(func.max(consumed.c.at).desc(), consumed.c.version.desc())
        .limit(steps)
    )
    return [int(n) for n in conn.execute(query).scalars()]
