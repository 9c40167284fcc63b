"""`agentsd collect`: run agents on a task suite over the sandbox fleet into the replay store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from agentsd.cli.common import ConfigFiles, StoreUrl, console

if TYPE_CHECKING:
    from agentsd.jobs.collect import CollectResult


def collect(
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.")] = None,
    config: ConfigFiles = None,
    store: StoreUrl = None,
) -> None:
    """Collect trajectories: every turn lands in the store as it happens; a restart resumes the run."""
    from agentsd.config import CollectConfig, load_config
    from agentsd.jobs.collect import run_collect

    cfg = load_config(CollectConfig, config or [], overrides or [])
    if store:
        cfg.store.url = store
    print_collected(run_collect(cfg))


def print_collected(result: CollectResult) -> None:
    console.print(result.summary(), highlight=False)
