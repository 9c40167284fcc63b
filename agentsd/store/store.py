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

This class is the store's one public face: each method opens its transaction (engine.py) and
delegates to the module that owns the job: migrations.py (schema version), task_table.py (tasks),
writes.py (begin/append/finalize), reads.py (reading), finalized.py (what to train on), ledger.py
(what was trained on), version_registry.py (published versions), leases.py (run plans and episode
leases).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Unpack

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

import agentsd.store.finalized as finalized
import agentsd.store.leases as leases
import agentsd.store.ledger as ledger
import agentsd.store.migrations as migrations
import agentsd.store.reads as reads
import agentsd.store.task_table as task_table
import agentsd.store.version_registry as version_registry
import agentsd.store.writes as writes
from agentsd.errors import StoreError, TrajectoryStateError
from agentsd.lineage import ancestry
from agentsd.liveness import writer_identity
from agentsd.sequences import TurnTokens
from agentsd.store.engine import RawWriter, describe, locate, make_engine, transaction
from agentsd.store.finalized import FinalizedFilters
from agentsd.store.schema import trajectories, turns
from agentsd.store.statements import CLAIM_TURNS, FINALIZE, SELECT_META, RawStatement, insert_all_columns
from agentsd.types import (
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


class ReplayStore:
    """Trajectories, turns, tasks and policy versions in one SQL database."""

    def __init__(self, url: str | Path, *, create: bool = True) -> None:
        self.url, self.dialect, self._sqlite_path = locate(url, create=create)
        self._where = describe(self.url, self._sqlite_path)
        self._engine = make_engine(self.url, self.dialect)
        self._raw_writer = RawWriter(self._engine, self.dialect, self._where)
        self._claim_turns = RawStatement(CLAIM_TURNS, self._engine)
        self._insert_turn = RawStatement(insert_all_columns(turns), self._engine)
        self._insert_trajectory = RawStatement(insert_all_columns(trajectories), self._engine)
        self._finalize = RawStatement(FINALIZE, self._engine)
        self._select_meta = RawStatement(SELECT_META, self._engine)
        self._writer = writer_identity()
        try:
            migrations.open_schema(
                self._engine, self.dialect, self._where, create=create, wal=self._sqlite_path is not None
            )
        except Exception:
            self._engine.dispose()
            raise

    def _tx(self, write: bool) -> AbstractContextManager[Connection]:
        return transaction(self._engine, write, self._where)

    def close(self) -> None:
        self._raw_writer.close()
        self._engine.dispose()

    def __enter__(self) -> ReplayStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ tasks (task_table.py)

    def put_task(self, task: Task) -> str:
        """Store a task by content hash (idempotent); returns the hash."""
        digest = task.content_hash()
        with self._tx(write=True) as conn:
            task_table.put(conn, task, digest, time.time())
        return digest

    def get_task(self, task_hash: str) -> Task | None:
        with self._tx(write=False) as conn:
            body = task_table.body(conn, task_hash)
        return task_table.decode(task_hash, body) if body is not None else None

    def select_tasks(self, selector: str = "*") -> list[tuple[str, Task]]:
        """(hash, task) of every stored task whose id matches the glob `selector` or whose hash
        starts with it, ordered by task id and import time (only the chosen bodies are read)."""
        with self._tx(write=False) as conn:
            bodies = task_table.bodies(conn, selector)
        return [(digest, task_table.decode(digest, body)) for digest, body in bodies]

    # ------------------------------------------------------------------ writing trajectories (writes.py)

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
        row = writes.running_row(
            traj_id, task_id, task_hash, policy_model, version, meta, self._writer, time.time()
        )
        try:
            with self._raw_writer.transaction() as cursor:
                self._insert_trajectory.execute(cursor, row)
        except StoreError as exc:
            if isinstance(exc.__cause__, self._raw_writer.dbapi.IntegrityError):
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
        rows, claim = writes.turn_rows_and_claim(trajectory_id, new_turns, self._writer, time.time())
        with self._raw_writer.transaction() as cursor:
            # Claim the slots: the guard on n_turns makes a duplicate or a gap fail instead of
            # silently interleaving, and the counters keep append O(1) in the trajectory's length.
            claimed = self._claim_turns.execute(cursor, claim) == 1
            if claimed:
                self._insert_turn.executemany(cursor, rows)
        if not claimed:
            with self._tx(write=False) as conn:
                raise writes.refusal(conn, trajectory_id, new_turns[0].index)

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
        values = writes.outcome(termination, reward, reward_components, hindsight, artifacts, time.time())
        with self._raw_writer.transaction() as cursor:
            stored = self._select_meta.scalar(cursor, {"tid": trajectory_id}) if meta else None
            values["meta"] = writes.merged_meta(stored, meta, trajectory_id)
            done = self._finalize.execute(cursor, {**values, "tid": trajectory_id}) == 1
        if not done:
            with self._tx(write=False) as conn:
                raise writes.refusal(conn, trajectory_id, -1)

    def resume(self, trajectory_id: str) -> Trajectory:
        """Take over an unfinished trajectory as its writer; returns it with every stored turn."""
        with self._tx(write=True) as conn:
            writes.take_over(conn, trajectory_id, self._writer, time.time())
        return self.get(trajectory_id)

    # ------------------------------------------------------------------ unfinished trajectories

    def unfinished(self, *, stale_after_s: float | None = None) -> list[TrajectorySummary]:
        """Running trajectories whose writer is gone: dead on this host, or silent for stale_after_s.

        With stale_after_s None, only trajectories whose writer is known dead (same host) are listed.
        """
        now = time.time()
        return reads.abandoned(self.list(status=TrajectoryStatus.RUNNING, limit=None), now, stale_after_s)

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
            writes.discard(conn, trajectory_id, finalized_too=finalized_too)

    # ------------------------------------------------------------------ reading (reads.py)

    def count(self, *, status: TrajectoryStatus | None = None) -> int:
        with self._tx(write=False) as conn:
            return reads.count(conn, status)

    def list(
        self,
        *,
        status: TrajectoryStatus | None = None,
        task_id: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = 100,
        newest_first: bool = True,
    ) -> list[TrajectorySummary]:
        with self._tx(write=False) as conn:
            return reads.summaries(
                conn,
                status=status,
                task_id=task_id,
                id_prefix=id_prefix,
                limit=limit,
                newest_first=newest_first,
            )

    def summary(self, trajectory_id: str) -> TrajectorySummary:
        with self._tx(write=False) as conn:
            return reads.summary(conn, trajectory_id)

    def get(self, trajectory_id: str, *, with_turns: bool = True) -> Trajectory:
        """The whole trajectory, every turn decoded and integrity-checked."""
        with self._tx(write=False) as conn:
            row, turn_rows = reads.trajectory_rows(conn, trajectory_id, with_turns)
        return reads.trajectory(row, turn_rows, with_turns)

    def iter_trajectories(self, ids: Sequence[str]) -> Iterator[Trajectory]:
        for traj_id in ids:
            yield self.get(traj_id)

    def load_tokens(self, trajectory_ids: Sequence[str]) -> dict[str, list[TurnTokens]]:
        """Token arrays of each trajectory's turns, straight from the blobs (the training fast path)."""
        if not trajectory_ids:
            return {}
        with self._tx(write=False) as conn:
            counts, rows = reads.token_rows(conn, trajectory_ids)
        return reads.turn_tokens(trajectory_ids, counts, rows)

    # ------------------------------------------------------------------ finalized trajectories (finalized.py)

    def find_finalized(
        self, *, limit: int | None = None, oldest_first: bool = True, **filters: Unpack[FinalizedFilters]
    ) -> list[TrajectorySummary]:
        """Finalized trajectories matching every given filter (see FinalizedFilters), oldest first."""
        conds = finalized.conditions(filters)
        with self._tx(write=False) as conn:
            return finalized.find(conn, conds, limit=limit, oldest_first=oldest_first)

    def count_finalized(self, **filters: Unpack[FinalizedFilters]) -> int:
        """How many finalized trajectories find_finalized(**filters) would return (no limit)."""
        conds = finalized.conditions(filters)
        with self._tx(write=False) as conn:
            return finalized.count(conn, conds)

    def count_untrained(self, *, id_prefix: str, terminations: Sequence[Termination]) -> int:
        """Finalized trajectories whose id starts with `id_prefix`, ended in one of `terminations`,
        that no trainer has consumed yet: a collect run's backlog, for pacing."""
        conds = finalized.untrained(id_prefix=id_prefix, terminations=terminations)
        with self._tx(write=False) as conn:
            return finalized.count(conn, conds)

    # ------------------------------------------------------------------ consumption ledger (ledger.py)

    def recent_step_sizes(self, steps: int) -> list[int]:
        """How many trajectories each of the last `steps` training steps took (newest first; every
        step publishes one version): how fast a trainer really drains a backlog."""
        with self._tx(write=False) as conn:
            return ledger.recent_step_sizes(conn, steps)

    def mark_consumed(self, consumer: str, trajectory_ids: Sequence[str], version: int) -> None:
        """Record that `consumer` (a trainer run) trained on these trajectories at `version`."""
        if not trajectory_ids:
            return
        now = time.time()
        with self._tx(write=True) as conn:
            ledger.mark(conn, consumer, trajectory_ids, version, now)

    def consumed_by(self, consumer: str) -> set[str]:
        with self._tx(write=False) as conn:
            return ledger.consumed_by(conn, consumer)

    # ------------------------------------------------------------------ policy versions (version_registry.py)

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
                version_registry.register(conn, entry)
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise TrajectoryStateError(f"policy version {version} is already registered") from exc
            raise
        return entry

    def versions(self) -> list[PolicyVersion]:
        with self._tx(write=False) as conn:
            rows = version_registry.every(conn)
        return [version_registry.decode(r) for r in rows]

    def get_version(self, version: int) -> PolicyVersion | None:
        with self._tx(write=False) as conn:
            row = version_registry.one(conn, version)
        return version_registry.decode(row) if row is not None else None

    def latest_version(self, lineage: str | None = None) -> PolicyVersion | None:
        """The newest version of `lineage` (None: of any lineage)."""
        with self._tx(write=False) as conn:
            row = version_registry.latest(conn, lineage)
        return version_registry.decode(row) if row is not None else None

    def ancestry(self, lineage: str, origin: int | None) -> list[tuple[str, int | None]]:
        """The lineages a model of `lineage` descends from (agentsd.lineage.ancestry)."""
        return ancestry(self.versions(), lineage, origin)

    # ------------------------------------------------------------------ run plans, episode leases (leases.py)

    def run_plan(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """(kind, plan) of the collect or eval run `name`, None when no run has that name."""
        with self._tx(write=False) as conn:
            row = leases.run_row(conn, name)
        return leases.run_plan(name, row) if row is not None else None

    def record_run(self, name: str, kind: str, plan: dict[str, Any]) -> bool:
        """Record run `name`'s plan; False (nothing written) when a run of that name exists."""
        try:
            with self._tx(write=True) as conn:
                leases.record_run(conn, name, kind, plan, time.time())
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise
        return True

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
