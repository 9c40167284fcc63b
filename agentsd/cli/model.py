"""`agentsd model`: install the default model into the local cache and resolve model names."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import typer

from agentsd.cli.common import JsonLines, console, err_console, print_json_lines

app = typer.Typer(help="Install and locate models.", no_args_is_help=True)


@app.command("install")
def install(force: Annotated[bool, typer.Option(help="Convert again even if cached.")] = False) -> None:
    """Put SmolLM2-135M-Instruct (the default model) in the local cache."""
    from agentsd.modelcache import install_default_model

    # stdout carries only the result: libraries imported for the conversion (deepspeed through
    # transformers) log to stdout, so their output goes to stderr with the progress.
    with err_console.status("installing the default model") as status, contextlib.redirect_stdout(sys.stderr):
        path = install_default_model(force=force, progress=lambda msg: status.update(msg))
    typer.echo(str(path))


@app.command("path")
def path(
    name: Annotated[
        str, typer.Argument(help="'default', a model directory or a Hugging Face id.")
    ] = "default",
    install: Annotated[bool, typer.Option(help="Install the default model if missing.")] = True,
) -> None:
    """Print what NAME resolves to (a directory, or a Hugging Face id passed through)."""
    from agentsd.modelcache import resolve_model

    with contextlib.redirect_stdout(sys.stderr):
        resolved = resolve_model(name, install=install)
    typer.echo(resolved)


@app.command("ls")
def ls(as_json: JsonLines = False) -> None:
    """List the models in the local cache."""
    from agentsd.modelcache import cache_dir, installed_info

    root = cache_dir() / "models"
    entries = (
        sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith("."))
        if root.exists()
        else []
    )
    if as_json:
        print_json_lines(
            {"name": e.name, "source": (installed_info(e) or {}).get("source"), "path": str(e)}
            for e in entries
        )
        return
    if not entries:
        console.print(f"no models in {root}; run `agentsd model install`")
        return
    for entry in entries:
        info = installed_info(entry)
        state = f"from {info.get('source')}" if info else "incomplete"
        typer.echo(f"{entry.name}\t{state}\t{entry}")
