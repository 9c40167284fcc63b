"""`agentsd eval`: a policy on a task suite -> graded results, metrics, reports; or compare two runs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer

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
    from agentsd.config import EvalConfig, load_config
    from agentsd.errors import ConfigError
    from agentsd.store import ReplayStore

    if compare is not None:
        _compare(compare, out)
        return
    from agentsd.cli.collect import run_collect
    from agentsd.eval.report import graded_line, read_results
    from agentsd.eval.runner import finish
    from agentsd.suites import load_tasks

    cfg = load_config(EvalConfig, config or [], overrides or [])
    if store:
        cfg.store.url = store
    if resume is not None:
        if cfg.name is not None and cfg.name != resume:
            raise ConfigError(f"--resume {resume} and name={cfg.name} name two different eval runs")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", resume):
            raise ConfigError(f"--resume {resume!r}: a run name has only letters, digits, '_' and '-'")
        with ReplayStore(cfg.store.url) as replay:
            if replay.run_plan(resume) is None and not replay.list(id_prefix=f"{resume}.", limit=1):
                raise ConfigError(f"--resume {resume}: no eval run of that name in {cfg.store.url}")
        cfg.name = resume
    elif cfg.name is None:  # a new run every time unless named: never another run's trajectories
        cfg.name = (
            f"{re.sub(r'[^A-Za-z0-9_-]', '-', cfg.run_dir.name) or 'eval'}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    run_name = run_collect(cfg, kind="eval", new=resume is None)
    tasks = load_tasks(cfg.suite, cfg.tasks_url)[: cfg.max_tasks]
    directory, metrics = finish(cfg, run_name, tasks)
    if metrics.runs and metrics.ungraded == metrics.runs:
        records = read_results(directory)
        console.print(graded_line(records, metrics).replace("**", ""), style="bold red", markup=False)
    console.print(f"mean score {metrics.mean_score}   pass@1 {metrics.pass_at[1]}", highlight=False)
    for domain, sub in metrics.by_domain.items():
        console.print(f"  {domain}: mean score {sub.mean_score}   pass@1 {sub.pass_at[1]}", highlight=False)
    console.print(f"results and reports in {directory}", highlight=False)


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
        f"difference over {result.common_tasks} common tasks: {result.delta}; report {written[0]}",
        highlight=False,
    )
