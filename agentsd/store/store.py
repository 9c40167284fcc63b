"""ReplayStore: the only link between collecting and training.

Collectors `begin` a trajectory, `append_turn` each turn as it happens (one transaction each, O(1):
no earlier turn is rewritten) and `finalize` it with reward, termination and hindsight signals.
Trainers query finalized trajectories by version, staleness, task and reward, and load their
token arrays straight into numpy. SQLite (WAL) is the default; PostgreSQL works by URL with the
same schema and code.

Guarantees: every write is one transaction; a writer killed mid-trajectory leaves its turns and a
`running` row that `unfinished()` finds and `interrupt()`/`discard()` close; a row that fails its
integrity checks raises CorruptRowError naming the trajectory, turn and field; a store written by
a newer schema is refused before anything is written.

Not guaranteed: a ReplayStore object must not cross a fork; each process opens its own. SQLite
serialises writers (BEGIN IMMEDIATE + busy timeout), so many writers on one file share its write
throughput; use PostgreSQL for a fleet of collector machines.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict, Unpack

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from agentsd.errors import (
    CorruptRowError,
    SchemaVersionError,
    StoreError,
    StoreNotFoundError,
    TrajectoryStateError,
)
from agentsd.lineage import ancestry
from agentsd.liveness import writer_alive, writer_identity
from agentsd.sequences import TurnTokens
from agentsd.store import leases
from agentsd.store.rows import (
    check_turn_sequence,
    loads,
    summary_from_row,
    trajectory_from_row,
    turn_from_row,
    turn_row,
    turn_tokens_from_row,
    version_from_row,
)
from agentsd.store.schema import (
    MIGRATIONS,
    STORE_SCHEMA_VERSION,
    consumed,
    metadata,
    policy_versions,
    runs,
    store_meta,
    tasks,
    trajectories,
    turns,
)
from agentsd.store.statements import CLAIM_TURNS, FINALIZE, SELECT_META, RawStatement, insert_all_columns
from agentsd.types import (
    SCHEMA_VERSION,
    EpisodeClaim,
    EpisodeLease,
    HindsightSignal,
    LeaseState,
    PolicyVersion,
    Task,
    Termination,
    Trajectory,
    TrajectoryStatus,
    TrajectorySummary,
    Turn,
)

_SUMMARY_COLUMNS = [trajectories.c[name] for name in TrajectorySummary.model_fields]


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


def sqlite_url(path: str | Path) -> str:
    """The store URL of a SQLite file."""
    return f"sqlite:///{Path(path).expanduser().absolute()}"


class ReplayStore:
    """Trajectories, turns, tasks and policy versions in one SQL database."""

    def __init__(self, url: str | Path, *, create: bool = True) -> None:
        self.url = _normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"store url {self.url!r}: expected a sqlite:/// or postgresql:// URL")
        self._sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise StoreError(
                    f"store url {self.url!r}: an in-memory SQLite store cannot be shared; give a file"
                )
            self._sqlite_path = Path(parsed.database)
            if not self._sqlite_path.exists():
                if not create:
                    raise StoreNotFoundError(
                        f"no replay store at {self._sqlite_path} (create one by collecting)"
                    )
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = self._make_engine()
        self._dbapi = self._engine.dialect.loaded_dbapi
        self._write_lock = threading.Lock()
        self._write_conn: Any = None
        self._claim_turns = RawStatement(CLAIM_TURNS, self._engine)
        self._insert_turn = RawStatement(insert_all_columns(turns), self._engine)
        self._insert_trajectory = RawStatement(insert_all_columns(trajectories), self._engine)
        self._finalize = RawStatement(FINALIZE, self._engine)
        self._select_meta = RawStatement(SELECT_META, self._engine)
        self._writer = writer_identity()
        try:
            self._open_schema(create)
        except Exception:
            self._engine.dispose()
            raise

    # ------------------------------------------------------------------ engine and transactions

    def _make_engine(self) -> Engine:
        if self.dialect == "postgresql":
            return create_engine(self.url, pool_pre_ping=True)
        engine = create_engine(self.url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Driver-level autocommit: transactions are begun explicitly below, so that writers can
            # take the write lock up front (BEGIN IMMEDIATE) instead of failing on lock upgrade.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 60000")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("agentsd_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextmanager
    def _tx(self, write: bool) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                conn.execution_options(agentsd_write=write)
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            raise StoreError(f"replay store {self._where()}: {_db_message(exc)}") from exc

    @contextmanager
    def _raw_write(self) -> Iterator[Any]:
        """A write transaction on a bare DBAPI cursor, for the begin/append/finalize hot path.

        Same semantics as _tx(write=True) (BEGIN IMMEDIATE on SQLite, one transaction on
        PostgreSQL) without SQLAlchemy's per-statement and pool work, which cost more than the SQL
        itself (scripts/bench_store.py). One connection is kept for it, used under a lock.
        """
        with self._write_lock:
            if self._write_conn is None:
                self._write_conn = self._engine.raw_connection()
            raw = self._write_conn
            cursor = raw.cursor()
            try:
                if self.dialect == "sqlite":
                    cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                if self.dialect == "sqlite":
                    cursor.execute("COMMIT")
                else:
                    raw.commit()
            except BaseException as exc:
                try:
                    if self.dialect == "sqlite":
                        cursor.execute("ROLLBACK")
                    else:
                        raw.rollback()
                except Exception:
                    raw.invalidate()
                    self._write_conn = None
                if isinstance(exc, self._dbapi.Error):
                    raise StoreError(f"replay store {self._where()}: {str(exc).strip()}") from exc
                raise
            finally:
                cursor.close()

    def _where(self) -> str:
        return str(self._sqlite_path) if self._sqlite_path else make_url(self.url).render_as_string(True)

    def close(self) -> None:
        with self._write_lock:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None
        self._engine.dispose()

    def __enter__(self) -> ReplayStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ schema

    def _open_schema(self, create: bool) -> None:
        version = self._read_schema_version()
        if version is None:
            if not create:
                raise StoreNotFoundError(f"{self._where()} holds no replay store")
            self._create_schema()
            version = self._read_schema_version()
        assert version is not None
        if version > STORE_SCHEMA_VERSION:
            raise SchemaVersionError(
                f"replay store {self._where()} has schema version {version}; this agentsd reads up to "
                f"{STORE_SCHEMA_VERSION}. Upgrade agentsd; the store was left untouched."
            )
        if version < STORE_SCHEMA_VERSION:
            self._migrate(version)

    def _read_schema_version(self) -> int | None:
        with self._tx(write=False) as conn:
            names = set(inspect(conn).get_table_names())
            if "store_meta" not in names:
                if names & {"trajectories", "turns"}:
                    raise StoreError(
                        f"{self._where()}: has trajectory tables but no store_meta; not an agentsd store"
                    )
                return None
            value = conn.execute(
                select(store_meta.c.value).where(store_meta.c.key == "schema_version")
            ).scalar()
        if value is None or not str(value).isdigit():
            raise CorruptRowError(
                f"{self._where()}: store_meta.schema_version is {value!r}, expected an integer"
            )
        return int(value)

    def _create_schema(self) -> None:
        if self._sqlite_path is not None:
            raw = self._engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA journal_mode = WAL")
            finally:
                raw.close()
        with self._tx(write=True) as conn:
            if self.dialect == "postgresql":
                # Serialise concurrent first opens; released at commit.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7270517)")
            if "store_meta" in inspect(conn).get_table_names():
                return
            metadata.create_all(conn)
            conn.execute(insert(store_meta).values(key="schema_version", value=str(STORE_SCHEMA_VERSION)))

    def _migrate(self, version: int) -> None:
        with self._tx(write=True) as conn:
            # another process may be migrating the same store: one at a time, and only once
            # (SQLite's BEGIN IMMEDIATE serialises writers already)
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7270517)")
            current = conn.execute(
                select(store_meta.c.value).where(store_meta.c.key == "schema_version")
            ).scalar()
            version = int(current) if current is not None and str(current).isdigit() else version
            while version < STORE_SCHEMA_VERSION:
                step = MIGRATIONS.get(version)
                if step is None:
                    raise SchemaVersionError(f"{self._where()}: no migration from schema version {version}")
                step(conn)
                version += 1
            conn.execute(
                update(store_meta).where(store_meta.c.key == "schema_version").values(value=str(version))
            )

    # ------------------------------------------------------------------ tasks

    def put_task(self, task: Task) -> str:
        """Store a task by content hash (idempotent); returns the hash."""
        digest = task.content_hash()
        with self._tx(write=True) as conn:
            if conn.execute(select(tasks.c.hash).where(tasks.c.hash == digest)).first() is None:
                conn.execute(
                    insert(tasks).values(
                        hash=digest,
                        task_id=task.id,
                        family=task.family.value,
                        body=task.model_dump_json(),
                        created_at=time.time(),
                    )
                )
        return digest

    def get_task(self, task_hash: str) -> Task | None:
        with self._tx(write=False) as conn:
            body = conn.execute(select(tasks.c.body).where(tasks.c.hash == task_hash)).scalar()
        if body is None:
            return None
        try:
            return Task.model_validate_json(body)
        except ValueError as exc:
            raise CorruptRowError(f"task {task_hash}: stored body does not validate: {exc}") from exc

    def select_tasks(self, selector: str = "*") -> list[tuple[str, Task]]:
        """(hash, task) of every stored task whose id matches the glob `selector` or whose hash
        starts with it, ordered by task id and import time (only the chosen bodies are read)."""
        order = (tasks.c.task_id, tasks.c.created_at)
        with self._tx(write=False) as conn:
            ids = conn.execute(select(tasks.c.hash, tasks.c.task_id).order_by(*order)).all()
            chosen = [
                digest
                for digest, task_id in ids
                if fnmatch.fnmatchcase(task_id, selector)
                or (len(selector) >= 4 and digest.startswith(selector))
            ]
            rows = (
                conn.execute(
                    select(tasks.c.hash, tasks.c.body).where(tasks.c.hash.in_(chosen)).order_by(*order)
                ).all()
                if chosen
                else []
            )
        out = []
        for digest, body in rows:
            try:
                out.append((digest, Task.model_validate_json(body)))
            except ValueError as exc:
                raise CorruptRowError(f"task {digest}: stored body does not validate: {exc}") from exc
        return out

    # ------------------------------------------------------------------ writing trajectories

    def begin(
        self,
        *,
        task: Task | None = None,
        task_id: str | None = None,
        policy_model: str,
        version: int,
        meta: dict[str, Any] | None = None,
        trajectory_id: str | None = None,
    ) -> str:
        """Start a trajectory (status running); returns its id. Give `task` or `task_id`."""
        if task is not None:
            task_hash = self.put_task(task)
            task_id = task.id
        elif task_id:
            task_hash = ""
        else:
            raise ValueError("begin: give task or task_id")
        if version < 0:
            raise ValueError(f"begin: version must be >= 0, got {version}")
        traj_id = trajectory_id or uuid.uuid4().hex
        now = time.time()
        row = {
            "id": traj_id,
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
            "writer": self._writer,
            "schema_version": SCHEMA_VERSION,
        }
        try:
            with self._raw_write() as cursor:
                self._insert_trajectory.execute(cursor, row)
        except StoreError as exc:
            if isinstance(exc.__cause__, self._dbapi.IntegrityError):
                raise TrajectoryStateError(f"trajectory {traj_id} already exists") from exc
            raise
        return traj_id

    def append_turn(self, trajectory_id: str, turn: Turn) -> None:
        """Append one turn in one transaction; its index must be the trajectory's next index."""
        self.append_turns(trajectory_id, [turn])

    def append_turns(self, trajectory_id: str, new_turns: Sequence[Turn]) -> None:
        """Append consecutive turns in one transaction (all or none)."""
        if not new_turns:
            return
        first = new_turns[0].index
        for offset, turn in enumerate(new_turns):
            if turn.index != first + offset:
                raise ValueError(
                    f"append_turns: turn indices must be consecutive, got {turn.index} after {first}"
                )
        rows = [turn_row(trajectory_id, t) for t in new_turns]
        n_tokens = sum(r["n_prompt"] + r["n_completion"] for r in rows)
        n_completion = sum(r["n_completion"] for r in rows)
        top_version = max(t.policy_version for t in new_turns)
        claim = {
            "tid": trajectory_id,
            "first": first,
            "n_new": len(rows),
            "n_tokens": n_tokens,
            "n_completion": n_completion,
            "top_version": top_version,
            "now": time.time(),
            "writer": self._writer,
        }
        with self._raw_write() as cursor:
            # Claim the slots: the guard on n_turns makes a duplicate or a gap fail instead of
            # silently interleaving, and the counters keep append O(1) in the trajectory's length.
            if self._claim_turns.execute(cursor, claim) != 1:
                refused = True
            else:
                refused = False
                self._insert_turn.executemany(cursor, rows)
        if refused:
            with self._tx(write=False) as conn:
                raise self._append_refused(conn, trajectory_id, first)

    def _append_refused(self, conn: Connection, trajectory_id: str, index: int) -> TrajectoryStateError:
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

    def finalize(
        self,
        trajectory_id: str,
        *,
        termination: Termination,
        reward: float | None,
        reward_components: dict[str, float] | None = None,
        hindsight: Sequence[HindsightSignal] = (),
        artifacts: dict[str, str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Set the outcome and make the trajectory visible to training (once)."""
        now = time.time()
        values: dict[str, Any] = {
            "status": TrajectoryStatus.FINALIZED.value,
            "termination": Termination(termination).value,
            "reward": reward,
            "reward_components": json.dumps(reward_components or {}),
            "hindsight": json.dumps([h.model_dump(mode="json") for h in hindsight]),
            "artifacts": json.dumps(artifacts or {}),
            "finalized_at": now,
            "updated_at": now,
        }
        with self._raw_write() as cursor:
            if meta:
                old = self._select_meta.scalar(cursor, {"tid": trajectory_id})
                old_meta = loads(old, f"trajectory {trajectory_id} meta", dict) if old is not None else {}
                values["meta"] = json.dumps({**old_meta, **meta})
            else:
                values["meta"] = None  # keep the stored meta
            done = self._finalize.execute(cursor, {**values, "tid": trajectory_id}) == 1
        if not done:
            with self._tx(write=False) as conn:
                raise self._append_refused(conn, trajectory_id, -1)

    def resume(self, trajectory_id: str) -> Trajectory:
        """Take over an unfinished trajectory as its writer; returns it with every stored turn."""
        with self._tx(write=True) as conn:
            result = conn.execute(
                update(trajectories)
                .where(
                    and_(
                        trajectories.c.id == trajectory_id,
                        trajectories.c.status == TrajectoryStatus.RUNNING.value,
                    )
                )
                .values(writer=self._writer, updated_at=time.time())
            )
            if result.rowcount != 1:
                raise self._append_refused(conn, trajectory_id, -1)
        return self.get(trajectory_id)

    # ------------------------------------------------------------------ unfinished trajectories

    def unfinished(self, *, stale_after_s: float | None = None) -> list[TrajectorySummary]:
        """Running trajectories whose writer is gone: dead on this host, or silent for stale_after_s.

        With stale_after_s None, only trajectories whose writer is known dead (same host) are listed.
        """
        now = time.time()
        found = []
        for summary in self.list(status=TrajectoryStatus.RUNNING, limit=None):
            alive = writer_alive(summary.writer)
            silent = stale_after_s is not None and now - summary.updated_at > stale_after_s
            if alive is False or (alive is None and silent):
                found.append(summary)
        return found

    def interrupt(self, trajectory_id: str, reason: str = "writer died") -> None:
        """Close an unfinished trajectory as INTERRUPTED, keeping its turns."""
        self.finalize(
            trajectory_id,
            termination=Termination.INTERRUPTED,
            reward=None,
            meta={"interrupted_because": reason},
        )

    def discard(self, trajectory_id: str, *, finalized_too: bool = False) -> None:
        """Delete a trajectory and its turns. Finalized trajectories only with finalized_too."""
        with self._tx(write=True) as conn:
            status = conn.execute(
                select(trajectories.c.status).where(trajectories.c.id == trajectory_id)
            ).scalar()
            if status is None:
                raise TrajectoryStateError(f"trajectory {trajectory_id} does not exist")
            if status != TrajectoryStatus.RUNNING.value and not finalized_too:
                raise TrajectoryStateError(f"trajectory {trajectory_id} is {status}; refusing to discard it")
            conn.execute(delete(turns).where(turns.c.trajectory_id == trajectory_id))
            conn.execute(delete(consumed).where(consumed.c.trajectory_id == trajectory_id))
            conn.execute(delete(trajectories).where(trajectories.c.id == trajectory_id))

    # ------------------------------------------------------------------ reading

    def count(self, *, status: TrajectoryStatus | None = None) -> int:
        query = select(func.count()).select_from(trajectories)
        if status is not None:
            query = query.where(trajectories.c.status == TrajectoryStatus(status).value)
        with self._tx(write=False) as conn:
            return int(conn.execute(query).scalar() or 0)

    def list(
        self,
        *,
        status: TrajectoryStatus | None = None,
        task_id: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = 100,
        newest_first: bool = True,
    ) -> list[TrajectorySummary]:
        query = select(*_SUMMARY_COLUMNS)
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
        with self._tx(write=False) as conn:
            return [summary_from_row(row._mapping) for row in conn.execute(query)]

    def summary(self, trajectory_id: str) -> TrajectorySummary:
        with self._tx(write=False) as conn:
            row = conn.execute(select(*_SUMMARY_COLUMNS).where(trajectories.c.id == trajectory_id)).first()
        if row is None:
            raise TrajectoryStateError(f"trajectory {trajectory_id} does not exist")
        return summary_from_row(row._mapping)

    def get(self, trajectory_id: str, *, with_turns: bool = True) -> Trajectory:
        """The whole trajectory, every turn decoded and integrity-checked."""
        with self._tx(write=False) as conn:
            row = conn.execute(select(trajectories).where(trajectories.c.id == trajectory_id)).first()
            if row is None:
                raise TrajectoryStateError(f"trajectory {trajectory_id} does not exist")
            turn_rows = (
                conn.execute(
                    select(turns).where(turns.c.trajectory_id == trajectory_id).order_by(turns.c.idx)
                ).all()
                if with_turns
                else []
            )
        where = f"trajectory {trajectory_id}"
        loaded = [turn_from_row(r._mapping, where) for r in turn_rows]
        if with_turns:
            check_turn_sequence(where, [t.index for t in loaded], row._mapping["n_turns"])
        return trajectory_from_row(row._mapping, loaded)

    def iter_trajectories(self, ids: Sequence[str]) -> Iterator[Trajectory]:
        for traj_id in ids:
            yield self.get(traj_id)

    def load_tokens(self, trajectory_ids: Sequence[str]) -> dict[str, list[TurnTokens]]:
        """Token arrays of each trajectory's turns, straight from the blobs (the training fast path)."""
        if not trajectory_ids:
            return {}
        cols = [
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
        out: dict[str, list[TurnTokens]] = {traj_id: [] for traj_id in trajectory_ids}
        with self._tx(write=False) as conn:
            counts = dict(
                conn.execute(
                    select(trajectories.c.id, trajectories.c.n_turns).where(trajectories.c.id.in_(list(out)))
                ).all()
            )
            rows = conn.execute(
                select(*cols)
                .where(turns.c.trajectory_id.in_(list(out)))
                .order_by(turns.c.trajectory_id, turns.c.idx)
            ).all()
        missing = [t for t in out if t not in counts]
        if missing:
            raise TrajectoryStateError(f"trajectories not in the store: {', '.join(missing[:5])}")
        for r in rows:
            out[r.trajectory_id].append(turn_tokens_from_row(r._mapping))
        for traj_id, turn_list in out.items():
            check_turn_sequence(f"trajectory {traj_id}", [t.index for t in turn_list], counts[traj_id])
        return out

    # ------------------------------------------------------------------ queries on finalized trajectories

    def find_finalized(
        self, *, limit: int | None = None, oldest_first: bool = True, **filters: Unpack[FinalizedFilters]
    ) -> list[TrajectorySummary]:
        """Finalized trajectories matching every given filter (see FinalizedFilters), oldest first."""
        conds = self._finalized_conditions(**filters)
        order = trajectories.c.finalized_at.asc() if oldest_first else trajectories.c.finalized_at.desc()
        query = select(*_SUMMARY_COLUMNS).where(and_(*conds)).order_by(order, trajectories.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._tx(write=False) as conn:
            return [summary_from_row(row._mapping) for row in conn.execute(query)]

    def count_finalized(self, **filters: Unpack[FinalizedFilters]) -> int:
        """How many finalized trajectories find_finalized(**filters) would return (no limit)."""
        conds = self._finalized_conditions(**filters)
        with self._tx(write=False) as conn:
            return int(
                conn.execute(select(func.count()).select_from(trajectories).where(and_(*conds))).scalar_one()
            )

    def _finalized_conditions(self, **filters: Unpack[FinalizedFilters]) -> list[Any]:
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
                    and_(
                        consumed.c.consumer == not_consumed_by, consumed.c.trajectory_id == trajectories.c.id
                    )
                )
            )
        return conds

    def count_untrained(self, *, id_prefix: str, terminations: Sequence[Termination]) -> int:
        """Finalized trajectories whose id starts with `id_prefix`, ended in one of `terminations`,
        that no trainer has consumed yet: a collect run's backlog, for pacing."""
        conds = [
            trajectories.c.status == TrajectoryStatus.FINALIZED.value,
            trajectories.c.id.startswith(id_prefix, autoescape=True),
            trajectories.c.termination.in_([Termination(t).value for t in terminations]),
            ~exists().where(consumed.c.trajectory_id == trajectories.c.id),
        ]
        with self._tx(write=False) as conn:
            return int(
                conn.execute(select(func.count()).select_from(trajectories).where(and_(*conds))).scalar_one()
            )

    def recent_step_sizes(self, steps: int) -> list[int]:
        """How many trajectories each of the last `steps` training steps took (newest first; every
        step publishes one version): how fast a trainer really drains a backlog."""
        query = (
            select(func.count())
            .select_from(consumed)
            .group_by(consumed.c.consumer, consumed.c.version)
            .order_by(func.max(consumed.c.at).desc(), consumed.c.version.desc())
            .limit(steps)
        )
        with self._tx(write=False) as conn:
            return [int(n) for n in conn.execute(query).scalars()]

    def mark_consumed(self, consumer: str, trajectory_ids: Sequence[str], version: int) -> None:
        """Record that `consumer` (a trainer run) trained on these trajectories at `version`."""
        if not trajectory_ids:
            return
        now = time.time()
        with self._tx(write=True) as conn:
            already = set(
                conn.execute(
                    select(consumed.c.trajectory_id).where(
                        and_(
                            consumed.c.consumer == consumer,
                            consumed.c.trajectory_id.in_(list(trajectory_ids)),
                        )
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

    def consumed_by(self, consumer: str) -> set[str]:
        with self._tx(write=False) as conn:
            return set(
                conn.execute(
                    select(consumed.c.trajectory_id).where(consumed.c.consumer == consumer)
                ).scalars()
            )

    # ------------------------------------------------------------------ policy versions

    def register_version(
        self,
        version: int,
        *,
        model: str,
        checkpoint_uri: str,
        lineage: str,
        parent: int | None,
        weights_hash: str | None,
        meta: dict[str, Any] | None = None,
    ) -> PolicyVersion:
        """Record a published policy version; a number is registered once and never rewritten."""
        entry = PolicyVersion(
            version=version,
            model=model,
            checkpoint_uri=checkpoint_uri,
            created_at=time.time(),
            meta=meta or {},
            lineage=lineage,
            parent=parent,
            weights_hash=weights_hash,
        )
        try:
            with self._tx(write=True) as conn:
                conn.execute(
                    insert(policy_versions).values(**{**entry.model_dump(), "meta": json.dumps(entry.meta)})
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise TrajectoryStateError(f"policy version {version} is already registered") from exc
            raise
        return entry

    def versions(self) -> list[PolicyVersion]:
        with self._tx(write=False) as conn:
            rows = conn.execute(select(policy_versions).order_by(policy_versions.c.version)).all()
        return [version_from_row(r._mapping) for r in rows]

    def get_version(self, version: int) -> PolicyVersion | None:
        with self._tx(write=False) as conn:
            row = conn.execute(select(policy_versions).where(policy_versions.c.version == version)).first()
        return version_from_row(row._mapping) if row is not None else None

    def latest_version(self, lineage: str | None = None) -> PolicyVersion | None:
        """The newest version of `lineage` (None: of any lineage)."""
        query = select(policy_versions)
        if lineage is not None:
            query = query.where(policy_versions.c.lineage == lineage)
        with self._tx(write=False) as conn:
            row = conn.execute(query.order_by(policy_versions.c.version.desc()).limit(1)).first()
        return version_from_row(row._mapping) if row is not None else None

    def ancestry(self, lineage: str, origin: int | None) -> list[tuple[str, int | None]]:
        """The lineages a model of `lineage` descends from (agentsd.lineage.ancestry)."""
        return ancestry(self.versions(), lineage, origin)

    # ------------------------------------------------------------------ run plans

    def run_plan(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """(kind, plan) of the collect or eval run `name`, None when no run has that name."""
        with self._tx(write=False) as conn:
            row = conn.execute(select(runs.c.kind, runs.c.plan).where(runs.c.name == name)).first()
        if row is None:
            return None
        return row.kind, loads(row.plan, f"run {name} plan", dict)

    def record_run(self, name: str, kind: str, plan: dict[str, Any]) -> bool:
        """Record run `name`'s plan; False (nothing written) when a run of that name exists."""
        try:
            with self._tx(write=True) as conn:
                conn.execute(
                    insert(runs).values(name=name, kind=kind, plan=json.dumps(plan), created_at=time.time())
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise
        return True

    # ------------------------------------------------------------------ episode leases (leases.py)

    def open_plan(self, run: str, episodes: int) -> None:
        """Make sure every episode of `run` below `episodes` has a lease row (idempotent)."""
        with self._tx(write=True) as conn:
            leases.open_plan(conn, run, episodes, time.time())

    def claim_episode(self, run: str, holder: str, lease_s: float) -> EpisodeClaim | None:
        """The next claimable episode of `run`, now `holder`'s for `lease_s` seconds; None if none."""
        with self._tx(write=True) as conn:
            return leases.claim(conn, run, holder, lease_s, time.time())

    def has_claimable(self, run: str) -> bool:
        """Whether a claim could take an episode of `run` now (leases.claimable; reads only)."""
        with self._tx(write=False) as conn:
            return leases.claimable(conn, run, time.time())

    def heartbeat(self, run: str, holder: str, lease_s: float) -> set[int]:
        """Extend `holder`'s running leases on `run`; returns the episodes it still holds."""
        with self._tx(write=True) as conn:
            return leases.heartbeat(conn, run, holder, lease_s, time.time())

    def settle_episode(
        self,
        run: str,
        episode: int,
        holder: str,
        attempt: int,
        *,
        state: LeaseState,
        attempt_after: int | None = None,
    ) -> bool:
        """End `holder`'s lease: DONE, or WAITING to hand the episode back (leases.settle)."""
        with self._tx(write=True) as conn:
            return leases.settle(
                conn, run, episode, holder, attempt, time.time(), state=state, attempt_after=attempt_after
            )

    def release_episodes(self, run: str, holder: str) -> int:
        """Hand back every episode `holder` still holds on `run`; how many."""
        with self._tx(write=True) as conn:
            return leases.release(conn, run, holder, time.time())

    def plan_counts(self, run: str) -> dict[LeaseState, int]:
        """How many episodes of `run`'s plan are waiting, running and done."""
        with self._tx(write=False) as conn:
            return leases.counts(conn, run)

    def plan_leases(self, run: str) -> list[EpisodeLease]:
        """Every episode row of `run`'s plan, in plan order (empty: no collector opened it yet)."""
        with self._tx(write=False) as conn:
            return leases.plan(conn, run)


# ---------------------------------------------------------------------- helpers


def _normalise_url(url: str | Path) -> str:
    text = str(url)
    if "://" not in text:
        return sqlite_url(text)
    try:
        make_url(text)
    except ArgumentError as exc:
        raise StoreError(f"store url {text!r} is not a database URL: {exc}") from exc
    return text


def _db_message(exc: DBAPIError) -> str:
    message = str(exc.orig).strip() or type(exc.orig).__name__
    if "not a database" in message or "malformed" in message:
        return f"{message} (the file is corrupt or not a SQLite database)"
    return message
