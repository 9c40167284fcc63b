"""`agentsd sandbox`: list sandboxes and reap the ones whose owner died; list and prune the task
environments built from Dockerfiles."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentsd.cli.common import ConfigFiles, JsonLines, config_sections, console, err_console, print_json_lines

if TYPE_CHECKING:
    from agentsd.sandboxes.build_cache import BuildRecord
    from agentsd.sandboxes.reaper import SandboxRecord

app = typer.Typer(
    help="List and reap sandboxes, list and prune built task environments (local and Docker).",
    no_args_is_help=True,
)

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


def _on_each_build_cache(
    engines: list[str],
    local: Callable[[], list[BuildRecord]],
    docker: Callable[[Any, str], list[BuildRecord]],
) -> tuple[list[BuildRecord], bool]:
    """`local()` on this machine's build cache and `docker(client, url)` on every engine that
    answers: their records together, and whether one failed (reported; the others still run)."""
    from agentsd.sandboxes.docker_sandbox import docker_client

    records: list[BuildRecord] = []
    failed = False
    try:
        records += local()
    except Exception as exc:  # e.g. no root for the local cache: the engines still run
        err_console.print(f"[red]local:[/] {type(exc).__name__}: {exc}")
        failed = True
    for url in engines:
        try:
            client = docker_client(url)
            client.ping()
        except Exception as exc:  # SandboxError, or the docker SDK's and requests' own errors
            err_console.print(f"[yellow]skipped {url}:[/] {exc}")
            continue
        try:
            records += docker(client, url)
        except Exception as exc:  # a busy engine: the others still run
            err_console.print(f"[red]{url}:[/] {type(exc).__name__}: {exc}")
            failed = True
        finally:
            client.close()
    return records, failed


@app.command("builds")
def builds(engine: Engines = None, config: ConfigFiles = None, as_json: JsonLines = False) -> None:
    """List the task environments built from Dockerfiles: the local build cache and each engine's
    images, with their size, last use and whether a sandbox runs on them."""
    from agentsd.sandboxes.build_cache import list_docker, list_local

    records, failed = _on_each_build_cache(_engines(engine, config), list_local, list_docker)
    if failed:
        raise typer.Exit(1)
    if as_json:
        print_json_lines(records)
        return
    table = Table()
    for col in ("backend", "engine", "key", "size", "last used", "in use"):
        table.add_column(col, overflow="fold")
    for r in records:
        size, age = f"{r.size_bytes / 1e9:.2f} GB", f"{time.time() - r.last_used:.0f}s ago"
        table.add_row(r.backend, r.engine, r.key, size, age, "yes" if r.in_use else "no")
    console.print(table if records else "no built environments")


@app.command("prune-builds")
def prune_builds(
    keep_gb: Annotated[
        float | None,
        typer.Option(min=0, help="Remove the least recently used builds until the rest fit in this many GB."),
    ] = None,
    unused_days: Annotated[
        float | None, typer.Option(min=0, help="Remove every build no sandbox started from for this long.")
    ] = None,
    min_idle_s: Annotated[
        float, typer.Option(min=0, help="Never remove a build a sandbox asked for this recently.")
    ] = 600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
    engine: Engines = None,
    config: ConfigFiles = None,
) -> None:
    """Remove built task environments (local build cache, each engine's images) that no sandbox
    uses: those unused for --unused-days, then the least recently used beyond --keep-gb."""
    from agentsd.sandboxes.build_cache import prune_docker, prune_local

    if keep_gb is None and unused_days is None:
        err_console.print("prune-builds: give --keep-gb GB, --unused-days DAYS or both (what to keep)")
        raise typer.Exit(2)
    keep = None if keep_gb is None else int(keep_gb * 1e9)
    unused = None if unused_days is None else unused_days * 86400
    rules = {"keep_bytes": keep, "unused_for_s": unused, "min_idle_s": min_idle_s, "dry_run": dry_run}
    removed, failed = _on_each_build_cache(
        _engines(engine, config),
        lambda: prune_local(**rules),
        lambda client, url: prune_docker(client, url, **rules),
    )
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        size = f"{r.size_bytes / 1e9:.2f} GB"
        console.print(f"{verb} {r.backend} {r.key} on {r.engine} ({size})", highlight=False)
    freed = sum(r.size_bytes for r in removed) / 1e9
    console.print(f"{len(removed)} built environments {verb} ({freed:.2f} GB)", highlight=False)
    if failed:
        raise typer.Exit(1)
