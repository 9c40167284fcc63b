"""Pacing benchmark: the same `agentsd run` plan with staleness-aware pacing on and off, side by side.

Each arm is a real `agentsd run` (default model, local sandbox, SQLite, LoRA trainer on DeepSpeed
CPU) in its own directory and store; the plan, the trainer and K_max are the same. Afterwards the
store says what happened: trajectories collected (finalized, trainable endings), trained (consumed by
the trainer), dropped (collected and never trained: too stale by the time the trainer reached them),
the mean and max staleness they were trained at (the trainer's version at the step minus the
version that started them), and the wall time of the run.

usage: python scripts/bench_pacing.py [--tasks 12] [--repeats 2] [--k-max 2] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINED = ("done", "timeout", "turns", "context")


def run_arm(work: Path, paced: bool, args: argparse.Namespace) -> dict[str, float]:
    db = work / "replay.db"
    cmd = [
        sys.executable,
        "-m",
        "agentsd.cli.main",
        "run",
        "-c",
        str(REPO / "configs/run/local.yaml"),
        f"collect.store.url=sqlite:///{db}",
        f"train.store.url=sqlite:///{db}",
        f"collect.run_dir={work}/collect",
        f"train.run_dir={work}/train",
        f"collect.max_tasks={args.tasks}",
        f"collect.repeats={args.repeats}",
        "collect.max_turns=2",
        "collect.sampling.max_new_tokens=48",
        "collect.concurrency=2",
        f"collect.pacing.enabled={str(paced).lower()}",
        "collect.tracking.enabled=false",
        "train.tracking.enabled=false",
        f"train.batch_trajectories={args.batch}",
        f"train.sdpo.max_staleness={args.k_max}",
        "train.lora.rank=8",
        "train.chunk_tokens=64",
    ]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"agentsd run (pacing {paced}) failed:\n{done.stderr[-3000:]}")
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(TRAINED))
        collected = conn.execute(
            f"SELECT count(*) FROM trajectories WHERE status='finalized' AND termination IN ({marks})",
            TRAINED,
        ).fetchone()[0]
        ages = [
            row[0]
            for row in conn.execute(
                "SELECT c.version - 1 - t.version_start FROM consumed c "
                "JOIN trajectories t ON t.id = c.trajectory_id"
            )
        ]
    return {
        "collected": collected,
        "trained": len(ages),
        "dropped": collected - len(ages),
        "staleness_mean": sum(ages) / len(ages) if ages else 0.0,
        "staleness_max": max(ages, default=0),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--k-max", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="agentsd-bench-pacing-") as tmp:
        for paced in (True, False):
            work = Path(tmp) / ("on" if paced else "off")
            work.mkdir()
            rows["on" if paced else "off"] = run_arm(work, paced, args)
    print(f"plan: {args.tasks} tasks x {args.repeats}, K_max {args.k_max}, batch {args.batch}")
    header = ("collected", "trained", "dropped", "stale mean", "stale max", "wall s")
    print(f"{'pacing':8}" + "".join(f"{h:>12}" for h in header))
    for name, r in rows.items():
        print(
            f"{name:8}{r['collected']:>12}{r['trained']:>12}{r['dropped']:>12}{r['staleness_mean']:>12.2f}"
            f"{r['staleness_max']:>12}{r['wall_s']:>12.0f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
