"""The bottom of agentsd.envs: the task-format error and the facts every family shares.

TaskFormatError is what every importer (Harbor, Terminal-Bench, SWE-bench, APEX, GUI suites,
MiniWoB++) raises for a missing or malformed task file; SUITES_DIR is where the shipped suites live;
FALLBACK_IMAGE is each family's local image, used when a task names none that the engine has.

This module imports nothing from agentsd.envs, so any module of it may import this one.
Not guaranteed: that the fallback images exist on an engine (their Dockerfiles: sandboxes/images/).
"""

from __future__ import annotations

from pathlib import Path

from agentsd.errors import AgentsdError
from agentsd.types import Family

SUITES_DIR = Path(__file__).parent / "suites"
FALLBACK_IMAGE = {
    Family.TERMINAL: "agentsd/terminal:latest",
    Family.SWE: "agentsd/swe:latest",
    Family.GUI: "agentsd/gui:latest",
    Family.RUBRIC: "agentsd/terminal:latest",  # documents are parsed on the host: a shell is enough
}


class TaskFormatError(AgentsdError):
    """A task directory is missing a file or has a malformed one."""
