"""The terminal environment family: a shell in a sandbox, as a Gymnasium env (agentsd/Terminal-v0).

Action: the agent's reply text, holding one tool call (envs/tools.py): `bash` runs a command,
`submit` ends the episode and runs the task's verifier. Observation: the instruction after reset,
then the command's output (head and tail kept) with its exit status, or the parse error of a reply
that held no valid call. The shell is persistent the way a terminal is: the working directory and
exported variables carry over between commands (kept in files under /tmp/.agentsd-shell), and
background processes keep running. A task with a service (`world.service`, an imported image's
ENTRYPOINT) has it started before the agent's first step, and again for grading once the agent's
processes are dead (envs/services.py); one that dies at once fails reset (EnvSetupError, the
episode's env_error). `info["next_state"]` describes what each step did; at the end
`info["feedback"]` carries the verifier's failing tests and assertion messages, `info["termination"]`
is `done`, or `env_error` when the verifier itself failed.

The single-turn form (`environment.reply_file` set): the agent has no tools; its one reply, whatever
it says, is written to that file in the workdir (surrounding whitespace dropped, one newline added)
and the task's verifier grades it at once, as a submit would.

Not kept between commands: shell functions, aliases, unexported variables and `set` options.
"""

from __future__ import annotations

import base64
import shlex
from pathlib import PurePosixPath
from typing import Any

import gymnasium as gym

from agentsd.config import LocalSandboxConfig
from agentsd.envs.common import FALLBACK_IMAGE
from agentsd.envs.services import start_service
from agentsd.envs.spaces import fit_text, text_space
from agentsd.envs.tools import BASH, SUBMIT, ToolCall, ToolParseError, ToolSpec, parse_tool_call
from agentsd.envs.verifiers import verify
from agentsd.errors import AgentsdError
from agentsd.sandboxes.base import Sandbox, writable_dirs
from agentsd.sandboxes.builds import BuildError, restore_script
from agentsd.sandboxes.fleet import SandboxConfig, SandboxFleet, make_sandbox
from agentsd.types import SYSTEM_DIRS, ExecResult, SandboxSpec, Task, Termination

SHELL_STATE = "/tmp/.agentsd-shell"
REPLY = "reply"  # the action name a single-turn reply is recorded under
NEXT_STATE_CHARS = 2000
SETUP_TIMEOUT_S = 600.0
# Restores the previous command's directory and exports, runs the command, saves them again (also
# when the command exits early); the command is passed as $1 so its line numbers are its own.
_SHELL = (
    "mkdir -p {state}; [ -f {state}/env ] && . {state}/env >/dev/null 2>&1; "
    'cd "$(cat {state}/cwd 2>/dev/null || echo {workdir})" 2>/dev/null || cd {workdir}; '
    "__agentsd_save() {{ __rc=$?; export -p > {state}/env 2>/dev/null; pwd > {state}/cwd 2>/dev/null; "
    'exit $__rc; }}; trap __agentsd_save EXIT; eval "$1"'
)


class EnvSetupError(AgentsdError):
    """The task's world could not be laid out (its setup script failed): the episode cannot start."""


def format_result(result: ExecResult) -> str:
    """A command's output as a terminal shows it, with its exit status on the last line."""
    text = result.stdout + (
        ("" if not result.stdout or result.stdout.endswith("\n") else "\n") + result.stderr
    )
    if result.timed_out:
        status = "[timed out: the command and its process group were killed]"
    else:
        status = f"[exit code {result.exit_code}]"
    if result.truncated:
        status += " [long output: head and tail kept]"
    return f"{text.rstrip()}\n{status}" if text.strip() else status


class TerminalEnv(gym.Env[str, str]):
    """One terminal task per episode, in a fresh sandbox."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute
    tools: tuple[ToolSpec, ...] = (BASH, SUBMIT)
    # Grading must not see anything the agent left running (a daemon rewriting the reward file,
    # a process racing the tests): every agent process is killed first. A family whose grader reads
    # live processes the environment started (the GUI apps) and whose agent has no shell sets False.
    kill_agent_before_grading = True

    def __init__(
        self,
        task: Task | None = None,
        sandbox: SandboxConfig | None = None,
        *,
        max_observation_chars: int = 16_000,
        max_action_chars: int = 32_000,
        labels: dict[str, str] | None = None,
        fleet: SandboxFleet | None = None,
    ) -> None:
        self.default_task = task
        self.fleet = fleet  # episodes' sandboxes come from it (its engines, limits, warm pool) when given
        self.sandbox_config = fleet.config if fleet is not None else sandbox or LocalSandboxConfig()
        self.labels = labels or {}
        self.max_observation_chars = max_observation_chars
        self.observation_space = text_space(max_observation_chars)
        self.action_space = text_space(max_action_chars)
        self.task: Task | None = None
        self.sandbox: Sandbox | None = None
        self._over = True

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        task = (options or {}).get("task") or self.default_task
        if not isinstance(task, Task):
            raise ValueError(
                "TerminalEnv.reset needs options={'task': Task} (or a task given to the constructor)"
            )
        self._release()
        self.task = task
        spec = self._spec(task)
        try:
            self.sandbox = self._open_sandbox(spec)
            self._lay_out(task)
            failed = start_service(self.sandbox, task)
            if failed:
                raise EnvSetupError(f"task {task.id}: {failed}")
        except BuildError as exc:
            self._release()
            raise EnvSetupError(f"task {task.id}: building its environment failed: {exc}") from None
        except BaseException:
            self._release()
            raise
        self._over = False
        # instance attribute: the single-turn form's episodes offer no tools (the agent reads it after reset)
        self.tools = () if task.environment.reply_file is not None else type(self).tools
        info = {
            "task_id": task.id,
            "image": spec.image or "host (local sandbox)",
            "sandbox_id": self.sandbox.id,
            "next_state": "",
        }
        return fit_text(task.instruction, self.max_observation_chars), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._over or self.sandbox is None or self.task is None:
            raise RuntimeError("the episode is over (or was never started): call reset() first")
        reply_file = self.task.environment.reply_file
        if reply_file is not None:
            self.sandbox.write_file(self.in_workdir(reply_file), (action.strip() + "\n").encode())
            return self._submit(ToolCall(name=REPLY, arguments={"text": action}))
        call = parse_tool_call(action, self.tools)
        if isinstance(call, ToolParseError):
            observation = call.message
            return (
                self._obs(observation),
                0.0,
                False,
                False,
                {"action": call.as_action(), "next_state": observation},
            )
        if call.name == "submit":
            return self._submit(call)
        observation, info = self._act(call)
        next_state = info.pop("next_state", observation)
        info = {"action": call.as_action(), **info, "next_state": fit_text(next_state, NEXT_STATE_CHARS)}
        return self._obs(observation), 0.0, False, False, info

    def _act(self, call: ToolCall) -> tuple[str, dict[str, Any]]:
        """Run one non-submit tool call: (observation, info). Families with more tools extend this."""
        result = self.run_command(call.arguments["command"], call.arguments.get("timeout"))
        info = {
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "truncated_output": result.truncated,
            "duration_s": result.duration_s,
        }
        return format_result(result), info

    def close(self) -> None:
        self._release()
        super().close()

    # ------------------------------------------------------------------ episode pieces

    def run_command(self, command: str, timeout: float | None = None) -> ExecResult:
        """Run a command in the persistent shell (what the bash tool does)."""
        assert self.sandbox is not None and self.task is not None
        workdir = shlex.quote(self.task.environment.workdir)
        script = _SHELL.format(state=SHELL_STATE, workdir=workdir)
        limit = self.task.environment.limits.command_timeout_s
        if timeout is None or not 0 < timeout < limit:  # also what NaN and negative numbers get
            timeout = limit
        return self.sandbox.exec(["bash", "-c", script, "bash", command], timeout=timeout)

    def stop_agent(self) -> str | None:
        """Before grading: kill every process the agent left in the sandbox (SandboxError, with the
        sandbox gone, if one survives), the task's service with them, then start that service afresh
        so the tests find it running (envs/services.py). Returns what went wrong starting it, if
        anything: the grading goes on, and the feedback says why the tests found no service."""
        assert self.sandbox is not None and self.task is not None
        if not self.kill_agent_before_grading:
            return None
        self.sandbox.kill_agent()
        return start_service(self.sandbox, self.task)

    def grade_final_state(self) -> tuple[float, dict[str, Any]]:
        """Grade the sandbox as it is, as a submit without an answer would: what the agent loop calls
        when a limit (turns, time, context) ends the episode. (reward, info) as step() returns them."""
        if self._over or self.sandbox is None:
            raise RuntimeError("the episode is over (or was never started): nothing to grade")
        _, reward, _, _, info = self._submit(ToolCall(name="submit", arguments={}))
        return reward, info

    def _submit(self, call: ToolCall) -> tuple[str, float, bool, bool, dict[str, Any]]:
        assert self.sandbox is not None and self.task is not None
        service_failed = self.stop_agent()
        verdict = verify(self.task, self.sandbox, answer=call.arguments.get("answer"))
        self._over = True
        termination = Termination.ENV_ERROR if verdict.error else Termination.DONE
        feedback = verdict.feedback if not verdict.error else f"{verdict.error}\n{verdict.feedback}".strip()
        if service_failed:
            feedback = f"When started for grading, {service_failed}\n{feedback}".strip()
        observation = f"Submitted. Reward: {verdict.reward:g}" + (f"\n{feedback}" if feedback else "")
        info = {
            "action": call.as_action(),
            "answer": call.arguments.get("answer"),
            "termination": termination.value,
            "feedback": feedback,
            "reward_components": verdict.components,
            "verifier_output": fit_text(verdict.output, NEXT_STATE_CHARS),
            "next_state": fit_text(observation, NEXT_STATE_CHARS),
        }
        return self._obs(observation), verdict.reward if not verdict.error else 0.0, True, False, info

    def _spec(self, task: Task) -> SandboxSpec:
        env = task.environment
        spec = SandboxSpec(**env.model_dump(), family=task.family, env=task.world.env, labels=self.labels)
        if spec.image is None and not isinstance(self.sandbox_config, LocalSandboxConfig):
            spec.image = FALLBACK_IMAGE.get(task.family)
        # World files outside the writable mounts get a private mount of their top directory; a
        # system directory cannot be replaced that way (the sandbox would lose its own programs),
        # and a file directly under / has no directory of its own to mount.
        outside = [
            path
            for path in [*task.world.files, *task.world.blobs]
            if path.startswith("/")
            and not any(path.startswith(d.rstrip("/") + "/") for d in writable_dirs(spec))
        ]
        extra = {"/" + PurePosixPath(path).parts[1] for path in outside}
        system = sorted(d for d in extra if d.lstrip("/") in SYSTEM_DIRS or d in outside)
        if system:
            files = sorted(p for p in outside if "/" + PurePosixPath(p).parts[1] in system)
            raise EnvSetupError(
                f"task {task.id}: world files under {', '.join(system)} ({', '.join(files[:3])}"
                f"{' ...' if len(files) > 3 else ''}): files in system directories or directly under / "
                "go into the task's image: give them as COPY steps of environment.build (as a "
                "Dockerfile import does)"
            )
        spec.scratch_dirs = sorted(set(spec.scratch_dirs) | extra)
        return spec

    def in_workdir(self, path: str) -> str:
        """An absolute path as is; a relative one under the task's working directory."""
        assert self.task is not None
        return path if path.startswith("/") else f"{self.task.environment.workdir.rstrip('/')}/{path}"

    def _lay_out(self, task: Task) -> None:
        assert self.sandbox is not None
        workdir = task.environment.workdir
        self.sandbox.write_file(f"{SHELL_STATE}/cwd", workdir.encode())
        for path, text in task.world.files.items():
            target = self.in_workdir(path)
            self.sandbox.write_file(target, text.encode(), mode=0o755 if target.endswith(".sh") else None)
        for path, encoded in task.world.blobs.items():
            self.sandbox.write_file(self.in_workdir(path), base64.b64decode(encoded))
        if task.environment.build is not None:  # what the build left under the tmpfs mounts
            result = self.sandbox.exec(
                ["sh", "-c", restore_script(self.sandbox.spec)], timeout=SETUP_TIMEOUT_S
            )
            if result.exit_code != 0:
                raise EnvSetupError(
                    f"task {task.id}: restoring the built workdir failed ({format_result(result)[-1500:]})"
                )
        if task.world.setup:
            result = self.sandbox.exec(["bash", "-c", task.world.setup], timeout=SETUP_TIMEOUT_S, cwd=workdir)
            if result.exit_code != 0:
                raise EnvSetupError(f"task {task.id}: setup failed ({format_result(result)[-1500:]})")

    def _obs(self, text: str) -> str:
        return fit_text(text, self.max_observation_chars)

    def _open_sandbox(self, spec: SandboxSpec) -> Sandbox:
        if self.fleet is not None:
            return self.fleet.lease(spec)
        sandbox = make_sandbox(self.sandbox_config, spec)
        try:
            sandbox.start()
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def _release(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            if self.fleet is not None:
                self.fleet.release(sandbox)
            else:
                sandbox.close()
        self._over = True
