"""The rubric environment family (agentsd/Rubric-v0): a professional task in a world of files.

The terminal family's shell, plus `read_document` / `write_document` for the document types worlds
hold (xlsx, docx, csv, json, markdown; parsed on the host, envs/documents.py), and `submit(answer)`.
The world's files (text in `world.files`, binary ones base64 in `world.blobs`) are laid into the
workdir. At submit the rubric is graded (envs/rubric_grading.py): programmatic checks read the answer
and the sandbox's files, the judge (if the env was given one) decides the other criteria. The reward
is the weighted score; `info["grading"]` holds every criterion's verdict, rationale or grader error;
`info["feedback"]` lists the criteria not satisfied, which is what SDPO's teacher reads.

`task.meta["expected_output"]`: {"type": "console"} (the answer is the output), {"type": "file",
"path": ...} (a file the agent must write; the judge sees it rendered as text) or {"type": "files"}
(a new or edited document at a path the agent chooses: the judge sees every file of the workdir the
episode added or changed, found by comparing snapshots taken after setup and at submit).

Not guaranteed: grading when no criterion could be graded (termination env_error, reward 0).
"""

from __future__ import annotations

from typing import Any

from agentsd.envs.documents import DocumentError, build, render
from agentsd.envs.rubric_checks import Evidence
from agentsd.envs.rubric_grading import RubricError, RubricJudge, grade
from agentsd.envs.spaces import fit_text
from agentsd.envs.terminal import NEXT_STATE_CHARS, TerminalEnv
from agentsd.envs.tools import BASH, READ_DOCUMENT, SUBMIT, WRITE_DOCUMENT, ToolCall
from agentsd.sandboxes.base import Snapshot, diff
from agentsd.types import Task, Termination

MAX_DOCUMENT_BYTES = 20_000_000


def expected_output_path(task: Task) -> str | None:
    expected = task.meta.get("expected_output") or {}
    if isinstance(expected, dict) and expected.get("type") == "file" and expected.get("path"):
        return str(expected["path"])
    return None


def wants_changed_files(task: Task) -> bool:
    expected = task.meta.get("expected_output") or {}
    return isinstance(expected, dict) and expected.get("type") == "files"


class RubricEnv(TerminalEnv):
    """One rubric task per episode, in a fresh sandbox."""

    tools = (BASH, READ_DOCUMENT, WRITE_DOCUMENT, SUBMIT)

    def __init__(self, *args: Any, judge: RubricJudge | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.judge = judge  # e.g. agentsd.eval.judge.Judge; None: judge criteria stay ungraded
        self._setup_snapshot: Snapshot | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        observation, info = super().reset(seed=seed, options=options)
        assert self.task is not None and self.sandbox is not None
        self._setup_snapshot = (
            self.sandbox.snapshot(self.task.environment.workdir) if wants_changed_files(self.task) else None
        )
        return observation, info

    def changed_files(self) -> tuple[str, ...]:
        """Workdir files the episode added or changed since setup (a "files" output), sorted."""
        if self._setup_snapshot is None or self.sandbox is None or self.task is None:
            return ()
        now = self.sandbox.snapshot(self.task.environment.workdir)
        changes = diff(self._setup_snapshot, now)
        return tuple(
            sorted(p for p in [*changes.added, *changes.modified] if now.files[p].digest[:5] != "link:")
        )

    def read_bytes(self, path: str) -> bytes | None:
        """A file of the sandbox (workdir-relative or absolute), None when it is not there."""
        assert self.sandbox is not None
        try:
            return self.sandbox.read_file(self.in_workdir(path), max_bytes=MAX_DOCUMENT_BYTES)
        except (OSError, ValueError):
            return None

    def _act(self, call: ToolCall) -> tuple[str, dict[str, Any]]:
        if call.name == "read_document":
            return self._read_document(call), {}
        if call.name == "write_document":
            return self._write_document(call), {}
        return super()._act(call)

    def _read_document(self, call: ToolCall) -> str:
        path = str(call.arguments["path"])
        data = self.read_bytes(path)
        if data is None:
            return f"read_document: {path} does not exist or is not a file"
        sheet = call.arguments.get("sheet")
        try:
            return render(path, data, sheet=str(sheet) if sheet else None)
        except DocumentError as exc:
            return f"read_document: {path}: {exc}"

    def _write_document(self, call: ToolCall) -> str:
        assert self.sandbox is not None
        path, content = str(call.arguments["path"]), str(call.arguments["content"])
        try:
            data = build(path, content)
        except DocumentError as exc:
            return f"write_document: {path}: {exc}"
        self.sandbox.write_file(self.in_workdir(path), data)
        return f"Wrote {path} ({len(data)} bytes)."

    def _submit(self, call: ToolCall) -> tuple[str, float, bool, bool, dict[str, Any]]:
        assert self.task is not None
        answer = str(call.arguments.get("answer") or "")
        self._over = True
        self.stop_agent()
        evidence = Evidence(answer, self.read_bytes, expected_output_path(self.task), self.changed_files())
        try:
            result = grade(self.task, evidence, self.judge)
        except RubricError as exc:
            return self._graded(call, answer, 0.0, Termination.ENV_ERROR, str(exc), {}, [], None)
        score = result.score
        if score is None:
            reason = "no criterion could be graded:\n" + result.feedback()
            return self._graded(
                call, answer, 0.0, Termination.ENV_ERROR, reason, {}, result.as_records(), None
            )
        components = {c.id: float(bool(c.satisfied)) for c in result.criteria if c.satisfied is not None}
        return self._graded(
            call,
            answer,
            score,
            Termination.DONE,
            result.feedback(),
            components,
            result.as_records(),
            result.passed,
        )

    def _graded(
        self,
        call: ToolCall,
        answer: str,
        reward: float,
        termination: Termination,
        feedback: str,
        components: dict[str, float],
        grading: list[dict[str, Any]],
        passed: bool | None,
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        observation = f"Submitted. Score: {reward:.3g}" + (f"\n{feedback}" if feedback else "")
        info = {
            "action": call.as_action(),
            "answer": answer,
            "termination": termination.value,
            "feedback": feedback,
            "reward_components": components,
            "grading": grading,
            "passed": passed,
            "next_state": fit_text(observation, NEXT_STATE_CHARS),
        }
        return self._obs(observation), reward, True, False, info
