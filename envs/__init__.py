"""Environment families as Gymnasium envs; installed as `agentsd.envs`.

Registered ids (gymnasium.make):
    agentsd/Terminal-v0   a shell in a sandbox (envs/terminal.py)
    agentsd/SWE-v0        a repository at a base commit, with file tools (envs/swe.py)
    agentsd/GUI-v0        a desktop app or a web page on an X display (envs/gui.py)
    agentsd/Rubric-v0     a professional task in a world of documents, graded by rubric (envs/rubric.py)

Every env takes its task at reset (`options={"task": Task}`) or at construction (`task=`), runs it in
a sandbox of the configured backend (`sandbox=`: local by default, or docker), and releases the
sandbox in close(). Suites load through envs/task_formats.py (a name or a path -> Tasks), which
dispatches to the importers: Harbor and Terminal-Bench task directories (envs/harbor.py), SWE-bench
instances (envs/swebench.py), APEX releases (envs/apex.py), GUI suites (envs/gui_tasks.py), MiniWoB++
tasks from the `miniwob` package (envs/miniwob.py); shipped suites live under envs/suites/.

`env_class` imports the env classes when called, so that importing a light module of this package
(the task importers, envs/common.py) does not load every family's env; no module of the package
imports from this __init__, so that deferral is not part of an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium

from agentsd.types import Family

if TYPE_CHECKING:
    from agentsd.envs.terminal import TerminalEnv

TERMINAL_ID = "agentsd/Terminal-v0"

if TERMINAL_ID not in gymnasium.registry:
    gymnasium.register(
        TERMINAL_ID, entry_point="agentsd.envs.terminal:TerminalEnv", disable_env_checker=False
    )

SWE_ID = "agentsd/SWE-v0"

if SWE_ID not in gymnasium.registry:
    gymnasium.register(SWE_ID, entry_point="agentsd.envs.swe:SWEEnv", disable_env_checker=False)

GUI_ID = "agentsd/GUI-v0"

if GUI_ID not in gymnasium.registry:
    gymnasium.register(GUI_ID, entry_point="agentsd.envs.gui:GUIEnv", disable_env_checker=False)

RUBRIC_ID = "agentsd/Rubric-v0"

if RUBRIC_ID not in gymnasium.registry:
    gymnasium.register(RUBRIC_ID, entry_point="agentsd.envs.rubric:RubricEnv", disable_env_checker=False)


def env_class(family: Family) -> type[TerminalEnv]:
    """The Gymnasium env class that runs tasks of a family."""
    from agentsd.envs.gui import GUIEnv
    from agentsd.envs.rubric import RubricEnv
    from agentsd.envs.swe import SWEEnv
    from agentsd.envs.terminal import TerminalEnv

    classes: dict[Family, type[TerminalEnv]] = {
        Family.TERMINAL: TerminalEnv,
        Family.SWE: SWEEnv,
        Family.GUI: GUIEnv,
        Family.RUBRIC: RubricEnv,
    }
    if family not in classes:
        raise ValueError(f"no environment for the {family.value} family yet")
    return classes[family]
