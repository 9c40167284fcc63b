"""Episode leases in the store (agentsd.store.leases), on SQLite and a real PostgreSQL: claims never
hand out an attempt twice, even to many processes at once; an expired lease (a silent collector on
any machine) or a holder known dead on this host is claimed again as the next attempt; heartbeats
keep a lease and tell its holder when it was lost; a run from before leases starts where its
trajectories left off."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from agentsd.liveness import writer_identity
from agentsd.store import ReplayStore
from agentsd.store import store as store_face
from agentsd.types import LeaseState, Termination

ME = f"{writer_identity()}/a"
OTHER = "elsewhere:1:1/b"  # a collector on another machine: only its lease says whether it lives


def test_claims_go_in_plan_order_and_settle(store_url: str) -> None:
    with ReplayStore(store_url) as store:
        store.open_plan("r", 3)
        store.open_plan("r", 3)  # idempotent: a second collector of the run opens it too
        first = store.claim_episode("r", ME, 60)
        second = store.claim_episode("r", OTHER, 60)
        assert first is not None and (first.episode, first.attempt, first.taken_over) == (0, 0, None)
        assert second is not None and (second.episode, second.attempt) == (1, 0)
        assert store.settle_episode("r", 0, ME, 0, state=LeaseState.DONE)
        assert not store.settle_episode("r", 1, ME, 0, state=LeaseState.DONE)  # not mine
        assert store.settle_episode("r", 1, OTHER, 0, state=LeaseState.WAITING)  # handed back
        again = store.claim_episode("r", ME, 60)
        assert again is not None and (again.episode, again.attempt) == (1, 1)  # the next attempt
        counts = store.plan_counts("r")
        assert counts == {LeaseState.DONE: 1, LeaseState.RUNNING: 1, LeaseState.WAITING: 1}
        begun = store.claim_episode("r", ME, 60)
        assert begun is not None and (begun.episode, begun.attempt) == (2, 0)
        store.begin(task_id="t", policy_model="m", version=0, trajectory_id="r.000002.0")
        assert store.release_episodes("r", ME) == 2  # leaving: what it holds goes back
        states = [(lease.episode, lease.state, lease.attempt) for lease in store.plan_leases("r")]
        # episode 1's attempt 1 never began: its number is given back; episode 2's attempt 0 did
        assert states == [(0, LeaseState.DONE, 0), (1, LeaseState.WAITING, 0), (2, LeaseState.WAITING, 0)]
        assert store.plan_leases("another run") == []


class _Clock:
    """The store's clock, moved by the test: a lease's expiry is then a fact, not a race with the
    machine's load (a 0.3 s lease once ran out between two claims on a busy CI machine)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


def test_an_expired_lease_is_taken_over_and_its_holder_learns_it_at_its_heartbeat(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr(store_face, "time", clock)
    with ReplayStore(store_url) as store:
        store.open_plan("r", 1)
        assert store.claim_episode("r", OTHER, 30) is not None
        clock.now += 20
        assert store.claim_episode("r", ME, 60) is None  # its lease runs
        assert store.heartbeat("r", OTHER, 30) == {0}  # and its heartbeat extends it
        clock.now += 20
        assert store.claim_episode("r", ME, 60) is None  # extended: 20 s after the first expiry
        clock.now += 11  # then it falls silent (stopped, partitioned, machine lost)
        taken = store.claim_episode("r", ME, 60)
        assert taken is not None
        assert (taken.episode, taken.attempt, taken.taken_over, taken.previous_holder) == (0, 1, 0, OTHER)
        assert store.heartbeat("r", OTHER, 30) == set()  # it comes back: the episode is not its own
        assert not store.settle_episode("r", 0, OTHER, 0, state=LeaseState.DONE)
        assert store.settle_episode("r", 0, ME, 1, state=LeaseState.DONE)


def test_a_holder_dead_on_this_host_is_taken_over_before_its_lease_expires(store_url: str) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "from agentsd.liveness import writer_identity; print(writer_identity())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with ReplayStore(store_url) as store:
        store.open_plan("r", 1)
        assert store.claim_episode("r", f"{dead}/x", 3600) is not None
        taken = store.claim_episode("r", ME, 60)
        assert taken is not None and (taken.attempt, taken.taken_over) == (1, 0)


CLAIMER = """
import json, sys
from agentsd.store import ReplayStore
from agentsd.store import store as store_face
from agentsd.types import LeaseState
got = []
with ReplayStore(sys.argv[1]) as store:
    while (claim := store.claim_episode("r", sys.argv[2], 600)) is not None:
        got.append(claim.episode)
        store.settle_episode("r", claim.episode, sys.argv[2], claim.attempt, state=LeaseState.DONE)
print(json.dumps(got))
"""


def test_processes_claiming_at_once_never_get_the_same_episode(store_url: str) -> None:
    with ReplayStore(store_url) as store:
        store.open_plan("r", 60)
    claimers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, store_url, f"host:{i}:0/c{i}"], stdout=subprocess.PIPE
        )
        for i in range(4)
    ]
    claimed: Counter[int] = Counter()
    for process in claimers:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        claimed.update(json.loads(out))
    assert sorted(claimed) == list(range(60)) and set(claimed.values()) == {1}
    with ReplayStore(store_url) as store:
        assert store.plan_counts("r")[LeaseState.DONE] == 60


def test_a_run_from_before_leases_starts_where_its_trajectories_left_off(store_url: str) -> None:
    with ReplayStore(store_url) as store:
        for tid, termination in (("r.000000.0", Termination.DONE), ("r.000001.0", None), ("r.000002.1", "i")):
            store.begin(task_id="t", policy_model="m", version=0, trajectory_id=tid)
            if termination is Termination.DONE:
                store.finalize(tid, termination=Termination.DONE, reward=1.0)
            elif termination == "i":
                store.interrupt(tid)
        store.open_plan("r", 4)
        states = {lease.episode: (lease.state, lease.attempt) for lease in store.plan_leases("r")}
        assert states == {
            0: (LeaseState.DONE, 0),
            1: (LeaseState.RUNNING, 0),  # never closed: claimable once its writer is known dead or silent
            2: (LeaseState.WAITING, 1),  # interrupted: the next attempt is 2
            3: (LeaseState.WAITING, -1),
        }
        first = store.claim_episode("r", ME, 60)
        assert first is not None and (first.episode, first.attempt, first.taken_over) == (1, 1, 0)
        second = store.claim_episode("r", ME, 60)
        assert second is not None and (second.episode, second.attempt, second.taken_over) == (2, 2, None)
