"""The replay store's tables (SQLAlchemy Core) and the version of their layout.

One schema serves SQLite and PostgreSQL. Token arrays are binary columns (see codec.py); the
remaining per-turn fields live in a JSON text body so that adding a field to Turn does not need a
table change. STORE_SCHEMA_VERSION is bumped with a migration in migrations.MIGRATIONS whenever a
table changes; a store written by a newer version is refused, never modified (migrations.py).
This module only describes the tables; it never touches a database.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

STORE_SCHEMA_VERSION = 3
"""Layout version of the tables below."""

metadata = MetaData()

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("task_id", String(512), nullable=False, index=True),
    Column("family", String(16), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

trajectories = Table(
    "trajectories",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("task_id", String(512), nullable=False, index=True),
    Column("task_hash", String(64), nullable=False),
    Column("policy_model", String(1024), nullable=False),
    Column("version_start", Integer, nullable=False),
    Column("version_end", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("termination", String(16)),
    Column("reward", Float),
    Column("reward_components", Text, nullable=False),
    Column("hindsight", Text, nullable=False),
    Column("artifacts", Text, nullable=False),
    Column("meta", Text, nullable=False),
    Column("n_turns", Integer, nullable=False),
    Column("n_tokens", BigInteger, nullable=False),
    Column("n_completion_tokens", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finalized_at", Float),
    Column("writer", String(256), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Index("ix_trajectories_status_version", "status", "version_end"),
    Index("ix_trajectories_finalized_at", "finalized_at"),
)

turns = Table(
    "turns",
    metadata,
    Column("trajectory_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("source", String(16), nullable=False),
    Column("policy_version", Integer, nullable=False),
    Column("temperature", Float),  # schema 2; NULL = not recorded
    Column("top_p", Float),  # schema 2; NULL = not recorded
    Column("context_reset", Boolean, nullable=False),
    Column("n_prompt", Integer, nullable=False),
    Column("n_completion", Integer, nullable=False),
    Column("prompt_ids", LargeBinary, nullable=False),
    Column("completion_ids", LargeBinary, nullable=False),
    Column("logprobs", LargeBinary, nullable=False),
    Column("loss_mask", LargeBinary),
    Column("body", Text, nullable=False),
    Column("crc", BigInteger, nullable=False),
)

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("model", String(1024), nullable=False),
    Column("checkpoint_uri", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("meta", Text, nullable=False),
    # schema 2: which trainer lineage published it, the version its weights started from, and the
    # content hash of its weight files (NULL on versions published before schema 2)
    Column("lineage", String(128)),
    Column("parent", Integer),
    Column("weights_hash", String(64)),
)

runs = Table(  # schema 2: the plan of every collect and eval run, checked when a run resumes
    "runs",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("plan", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

consumed = Table(
    "consumed",
    metadata,
    Column("consumer", String(128), primary_key=True),
    Column("trajectory_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("at", Float, nullable=False),
)

episode_leases = Table(  # schema 3: every episode of a run's plan, claimed by collectors under leases
    "episode_leases",
    metadata,
    Column("run", String(128), primary_key=True),
    Column("episode", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("holder", String(256)),
    Column("claimed_at", Float),
    Column("expires_at", Float),
    Column("updated_at", Float, nullable=False),
    Index("ix_episode_leases_run_state_episode", "run", "state", "episode"),
)
