"""What one collector process counted: episodes, turns, tokens, rewards, pacing waits, batch sizes.

Filled by agentsd.collect.collector as episodes finish and read by the jobs that report on a run; counts
are this process's only (other collectors sharing the plan keep their own).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class CollectStats:
    planned: int = 0
    skipped: int = 0
    interrupted: int = 0
    episodes: int = 0
    turns: int = 0  # stored turns of this process's episodes, finished or running
    completion_tokens: int = 0
    rewards: list[float] = field(default_factory=list)
    version_load_failures: int = 0
    terminations: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    stopped: str | None = None  # why the run stopped before its plan was done (Collector.stop)
    backlog: int = 0  # untrained trajectories of this run (finished or running), at the last look
    pacing_waits: int = 0  # episodes that waited for the trainer before starting
    pacing_wait_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)  # requests per generate call, as served

    @property
    def mean_batch(self) -> float:
        return sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else 0.0

    @property
    def mean_reward(self) -> float:
        return sum(self.rewards) / len(self.rewards) if self.rewards else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / max(time.monotonic() - self.started, 1e-9)
