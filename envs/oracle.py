"""Running a task's reference solution through its environment, as Harbor's oracle agent does.

Used to prove shipped tasks solvable (reference -> reward 1, doing nothing -> reward 0) in tests
and in `agentsd tasks verify`.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from agentsd.envs.apex import gold_blobs
from agentsd.envs.terminal import TerminalEnv
from agentsd.sdpo.hindsight import tool_call_text
from agentsd.types import Family, Task


def tool_call(name: str, **arguments: Any) -> str:
    """An agent reply holding one tool call."""
    return tool_call_text(name, arguments)


def has_reference(task: Task) -> bool:
    if task.family is Family.RUBRIC:
        return bool(task.reference.get("gold_files") or task.reference.get("gold_response"))
    return bool(
        task.reference.get("files")
        or task.reference.get("blobs")
        or task.reference.get("actions")
        or isinstance(task.reference.get("reply"), str)
    )


def _run_gold(env: TerminalEnv, task: Task) -> tuple[float, dict[str, Any]]:
    """Rubric tasks: lay the gold output files into the workdir and submit the gold response."""
    env.reset(options={"task": task})
    assert env.sandbox is not None
    for rel, data in gold_blobs(task).items():
        env.sandbox.write_file(env.in_workdir(rel), data)
    _, reward, _, _, info = env.step(
        tool_call("submit", answer=str(task.reference.get("gold_response") or ""))
    )
    return reward, info


def run_reference(env: TerminalEnv, task: Task) -> tuple[float, dict[str, Any]]:
    """Upload the solution to /solution, run its entry script in the agent's shell, submit.

    GUI tasks have a list of actions instead; a `target` (role and "name" of a tree line) becomes
    the [id] that line shows in the latest observation, as an agent reading the tree would find it.
    """
    if task.family is Family.RUBRIC:
        return _run_gold(env, task)
    if task.reference.get("actions"):
        return _run_actions(env, task)
    if isinstance(task.reference.get("reply"), str):  # a single-turn task: its reply is its answer
        env.reset(options={"task": task})
        _, reward, _, _, info = env.step(str(task.reference["reply"]))
        return reward, info
    if not has_reference(task):
        raise ValueError(f"task {task.id} has no reference solution")
    env.reset(options={"task": task})
    assert env.sandbox is not None
    for rel, text in task.reference.get("files", {}).items():
        env.sandbox.write_file(f"/solution/{rel}", text.encode(), mode=0o755)
    for rel, encoded in task.reference.get("blobs", {}).items():
        env.sandbox.write_file(f"/solution/{rel}", base64.b64decode(encoded), mode=0o644)
    _, _, _, _, ran = env.step(
        tool_call("bash", command=f"bash /solution/{task.reference.get('entry', 'solve.sh')}")
    )
    _, reward, _, _, info = env.step(tool_call("submit"))
    return reward, {**info, "solution_exit_code": ran.get("exit_code")}


def _run_actions(env: TerminalEnv, task: Task) -> tuple[float, dict[str, Any]]:
    observation, _ = env.reset(options={"task": task})
    for action in task.reference["actions"]:
        arguments = dict(action.get("arguments", {}))
        if action.get("target"):
            found = re.search(r"- " + re.escape(action["target"]) + r" \[(\d+)\]", observation)
            if found is None:
                raise ValueError(f"task {task.id}: no element {action['target']!r} in the observation")
            arguments["id"] = int(found.group(1))
        observation, reward, terminated, _, info = env.step(tool_call(action["name"], **arguments))
        if terminated:
            return reward, info
        if info.get("ok") is False:
            raise ValueError(f"task {task.id}: reference action {action} failed: {observation[:300]}")
    _, reward, _, _, info = env.step(tool_call("submit"))
    return reward, info


def run_nothing(env: TerminalEnv, task: Task) -> tuple[float, dict[str, Any]]:
    """Submit at once: what a do-nothing agent earns."""
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step(tool_call("submit"))
    return reward, info
