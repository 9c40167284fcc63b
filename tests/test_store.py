"""Replay store behaviour on SQLite and on a real PostgreSQL, against independent references."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest
from helpers import make_task, make_turn
from sqlalchemy import create_engine, text

from agentsd.errors import (
    CorruptRowError,
    SchemaVersionError,
    StoreError,
    StoreNotFoundError,
    TrajectoryStateError,
)
from agentsd.lineage import lineage_view
from agentsd.sequences import NOT_SAMPLED, context_before, segments
from agentsd.store import ReplayStore
from agentsd.types import HindsightSignal, Termination, TrajectoryStatus, Turn, TurnSource


def _f32(values: list[float]) -> list[float]:
    return np.asarray(values, dtype=np.float32).tolist()


def _expected_turn(turn: Turn) -> dict:
    """What a stored turn must read back as: identical, log-probs at float32 precision."""
    data = turn.model_dump()
    data["logprobs"] = _f32(turn.logprobs)
    return data


def test_round_trip_of_a_200k_token_trajectory_appended_turn_by_turn(store_url: str) -> None:
    rng = random.Random(0)
    store = ReplayStore(store_url)
    task = make_task()
    traj_id = store.begin(task=task, policy_model="m", version=3, meta={"run": "r1"})
    written = []
    for i in range(200):
        turn = make_turn(
            i,
            rng,
            n_prompt=700,
            n_completion=300,
            version=3 + i // 50,
            masked=i % 5 == 0,
            context_reset=i == 120,
            source=TurnSource.USER if i == 7 else TurnSource.AGENT,
        )
        store.append_turn(traj_id, turn)
        written.append(turn)
        if i == 100:  # a reader in the middle sees a running trajectory with exactly the turns so far
            partial = store.get(traj_id)
            assert partial.status is TrajectoryStatus.RUNNING and len(partial.turns) == 101
    hindsight = [
        HindsightSignal(kind="verifier", text="test_count failed: 2 != 3"),
        HindsightSignal(kind="env", text="ls: cannot access", turn_index=4),
    ]
    store.finalize(
        traj_id,
        termination=Termination.DONE,
        reward=0.25,
        reward_components={"tests": 0.25},
        hindsight=hindsight,
        artifacts={"screenshot": "/tmp/x.png"},
        meta={"image": "local"},
    )

    got = store.get(traj_id)
    assert got.n_tokens == 200 * 1000 == sum(t.n_tokens for t in written)
    assert [t.model_dump() for t in got.turns] == [_expected_turn(t) for t in written]
    assert got.status is TrajectoryStatus.FINALIZED and got.termination is Termination.DONE
    assert (got.reward, got.reward_components, got.hindsight) == (0.25, {"tests": 0.25}, hindsight)
    assert got.meta == {"run": "r1", "image": "local"} and got.artifacts == {"screenshot": "/tmp/x.png"}
    assert (got.version_start, got.version_end) == (3, 6)
    assert store.get_task(got.task_hash) == task

    summary = store.summary(traj_id)
    assert (summary.n_turns, summary.n_tokens) == (200, 200_000)
    assert summary.n_completion_tokens == 200 * 300
    store.close()


def test_token_arrays_assemble_the_exact_context_the_policy_saw(store_url: str) -> None:
    rng = random.Random(1)
    store = ReplayStore(store_url)
    traj_id = store.begin(task_id="t", policy_model="m", version=0)
    turns = [
        make_turn(
            i,
            rng,
            n_prompt=5 + i,
            n_completion=3 + i,
            version=i,
            masked=i == 2,
            context_reset=i == 3,
            source=TurnSource.SYSTEM if i == 1 else TurnSource.AGENT,
        )
        for i in range(5)
    ]
    store.append_turns(traj_id, turns[:2])
    store.append_turns(traj_id, turns[2:])
    arrays = store.load_tokens([traj_id])[traj_id]

    segs = segments(arrays)
    assert len(segs) == 2  # split at the compaction
    # Reference: plain Python concatenation of the Turn lists.
    for seg, group in zip(segs, (turns[:3], turns[3:]), strict=True):
        ids, lp, mask, ver = [], [], [], []
        for t in group:
            ids += t.prompt_ids + t.completion_ids
            lp += [0.0] * len(t.prompt_ids) + _f32(t.logprobs)
            mask += [False] * len(t.prompt_ids) + t.trainable_mask()
            ver += [NOT_SAMPLED] * len(t.prompt_ids) + [t.policy_version] * len(t.completion_ids)
        assert seg.input_ids.tolist() == ids
        assert seg.behaviour_logprobs.tolist() == lp
        assert seg.loss_mask.tolist() == mask
        assert seg.versions.tolist() == ver
    assert not segs[0].loss_mask[segs[0].turn_index == 1].any()  # system turn never trainable
    # The context before turn 4 starts at the reset turn 3.
    assert (
        context_before(arrays, 4).tolist()
        == turns[3].prompt_ids + turns[3].completion_ids + turns[4].prompt_ids
    )
    assert (
        context_before(arrays, 2).tolist()
        == [tok for t in turns[:2] for tok in t.prompt_ids + t.completion_ids] + turns[2].prompt_ids
    )


def test_append_refuses_duplicates_gaps_and_finalized_trajectories(store_url: str) -> None:
    rng = random.Random(2)
    store = ReplayStore(store_url)
    traj_id = store.begin(task_id="t", policy_model="m", version=0)
    store.append_turn(traj_id, make_turn(0, rng))
    with pytest.raises(TrajectoryStateError, match="turn index 0 given, the next index is 1"):
        store.append_turn(traj_id, make_turn(0, rng))
    with pytest.raises(TrajectoryStateError, match="turn index 2 given"):
        store.append_turn(traj_id, make_turn(2, rng))
    with pytest.raises(TrajectoryStateError, match="does not exist"):
        store.append_turn("nope", make_turn(0, rng))
    store.finalize(traj_id, termination=Termination.TURNS, reward=0.0)
    with pytest.raises(TrajectoryStateError, match="is finalized"):
        store.append_turn(traj_id, make_turn(1, rng))
    with pytest.raises(TrajectoryStateError, match="is finalized"):
        store.finalize(traj_id, termination=Termination.DONE, reward=1.0)
    with pytest.raises(TrajectoryStateError, match="already exists"):
        store.begin(task_id="t", policy_model="m", version=0, trajectory_id=traj_id)
    assert len(store.get(traj_id).turns) == 1 and store.get(traj_id).reward == 0.0


def test_training_queries_filter_by_staleness_task_reward_and_consumption(store_url: str) -> None:
    rng = random.Random(3)
    store = ReplayStore(store_url)
    ids = {}
    for name, version, reward, task in [
        ("old", 1, 1.0, "a"),
        ("mid", 4, 0.0, "a"),
        ("new", 6, 0.5, "b"),
        ("running", 6, None, "b"),
    ]:
        ids[name] = store.begin(task_id=task, policy_model="m", version=version)
        store.append_turn(ids[name], make_turn(0, rng, version=version))
        if reward is not None:
            store.finalize(ids[name], termination=Termination.DONE, reward=reward)

    def names(rows: list) -> set[str]:
        inv = {v: k for k, v in ids.items()}
        return {inv[r.id] for r in rows}

    assert names(store.find_finalized()) == {"old", "mid", "new"}
    assert names(store.find_finalized(current_version=6, max_staleness=2)) == {"mid", "new"}
    assert names(store.find_finalized(task_ids=["a"])) == {"old", "mid"}
    assert names(store.find_finalized(min_reward=0.5)) == {"old", "new"}
    assert names(store.find_finalized(max_reward=0.5, min_version=2)) == {"mid", "new"}
    store.mark_consumed("trainer-1", [ids["old"], ids["new"]], version=6)
    store.mark_consumed("trainer-1", [ids["old"]], version=7)  # idempotent
    assert names(store.find_finalized(not_consumed_by="trainer-1")) == {"mid"}
    assert names(store.find_finalized(not_consumed_by="trainer-2")) == {"old", "mid", "new"}
    assert [r.id for r in store.find_finalized(limit=1)] == [ids["old"]]  # oldest finalized first
    with pytest.raises(ValueError, match="needs current_version"):
        store.find_finalized(max_staleness=2)


class Freshness(TypedDict):
    """The staleness filters of find_finalized and count_finalized, to pass with **."""

    current_version: int
    max_staleness: int


def test_training_queries_filter_by_termination_and_count_what_they_leave_out(store_url: str) -> None:
    rng = random.Random(4)
    store = ReplayStore(store_url)
    ids = {}
    for name, version, termination in [
        ("solved", 6, Termination.DONE),
        ("crashed", 6, Termination.ENV_ERROR),
        ("cut", 6, Termination.TURNS),
        ("stale", 1, Termination.DONE),
    ]:
        ids[name] = store.begin(task_id="t", policy_model="m", version=version)
        store.append_turn(ids[name], make_turn(0, rng, version=version))
        store.finalize(ids[name], termination=termination, reward=1.0)
    broken = store.begin(task_id="t", policy_model="m", version=6)  # a writer that died mid-run
    store.append_turn(broken, make_turn(0, rng, version=6))
    store.interrupt(broken)
    inv = {v: k for k, v in ids.items()}
    trusted = [Termination.DONE, Termination.TURNS]
    fresh: Freshness = {"current_version": 6, "max_staleness": 2}
    chosen = store.find_finalized(**fresh, terminations=trusted)
    assert {inv[r.id] for r in chosen} == {"solved", "cut"}
    assert store.count_finalized(**fresh, terminations=trusted) == 2
    assert store.count_finalized(**fresh) == 4  # solved, crashed, cut and the interrupted run
    assert store.count_finalized(stale_before=6 - 2) == 1  # the one older than K_max
    assert [inv[r.id] for r in store.find_finalized(terminations=[Termination.ENV_ERROR])] == ["crashed"]


def test_policy_versions_are_registered_once(store_url: str) -> None:
    store = ReplayStore(store_url)
    assert store.latest_version() is None
    line = {"lineage": "a", "weights_hash": None}
    store.register_version(0, model="m", checkpoint_uri="file:///ckpt/v0", parent=None, **line)
    store.register_version(
        1, model="m", checkpoint_uri="file:///ckpt/v1", meta={"step": 10}, parent=0, **line
    )
    with pytest.raises(TrajectoryStateError, match="already registered"):  # by any lineage
        store.register_version(
            1, model="m", checkpoint_uri="file:///other", lineage="b", parent=None, weights_hash=None
        )
    latest = store.latest_version()
    assert latest is not None and (latest.version, latest.checkpoint_uri, latest.meta, latest.parent) == (
        1,
        "file:///ckpt/v1",
        {"step": 10},
        0,
    )
    assert [v.version for v in store.versions()] == [0, 1]
    store.register_version(2, model="m", checkpoint_uri="/v2", lineage="b", parent=None, weights_hash="ab")
    assert store.latest_version("a").version == 1 and store.latest_version("b").version == 2  # pyright: ignore[reportOptionalMemberAccess]
    assert store.latest_version("c") is None and store.get_version(2).weights_hash == "ab"  # pyright: ignore[reportOptionalMemberAccess]


def test_ancestry_selects_what_a_lineage_sampled(store_url: str) -> None:
    """A lineage trains on what the base model and its own ancestors sampled, never on a sibling's."""
    store = ReplayStore(store_url)
    for version, lineage, parent in [(1, "a", None), (2, "a", 1), (3, "a", 2), (4, "b", 2), (5, "c", None)]:
        store.register_version(
            version,
            model="m",
            checkpoint_uri=f"/v{version}",
            lineage=lineage,
            parent=parent,
            weights_hash=None,
        )
    assert store.ancestry("b", 2) == [("b", None), ("a", 2)]
    assert store.ancestry("c", None) == [("c", None)]
    assert store.ancestry("fresh", 4) == [("fresh", None), ("b", 4), ("a", 2)]
    ids = {}
    for version in range(6):
        tid = store.begin(task_id="t", policy_model="m", version=version)
        store.finalize(tid, termination=Termination.DONE, reward=0.0)
        ids[tid] = version
    chosen = lambda lineage, origin: sorted(  # noqa: E731
        ids[s.id] for s in store.find_finalized(sampled_by=store.ancestry(lineage, origin))
    )
    assert chosen("b", 2) == [0, 1, 2, 4]
    assert chosen("a", None) == [0, 1, 2, 3]
    assert chosen("c", None) == [0, 5]
    assert store.count_finalized(sampled_by=store.ancestry("b", 2)) == 4
    # staleness in steps along the line: b's version 4 is depth 3 (1, 2, then 4)
    line = lineage_view(store.versions(), store.ancestry("b", 2))
    assert line.chain == [1, 2, 4] and line.depths == {0: 0, 1: 1, 2: 2, 4: 3}
    assert [line.oldest_fresh(3, k) for k in (0, 1, 2, 3, 9)] == [4, 2, 1, 0, 0]
    fork = lineage_view(store.versions(), store.ancestry("fresh", None))  # a fork of the base model
    assert fork.chain == [] and fork.oldest_fresh(0, 0) == 0
    # a trajectory that started on a sibling's version is not this line's, whatever it ended on
    mixed = store.begin(task_id="t", policy_model="m", version=3)
    store.append_turn(mixed, make_turn(0, random.Random(0), version=4))
    store.finalize(mixed, termination=Termination.DONE, reward=0.0)
    assert mixed not in {s.id for s in store.find_finalized(sampled_by=store.ancestry("b", 2))}


def test_resume_continues_an_unfinished_trajectory_and_discard_removes_one(store_url: str) -> None:
    rng = random.Random(4)
    store = ReplayStore(store_url)
    keep = store.begin(task_id="t", policy_model="m", version=0)
    drop = store.begin(task_id="t", policy_model="m", version=0)
    for traj_id in (keep, drop):
        store.append_turns(traj_id, [make_turn(i, rng) for i in range(3)])
    store.close()

    again = ReplayStore(store_url, create=False)
    resumed = again.resume(keep)
    assert len(resumed.turns) == 3
    again.append_turn(keep, make_turn(3, rng))
    again.finalize(keep, termination=Termination.DONE, reward=1.0)
    again.discard(drop)
    assert again.count() == 1 and len(again.get(keep).turns) == 4
    with pytest.raises(TrajectoryStateError, match="refusing to discard"):
        again.discard(keep)
    with pytest.raises(TrajectoryStateError, match="does not exist"):
        again.get(drop)


def test_corrupt_rows_are_reported_by_trajectory_turn_and_field(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    rng = random.Random(5)
    store = ReplayStore(url)
    traj_id = store.begin(task_id="t", policy_model="m", version=0)
    store.append_turns(traj_id, [make_turn(i, rng) for i in range(3)])
    engine = create_engine(url)

    def tamper(sql: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(sql), {"id": traj_id})

    tamper(
        "UPDATE turns SET completion_ids = substr(completion_ids, 1, 10)"
        " WHERE trajectory_id = :id AND idx = 1"
    )
    with pytest.raises(CorruptRowError, match=rf"trajectory {traj_id} turn 1: checksum mismatch"):
        store.get(traj_id)
    with pytest.raises(CorruptRowError, match=rf"trajectory {traj_id} turn 1"):
        store.load_tokens([traj_id])
    tamper("DELETE FROM turns WHERE trajectory_id = :id AND idx = 1")
    with pytest.raises(CorruptRowError, match=r"do not match the 3 turns its row records"):
        store.get(traj_id)
    tamper("UPDATE trajectories SET hindsight = '[{' WHERE id = :id")
    with pytest.raises(CorruptRowError, match=rf"trajectory {traj_id} hindsight: not valid JSON"):
        store.get(traj_id, with_turns=False)
    # Reading a corrupt row changes nothing: the intact turns are still there.
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM turns")).scalar() == 2


def test_a_store_from_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = ReplayStore(path)
    store.begin(task_id="t", policy_model="m", version=0)
    store.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE store_meta SET value = '99' WHERE key = 'schema_version'"))
    engine.dispose()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SchemaVersionError, match=r"schema version 99; this agentsd reads up to 3"):
        ReplayStore(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def downgrade_to_schema_1(store_url: str) -> None:
    """Back to schema 1, as an agentsd of that schema left the store."""
    engine = create_engine(store_url)
    with engine.begin() as conn:
        added = {"turns": ["temperature", "top_p"], "policy_versions": ["lineage", "parent", "weights_hash"]}
        for table, column in [(table, column) for table, columns in added.items() for column in columns]:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(text("DROP TABLE runs"))
        conn.execute(text("DROP TABLE IF EXISTS episode_leases"))
        conn.execute(text("UPDATE store_meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()


def test_a_schema_1_store_is_migrated_keeping_everything(store_url: str) -> None:
    """Schema 1 (no per-turn sampling, lineage or run plans): opening it adds them, keeps every row,
    and guesses nothing it cannot know (a turn's top_p, a version's weights hash)."""
    store = ReplayStore(store_url)
    tid = store.begin(task_id="t", policy_model="m", version=0, meta={"temperature": 0.7})
    store.append_turn(tid, make_turn(0, random.Random(1)))
    store.close()
    downgrade_to_schema_1(store_url)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO policy_versions VALUES (1, 'm', '/v1', 0, :meta)"),
            {"meta": '{"trainer": "train"}'},
        )
    engine.dispose()
    store = ReplayStore(store_url)
    turn = store.get(tid).turns[0]
    assert (turn.temperature, turn.top_p) == (None, None) and len(turn.completion_ids) > 0
    version = store.latest_version()
    assert version is not None and (version.lineage, version.parent, version.weights_hash) == (
        "train",
        None,
        None,
    )
    assert store.record_run("r", "collect", {"suite": "s"}) and store.run_plan("r") == (
        "collect",
        {"suite": "s"},
    )
    store.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM store_meta WHERE key = 'schema_version'")).scalar() == "3"
    engine.dispose()


def test_processes_opening_a_schema_1_store_at_once_migrate_it_once(store_url: str) -> None:
    """`agentsd run` opens the store from the collector and the trainer at the same moment."""
    import subprocess
    import sys

    store = ReplayStore(store_url)
    store.close()
    downgrade_to_schema_1(store_url)
    opener = "import sys; from agentsd.store import ReplayStore; ReplayStore(sys.argv[1]).close()"
    openers = [
        subprocess.Popen([sys.executable, "-c", opener, store_url], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    for process in openers:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
    assert ReplayStore(store_url).record_run("r", "collect", {})


def test_missing_and_garbage_stores_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="no replay store at"):
        ReplayStore(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a SQLite database"):
        ReplayStore(garbage)
    assert garbage.read_bytes() == b"this is not sqlite" * 100
    with pytest.raises(StoreError, match="expected a sqlite:/// or postgresql:// URL"):
        ReplayStore("mysql://x/y")


def test_a_collect_runs_backlog_and_the_trainers_recent_step_sizes(store_url: str) -> None:
    # what pacing reads: this run's finished, untrained trajectories; how many a step really takes
    rng = random.Random(5)
    store = ReplayStore(store_url)
    ids = []
    for n, termination in enumerate(
        [Termination.DONE, Termination.DONE, Termination.DONE, Termination.ENV_ERROR]
    ):
        tid = store.begin(task_id="t", policy_model="m", version=0, trajectory_id=f"run.{n:06d}.0")
        store.append_turn(tid, make_turn(0, rng, version=0))
        store.finalize(tid, termination=termination, reward=1.0)
        ids.append(tid)
    other = store.begin(task_id="t", policy_model="m", version=0, trajectory_id="runner.000000.0")
    store.append_turn(other, make_turn(0, rng, version=0))
    store.finalize(other, termination=Termination.DONE, reward=1.0)
    assert store.count_untrained(id_prefix="run.", terminations=[Termination.DONE]) == 3
    store.mark_consumed("trainer", ids[:2], 1)
    store.mark_consumed("trainer", ids[2:3], 2)
    assert store.count_untrained(id_prefix="run.", terminations=[Termination.DONE]) == 0
    assert store.recent_step_sizes(5) == [1, 2]
    store.close()
