"""`agentsd gap`: the self-teacher's gap on a suite, measured before anything is trained.

SDPO learns only as far as the teacher (the same model, shown hindsight) does better than the
student; the step-0 gap between the two predicts the gain. Two passes of the eval path measure it:

1. the student pass: an eval run (its rewards, pass@1: what `agentsd eval` reports);
2. the teacher pass: the same tasks, the same model and sampling, each prompt holding, where the
   trainer's teacher view puts it, the trajectory-level hindsight the trainer's teacher would get for
   that task (the student's attempt's feedback and the configured privileged sources, a worked
   example before the task's message; agentsd.sdpo.hindsight), graded by
   the same verifiers in the same sandboxes. Its trajectories are marked (PROMPT_CONTEXT_META) and
   never trained on.

Per task: the teacher's reward minus the student's; where the task carries a reference action, the
per-token proxy mean[log pi(a*|x, c) - log pi(a*|x)] on the student's first prompt x. Means with 95%
bootstrap intervals over tasks (differences paired by task) go to `gap.json` and `gap.md` in the
run's directory and to MLflow.

Not guaranteed: the teacher pass sees only the trajectory-level block (the turn-level blocks follow
turns of the student's episode, which the teacher's own episode does not have); with `repeats` > 1
every attempt of a task gets the context built from its first graded student attempt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentsd.config import EvalConfig, GapConfig, HindsightConfig
from agentsd.eval.metrics import Estimate, bootstrap
from agentsd.eval.probes import first_prompts, reference_logprob, reference_text
from agentsd.eval.report import read_results
from agentsd.eval.runner import finish
from agentsd.jobs.collect import run_collect, run_eval
from agentsd.modelcache import resolve_model
from agentsd.policies.hf import HFPolicy
from agentsd.sdpo.hindsight import HindsightBuilder, insert_context, prompt_context
from agentsd.store import ReplayStore
from agentsd.suites import load_tasks
from agentsd.tracking import open_tracker
from agentsd.types import Task, Trajectory

GAP_JSON = "gap.json"
GAP_MD = "gap.md"


def gap_key(sources: Sequence[str]) -> str:
    """The name a set of hindsight sources goes by in run names and records."""
    return "_".join(sources)


@dataclass(frozen=True)
class GapResult:
    """A measured gap: where its files are, its summary and its per-task rows."""

    directory: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]


def teacher_contexts(
    store: ReplayStore, student_run: str, tasks: Sequence[Task], builder: HindsightBuilder
) -> tuple[dict[str, dict[str, list[int]]], dict[str, dict[str, Any]]]:
    """Per task id: the trajectory-level hindsight built from the student's first graded attempt
    (with another solved attempt as `success`, when the run has one) as a prompt context (a layout
    key -> ids), and that attempt's first prompt with its layout (for the reference proxy)."""
    by_id = {t.id: t for t in tasks}
    attempts: dict[str, list[Trajectory]] = {}
    for summary in store.list(id_prefix=f"{student_run}.", limit=None, newest_first=False):
        trajectory = store.get(summary.id, with_turns=False)
        if trajectory.reward is not None and trajectory.task_id in by_id:
            attempts.setdefault(trajectory.task_id, []).append(trajectory)
    contexts: dict[str, dict[str, list[int]]] = {}
    firsts: dict[str, dict[str, Any]] = {}
    for task_id, tried in attempts.items():
        first = tried[0]
        success = next((t for t in tried[1:] if (t.reward or 0.0) >= 1.0), None)
        contexts[task_id] = prompt_context(builder.build(first, success, by_id[task_id]))
        prompts = first_prompts(store.load_tokens([first.id]))
        layout = first.meta.get("layout") or {}
        if first.id in prompts:
            firsts[task_id] = {"prompt": prompts[first.id], "layout": layout}
    return contexts, firsts


def per_task_scores(records: list[dict[str, Any]]) -> dict[str, float]:
    """Task id -> mean score over its graded attempts."""
    scores: dict[str, list[float]] = {}
    for record in records:
        if record.get("score") is not None:
            scores.setdefault(str(record["task_id"]), []).append(float(record["score"]))
    return {task: sum(values) / len(values) for task, values in scores.items()}


def summarize(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Means with bootstrap intervals over tasks; the differences are paired by task."""

    def over(key: str) -> Estimate:
        return bootstrap([r[key] for r in rows if r.get(key) is not None], seed=seed)

    paired = [r for r in rows if r.get("student") is not None and r.get("teacher") is not None]
    estimates = {
        "student": bootstrap([r["student"] for r in paired], seed=seed),
        "teacher": bootstrap([r["teacher"] for r in paired], seed=seed),
        "gap": over("gap"),
        "reference_gap": over("reference_gap"),
        "reference_student": over("reference_student"),
        "reference_teacher": over("reference_teacher"),
    }
    out: dict[str, Any] = {
        key: {"value": e.value, "low": e.low, "high": e.high, "tasks": e.tasks}
        for key, e in estimates.items()
    }
    out["tasks"] = len(rows)
    out["tasks_with_context"] = sum(1 for r in rows if r["context_tokens"])
    return out


def measure_gap(
    cfg: EvalConfig,
    hindsight: HindsightConfig,
    student_run: str,
    tasks: Sequence[Task],
    *,
    name: str,
    model: Any = None,
) -> GapResult:
    """The teacher pass of the student eval run `student_run` (in `cfg.store`), named `name`, and
    the gap's rows and summary, written into `cfg.run_dir / name`. `model`: an HFPolicy holding the
    evaluated weights for the reference proxy (None: loaded here)."""
    from transformers import AutoTokenizer  # heavy: only once a gap is measured

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model.name))
    builder = HindsightBuilder(tokenizer, hindsight.budget_tokens, hindsight.sources)
    with ReplayStore(cfg.store.url) as store:
        contexts, firsts = teacher_contexts(store, student_run, tasks, builder)
    teacher_cfg = cfg.model_copy(update={"name": name})
    run_collect(teacher_cfg, kind="eval", prompt_context=lambda task: contexts.get(task.id, {}))
    finish(teacher_cfg, name, list(tasks))
    student = per_task_scores(read_results(cfg.run_dir / student_run))
    teacher = per_task_scores(read_results(cfg.run_dir / name))
    probe = model if model is not None else HFPolicy(cfg.model)
    rows = []
    for task in tasks:
        reference = reference_text(task.reference)
        first = firsts.get(task.id)
        row: dict[str, Any] = {
            "task_id": task.id,
            "student": student.get(task.id),
            "teacher": teacher.get(task.id),
            "context_tokens": sum(len(ids) for ids in contexts.get(task.id, {}).values()),
        }
        if row["student"] is not None and row["teacher"] is not None:
            row["gap"] = row["teacher"] - row["student"]
        if reference is not None and first is not None:
            plain = reference_logprob(probe.model, probe.tokenizer, first["prompt"], reference)
            shown = insert_context(first["prompt"], contexts.get(task.id, {}), first["layout"])
            hinted = reference_logprob(probe.model, probe.tokenizer, shown, reference)
            row |= {"reference_student": plain, "reference_teacher": hinted, "reference_gap": hinted - plain}
        rows.append(row)
    summary = {
        "suite": cfg.suite,
        "model": cfg.model.name,
        "version": getattr(cfg, "version", None) or 0,
        "sources": list(hindsight.sources),
        "student_run": student_run,
        "teacher_run": name,
        **summarize(rows, cfg.seed),
    }
    directory = cfg.run_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GAP_JSON).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    (directory / GAP_MD).write_text(gap_markdown(summary, rows))
    with open_tracker(cfg.tracking, cfg.run_dir, f"gap-{name}") as tracker:
        tracker.log_params(
            {"suite": cfg.suite, "model": cfg.model.name, "sources": ",".join(hindsight.sources)}
        )
        tracker.log_metrics(
            {
                f"gap/{key}{suffix}": float(summary[key][part])
                for key in ("student", "teacher", "gap", "reference_gap")
                for suffix, part in (("", "value"), ("_ci_low", "low"), ("_ci_high", "high"))
                if summary[key]["tasks"]
            }
        )
        tracker.log_artifact(directory / GAP_JSON, "gap")
        tracker.log_artifact(directory / GAP_MD, "gap")
    return GapResult(directory, summary, rows)


def run_gap(cfg: GapConfig) -> GapResult:
    """`agentsd gap`: the student pass (an eval run, resumed or reused when `name` has one), then
    the teacher pass with the configured sources and the gap."""
    base = cfg.name or cfg.run_dir.name or "gap"
    student_cfg = EvalConfig(**cfg.model_dump(exclude={"hindsight", "name"}), name=f"{base}-student")
    run_eval(student_cfg, resume=f"{base}-student" if _has_run(student_cfg, f"{base}-student") else None)
    tasks = load_tasks(cfg.suite, cfg.tasks_url)[: cfg.max_tasks]
    teacher = f"{base}-teacher-{gap_key(cfg.hindsight.sources)}"  # one student pass serves every context
    return measure_gap(student_cfg, cfg.hindsight, f"{base}-student", tasks, name=teacher)


def _has_run(cfg: EvalConfig, run_name: str) -> bool:
    with ReplayStore(cfg.store.url) as store:
        return store.run_plan(run_name) is not None


def _cell(estimate: dict[str, Any], signed: bool = False) -> str:
    if not estimate["tasks"]:
        return "n/a"
    form = "{:+.3f}" if signed else "{:.3f}"
    return (
        f"{form.format(estimate['value'])} [{form.format(estimate['low'])}, {form.format(estimate['high'])}]"
    )


def gap_markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The gap as a short markdown report: the summary table, then one row per task."""
    lines = [
        f"# Self-teacher gap: {summary['suite']} ({summary['model']}, version {summary['version']})",
        "",
        f"Teacher context: {', '.join(summary['sources'])} "
        f"({summary['tasks_with_context']} of {summary['tasks']} tasks had any). Student run "
        f"`{summary['student_run']}`, teacher run `{summary['teacher_run']}`. 95% bootstrap intervals "
        "over tasks; differences paired by task.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| student mean reward | {_cell(summary['student'])} |",
        f"| teacher mean reward | {_cell(summary['teacher'])} |",
        f"| teacher - student reward | {_cell(summary['gap'], signed=True)} |",
        f"| reference action log-prob per token, student | {_cell(summary['reference_student'])} |",
        f"| reference action log-prob per token, teacher | {_cell(summary['reference_teacher'])} |",
        f"| teacher - student log-prob per token | {_cell(summary['reference_gap'], signed=True)} |",
        "",
        "| task | student | teacher | gap | reference gap | context tokens |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(value: Any, signed: bool = False) -> str:
        return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")

    for r in rows:
        lines.append(
            f"| {r['task_id']} | {fmt(r['student'])} | {fmt(r['teacher'])} | {fmt(r.get('gap'), True)} | "
            f"{fmt(r.get('reference_gap'), True)} | {r['context_tokens']} |"
        )
    return "\n".join(lines) + "\n"
