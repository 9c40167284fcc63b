"""Entry point of the `agentsd` command."""

from __future__ import annotations

import sys

import typer

from agentsd import __version__
from agentsd.cli import collect, config_cmd, model, replay, run, sandbox, tasks, train
from agentsd.cli.common import err_console
from agentsd.errors import AgentsdError

app = typer.Typer(
    name="agentsd",
    help="Collect long agent trajectories in sandboxes and train on them with staleness-corrected SDPO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(replay.app, name="replay")
app.add_typer(model.app, name="model")
app.add_typer(config_cmd.app, name="config")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(tasks.app, name="tasks")
app.command("collect")(collect.collect)
app.command("train")(train.train)
app.command("run")(run.run)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def main() -> None:
    try:
        app()
    except AgentsdError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
