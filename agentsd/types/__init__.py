"""Core data types of agentsd: Task, Turn, Trajectory and their enums, in one place.

Every type is importable from here (`from agentsd.types import Task`); each lives in the module of
its subject: core.py (enums, the layout version, the strict pydantic base), tasks.py (tasks and
their sandboxes), trajectories.py (turns, trajectories, completions, policy versions), leases.py (a
run's plan). The package imports nothing from the rest of the project and nothing heavy: every other
module may import it.

What it does not guarantee: a Trajectory built in memory is not durable. Durability is the replay
store's job (agentsd.store), which appends each Turn as it happens.
"""

from agentsd.types.core import (
    SCHEMA_VERSION,
    Family,
    LeaseState,
    StrictModel,
    Termination,
    TrajectoryStatus,
    TurnSource,
)
from agentsd.types.leases import EpisodeClaim, EpisodeLease
from agentsd.types.tasks import (
    GRADING_DIRS,
    RESERVED_LABELS,
    SYSTEM_DIRS,
    BuildStep,
    Criterion,
    Environment,
    EnvironmentBuild,
    ExecResult,
    GuiApp,
    Limits,
    SandboxSpec,
    Task,
    Verifier,
    World,
)
from agentsd.types.trajectories import (
    PROMPT_CONTEXT_META,
    Completion,
    HindsightSignal,
    PolicyVersion,
    ToolResult,
    Trajectory,
    TrajectorySummary,
    Turn,
)

__all__ = [
    "GRADING_DIRS",
    "PROMPT_CONTEXT_META",
    "RESERVED_LABELS",
    "SCHEMA_VERSION",
    "SYSTEM_DIRS",
    "BuildStep",
    "Completion",
    "Criterion",
    "Environment",
    "EnvironmentBuild",
    "EpisodeClaim",
    "EpisodeLease",
    "ExecResult",
    "Family",
    "GuiApp",
    "HindsightSignal",
    "LeaseState",
    "Limits",
    "PolicyVersion",
    "SandboxSpec",
    "StrictModel",
    "Task",
    "Termination",
    "ToolResult",
    "Trajectory",
    "TrajectoryStatus",
    "TrajectorySummary",
    "Turn",
    "TurnSource",
    "Verifier",
    "World",
]
