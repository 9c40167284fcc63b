"""The terminal environment, run for real in sandboxes: the shipped suite, the shell, the verifiers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from sandbox_fixtures import backend_config

from agentsd.envs import TERMINAL_ID
from agentsd.envs.harbor import load_harbor_task
from agentsd.envs.oracle import run_nothing, run_reference, tool_call
from agentsd.envs.task_formats import load_suite
from agentsd.envs.terminal import TerminalEnv
from agentsd.types import Task

SUITE = load_suite("terminal")


call = tool_call


def test_the_shipped_suite_has_twenty_real_tasks() -> None:
    assert len(SUITE) >= 20
    assert len({t.id for t in SUITE}) == len(SUITE)
    categories = {t.meta["category"] for t in SUITE}
    assert {"files", "text-processing", "git", "python", "services"} <= categories
    assert all(t.reference.get("files") and t.verifier.kind == "harbor" for t in SUITE)


@pytest.mark.parametrize("task", SUITE, ids=[t.id for t in SUITE])
def test_every_shipped_task_is_solvable_and_doing_nothing_scores_zero(env: TerminalEnv, task: Task) -> None:
    reward, info = run_reference(env, task)
    assert (reward, info["termination"], info["solution_exit_code"]) == (1.0, "done", 0), info["feedback"]
    reward, info = run_nothing(env, task)
    assert reward == 0.0 and info["termination"] == "done"
    assert info["feedback"], "a failed episode must say why (hindsight for the teacher)"


def test_env_passes_gymnasium_check_env() -> None:
    backend_config("local")
    env = gym.make(TERMINAL_ID, task=SUITE[0])
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_the_shell_persists_like_a_terminal(env: TerminalEnv) -> None:
    obs, info = env.reset(options={"task": SUITE[0]})
    assert obs == SUITE[0].instruction and info["task_id"] == SUITE[0].id
    steps = [
        call("bash", command="mkdir -p deep/dir && cd deep/dir && export GREETING=hi && MYVAR=local"),
        call("bash", command='pwd; echo "$GREETING"; echo "[$MYVAR]"'),
        call("bash", command="exit 3"),
        call("bash", command="pwd"),
    ]
    outputs = [env.step(s)[0] for s in steps]
    assert outputs[1].splitlines() == ["/workspace/deep/dir", "hi", "[]", "[exit code 0]"]
    assert outputs[2] == "[exit code 3]"
    assert outputs[3].splitlines()[0] == "/workspace/deep/dir"  # state kept across an early exit


def test_bad_replies_timeouts_and_long_output_are_observations(env: TerminalEnv) -> None:
    env.reset(options={"task": SUITE[0]})
    obs, reward, terminated, truncated, info = env.step("I am not sure what to do.")
    assert "No tool call found" in obs and (reward, terminated, truncated) == (0.0, False, False)
    assert info["next_state"] == obs and "parse_error" in info["action"]
    obs, *_, info = env.step(call("bash", command="sleep 30 & sleep 31", timeout=1))
    assert "timed out" in obs and info["timed_out"]
    obs, *_, info = env.step(call("bash", command="seq 1 200000"))
    assert obs.startswith("1\n2\n") and "200000" in obs and info["truncated_output"]
    assert len(obs) <= env.max_observation_chars
    env.step(call("submit"))
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(call("bash", command="true"))


def _harbor_task(tmp_path: Path, test_sh: str, verifier_timeout: float = 30.0) -> Task:
    root = tmp_path / "task"
    (root / "tests").mkdir(parents=True)
    (root / "instruction.md").write_text("Do nothing in particular.\n")
    (root / "task.toml").write_text(f'version = "1.0"\n[verifier]\ntimeout_sec = {verifier_timeout}\n')
    (root / "tests" / "test.sh").write_text(textwrap.dedent(test_sh))
    return load_harbor_task(root).model_copy(update={"environment": SUITE[0].environment})


@pytest.mark.parametrize(
    ("test_sh", "timeout", "error"),
    [
        ("echo crashing >&2; exit 2\n", 30.0, "wrote no /logs/verifier/reward.txt"),
        ("sleep 60\n", 1.0, "verifier timed out"),
        ("echo 7 > /logs/verifier/reward.txt\n", 30.0, "outside [0, 1]"),
        ("echo '[1]' > /logs/verifier/reward.json\n", 30.0, "must map names to numbers"),
    ],
)
def test_a_broken_verifier_is_an_env_error_never_a_reward(
    env: TerminalEnv, tmp_path: Path, test_sh: str, timeout: float, error: str
) -> None:
    env.reset(options={"task": _harbor_task(tmp_path, test_sh, timeout)})
    _, reward, terminated, _, info = env.step(call("submit"))
    assert terminated and reward == 0.0 and info["termination"] == "env_error"
    assert error in info["feedback"]


def test_reward_json_components(env: TerminalEnv, tmp_path: Path) -> None:
    task = _harbor_task(tmp_path, 'echo \'{"tests": 0.5, "style": 1.0}\' > /logs/verifier/reward.json\n')
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step(call("submit"))
    assert reward == 0.75 and info["reward_components"] == {"tests": 0.5, "style": 1.0}


def test_feedback_names_the_failing_tests_and_assertions(env: TerminalEnv) -> None:
    task = next(t for t in SUITE if t.id == "python-fix-average")
    env.reset(options={"task": task})
    _, reward, *_, info = env.step(call("submit"))
    assert reward == 0.0
    assert "test_mean_of_integers_and_floats" in info["feedback"]
    assert "test_empty_list_raises_value_error" in info["feedback"]


def test_script_verifier_rewards_exit_zero(env: TerminalEnv) -> None:
    task = SUITE[0].model_copy(
        update={
            "verifier": SUITE[0].verifier.model_copy(update={"kind": "script", "script": "test -f done.txt"})
        }
    )
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step(call("submit"))
    assert reward == 0.0 and info["termination"] == "done"
    env.reset(options={"task": task})
    env.step(call("bash", command="touch done.txt"))
    _, reward, _, _, info = env.step(call("submit"))
    assert reward == 1.0 and info["feedback"] == ""
