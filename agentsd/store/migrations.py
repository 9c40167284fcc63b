"""The store's schema version on disk: reading it, creating a new store, migrating an old one.

`store_meta.schema_version` names the layout of the tables (schema.STORE_SCHEMA_VERSION when this
agentsd wrote it). A new store gets every table at the current version; an older one is brought up
one step at a time by MIGRATIONS, all in one transaction; a newer one is refused before anything is
written. Concurrent first opens and migrations of one store are serialised (an advisory lock on
PostgreSQL, BEGIN IMMEDIATE on SQLite), so each happens once.

`open_schema` is what a ReplayStore runs as it opens, each step in its own transaction; the steps
are functions on a connection inside that transaction. Not guaranteed: a migration only adds
(columns, tables, derived values); nothing here moves a store back to an older schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Connection, Engine, insert, inspect, select, update

from agentsd.errors import CorruptRowError, SchemaVersionError, StoreError, StoreNotFoundError
from agentsd.store.engine import transaction, use_wal
from agentsd.store.schema import (
    STORE_SCHEMA_VERSION,
    episode_leases,
    metadata,
    policy_versions,
    runs,
    store_meta,
)

_OPEN_LOCK = 7270517
"""PostgreSQL advisory lock taken by whoever creates or migrates a store (released at commit)."""

Migration = Callable[[Connection], None]


def stored_version(conn: Connection, where: str) -> int | None:
    """The schema version the store records; None when the database holds no store yet."""
    names = set(inspect(conn).get_table_names())
    if "store_meta" not in names:
        if names & {"trajectories", "turns"}:
            raise StoreError(f"{where}: has trajectory tables but no store_meta; not an agentsd store")
        return None
    value = conn.execute(select(store_meta.c.value).where(store_meta.c.key == "schema_version")).scalar()
    if value is None or not str(value).isdigit():
        raise CorruptRowError(f"{where}: store_meta.schema_version is {value!r}, expected an integer")
    return int(value)


def open_schema(engine: Engine, dialect: str, where: str, *, create: bool, wal: bool) -> None:
    """Make the store at `engine` current as a ReplayStore opens it: create it (`create`; in WAL mode
    when `wal`), migrate it, or refuse it; each step in its own transaction."""
    with transaction(engine, False, where) as conn:
        version = stored_version(conn, where)
    if version is None:
        if not create:
            raise StoreNotFoundError(f"{where} holds no replay store")
        if wal:
            use_wal(engine)
        with transaction(engine, True, where) as conn:
            create_tables(conn, dialect)
        with transaction(engine, False, where) as conn:
            version = stored_version(conn, where)
    assert version is not None
    if version > STORE_SCHEMA_VERSION:
        raise SchemaVersionError(
            f"replay store {where} has schema version {version}; this agentsd reads up to "
            f"{STORE_SCHEMA_VERSION}. Upgrade agentsd; the store was left untouched."
        )
    if version < STORE_SCHEMA_VERSION:
        with transaction(engine, True, where) as conn:
            migrate(conn, dialect, version, where)


def create_tables(conn: Connection, dialect: str) -> None:
    """Every table at the current schema version, unless another process created them first."""
    if dialect == "postgresql":
        # Serialise concurrent first opens; released at commit.
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_OPEN_LOCK})")
    if "store_meta" in inspect(conn).get_table_names():
        return
    metadata.create_all(conn)
    conn.execute(insert(store_meta).values(key="schema_version", value=str(STORE_SCHEMA_VERSION)))


def migrate(conn: Connection, dialect: str, version: int, where: str) -> None:
    """Bring a store at schema `version` up to STORE_SCHEMA_VERSION."""
    # another process may be migrating the same store: one at a time, and only once
    # (SQLite's BEGIN IMMEDIATE serialises writers already)
    if dialect == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_OPEN_LOCK})")
    current = conn.execute(select(store_meta.c.value).where(store_meta.c.key == "schema_version")).scalar()
    version = int(current) if current is not None and str(current).isdigit() else version
    while version < STORE_SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise SchemaVersionError(f"{where}: no migration from schema version {version}")
        step(conn)
        version += 1
    conn.execute(update(store_meta).where(store_meta.c.key == "schema_version").values(value=str(version)))


def _to_2(conn: Connection) -> None:
    """Per-turn sampling parameters, version lineage, run plans. Versions published before keep
    their trainer's name (meta.trainer) as their lineage; nothing else is guessed: a turn's top_p
    and a version's weights hash stay unknown."""
    for table, column, kind in (
        ("turns", "temperature", "FLOAT"),
        ("turns", "top_p", "FLOAT"),
        ("policy_versions", "lineage", "VARCHAR(128)"),
        ("policy_versions", "parent", "INTEGER"),
        ("policy_versions", "weights_hash", "VARCHAR(64)"),
    ):
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    runs.create(conn)
    rows = conn.execute(select(policy_versions.c.version, policy_versions.c.meta)).all()
    for version, meta in rows:
        try:
            trainer = json.loads(meta).get("trainer")
        except (ValueError, AttributeError):
            trainer = None
        conn.execute(
            update(policy_versions)
            .where(policy_versions.c.version == version)
            .values(lineage=str(trainer) if trainer else "legacy")
        )


def _to_3(conn: Connection) -> None:
    """Episode leases. Runs recorded before get their rows when a collector next opens them
    (derived from their trajectories), so nothing is guessed here."""
    episode_leases.create(conn)


MIGRATIONS: dict[int, Migration] = {1: _to_2, 2: _to_3}
"""from_version -> function that upgrades a store from that version to from_version + 1."""
