"""Replay store benchmark: write path vs bare sqlite3, append cost vs position, training-batch reads.

Everything is measured side by side in one run on the same machine, so ratios are what to read:
  1. write path: the store writing trajectories (begin, turns, finalize) vs a bare sqlite3
     executemany of the same encoded bytes into the same columns, same pragmas (WAL, NORMAL);
     reported for turns batched per trajectory (append_turns, the like-for-like comparison) and for
     one durable transaction per turn (append_turn, what a collector does);
  2. the cost of appending turn 10 vs turn 1,000 of one long trajectory (must not grow);
  3. reading a training batch (32 trajectories x 4k tokens) into padded torch tensors: tokens/s.

usage: python scripts/bench_store.py [--trajectories 40] [--turns 25] [--quick]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import make_turn

from agentsd.sequences import segments
from agentsd.store import ReplayStore
from agentsd.store.rows import turn_row
from agentsd.types import Termination, Turn


def make_trajectories(n: int, turns: int, seed: int = 0) -> list[list[Turn]]:
    rng = random.Random(seed)
    # An agent turn: ~1k tokens of observation + template appended, ~200 tokens sampled.
    return [[make_turn(i, rng, n_prompt=1000, n_completion=200) for i in range(turns)] for _ in range(n)]


def bench_store_write(root: Path, data: list[list[Turn]], batched: bool) -> float:
    store = ReplayStore(root / f"store-{'batch' if batched else 'turn'}-{time.monotonic_ns()}.db")
    start = time.perf_counter()
    for k, turns in enumerate(data):
        traj_id = store.begin(task_id=f"t{k}", policy_model="m", version=0)
        if batched:
            store.append_turns(traj_id, turns)
        else:
            for turn in turns:
                store.append_turn(traj_id, turn)
        store.finalize(traj_id, termination=Termination.DONE, reward=1.0)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def bench_bare_write(root: Path, data: list[list[Turn]], batched: bool) -> float:
    """The floor: bare sqlite3 running the same SQL on the same schema with the bytes given.

    Per trajectory: insert its row; append the turns (the store's own claim UPDATE and INSERT)
    either in one executemany transaction or one transaction per turn; finalize. Rows are encoded
    before the clock starts, so the ratio is the store's whole overhead: encoding, checks, pooling.
    """
    path = root / f"bare-{batched}-{time.monotonic_ns()}.db"
    store = ReplayStore(path)  # the same tables and indexes, and the store's own compiled SQL
    claim, insert_turn = store._claim_turns, store._insert_turn
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    insert_traj = (
        "INSERT INTO trajectories (id, task_id, task_hash, policy_model, version_start, version_end, status,"
        " reward_components, hindsight, artifacts, meta, n_turns, n_tokens, n_completion_tokens, created_at,"
        " updated_at, writer, schema_version) VALUES (?, ?, '', 'm', 0, 0, 'running', '{}', '[]', '{}', '{}',"
        " 0, 0, 0, ?, ?, 'w', 1)"
    )
    finalize = (
        "UPDATE trajectories SET status = 'finalized', termination = 'done', reward = 1.0, finalized_at = ?"
        " WHERE id = ? AND status = 'running'"
    )
    encoded = []
    for k, turns in enumerate(data):
        rows = [turn_row(f"t{k}", t) for t in turns]
        groups = [rows] if batched else [[row] for row in rows]
        encoded.append(
            [
                (
                    claim._params(
                        {
                            "tid": f"t{k}",
                            "first": g[0]["idx"],
                            "n_new": len(g),
                            "writer": "w",
                            "now": 0.0,
                            "n_tokens": sum(r["n_prompt"] + r["n_completion"] for r in g),
                            "n_completion": sum(r["n_completion"] for r in g),
                            "top_version": 0,
                        }
                    ),
                    [insert_turn._params(r) for r in g],
                )
                for g in groups
            ]
        )
    start = time.perf_counter()
    for k, groups in enumerate(encoded):
        tid, now = f"t{k}", time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert_traj, (tid, tid, now, now))
        conn.execute("COMMIT")
        for claim_params, turn_params in groups:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(claim.sql, claim_params)
            conn.executemany(insert_turn.sql, turn_params)
            conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(finalize, (time.time(), tid))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def bench_append_position(root: Path, n_turns: int) -> dict[int, float]:
    rng = random.Random(1)
    store = ReplayStore(root / "long.db")
    traj_id = store.begin(task_id="long", policy_model="m", version=0)
    probes = {10: [], n_turns: []}
    window = 5  # time a few appends around each probe position and take the median
    for i in range(n_turns + window):
        turn = make_turn(i, rng, n_prompt=150, n_completion=50)
        start = time.perf_counter()
        store.append_turn(traj_id, turn)
        took = time.perf_counter() - start
        for pos in probes:
            if pos <= i < pos + window:
                probes[pos].append(took)
    store.close()
    return {pos: statistics.median(v) for pos, v in probes.items()}


def bench_batch_read(root: Path, n_traj: int = 32, tokens: int = 4096) -> tuple[float, int]:
    import torch

    rng = random.Random(2)
    store = ReplayStore(root / "read.db")
    ids = []
    for k in range(n_traj):
        traj_id = store.begin(task_id=f"t{k}", policy_model="m", version=0)
        store.append_turns(traj_id, [make_turn(i, rng, n_prompt=312, n_completion=200) for i in range(8)])
        store.finalize(traj_id, termination=Termination.DONE, reward=1.0)
        ids.append(traj_id)
    best = float("inf")
    total = 0
    for _ in range(5):
        start = time.perf_counter()
        chosen = [r.id for r in store.find_finalized(limit=n_traj)]
        segs = [s for turns in store.load_tokens(chosen).values() for s in segments(turns)]
        width = max(len(s) for s in segs)
        input_ids = torch.zeros((len(segs), width), dtype=torch.int32)
        logprobs = torch.zeros((len(segs), width), dtype=torch.float32)
        mask = torch.zeros((len(segs), width), dtype=torch.bool)
        for row, seg in enumerate(segs):
            input_ids[row, : len(seg)] = torch.from_numpy(seg.input_ids)
            logprobs[row, : len(seg)] = torch.from_numpy(seg.behaviour_logprobs)
            mask[row, : len(seg)] = torch.from_numpy(seg.loss_mask)
        best = min(best, time.perf_counter() - start)
        total = sum(len(s) for s in segs)
    store.close()
    assert total == n_traj * tokens, total
    return best, total


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--trajectories", type=int, default=40)
    parser.add_argument("--turns", type=int, default=25)
    parser.add_argument("--long-turns", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved repetitions of the write runs.")
    parser.add_argument("--quick", action="store_true", help="Small sizes, for a smoke run.")
    args = parser.parse_args()
    if args.quick:
        args.trajectories, args.turns, args.long_turns, args.repeats = 8, 10, 200, 1

    data = make_trajectories(args.trajectories, args.turns)
    n_tokens = sum(len(t.prompt_ids) + len(t.completion_ids) for ts in data for t in ts)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Interleaved repetitions, median of each: single runs of ~0.1 s are at the mercy of noise.
        runs: dict[str, list[float]] = {"bare_batch": [], "bare_turn": [], "batch": [], "turn": []}
        for _ in range(args.repeats):
            runs["bare_batch"].append(bench_bare_write(root, data, batched=True))
            runs["batch"].append(bench_store_write(root, data, batched=True))
            runs["bare_turn"].append(bench_bare_write(root, data, batched=False))
            runs["turn"].append(bench_store_write(root, data, batched=False))
        bare_batch, bare_turn, batch, per_turn = (
            statistics.median(runs[k]) for k in ("bare_batch", "bare_turn", "batch", "turn")
        )
        positions = bench_append_position(root, args.long_turns)
        read_s, read_tokens = bench_batch_read(root)

    n_turns = args.trajectories * args.turns
    start = time.perf_counter()
    for k, turns in enumerate(data):
        for t in turns:
            turn_row(f"t{k}", t)
    encode_s = time.perf_counter() - start
    print(
        f"write path: {args.trajectories} trajectories x {args.turns} turns ({n_tokens:,} tokens); "
        f"bare sqlite3 does the same SQL with the bytes given; median of {args.repeats}"
    )
    for label, store_s, bare_s in [
        ("turns batched per trajectory", batch, bare_batch),
        ("one transaction per turn", per_turn, bare_turn),
    ]:
        print(
            f"  {label:30s} store {store_s:6.3f} s ({n_turns / store_s:6.0f} turns/s)  bare {bare_s:6.3f} s "
            f"({n_turns / bare_s:6.0f} turns/s)  ratio {store_s / bare_s:.2f}x (target <= 2x)"
        )
    print(
        f"  of the store's time, encoding token lists to bytes + checksum: {encode_s:.3f} s "
        f"({encode_s / n_tokens * 1e9:.0f} ns/token)"
    )
    t10, tn = positions[10], positions[args.long_turns]
    print(
        f"append cost by position (median of 5): turn 10 {t10 * 1e3:.3f} ms, turn {args.long_turns:,} "
        f"{tn * 1e3:.3f} ms, ratio {tn / t10:.2f}"
    )
    print(
        f"training batch read: {read_tokens:,} tokens (32 x 4k) into tensors in {read_s * 1e3:.1f} ms = "
        f"{read_tokens / read_s:,.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
