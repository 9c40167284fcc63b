"""`agentsd tasks`: list suites, import task directories into the store, prove tasks solvable."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from agentsd.cli.common import ConfigFiles, StoreUrl, console, store_url

if TYPE_CHECKING:
    from agentsd.types import Task

app = typer.Typer(help="Task suites: list, import, verify.", no_args_is_help=True)


class ImportFormat(StrEnum):
    HARBOR = "harbor"
    TERMINAL_BENCH = "terminal-bench"
    SWEBENCH = "swebench"
    APEX = "apex"


def _load_many(path: Path, loader: object) -> list[Task]:
    from agentsd.envs.task_formats import TaskFormatError

    if not path.is_dir():
        raise TaskFormatError(f"{path}: not a directory")
    marker = {"harbor": "task.toml", "terminal-bench": "task.yaml"}
    single = any((path / m).exists() for m in marker.values())
    dirs = (
        [path] if single else sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    )
    return [loader(d) for d in dirs]  # type: ignore[operator]


def _table(tasks: list[Task]) -> Table:
    table = Table()
    for col in ("id", "family", "verifier", "workdir", "difficulty", "category", "instruction"):
        table.add_column(col, overflow="fold")
    for t in tasks:
        meta = [str(t.meta.get(k, "")) for k in ("difficulty", "category")]
        table.add_row(
            t.id,
            t.family.value,
            t.verifier.kind,
            t.environment.workdir,
            *meta,
            t.instruction.splitlines()[0][:60],
        )
    return table


@app.command("ls")
def ls(
    suite: Annotated[str, typer.Argument(help="A shipped suite name or a directory of tasks.")] = "terminal",
) -> None:
    """List the tasks of a suite."""
    from agentsd.envs.task_formats import load_suite, suite_names

    tasks = load_suite(suite)
    console.print(_table(tasks))
    console.print(f"{len(tasks)} tasks (shipped suites: {', '.join(suite_names())})")


@app.command("import")
def import_tasks(
    fmt: Annotated[ImportFormat, typer.Argument(help="The format of the task directories.")],
    path: Annotated[
        Path,
        typer.Argument(
            help="A task directory or a directory of them; swebench: a JSONL file; apex: a release directory."
        ),
    ],
    repos: Annotated[
        Path | None,
        typer.Option(help="swebench: directory of repositories (<owner>__<name> clones or .bundle)."),
    ] = None,
    store: StoreUrl = None,
    config: ConfigFiles = None,
) -> None:
    """Validate tasks and store them (by content hash) in the replay store."""
    from agentsd.envs.swe import load_swebench
    from agentsd.envs.task_formats import TaskFormatError, load_harbor_task, load_terminal_bench_task
    from agentsd.store import ReplayStore

    # every task validates before anything is stored
    if fmt is ImportFormat.SWEBENCH:
        if repos is None:
            raise TaskFormatError(
                "swebench import needs --repos DIR (no repository is fetched from the network)"
            )
        tasks = load_swebench(path, repos)
    elif fmt is ImportFormat.APEX:
        from agentsd.envs.apex import load_apex

        tasks, problems = load_apex(path)
        for problem in problems:  # the rest of the release still imports
            console.print(f"[yellow]skipped[/] {problem}", highlight=False)
    else:
        tasks = _load_many(path, load_harbor_task if fmt is ImportFormat.HARBOR else load_terminal_bench_task)
    with ReplayStore(store_url(store, config)) as st:
        hashes = [st.put_task(t) for t in tasks]
    console.print(_table(tasks))
    for task, digest in zip(tasks, hashes, strict=True):
        console.print(f"stored {task.id} as {digest}", highlight=False)


@app.command("verify")
def verify(
    suite: Annotated[str, typer.Argument(help="A shipped suite name or a directory of tasks.")] = "terminal",
    backend: Annotated[str, typer.Option(help="local | docker")] = "local",
    engine: Annotated[str | None, typer.Option(help="Docker engine URL [else $DOCKER_HOST].")] = None,
) -> None:
    """Prove every task solvable: its reference solution must earn 1 and doing nothing 0."""
    from agentsd.config import DockerSandboxConfig, LocalSandboxConfig
    from agentsd.envs import env_class
    from agentsd.envs.oracle import has_reference, run_nothing, run_reference
    from agentsd.envs.task_formats import load_suite
    from agentsd.errors import AgentsdError

    if backend not in ("local", "docker"):
        raise AgentsdError(f"--backend {backend!r}: expected local or docker")
    sandbox: LocalSandboxConfig | DockerSandboxConfig = LocalSandboxConfig()
    if backend == "docker":
        sandbox = DockerSandboxConfig(engines=[engine]) if engine else DockerSandboxConfig()
    tasks = load_suite(suite)
    bad = 0
    for task in tasks:
        env = env_class(task.family)(sandbox=sandbox)
        try:
            solved, info = run_reference(env, task) if has_reference(task) else (None, {})
            nothing, _ = run_nothing(env, task)
            ok = solved == 1.0 and nothing == 0.0
            bad += not ok
            mark = "[green]ok[/]" if ok else "[red]FAIL[/]"
            console.print(f"{mark} {task.id}: reference {solved}, nothing {nothing}", highlight=False)
            if solved is not None and solved < 1.0:
                console.print(f"    {info.get('feedback', '')[:500]}", highlight=False, markup=False)
        finally:
            env.close()
    console.print(f"{len(tasks) - bad}/{len(tasks)} tasks proven solvable")
    if bad:
        raise typer.Exit(1)
