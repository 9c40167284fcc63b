"""Episode-lease benchmark: what sharing a plan costs per episode, and how many collectors a store takes.

Measured side by side in one run on the same machine, so ratios are what to read:
  1. store work per episode, single-collector path (begin, one append per turn, finalize) vs the
     same with the plan's leases (is anything claimable, claim, heartbeats, settle); SQLite and,
     when a PostgreSQL server can be started here, PostgreSQL;
  2. claim throughput with 1, 2, 4, ... collector processes claiming and settling episodes of one
     plan as fast as they can (no episode work between): where the total stops growing, claims are
     the bottleneck. Real collectors spend seconds to hours per episode between two claims, so the
     number of collectors a store takes is about that throughput times the episode duration.

usage: python scripts/bench_leases.py [--episodes 200] [--turns 10] [--collectors 1,2,4,8,16] [--no-postgres]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import make_turn
from pg_server import PostgresUnavailable, create_database, local_postgres

from agentsd.store import ReplayStore
from agentsd.types import LeaseState, Termination

HOLDER = "bench:1:1/bench"
BEATS_PER_EPISODE = 2  # an episode of a few minutes under the default lease (a beat every 30 s)
PLAN = 50_000  # episodes in the plan the claimers race on (more than they can claim)


def per_episode(url: str, episodes: int, turns: int, leases: bool) -> float:
    """Seconds of store work per episode."""
    rng = random.Random(0)
    data = [make_turn(i, rng, n_prompt=1000, n_completion=200) for i in range(turns)]
    run = f"bench-{'leases' if leases else 'plain'}-{time.monotonic_ns()}"
    with ReplayStore(url) as store:
        if leases:
            store.open_plan(run, episodes)
        start = time.perf_counter()
        for episode in range(episodes):
            attempt = 0
            if leases:
                store.has_claimable(run)
                claim = store.claim_episode(run, HOLDER, 120.0)
                assert claim is not None
                episode, attempt = claim.episode, claim.attempt
            tid = store.begin(
                task_id="t", policy_model="m", version=0, trajectory_id=f"{run}.{episode:06d}.{attempt}"
            )
            for k, turn in enumerate(data):
                store.append_turn(tid, turn)
                if leases and k < BEATS_PER_EPISODE:
                    store.heartbeat(run, HOLDER, 120.0)
            store.finalize(tid, termination=Termination.DONE, reward=1.0)
            if leases:
                store.settle_episode(run, episode, HOLDER, attempt, state=LeaseState.DONE)
        return (time.perf_counter() - start) / episodes


def _claimer(url: str, run: str, holder: str, ready: Any, seconds: float, out: Any) -> None:
    with ReplayStore(url) as store:
        store.plan_counts(run)  # connected and warm before the clock starts
        ready.wait()
        done, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            claim = store.claim_episode(run, holder, 120.0)
            if claim is None:
                break
            store.settle_episode(run, claim.episode, holder, claim.attempt, state=LeaseState.DONE)
            done += 1
        out.put(done)


def claims_per_s(url: str, collectors: int, seconds: float) -> float:
    run = f"scale-{collectors}-{time.monotonic_ns()}"
    with ReplayStore(url) as store:
        store.open_plan(run, PLAN)
    ready, out = multiprocessing.Barrier(collectors), multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_claimer, args=(url, run, f"bench:{i}:0/c", ready, seconds, out))
        for i in range(collectors)
    ]
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def report(name: str, url: str, args: argparse.Namespace) -> None:
    plain = [per_episode(url, args.episodes, args.turns, leases=False) for _ in range(args.repeats)]
    leased = [per_episode(url, args.episodes, args.turns, leases=True) for _ in range(args.repeats)]
    p, q = statistics.median(plain), statistics.median(leased)
    runs = f"median of {args.repeats} runs of {args.episodes}"
    print(f"\n[{name}] store work per episode ({args.turns} turns, {runs}):")
    print(f"  single collector (begin, appends, finalize)       {p * 1e3:8.2f} ms")
    print(f"  with leases (+ claimable, claim, {BEATS_PER_EPISODE} beats, settle) {q * 1e3:8.2f} ms")
    print(f"  ratio leased / single   {q / p:8.2f}x  (+{(q - p) * 1e3:.2f} ms per episode)")
    print(f"[{name}] claims + settles per second, processes racing on one plan ({args.seconds:.0f} s each):")
    base = None
    for n in args.collectors:
        rate = claims_per_s(url, n, args.seconds)
        base = base or rate
        print(f"  {n:3d} collectors  {rate:9.1f} /s  ({rate / base:.2f}x one collector)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--collectors", default="1,2,4,8,16")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    args.collectors = [int(n) for n in args.collectors.split(",")]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        report("sqlite", f"sqlite:///{tmp}/bench.db", args)
        if args.no_postgres:
            return
        try:
            server = stack.enter_context(local_postgres())
        except PostgresUnavailable as exc:
            print(f"\n[postgresql] skipped: {exc}")
            return
        report("postgresql", create_database(server), args)


if __name__ == "__main__":
    main()
