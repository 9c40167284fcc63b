"""`agentsd replay`: look into the replay store, export it, and close what crashed writers left open."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

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
from agentsd.elision import elide_text

if TYPE_CHECKING:
    from agentsd.store import ReplayStore
    from agentsd.types import Trajectory, TrajectorySummary

T = TypeVar("T")

app = typer.Typer(help="Inspect, export and repair the replay store.", no_args_is_help=True)

Ids = Annotated[list[str] | None, typer.Argument(help="Trajectory ids.")]


def _open(store: str | None, config: list[Path] | None) -> ReplayStore:
    from agentsd.store import ReplayStore

    return ReplayStore(store_url(store, config), create=False)


def _fmt_reward(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _summary_table(rows: list[TrajectorySummary]) -> Table:
    table = Table(show_lines=False)
    table.add_column("id", no_wrap=True, min_width=32)
    for col in ("task", "status", "termination", "reward", "turns", "tokens", "versions", "writer"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            escape(r.id),
            escape(r.task_id),
            r.status.value,
            r.termination.value if r.termination else "-",
            _fmt_reward(r.reward),
            str(r.n_turns),
            str(r.n_tokens),
            f"{r.version_start}..{r.version_end}",
            r.writer,
        )
    return table


@app.command("ls")
def ls(
    status: Annotated[str | None, typer.Option(help="running | finalized")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task id.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonLines = False,
    store: StoreUrl = None,
    config: ConfigFiles = None,
) -> None:
    """List trajectories, newest first."""
    from agentsd.errors import AgentsdError
    from agentsd.types import TrajectoryStatus

    try:
        wanted = TrajectoryStatus(status) if status else None
    except ValueError:
        raise AgentsdError(f"--status {status!r}: expected running or finalized") from None
    with _open(store, config) as st:
        rows = st.list(status=wanted, task_id=task, limit=limit)
        total = st.count()
    if as_json:
        print_json_lines(rows)
        return
    console.print(_summary_table(rows))
    console.print(f"{len(rows)} shown of {total} in the store")


@app.command("show")
def show(
    trajectory_id: Annotated[str, typer.Argument(help="Trajectory id.")],
    tokens: Annotated[bool, typer.Option(help="Also print each turn's token ids.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The whole trajectory as JSON.")] = False,
    credit: Annotated[
        bool,
        typer.Option("--credit", help="Colour each agent token by the teacher-student log-ratio."),
    ] = False,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="With --credit: also write an HTML page.")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="With --credit: the weights to score with (name or directory).")
    ] = "default",
    store: StoreUrl = None,
    config: ConfigFiles = None,
) -> None:
    """Show one trajectory: outcome, hindsight signals and every turn."""
    with _open(store, config) as st:
        traj = st.get(trajectory_id)
        task = st.get_task(traj.task_hash) if traj.task_hash else None
        if credit:
            _show_credit(st, traj, model, html_out)
            return
    if as_json:
        sys.stdout.write(traj.model_dump_json(indent=2) + "\n")
        return
    head = Table.grid(padding=(0, 2))
    head.add_row("id", escape(traj.id))
    head.add_row("task", escape(f"{traj.task_id} ({traj.task_hash or 'no task record'})"))
    head.add_row("model", f"{traj.policy_model}, versions {traj.version_start}..{traj.version_end}")
    head.add_row(
        "status", f"{traj.status.value}, termination {traj.termination.value if traj.termination else '-'}"
    )
    head.add_row("reward", escape(f"{_fmt_reward(traj.reward)} {traj.reward_components or ''}"))
    head.add_row("tokens", f"{traj.n_tokens} in {len(traj.turns)} turns")
    console.print(head)
    if task is not None:
        console.print(f"\n[bold]instruction[/]\n{task.instruction}", highlight=False)
    for signal in traj.hindsight:
        where = "trajectory" if signal.turn_index is None else f"after turn {signal.turn_index}"
        console.print(f"\n[bold]hindsight[/] {signal.kind} ({where})\n{signal.text}", highlight=False)
    for turn in traj.turns:
        exit_code = turn.tool_result.exit_code if turn.tool_result else None
        console.rule(
            f"turn {turn.index} · {turn.source.value} · v{turn.policy_version} · "
            f"+{len(turn.prompt_ids)} prompt / {len(turn.completion_ids)} sampled"
            + (" · context reset" if turn.context_reset else "")
            + (f" · exit {exit_code}" if exit_code is not None else "")
        )
        if turn.completion_text:
            console.print(turn.completion_text, highlight=False, markup=False)
        if turn.observation:
            console.print(f"[dim]{_clip(turn.observation)}[/]", highlight=False)
        if tokens:
            console.print(
                f"prompt_ids {turn.prompt_ids}\ncompletion_ids {turn.completion_ids}", highlight=False
            )


def _clip(text: str, limit: int = 2000) -> str:
    return escape(elide_text(text, limit))


@app.command("export")
def export(
    ids: Ids = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file, or a directory for ATIF.")] = Path(
        "-"
    ),
    fmt: Annotated[str, typer.Option("--format", help="jsonl | atif")] = "jsonl",
    status: Annotated[str, typer.Option(help="Without ids: finalized | running | all")] = "finalized",
    prompt_ids: Annotated[
        bool, typer.Option(help="ATIF: include each step's full prompt token ids.")
    ] = False,
    store: StoreUrl = None,
    config: ConfigFiles = None,
) -> None:
    """Export trajectories as JSONL (lossless) or as Harbor ATIF JSON files (one per trajectory)."""
    from agentsd.errors import AgentsdError
    from agentsd.store.export import to_atif, write_atif, write_jsonl
    from agentsd.types import TrajectoryStatus

    if fmt not in ("jsonl", "atif"):
        raise AgentsdError(f"--format {fmt!r}: expected jsonl or atif")
    if status not in ("finalized", "running", "all"):
        raise AgentsdError(f"--status {status!r}: expected finalized, running or all")
    with _open(store, config) as st:
        if not ids:
            wanted = None if status == "all" else TrajectoryStatus(status)
            ids = [r.id for r in st.list(status=wanted, limit=None, newest_first=False)]
        if fmt == "jsonl":
            if str(out) == "-":
                n = write_jsonl(st.iter_trajectories(ids), sys.stdout)
            else:
                tmp = out.with_name(out.name + ".tmp")
                with tmp.open("w") as handle:
                    n = write_jsonl(_progress(st.iter_trajectories(ids), len(ids)), handle)
                tmp.replace(out)
            err_console.print(f"exported {n} trajectories")
            return
        if str(out) == "-":
            raise AgentsdError("--format atif writes one file per trajectory: give --out DIRECTORY")
        out.mkdir(parents=True, exist_ok=True)
        for traj in _progress(st.iter_trajectories(ids), len(ids)):
            task = st.get_task(traj.task_hash) if traj.task_hash else None
            contexts = st.load_tokens([traj.id])[traj.id] if prompt_ids else None
            write_atif(to_atif(traj, task, prompt_token_ids=contexts), out / f"{traj.id}.json")
        err_console.print(f"exported {len(ids)} trajectories to {out}")


def _progress(items: Iterator[T], total: int) -> Iterable[T]:
    from rich.progress import track

    return track(items, total=total, description="exporting", console=err_console, transient=True)


@app.command("unfinished")
def unfinished(
    stale_after: Annotated[
        float | None, typer.Option(help="Also list writers on other hosts silent this many seconds.")
    ] = None,
    as_json: JsonLines = False,
    store: StoreUrl = None,
    config: ConfigFiles = None,
) -> None:
    """List running trajectories whose writer is gone (dead on this host, or silent elsewhere)."""
    with _open(store, config) as st:
        rows = st.unfinished(stale_after_s=stale_after)
    if as_json:
        print_json_lines(rows)
        return
    console.print(_summary_table(rows))
    console.print(
        f"{len(rows)} unfinished; close them with `agentsd replay interrupt` or `agentsd replay discard`"
    )


def _close_each(
    store: str | None,
    config: list[Path] | None,
    ids: list[str] | None,
    all_unfinished: bool,
    stale_after: float | None,
    close: Callable[[ReplayStore, str], None],
) -> int:
    """Apply `close` to the named trajectories, or to every unfinished one; returns how many."""
    from agentsd.errors import AgentsdError

    if bool(ids) == all_unfinished:
        raise AgentsdError("give trajectory ids or --all-unfinished (not both)")
    with _open(store, config) as st:
        targets = ids or [r.id for r in st.unfinished(stale_after_s=stale_after)]
        for traj_id in targets:
            close(st, traj_id)
    return len(targets)


@app.command("interrupt")
def interrupt(
    ids: Ids = None,
    all_unfinished: Annotated[bool, typer.Option(help="Every trajectory `unfinished` lists.")] = False,
    stale_after: Annotated[float | None, typer.Option(help="As for `unfinished`.")] = None,
    store: StoreUrl = None,
    config: ConfigFiles = None,
) -> None:
    """Finalize unfinished trajectories as `interrupted`, keeping their turns."""

    def close(st: ReplayStore, traj_id: str) -> None:
        st.interrupt(traj_id, reason="closed by `agentsd replay interrupt`")

    n = _close_each(store, config, ids, all_unfinished, stale_after, close)
    console.print(f"interrupted {n} trajectories")


@app.command("discard")
def discard(
    ids: Ids = None,
    all_unfinished: Annotated[bool, typer.Option(help="Every trajectory `unfinished` lists.")] = False,
    stale_after: Annotated[float | None, typer.Option(help="As for `unfinished`.")] = None,
    store: StoreUrl = None,
    config: ConfigFiles = None,
) -> None:
    """Delete unfinished trajectories and their turns (finalized ones are refused)."""
    n = _close_each(store, config, ids, all_unfinished, stale_after, lambda st, traj_id: st.discard(traj_id))
    console.print(f"discarded {n} trajectories")


@app.command("plan")
def plan(
    run: Annotated[str, typer.Argument(help="The collect or eval run's name.")],
    as_json: JsonLines = False,
    store: StoreUrl = None,
    config: ConfigFiles = None,
) -> None:
    """Where a run's plan stands: episodes done, running (by which collector, how old the lease),
    waiting, and interrupted (waiting to be rerun as a new attempt)."""
    import time

    from agentsd.types import LeaseState

    with _open(store, config) as st:
        leases = st.plan_leases(run)
    if not leases:
        err_console.print(f"no plan for run {run!r} in this store (no collector has opened it)")
        raise typer.Exit(1)
    if as_json:
        print_json_lines(leases)
        return
    now = time.time()
    waiting = [lease for lease in leases if lease.state is LeaseState.WAITING]
    running = [lease for lease in leases if lease.state is LeaseState.RUNNING]
    done = sum(lease.state is LeaseState.DONE for lease in leases)
    rerun = sum(lease.attempt >= 0 for lease in waiting)
    console.print(
        f"run {run}: {len(leases)} episodes: {done} done, {len(running)} running, "
        f"{len(waiting) - rerun} waiting, {rerun} interrupted (to be rerun)",
        highlight=False,
    )
    if running:
        table = Table()
        for col in ("episode", "attempt", "collector", "lease age s", "expires in s"):
            table.add_column(col, overflow="fold")
        for lease in running:
            age = f"{now - lease.claimed_at:.0f}" if lease.claimed_at else "-"
            left = lease.expires_at - now if lease.expires_at is not None else None
            expires = "-" if left is None else (f"{left:.0f}" if left > 0 else f"expired {-left:.0f} s ago")
            table.add_row(str(lease.episode), str(lease.attempt), lease.holder or "-", age, expires)
        console.print(table)


@app.command("versions")
def versions(store: StoreUrl = None, config: ConfigFiles = None, as_json: JsonLines = False) -> None:
    """List published policy versions."""
    with _open(store, config) as st:
        rows = st.versions()
    if as_json:
        print_json_lines(rows)
        return
    import datetime as dt

    table = Table()
    for col in ("version", "lineage", "parent", "weights", "model", "teacher", "checkpoint", "created"):
        table.add_column(col, overflow="fold")
    for v in rows:
        created = dt.datetime.fromtimestamp(v.created_at).isoformat(timespec="seconds")
        parent = "base" if v.parent is None else str(v.parent)
        digest = v.weights_hash[:12] if v.weights_hash else "-"
        sources = v.meta.get("hindsight_sources")  # what its teacher saw (older versions lack it)
        teacher = f"{v.meta.get('teacher')}: {' + '.join(sources)}" if sources else "-"
        table.add_row(str(v.version), v.lineage, parent, digest, v.model, teacher, v.checkpoint_uri, created)
    console.print(table if rows else "no published versions yet")


def _show_credit(st: ReplayStore, traj: Trajectory, model_name: str, html_out: Path | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentsd.credit import render_html, render_terminal, token_credit
    from agentsd.modelcache import resolve_model
    from agentsd.types import Termination

    path = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # a trusted, graded success, as the trainer shows its teacher
    solved = st.find_finalized(
        task_ids=[traj.task_id], min_reward=1.0, terminations=[Termination.DONE], limit=5
    )
    solved = [s for s in solved if s.id != traj.id]
    success = st.get(solved[0].id) if solved else None
    credits = token_credit(model, tokenizer, traj, st.load_tokens([traj.id])[traj.id], success=success)
    if not credits:
        console.print(
            f"trajectory {traj.id} has no hindsight, no trainable tokens or sampling the loss cannot "
            "reproduce (top_p < 1): nothing to learn"
        )
        return
    console.print(render_terminal(credits))
    mean = sum(c.log_ratio for c in credits) / len(credits)
    console.print(f"\nmean log q/s {mean:+.3f} over {len(credits)} agent tokens (green: up, red: down)")
    if html_out is not None:
        html_out.write_text(render_html(traj, credits))
        console.print(f"wrote {html_out}")
