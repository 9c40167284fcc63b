"""The GUI environment family: a desktop or browser on an X display in a sandbox (agentsd/GUI-v0).

At reset the sandbox gets the task's world files, then envs/gui_driver.py (run inside the sandbox)
starts Xvfb, a window manager and the task's application (`task.world.app`): a desktop program read
through AT-SPI, or Chromium on a page read through its accessibility (ARIA) tree. The observation is
the window title and that tree as text, each element with a stable id; every observation also
takes a screenshot of the screen, returned as PNG bytes in `info["screenshot"]` and written under
`artifact_dir` when one is given. Actions: click(id), type(id, text), key(combo), click_xy(x, y),
scroll(direction), submit(answer). `info["next_state"]` is what the action did and which tree lines
appeared or went away. The verifier (kind `gui`) runs the task's checker script in the sandbox, which
reads the app or page state through the driver (`python3 "$GUI" text ROLE` / `python3 "$GUI" eval JS`)
and the submitted answer ($AGENTSD_ANSWER).

Not guaranteed: a checker sees the app as it is at submit time; apps that save state lazily must be
told to save (the task says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentsd.elision import elide_text
from agentsd.envs.gui_install import DRIVER_PATH, DRIVER_SOURCE
from agentsd.envs.terminal import EnvSetupError, TerminalEnv
from agentsd.envs.tools import CLICK, CLICK_XY, KEY, SCROLL, SUBMIT, TYPE, ToolCall
from agentsd.errors import AgentsdError
from agentsd.types import ExecResult

DRIVER_TIMEOUT_S = 120.0
START_TIMEOUT_S = 180.0
DIFF_LINES = 40


class GuiError(AgentsdError):
    """The GUI driver inside the sandbox failed (the display or the application is gone)."""


def tree_diff(before: str, after: str, limit: int = DIFF_LINES) -> str:
    """Tree lines that appeared (+) or went away (-), order kept, at most `limit` of each."""
    old, new = before.splitlines(), after.splitlines()
    old_set, new_set = set(old), set(new)
    added = [f"+ {line.strip().removeprefix('- ')}" for line in new if line not in old_set]
    removed = [f"- {line.strip().removeprefix('- ')}" for line in old if line not in new_set]

    def cap(lines: list[str]) -> list[str]:
        return lines[:limit] + ([f"  ... {len(lines) - limit} more"] if len(lines) > limit else [])

    return "\n".join(cap(removed) + cap(added)) or "(the accessibility tree did not change)"


class GUIEnv(TerminalEnv):
    """One GUI task per episode, in a fresh sandbox with its own X display."""

    tools = (CLICK, TYPE, KEY, CLICK_XY, SCROLL, SUBMIT)
    kill_agent_before_grading = False  # the checker reads the live app; the agent has no shell

    def __init__(self, *args: Any, artifact_dir: Path | str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.artifact_dir = Path(artifact_dir) if artifact_dir else None
        self._tree = ""
        self._shots = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        instruction, info = super().reset(seed=seed, options=options)
        assert self.task is not None and self.sandbox is not None
        if self.task.world.app is None:
            self._release()
            raise ValueError(f"task {self.task.id}: a GUI task needs world.app (the application to open)")
        self._tree, self._shots = "", 0
        try:
            self.sandbox.write_file(DRIVER_PATH, DRIVER_SOURCE.read_bytes(), mode=0o755)
            page = self._driver("start", self.task.world.app.model_dump_json(), timeout=START_TIMEOUT_S)
        except GuiError as exc:
            self._release()
            raise EnvSetupError(f"task {self.task.id}: the GUI did not start: {exc}") from None
        except BaseException:
            self._release()
            raise
        self._tree = page["tree"]
        observation = f"{instruction}\n\n{self._render(page)}"
        return self._obs(observation), {**info, **self._page_info(page)}

    def _act(self, call: ToolCall) -> tuple[str, dict[str, Any]]:
        try:
            page = self._driver("step", json.dumps(call.as_action()))
        except GuiError as exc:
            message = f"The GUI did not answer: {exc}"
            return message, {"ok": False, "next_state": message}
        before, self._tree = self._tree, page["tree"]
        info = {
            "ok": page["ok"],
            **self._page_info(page),
            "next_state": f"{page['message']}\n{tree_diff(before, page['tree'])}",
        }
        return f"{page['message']}\n\n{self._render(page)}", info

    # ------------------------------------------------------------------ pieces

    def _driver(self, *args: str, timeout: float = DRIVER_TIMEOUT_S) -> dict[str, Any]:
        assert self.sandbox is not None
        result: ExecResult = self.sandbox.exec(["python3", DRIVER_PATH, *args], timeout=timeout)
        if result.exit_code != 0 or result.timed_out:
            detail = (result.stderr or result.stdout).strip()
            raise GuiError(("timed out; " if result.timed_out else "") + elide_text(detail, 3000))
        try:
            page = json.loads(result.stdout)
        except (ValueError, RecursionError):
            raise GuiError(f"the driver printed no JSON: {elide_text(result.stdout, 500)!r}") from None
        if not isinstance(page, dict):
            raise GuiError(f"the driver printed {type(page).__name__}, not a JSON object")
        return page

    def _render(self, page: dict[str, Any]) -> str:
        return (
            f"Window: {page.get('title') or '(untitled)'}\n"
            "Accessibility tree (click and type take the [id] numbers):\n"
            f"{page['tree'] or '(empty)'}"
        )

    def _page_info(self, page: dict[str, Any]) -> dict[str, Any]:
        assert self.sandbox is not None
        info: dict[str, Any] = {"window_title": page.get("title", ""), "screenshot": None}
        if page.get("screenshot"):
            png = self.sandbox.read_file(page["screenshot"])
            info["screenshot"] = png
            if self.artifact_dir is not None:
                self.artifact_dir.mkdir(parents=True, exist_ok=True)
                path = self.artifact_dir / f"screen-{self._shots:04d}.png"
                path.write_bytes(png)
                info["screenshot_path"] = str(path)
            self._shots += 1
        elif page.get("screenshot_error"):
            info["screenshot_error"] = page["screenshot_error"]
        return info
