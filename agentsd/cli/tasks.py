"""`agentsd tasks`: list suites, import task directories into the store, prove tasks solvable."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentsd.cli.common import (
    ConfigFiles,
    JsonLines,
    StoreUrl,
    console,
    err_console,
    print_json_lines,
    store_url,
)

if TYPE_CHECKING:
    from agentsd.envs.terminal import TerminalEnv
    from agentsd.types import Task

app = typer.Typer(help="Task suites: list, import, verify.", no_args_is_help=True)


class ImportFormat(StrEnum):
    HARBOR = "harbor"
    TERMINAL_BENCH = "terminal-bench"
    SWEBENCH = "swebench"
    APEX = "apex"


def _summary(what: str, ok: int, failed: list[str], skipped: list[str] | None = None) -> None:
    """The closing summary of a tasks command: counts, then every failure and skip with its reason."""
    parts = [f"{ok} ok", f"{len(failed)} failed"] + (
        [f"{len(skipped)} skipped"] if skipped is not None else []
    )
    console.print(f"{what}: {', '.join(parts)}", highlight=False)
    for line in failed:
        console.print(f"  [red]failed[/] {escape(line)}", highlight=False)
    for line in skipped or []:
        console.print(f"  [yellow]skipped[/] {escape(line)}", highlight=False)


def _table(tasks: list[Task], hashes: list[str] | None = None) -> Table:
    table = Table()
    columns = ["id", "family", "verifier", "workdir", "difficulty", "category", "instruction"]
    for col in [*columns, *(["hash"] if hashes is not None else [])]:
        table.add_column(col, overflow="fold")
    for i, t in enumerate(tasks):
        meta = [str(t.meta.get(k, "")) for k in ("difficulty", "category")]
        row = [t.id, t.family.value, t.verifier.kind, t.environment.workdir, *meta]
        row += [t.instruction.splitlines()[0][:60], *([hashes[i]] if hashes is not None else [])]
        table.add_row(*map(escape, row))  # task files are anyone's text: `[/x]` is not markup here
    return table


def _listed(task: Task, digest: str) -> dict[str, Any]:
    """What `tasks ls --json` says of a task (the columns of the table, whole)."""
    return {
        "id": task.id,
        "family": task.family.value,
        "verifier": task.verifier.kind,
        "workdir": task.environment.workdir,
        "built": task.environment.build is not None,
        "difficulty": task.meta.get("difficulty"),
        "category": task.meta.get("category"),
        "instruction": task.instruction,
        "hash": digest,
    }


@app.command("ls")
def ls(
    suite: Annotated[
        str | None,
        typer.Argument(
            help="A shipped suite name, a task directory or a directory of them [terminal]; "
            "--from-store: an id glob [*]."
        ),
    ] = None,
    from_store: Annotated[
        bool,
        typer.Option(
            "--from-store", help="List the tasks imported into the store instead (SUITE: an id glob)."
        ),
    ] = False,
    store: StoreUrl = None,
    config: ConfigFiles = None,
    as_json: JsonLines = False,
) -> None:
    """List the tasks of a suite, or those imported into the store (--from-store)."""
    from agentsd.envs.task_formats import read_suite, suite_names

    if from_store:
        from agentsd.store import ReplayStore

        url = store_url(store, config)
        with ReplayStore(url) as st:
            chosen = st.select_tasks(suite or "*")
        if as_json:
            print_json_lines(_listed(task, digest) for digest, task in chosen)
            return
        console.print(_table([task for _, task in chosen], [digest for digest, _ in chosen]))
        console.print(
            f"{len(chosen)} tasks in {escape(url)} (collect or evaluate them with suite=store:GLOB)"
        )
        return
    suite = suite or "terminal"
    tasks, problems = read_suite(suite)
    if as_json:
        print_json_lines(_listed(task, task.content_hash()) for task in tasks)
        for problem in problems:
            err_console.print(f"[red]failed[/] {escape(problem)}", highlight=False)
        raise typer.Exit(1 if problems else 0)
    console.print(_table(tasks))
    _summary(f"{len(tasks) + len(problems)} tasks", len(tasks), problems)
    console.print(f"shipped suites: {', '.join(suite_names())}", highlight=False)
    if problems:
        raise typer.Exit(1)


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
    """Validate tasks and store them (by content hash) in the replay store; a task that does not
    validate is skipped with its reason, the others are stored."""
    from agentsd.envs.common import TaskFormatError
    from agentsd.envs.harbor import load_harbor_task, load_task_dirs, load_terminal_bench_task
    from agentsd.envs.swebench import load_swebench
    from agentsd.store import ReplayStore

    problems: list[str] = []
    if fmt is ImportFormat.SWEBENCH:
        if repos is None:
            raise TaskFormatError(
                "swebench import needs --repos DIR (no repository is fetched from the network)"
            )
        tasks = load_swebench(path, repos)
    elif fmt is ImportFormat.APEX:
        from agentsd.envs.apex import load_apex

        tasks, problems = load_apex(path)
    else:
        loader = load_harbor_task if fmt is ImportFormat.HARBOR else load_terminal_bench_task
        tasks, problems = load_task_dirs(path, loader)
    with ReplayStore(store_url(store, config)) as st:
        hashes = [st.put_task(t) for t in tasks]
    console.print(_table(tasks, hashes))
    for task, digest in zip(tasks, hashes, strict=True):
        console.print(f"stored {escape(task.id)} as {digest}", highlight=False)
    _summary("import", len(tasks), [], problems)
    if problems and not tasks:
        raise typer.Exit(1)


@app.command("verify")
def verify(
    suite: Annotated[
        str, typer.Argument(help="A shipped suite name, a task directory or a directory of them.")
    ] = "terminal",
    backend: Annotated[str, typer.Option(help="local | docker")] = "local",
    engine: Annotated[
        list[str] | None, typer.Option(help="Docker engine URL; repeat for a fleet [else $DOCKER_HOST].")
    ] = None,
    judge_url: Annotated[
        str | None,
        typer.Option(help="Rubric tasks: an OpenAI-compatible judge endpoint for criteria without a check."),
    ] = None,
    judge_model: Annotated[str, typer.Option(help="The judge's model name.")] = "judge",
) -> None:
    """Prove every task solvable: its reference solution must earn 1 and doing nothing 0. Every task
    is tried; the summary lists each failure with its reason. Rubric criteria without a check need a
    judge (--judge-url): without one they stay ungraded and the task fails to verify, saying so."""
    from agentsd.config import DockerSandboxConfig, LocalSandboxConfig
    from agentsd.envs import env_class
    from agentsd.envs.rubric import RubricEnv
    from agentsd.envs.task_formats import read_suite
    from agentsd.errors import AgentsdError
    from agentsd.sandboxes.fleet import SandboxFleet
    from agentsd.types import Family

    if backend not in ("local", "docker"):
        raise AgentsdError(f"--backend {backend!r}: expected local or docker")
    sandbox: LocalSandboxConfig | DockerSandboxConfig = LocalSandboxConfig()
    if backend == "docker":
        sandbox = DockerSandboxConfig(engines=engine) if engine else DockerSandboxConfig()
    judge = None
    if judge_url:
        from agentsd.config import JudgeConfig
        from agentsd.eval.judge import make_judge

        judge = make_judge(JudgeConfig(base_url=judge_url, model=judge_model))
    tasks, failed = read_suite(suite)
    skipped: list[str] = []
    ok = 0
    fleet = SandboxFleet(sandbox)  # reaps what a dead run left; takes out engines that do not answer
    for task in tasks:
        env = (
            RubricEnv(fleet=fleet, judge=judge)
            if task.family is Family.RUBRIC
            else env_class(task.family)(fleet=fleet)
        )
        try:
            problem, note = _prove(task, env)
        except (AgentsdError, ValueError, OSError) as exc:  # setup failed, sandbox refused ...
            problem, note = f"{type(exc).__name__}: {exc}", None
        finally:
            env.close()
        if problem is None:
            ok += note is None
            if note is not None:
                skipped.append(f"{task.id}: {note}")
            console.print(
                f"[green]ok[/] {escape(task.id)}" + (f" ({escape(note)})" if note else ""), highlight=False
            )
        else:
            failed.append(f"{task.id}: {problem}")
            console.print(f"[red]FAIL[/] {escape(task.id)}: {escape(problem[:500])}", highlight=False)
    fleet.close()
    _summary(f"{len(tasks)} tasks verified", ok, failed, skipped)
    if failed:
        raise typer.Exit(1)


def _prove(task: Task, env: TerminalEnv) -> tuple[str | None, str | None]:
    """(what is wrong, a note): the reference must earn 1 and doing nothing 0; a task without a
    reference solution is proven only half (its note says so)."""
    from agentsd.envs.oracle import has_reference, run_nothing, run_reference

    nothing, nothing_info = run_nothing(env, task)
    if nothing_info.get("termination") == "env_error":
        return (
            f"the verifier failed (env_error): {str(nothing_info.get('feedback', ''))[:500]}",
            None,
        )
    if nothing != 0.0:
        return f"doing nothing earns {nothing}, expected 0", None
    if not has_reference(task):
        return None, "no reference solution: only 'doing nothing earns 0' was checked"
    solved, info = run_reference(env, task)
    if solved != 1.0:
        detail = info.get("feedback") or ""
        return f"the reference solution earns {solved}, expected 1 ({str(detail)[:500]})", None
    return None, None
