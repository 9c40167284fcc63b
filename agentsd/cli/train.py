"""`agentsd train`: SDPO on the replay store's finalized trajectories, publishing policy versions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from agentsd.cli.common import ConfigFiles, StoreUrl, console, err_console


def train(
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.")] = None,
    config: ConfigFiles = None,
    store: StoreUrl = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="When the store runs dry, wait for new trajectories.")
    ] = False,
    until: Annotated[
        Path | None,
        typer.Option("--until", help="With --wait: stop once this file exists and the store is dry."),
    ] = None,
    fork: Annotated[
        bool,
        typer.Option("--fork", help="Start a new lineage of versions where the trainer would refuse."),
    ] = False,
) -> None:
    """Train until max_steps (or until no untrained trajectory is left); a restart resumes."""
    from agentsd.config import TrainConfig, load_config
    from agentsd.store import ReplayStore
    from agentsd.tracking import open_tracker
    from agentsd.trainer import Trainer

    cfg = load_config(TrainConfig, config or [], overrides or [])
    if store:
        cfg.store.url = store
    if fork:
        cfg.fork = True
    name = re.sub(r"[^A-Za-z0-9_-]", "-", cfg.run_dir.name) or "train"
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with ReplayStore(cfg.store.url) as replay, open_tracker(cfg.tracking, cfg.run_dir, name) as tracker:
        tracker.log_params(cfg.model_dump(mode="json"))
        err_console.print(f"trainer [bold]{name}[/]: model {cfg.model.name}, store {cfg.store.url}")
        trainer = Trainer(cfg, replay, name=name, tracker=tracker)
        err_console.print(
            f"lineage {trainer.lineage}: starting at version {trainer.version}, step {trainer.step_count}"
        )
        while cfg.max_steps is None or trainer.step_count < cfg.max_steps:  # a total: resumes count
            results = trainer.run(max_steps=1, wait=wait, stop=(lambda: until.exists()) if until else None)
            if not results:
                break
            result = results[0]
            m = result.metrics
            err_console.print(
                f"step {result.step} -> version {result.version}: {len(result.trajectories)} trajectories, "
                f"loss {m.get('loss', 0.0):.4f}, kl {m.get('kl', 0.0):.4f}, "
                f"rho max {m.get('rho/max', 0.0):.2f}, grad norm {m.get('grad_norm', float('nan')):.8g}",
                highlight=False,
                soft_wrap=True,  # one line per step in logs, whatever the width
            )
        if trainer.step_count % cfg.histogram_every:  # the distributions of the last steps too
            trainer.log_histograms()
        trainer.close()
    console.print(f"trained to version {trainer.version} ({trainer.step_count} steps)", highlight=False)
