"""The enums every part of agentsd speaks (families, terminations, turn sources, trajectory and
lease states), the Trajectory/Turn layout version, and the strict pydantic base of every type.

Imports nothing from the project. Not guaranteed: that a value stored under an older enum member
still parses (a member is renamed only with a store migration).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1
"""Version of the Trajectory/Turn layout. Bumped with a store migration whenever fields change."""


class Family(StrEnum):
    """The environment family a task belongs to."""

    TERMINAL = "terminal"
    """A shell in a sandbox; graded by a test script."""
    SWE = "swe"
    """A repository at a base commit; graded by FAIL_TO_PASS / PASS_TO_PASS tests."""
    GUI = "gui"
    """A desktop or browser under X; graded by an app or page state checker."""
    RUBRIC = "rubric"
    """A professional task in a world of files; graded by rubric criteria."""


class Termination(StrEnum):
    """Why a trajectory ended. A trajectory without one is unfinished."""

    DONE = "done"
    """The agent submitted; the verifier ran."""
    TIMEOUT = "timeout"
    """The episode's wall-clock limit passed."""
    CONTEXT = "context"
    """The context window was exhausted even after compaction."""
    TURNS = "turns"
    """The turn limit was reached."""
    ENV_ERROR = "env_error"
    """The sandbox, environment or verifier failed; the reward is not trustworthy."""
    AGENT_ERROR = "agent_error"
    """The policy or agent loop failed."""
    INTERRUPTED = "interrupted"
    """The writer died mid-trajectory and a later process closed it."""


class TurnSource(StrEnum):
    """Who produced a turn's completion tokens."""

    AGENT = "agent"
    """Sampled by the policy; its tokens carry behaviour log-probs and may be trained on."""
    USER = "user"
    """Written by a user (a correction, a re-query); never trained on."""
    SYSTEM = "system"
    """Inserted by the harness (a summary after compaction, a forced message); never trained on."""


class TrajectoryStatus(StrEnum):
    """Life cycle of a trajectory in the replay store."""

    RUNNING = "running"
    """Turns are still being appended (or the writer died: see Termination.INTERRUPTED)."""
    FINALIZED = "finalized"
    """Reward and termination are set; the trajectory is visible to training."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class LeaseState(StrEnum):
    """Where one episode of a run's plan stands (the episode_leases table)."""

    WAITING = "waiting"
    """Nobody runs it: never started, or its last attempt was interrupted and handed back."""
    RUNNING = "running"
    """A collector holds it under a lease that its heartbeat extends."""
    DONE = "done"
    """An attempt finished (any termination but interrupted)."""
