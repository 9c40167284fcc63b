"""Grading a rubric task's output: programmatic checks first, then the judge for the rest.

Score (APEX style, weighted): the weight of the positive criteria met, minus the weight of the
negative criteria met (mistakes), over the weight of the positive criteria graded, floored at 0.
Passed: every primary positive criterion met and no primary negative one met. A criterion that could
not be graded (a check error, a judge error, no judge configured) is kept with its error and left
out of both: when that leaves a primary criterion undecided and none failed, `passed` is None.

The judge is a parameter: anything with `grade(JudgeRequest) -> list[JudgeVerdict]` (RubricJudge);
the LLM judge that implements it lives above the environments, in agentsd/eval/judge.py. The request
and verdict types are defined here, with the grading that asks for them.

Not guaranteed: anything about criteria beyond what their check or the judge says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from agentsd.envs.rubric_checks import MAX_OUTPUT_FILES, CheckError, Evidence, run_check
from agentsd.types import Criterion, Task


@dataclass(frozen=True)
class JudgeCriterion:
    id: str
    text: str


@dataclass(frozen=True)
class JudgeRequest:
    task_prompt: str
    output: str
    criteria: tuple[JudgeCriterion, ...]


@dataclass
class JudgeVerdict:
    """One criterion's decision over all votes: met None means it could not be graded."""

    id: str
    met: bool | None
    rationale: str = ""
    votes: list[bool] = field(default_factory=list)
    error: str | None = None


class RubricJudge(Protocol):
    """What grading asks of a judge: one verdict per criterion of the request, in the request's order."""

    def grade(self, request: JudgeRequest) -> list[JudgeVerdict]: ...


class RubricError(ValueError):
    """A task whose rubric cannot be used, naming the task and the field."""


@dataclass
class CriterionResult:
    id: str
    text: str
    weight: float
    primary: bool
    negative: bool
    grader: str  # "check" | "judge" | "none"
    met: bool | None  # None: not graded (see error)
    rationale: str = ""
    error: str | None = None
    votes: list[bool] = field(default_factory=list)

    @property
    def satisfied(self) -> bool | None:
        """Met for a positive criterion, not met for a negative one."""
        return None if self.met is None else self.met != self.negative


@dataclass
class RubricGrade:
    criteria: list[CriterionResult]

    @property
    def score(self) -> float | None:
        positive = [c for c in self.criteria if not c.negative and c.met is not None]
        total = sum(c.weight for c in positive)
        if total <= 0:
            return None
        gained = sum(c.weight for c in positive if c.met)
        penalty = sum(c.weight for c in self.criteria if c.negative and c.met)
        return max(0.0, gained - penalty) / total

    @property
    def passed(self) -> bool | None:
        primary = [c for c in self.criteria if c.primary]
        if any(c.satisfied is False for c in primary):
            return False
        if any(c.satisfied is None for c in primary):
            return None
        return True

    @property
    def errors(self) -> list[CriterionResult]:
        return [c for c in self.criteria if c.error is not None]

    def feedback(self) -> str:
        """What the SDPO teacher reads: each criterion not satisfied, with why."""
        lines = []
        for c in self.criteria:
            if c.satisfied is False:
                kind = "mistake made" if c.negative else "not met"
                lines.append(f"- {kind}: {c.text} ({c.rationale})" if c.rationale else f"- {kind}: {c.text}")
        for c in self.errors:
            lines.append(f"- not graded: {c.text} ({c.error})")
        return "\n".join(lines)

    def as_records(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.criteria]


def criteria_of(task: Task) -> list[Criterion]:
    if not task.verifier.criteria:
        raise RubricError(f"task {task.id}: verifier.criteria is empty; a rubric task needs criteria")
    out = []
    for number, raw in enumerate(task.verifier.criteria):
        try:
            out.append(Criterion.model_validate(raw))
        except ValueError as exc:
            first = str(exc).splitlines()
            raise RubricError(f"task {task.id}: verifier.criteria[{number}]: {' '.join(first[:3])}") from None
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise RubricError(f"task {task.id}: verifier.criteria: duplicate criterion ids")
    return out


def grade(
    task: Task, evidence: Evidence, judge: RubricJudge | None, *, evidence_chars: int = 12_000
) -> RubricGrade:
    criteria = criteria_of(task)
    results: dict[str, CriterionResult] = {}
    for c in criteria:
        base = {"id": c.id, "text": c.text, "weight": c.weight, "primary": c.primary, "negative": c.negative}
        if c.check is None:
            continue
        try:
            outcome = run_check(c.check, evidence)
            results[c.id] = CriterionResult(
                **base, grader="check", met=outcome.met, rationale=outcome.rationale
            )
        except CheckError as exc:
            results[c.id] = CriterionResult(**base, grader="check", met=None, error=str(exc))
    judged = [c for c in criteria if c.check is None]
    if judged and judge is None:
        for c in judged:
            results[c.id] = CriterionResult(
                c.id, c.text, c.weight, c.primary, c.negative, "none", None, error="no judge configured"
            )
    elif judged and judge is not None:
        request = JudgeRequest(
            task.instruction,
            output_text(evidence, evidence_chars),
            tuple(JudgeCriterion(c.id, c.text) for c in judged),
        )
        for c, verdict in zip(judged, judge.grade(request), strict=True):
            results[c.id] = CriterionResult(
                c.id,
                c.text,
                c.weight,
                c.primary,
                c.negative,
                "judge",
                verdict.met,
                rationale=verdict.rationale,
                error=verdict.error,
                votes=verdict.votes,
            )
    return RubricGrade([results[c.id] for c in criteria])


def _file_text(evidence: Evidence, path: str) -> str:
    try:
        text = evidence.text(path)
    except CheckError as exc:
        return f"(unreadable: {exc})"
    return text if text is not None else "(missing)"


def output_text(evidence: Evidence, limit: int) -> str:
    """What the judge sees: the answer, the expected output file when there is one, and the files
    the episode added or changed when the task asks for a document at a path of the agent's choosing."""
    parts = [f"Final answer:\n{evidence.answer.strip() or '(none)'}"]
    if evidence.output_path is not None:
        parts.append(f"Output file {evidence.output_path}:\n{_file_text(evidence, evidence.output_path)}")
    shown = evidence.changed_files[:MAX_OUTPUT_FILES]
    for path in shown:
        parts.append(f"File the agent created or changed, {path}:\n{_file_text(evidence, path)}")
    if len(evidence.changed_files) > len(shown):
        parts.append(f"(and {len(evidence.changed_files) - len(shown)} more changed files, not shown)")
    joined = "\n\n".join(parts)
    if len(joined) > limit:
        half = limit // 2
        joined = joined[:half] + "\n[... middle elided ...]\n" + joined[-half:]
    return joined
