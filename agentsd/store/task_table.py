"""The tasks table: every task a trajectory was collected on, stored once by content hash.

A task's hash (Task.content_hash) is its key, so storing it again is a no-op and two tasks that share
an id but differ in content are both kept; a trajectory names its task by hash. Functions on a
connection inside the caller's transaction; `ReplayStore` is their face. Bodies are decoded with
`decode`, after the transaction that read them (a body that no longer validates is CorruptRowError).
Not guaranteed: nothing here deletes a task, nor checks that a trajectory's task is stored.
"""

from __future__ import annotations

import fnmatch

from sqlalchemy import Connection, insert, select

from agentsd.errors import CorruptRowError
from agentsd.store.schema import tasks
from agentsd.types import Task


def put(conn: Connection, task: Task, digest: str, now: float) -> None:
    """Store `task` under `digest` (its content hash) unless it is stored already."""
    if conn.execute(select(tasks.c.hash).where(tasks.c.hash == digest)).first() is None:
        conn.execute(
            insert(tasks).values(
                hash=digest,
                task_id=task.id,
                family=task.family.value,
                body=task.model_dump_json(),
                created_at=now,
            )
        )


def body(conn: Connection, task_hash: str) -> str | None:
    """The stored body of the task with this hash, None when there is none."""
    return conn.execute(select(tasks.c.body).where(tasks.c.hash == task_hash)).scalar()


def bodies(conn: Connection, selector: str) -> list[tuple[str, str]]:
    """(hash, body) of every task whose id matches the glob `selector` or whose hash starts with it,
    ordered by task id and import time (only the chosen bodies are read)."""
    order = (tasks.c.task_id, tasks.c.created_at)
    ids = conn.execute(select(tasks.c.hash, tasks.c.task_id).order_by(*order)).all()
    chosen = [
        digest
        for digest, task_id in ids
        if fnmatch.fnmatchcase(task_id, selector) or (len(selector) >= 4 and digest.startswith(selector))
    ]
    if not chosen:
        return []
    rows = conn.execute(select(tasks.c.hash, tasks.c.body).where(tasks.c.hash.in_(chosen)).order_by(*order))
    return [(digest, text) for digest, text in rows]


def decode(task_hash: str, text: str) -> Task:
    try:
        return Task.model_validate_json(text)
    except ValueError as exc:
        raise CorruptRowError(f"task {task_hash}: stored body does not validate: {exc}") from exc
