"""`agentsd eval`: a policy on a task suite -> graded results, metrics, reports; or compare two runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentsd.cli.collect import print_collected
from agentsd.cli.common import ConfigFiles, StoreUrl, console


def eval_(
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.")] = None,
    config: ConfigFiles = None,
    store: StoreUrl = None,
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--compare", help="Compare two eval runs (run directories or results.jsonl files)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="--compare: where the comparison report goes.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue the eval run NAME (its plan must match); default: a new run."
        ),
    ] = None,
) -> None:
    """Run the suite through the collect path, grade every run, write results and reports (MLflow too)."""
    if compare is not None:
        _compare(compare, out)
        return
    from agentsd.config import EvalConfig, load_config
    from agentsd.eval.report import graded_line, read_results
    from agentsd.jobs.collect import run_eval

    cfg = load_config(EvalConfig, config or [], overrides or [])
    if store:
        cfg.store.url = store
    result = run_eval(cfg, resume=resume)
    print_collected(result.collected)
    metrics = result.metrics
    if metrics.runs and metrics.ungraded == metrics.runs:
        records = read_results(result.directory)
        console.print(graded_line(records, metrics).replace("**", ""), style="bold red", markup=False)
    console.print(f"mean score {metrics.mean_score}   pass@1 {metrics.pass_at[1]}", highlight=False)
    for domain, sub in metrics.by_domain.items():
        console.print(f"  {domain}: mean score {sub.mean_score}   pass@1 {sub.pass_at[1]}", highlight=False)
    console.print(f"results and reports in {result.directory}", highlight=False)


def _compare(runs: tuple[Path, Path], out: Path | None) -> None:
    from agentsd.eval.report import read_results, write_comparison

    a, b = (read_results(p) for p in runs)
    names = (
        runs[0].stem if runs[0].is_file() else runs[0].name,
        runs[1].stem if runs[1].is_file() else runs[1].name,
    )
    if names[0] == names[1]:
        names = (f"A:{names[0]}", f"B:{names[1]}")
    directory = out or Path("runs/eval/compare")
    result, written = write_comparison(directory, names, a, b, [1])
    console.print(
        f"{names[0]}: mean score {result.a.mean_score}, pass@1 {result.a.pass_at[1]}", highlight=False
    )
    console.print(
        f"{names[1]}: mean score {result.b.mean_score}, pass@1 {result.b.pass_at[1]}", highlight=False
    )
    console.print(
        f"difference over {result.common_tasks} common task{'' if result.common_tasks == 1 else 's'}: "
        f"{result.delta}; report {written[0]}",
        highlight=False,
    )
