"""The SWE environment: the shipped suite, the file tools, and SWE-bench import, for real."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from sandbox_fixtures import backend_config

from agentsd.envs import SWE_ID
from agentsd.envs.common import SUITES_DIR, TaskFormatError
from agentsd.envs.oracle import run_nothing, run_reference, tool_call
from agentsd.envs.swe import SWEEnv
from agentsd.envs.swebench import load_swe_suite, load_swebench
from agentsd.types import Family, Task

SUITE = load_swe_suite()


@pytest.fixture
def env(backend: str) -> Iterator[SWEEnv]:
    environment = SWEEnv(sandbox=backend_config(backend))
    yield environment
    environment.close()


def test_the_shipped_suite_has_ten_bugs_in_three_repositories() -> None:
    assert len(SUITE) >= 10 and {t.family for t in SUITE} == {Family.SWE}
    assert len({t.meta["repo"] for t in SUITE}) >= 3
    assert all(t.verifier.fail_to_pass and t.verifier.pass_to_pass and t.verifier.test_patch for t in SUITE)


@pytest.mark.parametrize("task", SUITE, ids=[t.id for t in SUITE])
def test_every_shipped_bug_is_fixed_by_its_gold_patch_and_not_by_nothing(env: SWEEnv, task: Task) -> None:
    reward, info = run_reference(env, task)
    assert (reward, info["termination"]) == (1.0, "done"), info["feedback"]
    assert info["reward_components"] == {"fail_to_pass": 1.0, "pass_to_pass": 1.0}
    reward, info = run_nothing(env, task)
    assert reward == 0.0 and info["termination"] == "done"
    assert all(test_id in info["feedback"] for test_id in task.verifier.fail_to_pass)


def test_file_tools_edit_exactly_and_explain_mistakes(env: SWEEnv) -> None:
    task = next(t for t in SUITE if t.id == "ministats-5")
    env.reset(options={"task": task})
    obs, *_ = env.step(tool_call("view_file", path="ministats/stats.py", start_line=13, end_line=14))
    assert obs.splitlines()[1].strip().startswith("13\t") and "[lines 15-" in obs
    missing = env.step(tool_call("edit_file", path="ministats/stats.py", old_str="nope", new_str="x"))[0]
    assert "was not found" in missing
    ambiguous = env.step(tool_call("edit_file", path="ministats/stats.py", old_str="return", new_str="x"))[0]
    assert "occurs" in ambiguous and "times" in ambiguous
    assert "does not exist" in env.step(tool_call("view_file", path="absent.py"))[0]
    fix = "    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2\n"
    fixed = env.step(
        tool_call("edit_file", path="ministats/stats.py", old_str="    return ordered[mid]\n", new_str=fix)
    )[0]
    assert fixed.startswith("Edited")
    created = env.step(tool_call("edit_file", path="NOTES.md", old_str="", new_str="fixed median\n"))[0]
    assert created.startswith("Created")
    diff = env.step(tool_call("bash", command="git status --short"))[0]
    assert "M ministats/stats.py" in diff and "?? NOTES.md" in diff
    # The agent also rewrote the test file: the verifier restores it before applying the test patch.
    env.step(tool_call("bash", command="mkdir -p tests && echo 'def test_x(): pass' > tests/test_issue_5.py"))
    _, reward, terminated, _, info = env.step(tool_call("submit"))
    assert terminated and reward == 1.0, info["feedback"]


def test_swe_env_passes_gymnasium_check_env() -> None:
    backend_config("local")
    env = gym.make(SWE_ID, task=SUITE[0])
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_swebench_import_validates_fields_and_repositories(tmp_path: Path) -> None:
    lines = (SUITES_DIR / "swe" / "instances.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    repos = SUITES_DIR / "swe" / "repos"

    def load(instance: dict | str) -> list[Task]:
        path = tmp_path / "instances.jsonl"
        path.write_text(instance if isinstance(instance, str) else json.dumps(instance))
        return load_swebench(path, repos)

    assert load(first)[0] == SUITE[0]
    with pytest.raises(TaskFormatError, match=r"instances\.jsonl:1: missing field\(s\) test_patch"):
        load({k: v for k, v in first.items() if k != "test_patch"})
    with pytest.raises(TaskFormatError, match="FAIL_TO_PASS is not a JSON list"):
        load({**first, "FAIL_TO_PASS": "[oops"})
    with pytest.raises(TaskFormatError, match="FAIL_TO_PASS is empty"):
        load({**first, "FAIL_TO_PASS": "[]"})
    with pytest.raises(TaskFormatError, match=r"repository someone/else: neither .* exists"):
        load({**first, "repo": "someone/else"})
    with pytest.raises(TaskFormatError, match=r"base_commit 0+ is not in the repository"):
        load({**first, "base_commit": "0" * 40})
    with pytest.raises(TaskFormatError, match=r"instances\.jsonl:1: not a JSON object"):
        load("{broken")
    clone = tmp_path / "clones"
    shutil.copytree(repos, clone)
    import subprocess

    subprocess.run(
        [
            "git",
            "clone",
            "-q",
            str(clone / "agentsd-suite__textkit.bundle"),
            str(clone / "agentsd-suite__textkit"),
        ],
        check=True,
    )
    (clone / "agentsd-suite__textkit.bundle").unlink()
    assert load_swebench(SUITES_DIR / "swe" / "instances.jsonl", clone)[0].world == SUITE[0].world


def test_tasks_import_swebench_stores_instances(tmp_path: Path) -> None:
    import subprocess
    import sys

    from agentsd.store import ReplayStore

    url = f"sqlite:///{tmp_path / 'r.db'}"
    root = SUITES_DIR / "swe"
    cli = [
        sys.executable,
        "-m",
        "agentsd.cli.main",
        "tasks",
        "import",
        "swebench",
        str(root / "instances.jsonl"),
    ]
    refused = subprocess.run([*cli, "--store", url], capture_output=True, text=True)
    assert refused.returncode == 2 and "needs --repos" in refused.stderr
    args = [*cli, "--repos", str(root / "repos"), "--store", url]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    stored = dict(line.split()[1::2] for line in out.splitlines() if line.startswith("stored "))
    assert len(stored) == len(SUITE)
    assert ReplayStore(url).get_task(stored["ledger-8"]) == next(t for t in SUITE if t.id == "ledger-8")
