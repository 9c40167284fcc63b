"""Several writer processes and a reader on one store; a writer killed with SIGKILL mid-trajectory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from store_writer import turns_for
from test_store import _expected_turn

from agentsd.store import ReplayStore
from agentsd.types import Termination, TrajectoryStatus

HERE = Path(__file__).parent


def _writer(url: str, writer: int, n: int, turns: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    return subprocess.Popen(
        [sys.executable, str(HERE / "store_writer.py"), url, str(writer), str(n), str(turns), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_four_writers_and_a_reader_lose_nothing(store_url: str) -> None:
    n_writers, per_writer, n_turns = 4, 250, 3
    reader = ReplayStore(store_url)  # creates the schema before the writers race to it
    procs = [_writer(store_url, w, per_writer, n_turns) for w in range(n_writers)]
    seen_counts, checked = [], 0
    while any(p.poll() is None for p in procs):
        finalized = reader.find_finalized(limit=None)
        seen_counts.append(len(finalized))
        if finalized:  # every trajectory a reader sees as finalized is whole
            traj = reader.get(finalized[-1].id)
            assert len(traj.turns) == n_turns and traj.status is TrajectoryStatus.FINALIZED
            checked += 1
        time.sleep(0.05)
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err
    assert seen_counts == sorted(seen_counts), "finalized count went backwards"
    assert checked > 0

    rows = reader.list(limit=None)
    assert len(rows) == n_writers * per_writer == len({r.id for r in rows})
    assert all(r.status is TrajectoryStatus.FINALIZED and r.n_turns == n_turns for r in rows)
    keys = set()
    for traj in reader.iter_trajectories([r.id for r in rows]):
        w, k = traj.meta["writer"], traj.meta["k"]
        keys.add((w, k))
        assert [t.model_dump() for t in traj.turns] == [_expected_turn(t) for t in turns_for(w, k, n_turns)]
        assert traj.reward == float(k % 2)
    assert keys == {(w, k) for w in range(n_writers) for k in range(per_writer)}


def test_a_killed_writer_leaves_others_intact_and_its_trajectory_unfinished(store_url: str) -> None:
    store = ReplayStore(store_url)
    victim = _writer(store_url, 7, 5, 3, "hang")
    survivor = _writer(store_url, 8, 20, 3)
    assert victim.stdout is not None
    assert victim.stdout.readline().strip() == "FINISHED"
    hanging = victim.stdout.readline().split()
    assert hanging[0] == "HANGING"
    hung_id = hanging[1]
    assert store.unfinished() == []  # its writer is alive: not unfinished yet
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert survivor.wait() == 0

    finalized = store.find_finalized(limit=None)
    assert len(finalized) == 25
    assert all(len(store.get(r.id).turns) == 3 for r in finalized)
    unfinished = store.unfinished()
    assert [r.id for r in unfinished] == [hung_id]
    assert store.get(hung_id).status is TrajectoryStatus.RUNNING and len(store.get(hung_id).turns) == 2

    cli = [sys.executable, "-m", "agentsd.cli.main", "replay"]
    out = subprocess.run(
        [*cli, "unfinished", "--json", "--store", store_url], capture_output=True, text=True, check=True
    )
    assert [json.loads(line)["id"] for line in out.stdout.splitlines()] == [hung_id]
    subprocess.run(
        [*cli, "interrupt", "--all-unfinished", "--store", store_url], check=True, capture_output=True
    )
    closed = store.get(hung_id)
    assert closed.status is TrajectoryStatus.FINALIZED and closed.termination is Termination.INTERRUPTED
    assert len(closed.turns) == 2 and closed.reward is None
    assert store.unfinished() == []


def test_discard_by_command_removes_the_killed_writers_trajectory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    ReplayStore(url).close()
    victim = _writer(url, 1, 2, 2, "hang")
    assert victim.stdout is not None
    victim.stdout.readline()
    hung_id = victim.stdout.readline().split()[1]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    cli = [sys.executable, "-m", "agentsd.cli.main", "replay", "discard"]
    refused = subprocess.run([*cli, "--store", url], capture_output=True, text=True)
    assert refused.returncode == 2 and "give trajectory ids or --all-unfinished" in refused.stderr
    subprocess.run([*cli, "--all-unfinished", "--store", url], check=True, capture_output=True)
    store = ReplayStore(url, create=False)
    assert store.count() == 2 and hung_id not in {r.id for r in store.list(limit=None)}
