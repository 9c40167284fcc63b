"""Task suites: a suite name or a path -> Tasks, by the format found there. The one place that knows
every importer; it imports them (downward) and none of them imports it.

A name is a shipped suite (a directory under envs/suites/), `miniwob` (the MiniWoB++ suite of the
installed `miniwob` package, envs/miniwob.py) or a generated one (`learn`, `learn-train`,
`learn-heldout`: envs/learnable.py). A path (or a shipped suite's directory) is read by what it
holds: instances.jsonl -> SWE-bench instances (envs/swebench.py), tasks_and_rubrics.json -> an APEX
release (envs/apex.py), tasks.yaml -> a GUI suite (envs/gui_tasks.py), else a Harbor or
Terminal-Bench task directory or a directory of them (envs/harbor.py). A suite loads past a bad task:
`read_suite` returns the problems beside the tasks, `load_suite` logs them.

Not guaranteed: that a path's format is guessed right when it holds the marker files of two formats
(the first in the order above wins).
"""

from __future__ import annotations

import logging
from pathlib import Path

from agentsd.envs.apex import load_apex
from agentsd.envs.common import SUITES_DIR, TaskFormatError
from agentsd.envs.gui_tasks import load_gui_suite
from agentsd.envs.harbor import load_task_dirs
from agentsd.envs.learnable import SUITES as LEARN_SUITES
from agentsd.envs.learnable import is_learn_suite, learn_suite
from agentsd.envs.miniwob import load_miniwob
from agentsd.envs.swebench import load_swebench
from agentsd.types import Task

log = logging.getLogger("agentsd.tasks")


def suite_names() -> list[str]:
    shipped = sorted(p.name for p in SUITES_DIR.iterdir() if p.is_dir()) if SUITES_DIR.is_dir() else []
    return [*shipped, "miniwob", *LEARN_SUITES]


def load_suite(name_or_path: str | Path) -> list[Task]:
    """A shipped suite by name (see suite_names()) or every task under a path. A bad task is logged
    (a warning naming it and what is wrong) and the others load; a suite with no good task is an
    error naming every bad one."""
    tasks, problems = read_suite(name_or_path)
    if problems and not tasks:
        raise TaskFormatError(f"suite {name_or_path!s}: no task loads:\n" + "\n".join(problems))
    for problem in problems:
        log.warning("suite %s: skipped %s", name_or_path, problem)
    return tasks


def read_suite(name_or_path: str | Path) -> tuple[list[Task], list[str]]:
    """(tasks, problems) of a shipped suite by name or of a path: a task directory, a directory of
    them, SWE-bench instances, an APEX release or a GUI suite.

    `miniwob` is the MiniWoB++ suite of the installed `miniwob` package (envs/miniwob.py); `learn`,
    `learn-train` and `learn-heldout` are generated (envs/learnable.py), each also narrowed to task
    kinds as `NAME:KIND,KIND`.
    """
    if str(name_or_path) == "miniwob":
        return load_miniwob(), []
    if is_learn_suite(str(name_or_path)):  # generated from a seed (envs/learnable.py)
        return learn_suite(str(name_or_path)), []
    root = SUITES_DIR / str(name_or_path)
    if not root.is_dir():
        root = Path(name_or_path)
    if not root.is_dir():
        shipped = ", ".join(suite_names()) or "none"
        raise TaskFormatError(f"suite {name_or_path!s}: not a shipped suite ({shipped}) nor a directory")
    if (root / "instances.jsonl").exists():  # SWE-bench instances with their repositories
        return load_swebench(root / "instances.jsonl", root / "repos"), []
    if (root / "tasks_and_rubrics.json").exists():  # an APEX-Agents release (rubric tasks)
        return load_apex(root)
    if (root / "tasks.yaml").exists():  # a GUI suite
        return load_gui_suite(root), []
    return load_task_dirs(root)
