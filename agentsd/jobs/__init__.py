"""The long-running jobs behind the CLI's commands, as library calls (the experiments call them too).

- collect: `run_collect` (a collect or eval run to the end of its plan, with a live display),
  `run_eval` (an eval run named or resumed, collected and graded), `collect_and_train` (a collector
  beside a supervised trainer process: `agentsd run`).
- trainer_process: the trainer as a supervised child process.
- gap: the self-teacher's gap before training (`agentsd gap`).
"""

from agentsd.jobs.collect import CollectResult, EvalResult, collect_and_train, run_collect, run_eval
from agentsd.jobs.gap import GapResult, run_gap
from agentsd.jobs.trainer_process import TrainerProcess

__all__ = [
    "CollectResult",
    "EvalResult",
    "GapResult",
    "TrainerProcess",
    "collect_and_train",
    "run_collect",
    "run_eval",
    "run_gap",
]
