"""The write path of trajectories: the rows begin, append and finalize write, and the refusals.

A trajectory is begun as a `running` row, grows by claiming its next turn slots (statements.CLAIM_TURNS:
the row's n_turns must equal the first new index) and inserting the turns, and is finalized once
(statements.FINALIZE: only while running). `ReplayStore` runs those compiled statements on its raw
write cursor with what these functions build; when a claim or a finalize changes no row, `refusal`
says why. `take_over` and `discard` are ordinary functions on a connection inside the caller's
transaction.

Not guaranteed: nothing here checks that a turn's token arrays make sense for its model, nor that a
trajectory's task is stored; a refusal is computed after the refused transaction, so it reports the
state it finds then.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, select, update

from agentsd.errors import TrajectoryStateError
from agentsd.store.rows import loads, turn_row
from agentsd.store.schema import consumed, trajectories, turns
from agentsd.types import (
    SCHEMA_VERSION,
    HindsightSignal,
    Termination,
    TrajectoryStatus,
    Turn,
)


def running_row(
    trajectory_id: str,
    task_id: str | None,
    task_hash: str,
    policy_model: str,
    version: int,
    meta: dict[str, Any] | None,
    writer: str,
    now: float,
) -> dict[str, Any]:
    """The trajectories row of a trajectory just begun: running, no turns, no outcome yet."""
    return {
        "id": trajectory_id,
        "task_id": task_id,
        "task_hash": task_hash,
        "policy_model": policy_model,
        "version_start": version,
        "version_end": version,
        "status": TrajectoryStatus.RUNNING.value,
        "termination": None,
        "reward": None,
        "reward_components": "{}",
        "hindsight": "[]",
        "artifacts": "{}",
        "meta": json.dumps(meta or {}),
        "n_turns": 0,
        "n_tokens": 0,
        "n_completion_tokens": 0,
        "created_at": now,
        "updated_at": now,
        "finalized_at": None,
        "writer": writer,
        "schema_version": SCHEMA_VERSION,
    }


def turn_rows_and_claim(
    trajectory_id: str, new_turns: Sequence[Turn], writer: str, now: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The turns rows of consecutive `new_turns` and the CLAIM_TURNS parameters that make room for them."""
    first = new_turns[0].index
    for offset, turn in enumerate(new_turns):
        if turn.index != first + offset:
            raise ValueError(
                f"append_turns: turn indices must be consecutive, got {turn.index} after {first}"
            )
    rows = [turn_row(trajectory_id, t) for t in new_turns]
    claim = {
        "tid": trajectory_id,
        "first": first,
        "n_new": len(rows),
        "n_tokens": sum(r["n_prompt"] + r["n_completion"] for r in rows),
        "n_completion": sum(r["n_completion"] for r in rows),
        "top_version": max(t.policy_version for t in new_turns),
        "now": now,
        "writer": writer,
    }
    return rows, claim


def outcome(
    termination: Termination,
    reward: float | None,
    reward_components: dict[str, float] | None,
    hindsight: Sequence[HindsightSignal],
    artifacts: dict[str, str] | None,
    now: float,
) -> dict[str, Any]:
    """The FINALIZE parameters of a finalized trajectory, but for its meta (merged_meta)."""
    return {
        "status": TrajectoryStatus.FINALIZED.value,
        "termination": Termination(termination).value,
        "reward": reward,
        "reward_components": json.dumps(reward_components or {}),
        "hindsight": json.dumps([h.model_dump(mode="json") for h in hindsight]),
        "artifacts": json.dumps(artifacts or {}),
        "finalized_at": now,
        "updated_at": now,
    }


def merged_meta(stored: str | None, meta: dict[str, Any] | None, trajectory_id: str) -> str | None:
    """The meta to store at finalize: the stored one updated with `meta`, or None to keep it as is."""
    if not meta:
        return None  # keep the stored meta
    old_meta = loads(stored, f"trajectory {trajectory_id} meta", dict) if stored is not None else {}
    return json.dumps({**old_meta, **meta})


def refusal(conn: Connection, trajectory_id: str, index: int) -> TrajectoryStateError:
    """Why a trajectory took no turn at `index` (-1: no outcome): missing, no longer running, or
    another index expected."""
    row = conn.execute(
        select(trajectories.c.status, trajectories.c.n_turns).where(trajectories.c.id == trajectory_id)
    ).first()
    if row is None:
        return TrajectoryStateError(f"trajectory {trajectory_id} does not exist")
    if row.status != TrajectoryStatus.RUNNING.value:
        return TrajectoryStateError(
            f"trajectory {trajectory_id} is {row.status}; turns can no longer be added"
        )
    return TrajectoryStateError(
        f"trajectory {trajectory_id}: turn index {index} given, the next index is {row.n_turns}"
    )


def take_over(conn: Connection, trajectory_id: str, writer: str, now: float) -> None:
    """Make `writer` the writer of a running trajectory; TrajectoryStateError when it is not running."""
    result = conn.execute(
        update(trajectories)
        .where(
            and_(
                trajectories.c.id == trajectory_id,
                trajectories.c.status == TrajectoryStatus.RUNNING.value,
            )
        )
        .values(writer=writer, updated_at=now)
    )
    if result.rowcount != 1:
        raise refusal(conn, trajectory_id, -1)


def discard(conn: Connection, trajectory_id: str, *, finalized_too: bool) -> None:
    """Delete a trajectory, its turns and its consumption records (a finalized one only if asked)."""
    status = conn.execute(select(trajectories.c.status).where(trajectories.c.id == trajectory_id)).scalar()
    if status is None:
        raise TrajectoryStateError(f"trajectory {trajectory_id} does not exist")
    if status != TrajectoryStatus.RUNNING.value and not finalized_too:
        raise TrajectoryStateError(f"trajectory {trajectory_id} is {status}; refusing to discard it")
    conn.execute(delete(turns).where(turns.c.trajectory_id == trajectory_id))
    conn.execute(delete(consumed).where(consumed.c.trajectory_id == trajectory_id))
    conn.execute(delete(trajectories).where(trajectories.c.id == trajectory_id))
