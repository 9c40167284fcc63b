"""`agentsd train`: SDPO on the replay store's finalized trajectories, publishing policy versions."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentsd.cli.common import ConfigFiles, StoreUrl, console, err_console

if TYPE_CHECKING:
    from agentsd.train.trainer import Trainer


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
    heartbeat: Annotated[
        Path | None,
        typer.Option(
            "--heartbeat",
            help="Touch this file before every step and every wait (a supervisor's hang watchdog); "
            "SIGUSR1 prints every thread's stack to stderr.",
        ),
    ] = None,
) -> None:
    """Train until max_steps (or until no untrained trajectory is left); a restart resumes."""
    from agentsd.liveness import beat, dump_stacks_on

    if heartbeat is not None:  # first: a watchdog's SIGUSR1 must never meet the default action (exit)
        dump_stacks_on()
    from agentsd.config import TrainConfig, load_config
    from agentsd.progress import LiveStatus
    from agentsd.store import ReplayStore
    from agentsd.tracking import open_tracker
    from agentsd.train.trainer import Trainer

    cfg = load_config(TrainConfig, config or [], overrides or [])
    alive = None if heartbeat is None else partial(beat, heartbeat)
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
        shown: dict[str, str] = {"state": "starting"}

        def figures() -> dict[str, str]:
            return {"step": str(trainer.step_count), "version": str(trainer.version), **shown}

        with LiveStatus(f"train {name}", figures, err_console):
            _steps(trainer, cfg.max_steps, wait, until, shown, alive)
        if trainer.step_count % cfg.histogram_every:  # the distributions of the last steps too
            trainer.log_histograms()
        trainer.close()
    console.print(f"trained to version {trainer.version} ({trainer.step_count} steps)", highlight=False)


def _steps(
    trainer: Trainer,
    max_steps: int | None,
    wait: bool,
    until: Path | None,
    shown: dict[str, str],
    alive: Callable[[], None] | None,
) -> None:
    """Step until `max_steps` (a total: a resumed trainer counts its earlier steps) or until the
    store has nothing new (with `wait`: until `until` exists and it has nothing new); a log line per
    step, the live figures in `shown`."""
    trained = 0
    stop = (lambda: until.exists()) if until else None
    while max_steps is None or trainer.step_count < max_steps:
        shown["state"] = "training (waits while the store has nothing new)" if wait else "training"
        results = trainer.run(max_steps=1, wait=wait, stop=stop, alive=alive)
        if not results:
            break
        result, m = results[0], results[0].metrics
        trained += len(result.trajectories)
        shown["trained"] = f"{trained} trajectories"
        shown["last step"] = (
            f"loss {m.get('loss', 0.0):.4f}, kl {m.get('kl', 0.0):.4f}, rho p99 {m.get('rho/p99', 0.0):.2f}, "
            f"max {m.get('rho/max', 0.0):.2f}, staleness {m.get('age_versions/mean', 0.0):.1f} versions"
        )
        err_console.print(
            f"step {result.step} -> version {result.version}: {len(result.trajectories)} trajectories, "
            f"loss {m.get('loss', 0.0):.4f}, kl {m.get('kl', 0.0):.4f}, rho max {m.get('rho/max', 0.0):.2f}, "
            f"grad norm {m.get('grad_norm', float('nan')):.8g}",
            highlight=False,
            soft_wrap=True,  # one line per step in logs, whatever the width
        )
    shown["state"] = "done"
