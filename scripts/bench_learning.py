"""Learning side by side with TRL: held-out gain per CPU-hour, agentsd against TRL's trainers.

Runs configs/experiments/peers.yaml through the experiment runner (agentsd.experiments): the base
model, agentsd's SDPO with one trajectory per task (K = 0, and K = 4 through collect.version_lag),
and TRL's SDPOTrainer, GRPOTrainer (groups of 8) and SFTTrainer (on the tasks' reference replies)
as peer arms (agentsd.experiments.peers), every arm x seed on the same model, the single-turn form
of the learnable suite, the same held-out tasks, evaluated by the same eval path, within the same
budget of completions. Each arm's training CPU seconds are measured in its own process in this
one run on this one machine. The report (docs/results/peers.md, peers.json) holds the held-out
results with intervals, and its Budget section the arm x seed table: reward and reference-reply
log-prob before and after, completions, CPU seconds, gain per CPU-hour.

Needs TRL: `bash scripts/setup_bench.sh` (the bench extra). Finished arm x seed records go to
docs/results/peers/ as they finish (commit them); a rerun skips them.

usage: python scripts/bench_learning.py [key=value ...]   (experiment overrides, e.g. 'seeds=[0]')
       python scripts/bench_learning.py --report-only
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from agentsd.experiments.staleness import main as run_experiment

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "peers.yaml"


def main(argv: list[str]) -> int:
    if "--report-only" not in argv and importlib.util.find_spec("trl") is None:
        print(
            "error: TRL is not installed: run `bash scripts/setup_bench.sh` (the bench extra)",
            file=sys.stderr,
        )
        return 2
    config = CONFIG.relative_to(Path.cwd()) if CONFIG.is_relative_to(Path.cwd()) else CONFIG
    return run_experiment(["-c", str(config), *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
