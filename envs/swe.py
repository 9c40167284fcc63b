"""The SWE environment family: a repository at a base commit (agentsd/SWE-v0).

Tools: bash (as in the terminal family), view_file, edit_file (exact string replacement that fails
with a clear observation when the old string is missing or ambiguous) and submit. At submit the
verifier resets the files the task's test patch touches, applies it, and runs the FAIL_TO_PASS and
PASS_TO_PASS tests with pytest (envs/verifiers.py, envs/swe_grading.py); the reward is 1 only when all
of them pass, and the feedback lists the failing tests with their assertion output (bounded). Tasks
come from SWE-bench instances (envs/swebench.py).

Not guaranteed: view_file and edit_file handle UTF-8 text files up to 2 MB only (others read as
missing; bash still reaches them).
"""

from __future__ import annotations

from typing import Any

from agentsd.envs.terminal import TerminalEnv
from agentsd.envs.tools import BASH, EDIT_FILE, SUBMIT, VIEW_FILE, ToolCall

VIEW_LINES = 400


class SWEEnv(TerminalEnv):
    """One repository task per episode, in a fresh sandbox."""

    tools = (BASH, VIEW_FILE, EDIT_FILE, SUBMIT)

    def _act(self, call: ToolCall) -> tuple[str, dict[str, Any]]:
        if call.name == "view_file":
            return self._view(call), {}
        if call.name == "edit_file":
            return self._edit(call), {}
        return super()._act(call)

    def _path(self, call: ToolCall) -> str:
        return self.in_workdir(str(call.arguments["path"]))

    def _read(self, path: str) -> str | None:
        assert self.sandbox is not None
        try:
            return self.sandbox.read_file(path, max_bytes=2_000_000).decode()
        except (OSError, UnicodeDecodeError):
            return None

    def _view(self, call: ToolCall) -> str:
        path = self._path(call)
        text = self._read(path)
        if text is None:
            return f"view_file: {path} does not exist, is not a file, or is not UTF-8 text"
        lines = text.splitlines()
        start = max(int(call.arguments.get("start_line", 1)), 1)
        end = min(int(call.arguments.get("end_line", start + VIEW_LINES - 1)), len(lines))
        shown = "\n".join(f"{n:6d}\t{lines[n - 1]}" for n in range(start, end + 1))
        more = f"\n[lines {end + 1}-{len(lines)} not shown]" if end < len(lines) else ""
        return f"{path} ({len(lines)} lines)\n{shown}{more}"

    def _edit(self, call: ToolCall) -> str:
        assert self.sandbox is not None
        path, old, new = self._path(call), str(call.arguments["old_str"]), str(call.arguments["new_str"])
        text = self._read(path)
        if old == "":
            if text is not None:
                return f"edit_file: {path} exists; give old_str to change it"
            self.sandbox.write_file(path, new.encode())
            return f"Created {path} ({len(new.splitlines())} lines)."
        if text is None:
            return f"edit_file: {path} does not exist, is not a file, or is not UTF-8 text"
        count = text.count(old)
        if count == 0:
            return f"edit_file: old_str was not found in {path}; nothing changed (whitespace matters)"
        if count > 1:
            return (
                f"edit_file: old_str occurs {count} times in {path}; include more context to make it unique"
            )
        self.sandbox.write_file(path, text.replace(old, new, 1).encode())
        first = text[: text.index(old)].count("\n") + 1
        return f"Edited {path}: replaced lines {first}-{first + old.count(chr(10))}."
