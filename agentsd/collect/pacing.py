"""Pacing: how stale an episode started now would be by the time a trainer trains on it.

A collector with `pacing.enabled` holds each new episode until `expected_staleness` is within
`pacing.max_staleness` and the backlog under `pacing.max_backlog` (agentsd.collect.collector). The estimate
reads only the store: the run's episodes running on any collector, its finished trajectories no
trainer has consumed, the newest version of the followed lineage, and the sizes of the trainer's
recent steps.

Not guaranteed: the estimate assumes the trainer trains the backlog oldest first at the pace of its
recent steps; a trainer that stops or speeds up makes it wrong until its next steps show it.
"""

from __future__ import annotations

import math

from agentsd.config import PacingConfig
from agentsd.store import ReplayStore
from agentsd.types import LeaseState

RECENT_STEPS = 5  # the trainer's last steps that say how many trajectories a step takes


def expected_staleness(
    store: ReplayStore, run_name: str, pacing: PacingConfig, lineage: str | None, current: int
) -> tuple[int, int]:
    """(backlog, the staleness an episode started now on version `current` would have when trained):
    the trainer is at the newest version and trains the backlog ahead of it first, step by step, each
    step as large as its recent ones were (a trainer that steps on whatever has arrived drains a
    backlog in smaller bites than its batch size), never more than its batch."""
    running = store.plan_counts(run_name)[LeaseState.RUNNING]  # every collector's
    backlog = running + store.count_untrained(id_prefix=f"{run_name}.", terminations=pacing.train_on)
    newest = store.latest_version(lineage)
    behind = (newest.version if newest else 0) - current
    recent = store.recent_step_sizes(RECENT_STEPS)
    per_step = (
        min(pacing.batch_trajectories, sum(recent) / len(recent)) if recent else pacing.batch_trajectories
    )
    return backlog, behind + math.ceil((backlog + 1) / max(per_step, 1.0)) - 1
