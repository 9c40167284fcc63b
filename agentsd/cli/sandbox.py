"""`agentsd sandbox`: list sandboxes and reap the ones whose owner died."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from agentsd.cli.common import ConfigFiles, JsonLines, config_sections, console, err_console, print_json_lines

if TYPE_CHECKING:
    from agentsd.sandboxes.reaper import SandboxRecord

app = typer.Typer(help="List and reap sandboxes (local and Docker).", no_args_is_help=True)

Engines = Annotated[
    list[str] | None,
    typer.Option(
        "--engine",
        "-e",
        help="Docker engine URL; repeat for a fleet [else sandbox.engines of -c, $DOCKER_HOST].",
    ),
]


def _engines(explicit: list[str] | None, files: list[Path] | None) -> list[str]:
    if explicit:
        return explicit
    for section in config_sections(files):
        sandbox = section.get("sandbox")
        if isinstance(sandbox, dict) and sandbox.get("backend") == "docker":
            return [str(e) for e in sandbox.get("engines") or []]
    return [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else []


def _collect(engines: list[str]) -> list[SandboxRecord]:
    from agentsd.errors import AgentsdError
    from agentsd.sandboxes.reaper import list_docker, list_local

    records = list_local()
    for engine in engines:
        try:
            records += list_docker(engine)
        except AgentsdError as exc:
            err_console.print(f"[yellow]skipped {engine}:[/] {exc}")
    return records


@app.command("ls")
def ls(engine: Engines = None, config: ConfigFiles = None, as_json: JsonLines = False) -> None:
    """List local sandboxes and the agentsd containers of each engine, with their owners."""
    records = _collect(_engines(engine, config))
    if as_json:
        print_json_lines(records)
        return
    table = Table()
    for col in ("backend", "engine", "id", "status", "age", "owner", "owner alive"):
        table.add_column(col, overflow="fold")
    for r in records:
        alive = {True: "yes", False: "no (leaked)", None: "other host"}[r.owner_alive]
        table.add_row(r.backend, r.engine, r.id, r.status, f"{time.time() - r.created:.0f}s", r.owner, alive)
    console.print(table if records else "no sandboxes")


@app.command("reap")
def reap(
    max_age: Annotated[
        float | None,
        typer.Option(help="Also reap sandboxes of owners on other hosts older than this (seconds)."),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Reap every agentsd sandbox, owners alive or not.")
    ] = False,
    engine: Engines = None,
    config: ConfigFiles = None,
) -> None:
    """Remove sandboxes whose owner process died (containers, cgroups and records)."""
    from agentsd.errors import AgentsdError
    from agentsd.sandboxes.reaper import reap_docker, reap_local

    removed = reap_local(max_age, everything)
    for url in _engines(engine, config):
        try:
            removed += reap_docker(url, max_age, everything)
        except AgentsdError as exc:
            err_console.print(f"[yellow]skipped {url}:[/] {exc}")
    for r in removed:
        console.print(f"reaped {r.backend} {r.id} on {r.engine} (owner {r.owner})", highlight=False)
    console.print(f"{len(removed)} sandboxes reaped")
