"""The GUI environment, run for real: Xvfb, AT-SPI desktop apps and Chromium pages inside sandboxes."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from sandbox_fixtures import backend_config, unavailable

from agentsd.envs import GUI_ID
from agentsd.envs.common import TaskFormatError
from agentsd.envs.gui import GUIEnv, tree_diff
from agentsd.envs.gui_tasks import load_gui_suite
from agentsd.envs.miniwob import load_miniwob
from agentsd.envs.oracle import run_nothing, run_reference, tool_call
from agentsd.envs.task_formats import load_suite
from agentsd.types import Task

pytestmark = pytest.mark.gui
SUITE = load_suite("gui")
BY_ID = {t.id: t for t in SUITE}


def _need_gui_apps() -> None:
    missing = [p for p in ("Xvfb", "xdotool", "chromium", "galculator", "mousepad") if not shutil.which(p)]
    if missing:
        unavailable(
            f"GUI programs missing on this host: {', '.join(missing)} (scripts/setup.sh installs them)"
        )


@pytest.fixture
def env(backend: str, tmp_path: Path) -> Iterator[GUIEnv]:
    if backend == "local":
        _need_gui_apps()
    environment = GUIEnv(sandbox=backend_config(backend), artifact_dir=tmp_path / "shots")
    yield environment
    environment.close()


def element(observation: str, target: str) -> int:
    found = re.search(r"- " + re.escape(target) + r" \[(\d+)\]", observation)
    assert found, f"{target!r} not in:\n{observation}"
    return int(found.group(1))


def test_the_shipped_suite_spans_two_apps_and_more() -> None:
    assert len(SUITE) >= 10
    apps = {t.meta["app"] for t in SUITE}
    assert {"galculator", "mousepad", "chromium"} <= apps
    assert all(t.verifier.kind == "gui" and t.reference.get("actions") for t in SUITE)


@pytest.mark.parametrize("task", SUITE, ids=[t.id for t in SUITE])
def test_every_shipped_gui_task_is_solvable_and_doing_nothing_scores_zero(env: GUIEnv, task: Task) -> None:
    solved, info = run_reference(env, task)
    assert solved == 1.0, info.get("feedback")
    nothing, info = run_nothing(env, task)
    assert nothing == 0.0
    assert info["termination"] == "done" and info["feedback"]


def test_gui_env_passes_gymnasium_check_env() -> None:
    _need_gui_apps()
    backend_config("local")
    env = gym.make(GUI_ID, task=BY_ID["web-price-lookup"])
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_desktop_observation_ids_and_screenshots(env: GUIEnv, tmp_path: Path) -> None:
    obs, info = env.reset(options={"task": BY_ID["mousepad-append"]})
    assert "Window: /workspace/shopping.txt - Mousepad" in obs
    assert 'text="bread\\neggs' in obs
    assert info["screenshot"][:8] == b"\x89PNG\r\n\x1a\n"
    frame, text = element(obs, 'frame "/workspace/shopping.txt - Mousepad"'), element(obs, "text")
    obs, _, done, _, info = env.step(tool_call("type", id=text, text="x"))
    assert not done and info["ok"]
    # the title gains the "modified" mark; the window and its text keep their ids
    assert element(obs, 'frame "*/workspace/shopping.txt - Mousepad"') == frame
    assert element(obs, "text") == text
    assert "+ frame" in info["next_state"] and "- frame" in info["next_state"]
    shots = sorted((tmp_path / "shots").glob("*.png"))
    assert len(shots) == 2 and info["screenshot_path"] == str(shots[-1])


def test_bad_actions_are_observations_not_crashes(env: GUIEnv) -> None:
    env.reset(options={"task": BY_ID["web-login"]})
    obs, reward, done, _, info = env.step(tool_call("click", id=987654))
    assert not done and reward == 0.0 and info["ok"] is False
    assert obs.startswith("action failed:") and "987654" in obs
    obs, _, done, _, _ = env.step("I will click the button")
    assert not done and "No tool call found" in obs
    obs, _, done, _, info = env.step(tool_call("scroll", direction="sideways"))
    assert not done and info["ok"] is False and "up or down" in obs
    obs, _, _, _, info = env.step(tool_call("click_xy", x=5, y=5))
    assert info["ok"] and "clicked at (5, 5)" in obs


def test_web_tree_ids_are_stable_and_show_state(env: GUIEnv) -> None:
    obs, _ = env.reset(options={"task": BY_ID["web-red-fruits"]})
    cherry = element(obs, 'checkbox "Cherry"')
    obs, _, _, _, info = env.step(tool_call("click", id=cherry))
    assert re.search(rf'checkbox "Cherry" \[{cherry}\] .*checked', obs)
    assert "checked" in info["next_state"]


def test_miniwob_tasks_import_and_score_by_their_own_reward(env: GUIEnv) -> None:
    pytest.importorskip("miniwob", reason="the gui extra (miniwob) is not installed")
    task = load_miniwob(["click-button"], seeds=[3])[0]
    assert task.id == "miniwob.click-button.s3"
    assert any(path.endswith("core/core.js") for path in task.world.files)
    obs, _ = env.reset(options={"task": task})
    wanted = re.search(r'Click on the "(.+?)" button', obs)
    assert wanted, obs
    obs, *_ = env.step(tool_call("click", id=element(obs, f'button "{wanted.group(1)}"')))
    _, reward, done, _, info = env.step(tool_call("submit"))
    assert done and reward == 1.0, info
    nothing, _ = run_nothing(env, task)
    assert nothing == 0.0


def test_miniwob_unknown_names_are_named() -> None:
    pytest.importorskip("miniwob", reason="the gui extra (miniwob) is not installed")
    with pytest.raises(TaskFormatError, match="no-such-task"):
        load_miniwob(["click-button", "no-such-task"])
    assert len(load_suite("miniwob")) >= 100


def test_malformed_gui_suites_name_the_file_entry_and_field(tmp_path: Path) -> None:
    (tmp_path / "tasks.yaml").write_text(
        "tasks:\n  - id: a\n    instruction: do it\n    app: {kind: web}\n    checker: 'true'\n"
    )
    with pytest.raises(TaskFormatError, match=r"tasks.yaml: tasks\[0\] \(a\): app: .*needs `url`"):
        load_gui_suite(tmp_path)
    (tmp_path / "tasks.yaml").write_text(
        "tasks:\n  - id: b\n    instruction: x\n    app: {kind: web, url: 'file:///w/p.html'}\n"
        "    checker: 'true'\n    pages: {w/p.html: pages/missing.html}\n"
    )
    with pytest.raises(TaskFormatError, match=r"pages.w/p.html: .*missing.html does not exist"):
        load_gui_suite(tmp_path)
    (tmp_path / "tasks.yaml").write_text("tasks:\n  - id: c\n    app: {kind: desktop, command: [x]}\n")
    with pytest.raises(TaskFormatError, match=r"instruction: Field required"):
        load_gui_suite(tmp_path)


def test_tree_diff_lists_what_appeared_and_went_away() -> None:
    before = '- frame "a" [1]\n  - button "Go" [2]'
    after = '- frame "a" [1]\n  - text "Done" [3]'
    assert tree_diff(before, after) == '- button "Go" [2]\n+ text "Done" [3]'
    assert tree_diff(before, before) == "(the accessibility tree did not change)"
