"""Run plans and episode leases: a collect or eval run's plan in the store, shared by any number of
collectors.

A run's plan is recorded once under its name (`runs`: its kind and the plan as JSON), checked when
the run resumes; recording a second plan under a taken name is refused by the primary key.

Every episode of a run has one row (`episode_leases`): waiting, running under a collector's lease,
or done. A collector claims the first claimable episode in one write transaction (`SELECT ... FOR
UPDATE SKIP LOCKED` on PostgreSQL; SQLite's BEGIN IMMEDIATE serializes writers), so two collectors
never get the same attempt. A lease lasts `lease_s` seconds from its last heartbeat; a collector
beats for all its running episodes at once. An episode whose lease has expired is claimable again
as the next attempt: the claimer closes the silent attempt (agentsd.collect.collector). On this host a holder
known dead (its pid gone) is expired at once; on another host only the lease's expiry counts.

These are pure functions on a connection inside the caller's transaction; `ReplayStore` is their
face. Not guaranteed: expiry across machines compares the claimer's clock with the time the holder
last wrote (keep clocks in sync, and leases far longer than any skew); a holder that is alive but
silent past its lease loses the episode (it finds out at its next heartbeat).
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Select, and_, func, insert, select, update

from agentsd.liveness import writer_alive
from agentsd.store.rows import loads
from agentsd.store.schema import episode_leases, runs, trajectories
from agentsd.types import EpisodeClaim, EpisodeLease, LeaseState, Termination, TrajectoryStatus

_C = episode_leases.c


def trajectory_id(run: str, episode: int, attempt: int) -> str:
    """The trajectory of attempt `attempt` at episode `episode` of run `run`."""
    return f"{run}.{episode:06d}.{attempt}"


def holder_alive(holder: str) -> bool | None:
    """Whether a lease holder's process still runs (None: it runs on another host). A holder is
    `<writer_identity>/<token>`: one process may run several collectors."""
    return writer_alive(holder.split("/", 1)[0])


def run_row(conn: Connection, name: str) -> Row | None:
    """The recorded (kind, plan) row of run `name`; decode it with `run_plan`."""
    return conn.execute(select(runs.c.kind, runs.c.plan).where(runs.c.name == name)).first()


def run_plan(name: str, row: Row) -> tuple[str, dict[str, Any]]:
    return row.kind, loads(row.plan, f"run {name} plan", dict)


def record_run(conn: Connection, name: str, kind: str, plan: dict[str, Any], now: float) -> None:
    """Record run `name`'s plan; the database refuses a name already taken (IntegrityError)."""
    conn.execute(insert(runs).values(name=name, kind=kind, plan=json.dumps(plan), created_at=now))


def open_plan(conn: Connection, run: str, episodes: int, now: float) -> None:
    """Give every episode of `run` below `episodes` a row. Episodes that have trajectories already
    (a run started before leases existed) start where those left off: done when the last attempt
    finished, waiting when it was interrupted, running (and expired) when it never closed."""
    known = set(conn.execute(select(_C.episode).where(_C.run == run)).scalars())
    missing = [e for e in range(episodes) if e not in known]
    if not missing:
        return
    last: dict[int, tuple[int, str, str | None, str]] = {}
    pattern = re.compile(rf"^{re.escape(run)}\.(\d+)\.(\d+)$")
    rows = conn.execute(
        select(
            trajectories.c.id, trajectories.c.status, trajectories.c.termination, trajectories.c.writer
        ).where(trajectories.c.id.like(f"{run}.%"))
    )
    for tid, status, termination, writer in rows:
        match = pattern.match(tid)
        if match is None:
            continue
        episode, attempt = int(match[1]), int(match[2])
        if episode not in last or attempt > last[episode][0]:
            last[episode] = (attempt, status, termination, writer)
    values = []
    for episode in missing:
        row = {
            "run": run,
            "episode": episode,
            "state": LeaseState.WAITING.value,
            "attempt": -1,
            "holder": None,
            "claimed_at": None,
            "expires_at": None,
            "updated_at": now,
        }
        if episode in last:
            attempt, status, termination, writer = last[episode]
            row["attempt"] = attempt
            if status == TrajectoryStatus.RUNNING.value:
                row |= {"state": LeaseState.RUNNING.value, "holder": writer, "expires_at": now}
            elif termination != Termination.INTERRUPTED.value:
                row["state"] = LeaseState.DONE.value
        values.append(row)
    conn.execute(insert(episode_leases), values)


def _candidates(run: str, now: float, *, lock: bool = True) -> list[Select]:
    """Queries for the next episode to claim, in the order they are tried: an expired lease first
    (an episode begun long ago), then the first waiting one. Each walks the (run, state, episode)
    index, so a claim costs the same at episode 10 and episode 100,000 of a plan."""
    columns = (_C.episode, _C.state, _C.attempt, _C.holder)
    expired = select(*columns).where(_C.run == run, _C.state == LeaseState.RUNNING.value, _C.expires_at < now)
    waiting = select(*columns).where(_C.run == run, _C.state == LeaseState.WAITING.value)
    queries = [q.order_by(_C.episode).limit(1) for q in (expired, waiting)]
    return [q.with_for_update(skip_locked=True) for q in queries] if lock else queries


def claimable(conn: Connection, run: str, now: float) -> bool:
    """Whether a claim could take an episode of `run` now: one waits, a lease expired, or a
    holder is known dead on this host. Reads only."""
    return _first(conn, run, now, lock=False) is not None or bool(_dead_holders(conn, run))


def claim(conn: Connection, run: str, holder: str, lease_s: float, now: float) -> EpisodeClaim | None:
    """Take the next claimable episode of `run` for `holder` (an expired lease, a lease whose holder
    is known dead on this host, or the first waiting episode). None when nothing is claimable."""
    row = _first(conn, run, now)
    if row is None and _expire_dead_holders(conn, run, now):
        row = _first(conn, run, now)
    if row is None:
        return None
    taken = conn.execute(
        update(episode_leases)
        .where(_C.run == run, _C.episode == row.episode, _C.state == row.state, _C.attempt == row.attempt)
        .values(
            state=LeaseState.RUNNING.value,
            attempt=row.attempt + 1,
            holder=holder,
            claimed_at=now,
            expires_at=now + lease_s,
            updated_at=now,
        )
    )
    if taken.rowcount != 1:  # cannot happen inside one serialized transaction; never hand it out twice
        return None
    over = row.state == LeaseState.RUNNING.value
    return EpisodeClaim(
        episode=row.episode,
        attempt=row.attempt + 1,
        taken_over=row.attempt if over and row.attempt >= 0 else None,
        previous_holder=row.holder if over else None,
    )


def _first(conn: Connection, run: str, now: float, *, lock: bool = True) -> Row | None:
    for query in _candidates(run, now, lock=lock):
        row = conn.execute(query).first()
        if row is not None:
            return row
    return None


def _dead_holders(conn: Connection, run: str) -> list[str]:
    holders = conn.execute(
        select(_C.holder).distinct().where(_C.run == run, _C.state == LeaseState.RUNNING.value)
    ).scalars()
    return [h for h in holders if h is not None and holder_alive(h) is False]


def _expire_dead_holders(conn: Connection, run: str, now: float) -> bool:
    """Expire the running leases of holders known dead on this host; whether there were any."""
    dead = _dead_holders(conn, run)
    if not dead:
        return False
    conn.execute(
        update(episode_leases)
        .where(_C.run == run, _C.state == LeaseState.RUNNING.value, _C.holder.in_(dead))
        .values(expires_at=now - 1.0, updated_at=now)
    )
    return True


def _running_leases_of(run: str, holder: str) -> ColumnElement[bool]:
    """The rows of `run` that `holder` holds now: heartbeats extend them, settling and releasing end
    them; a lease another collector took over is not among them."""
    return and_(_C.run == run, _C.holder == holder, _C.state == LeaseState.RUNNING.value)


def heartbeat(conn: Connection, run: str, holder: str, lease_s: float, now: float) -> set[int]:
    """Extend every running lease `holder` has on `run`; returns the episodes it still holds (one it
    thought it held and is missing was taken over after its lease expired)."""
    mine = _running_leases_of(run, holder)
    conn.execute(update(episode_leases).where(mine).values(expires_at=now + lease_s, updated_at=now))
    return set(conn.execute(select(_C.episode).where(mine)).scalars())


def settle(
    conn: Connection,
    run: str,
    episode: int,
    holder: str,
    attempt: int,
    now: float,
    *,
    state: LeaseState,
    attempt_after: int | None = None,
) -> bool:
    """Move `holder`'s lease on (`episode`, `attempt`) to DONE or back to WAITING (handed back: the
    next claim reruns it). `attempt_after`: the attempt the row names afterwards (a claimer that
    found the attempt it took over finished after all records that one as done). False when the
    lease is no longer `holder`'s."""
    values: dict[str, object] = {"state": state.value, "expires_at": None, "updated_at": now}
    if state is LeaseState.WAITING:
        values["holder"] = None
    if attempt_after is not None:
        values["attempt"] = attempt_after
    done = conn.execute(
        update(episode_leases)
        .where(_running_leases_of(run, holder), _C.episode == episode, _C.attempt == attempt)
        .values(**values)
    )
    return done.rowcount == 1


def release(conn: Connection, run: str, holder: str, now: float) -> int:
    """Hand back every running lease `holder` has on `run` (a collector leaving); how many. A claim
    whose attempt never began (the collector stopped in between) gives its attempt number back."""
    mine = _running_leases_of(run, holder)
    held = conn.execute(select(_C.episode, _C.attempt).where(mine)).all()
    for episode, attempt in held:
        begun = conn.execute(
            select(trajectories.c.id).where(trajectories.c.id == trajectory_id(run, episode, attempt))
        ).first()
        conn.execute(
            update(episode_leases)
            .where(mine, _C.episode == episode)
            .values(
                state=LeaseState.WAITING.value,
                holder=None,
                expires_at=None,
                updated_at=now,
                attempt=attempt if begun else attempt - 1,
            )
        )
    return len(held)


def counts(conn: Connection, run: str) -> dict[LeaseState, int]:
    """How many episodes of `run` are in each state (all states present, zero or not)."""
    found = dict.fromkeys(LeaseState, 0)
    rows = conn.execute(select(_C.state, func.count()).where(_C.run == run).group_by(_C.state))
    for state, n in rows:
        found[LeaseState(state)] = int(n)
    return found


def plan(conn: Connection, run: str) -> list[EpisodeLease]:
    rows = conn.execute(select(episode_leases).where(_C.run == run).order_by(_C.episode)).mappings()
    return [EpisodeLease.model_validate(dict(r)) for r in rows]
