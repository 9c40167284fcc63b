"""The read path of trajectories: counts, listings, whole trajectories and their token arrays.

Row fetches are functions on a connection inside the caller's read transaction; turns are decoded
and integrity-checked (rows.py) by `trajectory` and `turn_tokens` after that transaction ends, so a
large read holds its snapshot no longer than the SQL takes. A stored turn sequence that does not
match the n_turns its trajectory records is CorruptRowError. `abandoned` picks, among running
trajectories, those whose writer is gone.

Not guaranteed: a trajectory still running may gain turns between two reads; what one read returns
is one transaction's snapshot, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, func, select

from agentsd.errors import TrajectoryStateError
from agentsd.liveness import writer_alive
from agentsd.sequences import TurnTokens
from agentsd.store.rows import (
    SUMMARY_COLUMNS,
    check_turn_sequence,
    summary_from_row,
    trajectory_from_row,
    turn_from_row,
    turn_tokens_from_row,
)
from agentsd.store.schema import trajectories, turns
from agentsd.types import Trajectory, TrajectoryStatus, TrajectorySummary

_TOKEN_COLUMNS = [
    turns.c.trajectory_id,
    turns.c.idx,
    turns.c.source,
    turns.c.policy_version,
    turns.c.temperature,
    turns.c.top_p,
    turns.c.context_reset,
    turns.c.n_prompt,
    turns.c.n_completion,
    turns.c.prompt_ids,
    turns.c.completion_ids,
    turns.c.logprobs,
    turns.c.loss_mask,
    turns.c.body,
    turns.c.crc,
]


def count(conn: Connection, status: TrajectoryStatus | None) -> int:
    query = select(func.count()).select_from(trajectories)
    if status is not None:
        query = query.where(trajectories.c.status == TrajectoryStatus(status).value)
    return int(conn.execute(query).scalar() or 0)


def summaries(
    conn: Connection,
    *,
    status: TrajectoryStatus | None,
    task_id: str | None,
    id_prefix: str | None,
    limit: int | None,
    newest_first: bool,
) -> list[TrajectorySummary]:
    query = select(*SUMMARY_COLUMNS)
    if id_prefix:
        escaped = id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(trajectories.c.id.like(escaped + "%", escape="\\"))
    if status is not None:
        query = query.where(trajectories.c.status == TrajectoryStatus(status).value)
    if task_id is not None:
        query = query.where(trajectories.c.task_id == task_id)
    order = trajectories.c.created_at.desc() if newest_first else trajectories.c.created_at.asc()
    query = query.order_by(order, trajectories.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [summary_from_row(row._mapping) for row in conn.execute(query)]


def summary(conn: Connection, trajectory_id: str) -> TrajectorySummary:
    row = conn.execute(select(*SUMMARY_COLUMNS).where(trajectories.c.id == trajectory_id)).first()
    if row is None:
        raise TrajectoryStateError(f"trajectory {trajectory_id} does not exist")
    return summary_from_row(row._mapping)


def abandoned(
    running: Sequence[TrajectorySummary], now: float, stale_after_s: float | None
) -> list[TrajectorySummary]:
    """The running trajectories whose writer is dead on this host, or (its host unknown) silent for
    more than stale_after_s (None: only the known dead)."""
    found = []
    for item in running:
        alive = writer_alive(item.writer)
        silent = stale_after_s is not None and now - item.updated_at > stale_after_s
        if alive is False or (alive is None and silent):
            found.append(item)
    return found


def trajectory_rows(conn: Connection, trajectory_id: str, with_turns: bool) -> tuple[Row, list[Row]]:
    """The trajectory's row and (with_turns) its turn rows in index order; decode with `trajectory`."""
    row = conn.execute(select(trajectories).where(trajectories.c.id == trajectory_id)).first()
    if row is None:
        raise TrajectoryStateError(f"trajectory {trajectory_id} does not exist")
    if not with_turns:
        return row, []
    query = select(turns).where(turns.c.trajectory_id == trajectory_id).order_by(turns.c.idx)
    return row, list(conn.execute(query).all())


def trajectory(row: Row, turn_rows: Sequence[Row], with_turns: bool) -> Trajectory:
    """The trajectory of trajectory_rows, every turn decoded and integrity-checked."""
    where = f"trajectory {row._mapping['id']}"
    loaded = [turn_from_row(r._mapping, where) for r in turn_rows]
    if with_turns:
        check_turn_sequence(where, [t.index for t in loaded], row._mapping["n_turns"])
    return trajectory_from_row(row._mapping, loaded)


def token_rows(conn: Connection, trajectory_ids: Sequence[str]) -> tuple[dict[str, int], list[Any]]:
    """n_turns of each of these trajectories found, and the array columns of their turns in order."""
    ids = list(dict.fromkeys(trajectory_ids))
    counts = dict(
        conn.execute(
            select(trajectories.c.id, trajectories.c.n_turns).where(trajectories.c.id.in_(ids))
        ).all()
    )
    rows = conn.execute(
        select(*_TOKEN_COLUMNS)
        .where(turns.c.trajectory_id.in_(ids))
        .order_by(turns.c.trajectory_id, turns.c.idx)
    ).all()
    return counts, list(rows)


def turn_tokens(
    trajectory_ids: Sequence[str], counts: dict[str, int], rows: Sequence[Any]
) -> dict[str, list[TurnTokens]]:
    """The token arrays of each trajectory's turns from token_rows, checked against n_turns."""
    out: dict[str, list[TurnTokens]] = {traj_id: [] for traj_id in trajectory_ids}
    missing = [t for t in out if t not in counts]
    if missing:
        raise TrajectoryStateError(f"trajectories not in the store: {', '.join(missing[:5])}")
    for r in rows:
        out[r.trajectory_id].append(turn_tokens_from_row(r._mapping))
    for traj_id, turn_list in out.items():
        check_turn_sequence(f"trajectory {traj_id}", [t.index for t in turn_list], counts[traj_id])
    return out
