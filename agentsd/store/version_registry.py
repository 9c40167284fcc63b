"""The version registry: every policy version a trainer published, with its lineage and weights.

A version number is registered once and never rewritten (the table's primary key refuses a second
registration). Functions on a connection inside the caller's transaction; `ReplayStore` is their
face, and decodes the rows read (`decode`) after the transaction. Lineage questions
(agentsd.lineage) are answered from the full list.

Not guaranteed: the registry records where a version's checkpoint is; it does not check that the
checkpoint exists or holds the weights its hash names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from agentsd.store.rows import version_from_row
from agentsd.store.schema import policy_versions
from agentsd.types import PolicyVersion


def register(conn: Connection, entry: PolicyVersion) -> None:
    """Insert `entry`; the database refuses a number already registered (IntegrityError)."""
    conn.execute(insert(policy_versions).values(**{**entry.model_dump(), "meta": json.dumps(entry.meta)}))


def every(conn: Connection) -> Sequence[Row[Any]]:
    """Every registered version's row, oldest first."""
    return conn.execute(select(policy_versions).order_by(policy_versions.c.version)).all()


def one(conn: Connection, version: int) -> Row[Any] | None:
    return conn.execute(select(policy_versions).where(policy_versions.c.version == version)).first()


def latest(conn: Connection, lineage: str | None) -> Row[Any] | None:
    """The row of the newest version of `lineage` (None: of any lineage)."""
    query = select(policy_versions)
    if lineage is not None:
        query = query.where(policy_versions.c.lineage == lineage)
    return conn.execute(query.order_by(policy_versions.c.version.desc()).limit(1)).first()


def decode(row: Row[Any]) -> PolicyVersion:
    return version_from_row(row._mapping)
