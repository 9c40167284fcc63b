"""Eval results on disk: results JSONL, a markdown and an HTML report with plots, comparisons.

An eval run directory holds `results.jsonl` (one graded run per line), `report.md`, `report.html`
(plots embedded as PNG) and the plots themselves. `compare` reads two such directories (or two
results files) and reports both suites' metrics, the per-task mean-score deltas and a paired
bootstrap interval of the difference over the tasks both ran.

Not guaranteed: comparisons of runs over different suites (only the tasks in common are compared).
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentsd.eval.metrics import Estimate, RunResult, SuiteMetrics, bootstrap, suite_metrics, task_stats
from agentsd.plotting import pyplot

RESULTS = "results.jsonl"


class ResultsError(ValueError):
    """A results file that cannot be read, naming the file and the line."""


def write_results(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    tmp.replace(path)


def read_results(where: Path) -> list[dict[str, Any]]:
    path = where / RESULTS if where.is_dir() else where
    if not path.is_file():
        raise ResultsError(f"{path}: no eval results here (expected {RESULTS} or an eval run directory)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}:{number}: not JSON ({exc.msg})") from None
        for key in ("task_id", "score", "passed"):
            if key not in record:
                raise ResultsError(f"{path}:{number}: missing field {key}")
        records.append(record)
    return records


def as_runs(records: list[dict[str, Any]]) -> list[RunResult]:
    return [
        RunResult(r["task_id"], str(r.get("domain") or "unknown"), r["score"], r["passed"]) for r in records
    ]


# ---------------------------------------------------------------------------------------- plots


def plot_scores(records: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    scores = [r["score"] for r in records if r["score"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    try:
        ax.hist(scores, bins=[i / 10 for i in range(11)], edgecolor="black")
        ax.set_xlabel("score (weighted fraction of criteria met)")
        ax.set_ylabel("runs")
        ax.set_title(
            f"score distribution ({len(scores)} graded runs)" if scores else "no run was graded: no scores"
        )
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def plot_tasks(runs: dict[str, list[RunResult]], path: Path) -> Path:
    """Per-task mean score bars, one series per run (label -> results)."""
    plt = pyplot()
    per_run = {label: {s.task_id: s.mean_score for s in task_stats(rs, [1])} for label, rs in runs.items()}
    tasks = sorted({t for scores in per_run.values() for t in scores})
    width = 0.8 / max(len(per_run), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(tasks) + 2), 3.5), dpi=100)
    try:
        for i, (label, scores) in enumerate(per_run.items()):
            xs = [j + i * width for j in range(len(tasks))]
            ax.bar(xs, [scores.get(t, 0.0) for t in tasks], width=width, label=label)
        ax.set_xticks([j + width * (len(per_run) - 1) / 2 for j in range(len(tasks))])
        ax.set_xticklabels(tasks, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("mean score")
        if len(per_run) > 1:
            ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- reports


def _metric_rows(metrics: SuiteMetrics) -> list[tuple[str, Estimate]]:
    rows = [("mean score", metrics.mean_score)]
    rows += [(f"pass@{k}", e) for k, e in sorted(metrics.pass_at.items())]
    rows += [(f"pass^{k}", e) for k, e in sorted(metrics.pass_all.items())]
    return rows


def ungraded_reasons(records: list[dict[str, Any]]) -> Counter[str]:
    """Why runs were not graded, most common first: the run's error (a verifier that failed or could
    not run), else the errors of its criteria (no judge configured, a judge or check error)."""
    reasons: Counter[str] = Counter()
    for r in records:
        if r.get("score") is not None:
            continue
        errors = sorted({str(c["error"]) for c in r.get("criteria") or [] if c.get("error")})
        reason = r.get("error") or "; ".join(errors) or f"termination {r.get('termination')}"
        reasons[str(reason).splitlines()[0][:300]] += 1
    return reasons


def graded_line(records: list[dict[str, Any]], metrics: SuiteMetrics) -> str:
    """The headline: how many runs were graded, and when none was, why, in the first words."""
    graded = metrics.runs - metrics.ungraded
    head = f"{metrics.tasks} tasks, {metrics.runs} runs, {graded} graded"
    if graded == 0 and metrics.runs:
        reasons = "; ".join(f"{n} x {why}" for why, n in ungraded_reasons(records).most_common(3))
        return f"**NOTHING WAS GRADED**: {head}: {reasons}. The scores below are not measurements."
    return f"{head} ({metrics.ungraded} not graded)."


def markdown_report(title: str, records: list[dict[str, Any]], metrics: SuiteMetrics) -> str:
    lines = [f"# {title}", "", graded_line(records, metrics), ""]
    lines += ["| metric | value | 95% CI |", "|---|---|---|"]
    lines += [
        f"| {name} | {e.value:.3f} | [{e.low:.3f}, {e.high:.3f}] |" for name, e in _metric_rows(metrics)
    ]
    if metrics.by_domain:
        lines += ["", "## By domain", "", "| domain | tasks | mean score | pass@1 |", "|---|---|---|---|"]
        for domain, sub in metrics.by_domain.items():
            lines.append(f"| {domain} | {sub.tasks} | {sub.mean_score} | {sub.pass_at[1]} |")
    lines += ["", "## By task", "", "| task | domain | runs | mean score | pass@1 |", "|---|---|---|---|---|"]
    for s in task_stats(as_runs(records), [1]):
        pass1 = s.pass_at.get(1, float("nan"))
        lines.append(f"| {s.task_id} | {s.domain} | {s.runs} | {s.mean_score:.3f} | {pass1:.3f} |")
    missed: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in records:
        for c in r.get("criteria") or []:
            if c.get("error"):
                errors[f"{r['task_id']}/{c['id']}: {c['error']}"] += 1
            elif c.get("met") is not None and c["met"] == c.get("negative", False):
                missed[f"{r['task_id']}/{c['id']}: {c['text']}"] += 1
    if missed:
        lines += ["", "## Criteria most often not satisfied", ""]
        lines += [f"- {n} x {text}" for text, n in missed.most_common(15)]
    if errors:
        lines += ["", "## Grader errors (not counted as met or not met)", ""]
        lines += [f"- {n} x {text}" for text, n in errors.most_common(15)]
    lines += [
        "",
        "## Runs",
        "",
        "| trajectory | task | termination | score | not graded because |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        score = "-" if r.get("score") is None else f"{r['score']:.3f}"
        why = "" if r.get("score") is not None else next(iter(ungraded_reasons([r])), "")
        why = why.replace("|", "\\|")
        lines.append(
            f"| {r.get('trajectory_id', '-')} | {r['task_id']} | {r.get('termination')} | {score} | {why} |"
        )
    return "\n".join(lines) + "\n"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def html_report(markdown: str, plots: list[Path]) -> str:
    """The markdown report as simple HTML (tables and lists), with the plots embedded."""
    body, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}"
    )
    figures = "".join(f"<figure>{_img(p)}</figure>" for p in plots)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>"
        f"{''.join(body)}{figures}</body></html>\n"
    )


def write_report(
    directory: Path, title: str, records: list[dict[str, Any]], metrics: SuiteMetrics
) -> list[Path]:
    """report.md, report.html and the plots in `directory`; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_scores(records, directory / "scores.png"),
        plot_tasks({title: as_runs(records)}, directory / "tasks.png"),
    ]
    markdown = markdown_report(title, records, metrics)
    (directory / "report.md").write_text(markdown)
    (directory / "report.html").write_text(html_report(markdown, plots))
    return [directory / "report.md", directory / "report.html", *plots]


# ---------------------------------------------------------------------------------------- compare


@dataclass
class Comparison:
    a: SuiteMetrics
    b: SuiteMetrics
    common_tasks: int
    delta: Estimate  # mean score of B minus A over the common tasks, paired bootstrap
    per_task: list[tuple[str, float, float]]  # task, mean score A, mean score B


def compare(
    a_records: list[dict[str, Any]], b_records: list[dict[str, Any]], ks: list[int], seed: int = 0
) -> Comparison:
    a_runs, b_runs = as_runs(a_records), as_runs(b_records)
    a_stats = {s.task_id: s.mean_score for s in task_stats(a_runs, [1])}
    b_stats = {s.task_id: s.mean_score for s in task_stats(b_runs, [1])}
    common = sorted(
        t for t in set(a_stats) & set(b_stats) if a_stats[t] == a_stats[t] and b_stats[t] == b_stats[t]
    )
    delta = bootstrap([b_stats[t] - a_stats[t] for t in common], seed=seed)  # paired: per-task deltas
    return Comparison(
        suite_metrics(a_runs, ks, seed=seed),
        suite_metrics(b_runs, ks, seed=seed),
        len(common),
        delta,
        [(t, a_stats[t], b_stats[t]) for t in common],
    )


def write_comparison(
    directory: Path, names: tuple[str, str], a: list[dict[str, Any]], b: list[dict[str, Any]], ks: list[int]
) -> tuple[Comparison, list[Path]]:
    result = compare(a, b, ks)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"# {names[0]} vs {names[1]}", "", f"{result.common_tasks} tasks in common.", ""]
    lines += [f"| metric | {names[0]} | {names[1]} |", "|---|---|---|"]
    for (label, ea), (_, eb) in zip(_metric_rows(result.a), _metric_rows(result.b), strict=False):
        lines.append(f"| {label} | {ea} | {eb} |")
    lines += ["", f"Mean score difference ({names[1]} - {names[0]}, common tasks): {result.delta}", ""]
    lines += ["| task | " + " | ".join(names) + " | delta |", "|---|---|---|---|"]
    for task, sa, sb in sorted(result.per_task, key=lambda x: x[2] - x[1]):
        lines.append(f"| {task} | {sa:.3f} | {sb:.3f} | {sb - sa:+.3f} |")
    markdown = "\n".join(lines) + "\n"
    plot = plot_tasks({names[0]: as_runs(a), names[1]: as_runs(b)}, directory / "compare_tasks.png")
    (directory / "compare.md").write_text(markdown)
    (directory / "compare.html").write_text(html_report(markdown, [plot]))
    return result, [directory / "compare.md", directory / "compare.html", plot]
