"""Entry point of the `agentsd` command."""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from agentsd import __version__
from agentsd.cli import collect, config_cmd, gap, model, replay, run, sandbox, tasks, train
from agentsd.cli import eval as eval_
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
app.command("eval")(eval_.eval_)
app.command("gap")(gap.gap)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def _launcher_local_rank(argv: list[str]) -> list[str]:
    """The `deepspeed` launcher puts `--local_rank=N` before the command; it goes into LOCAL_RANK
    (which the launcher sets as well) so that `deepspeed -m agentsd.cli.main train ...` works."""
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg.startswith("--local_rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
        elif arg == "--local_rank":
            os.environ.setdefault("LOCAL_RANK", next(rest, "0"))
        else:
            out.append(arg)
    return out


def main() -> None:
    sys.argv[1:] = _launcher_local_rank(sys.argv[1:])
    try:
        app()
    except AgentsdError as exc:
        # the message quotes what the user or a task gave (paths, ids, output): never markup
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
