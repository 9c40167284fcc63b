"""`agentsd run`: collectors and the trainer at once on one machine (continual learning).

The trainer runs as a child process (`agentsd train --wait --until FILE` on the run's train section),
the collector in this process; they share only the replay store: trajectories go one way, published
policy versions the other (the collector picks them up per `collect.version_pickup`), and staleness
stays bounded by the trainer's K_max. When the collector's plan is done, the trainer trains what is
left and exits. A trainer that dies early is noticed within a second: the collector stops (running
episodes close as interrupted, every stored turn kept) and the run exits non-zero with the
trainer's last words. Either side can be killed and restarted: both resume. In MLflow both halves
are child runs of one parent run, in one tracking store.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from agentsd.cli.collect import run_collect
from agentsd.cli.common import ConfigFiles, StoreUrl, console, err_console
from agentsd.config import RunConfig, TrackingConfig, load_config
from agentsd.errors import AgentsdError
from agentsd.tracking import default_tracking_uri, open_tracker
from agentsd.trainer_process import TrainerProcess

if TYPE_CHECKING:
    from agentsd.collector import Collector


def run(
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.")] = None,
    config: ConfigFiles = None,
    store: StoreUrl = None,
) -> None:
    """Collect and train at once until the collect plan is done and every trajectory is trained on."""
    cfg = load_config(RunConfig, config or [], overrides or [])
    if store:
        cfg.collect.store.url = cfg.train.store.url = store
    home = Path(os.path.commonpath([cfg.collect.run_dir.absolute(), cfg.train.run_dir.absolute()]))
    with open_tracker(nest_tracking(cfg, home), home, home.name or "run") as parent:
        parent.set_tags({"agentsd.kind": "run"})
        parent.log_params(
            {"collect": cfg.collect.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")}
        )
        for tracking in (cfg.collect.tracking, cfg.train.tracking):
            tracking.parent_run_id = getattr(parent, "run_id", None)
        collect_and_train(cfg)
    console.print("run done: collected the plan and trained on every trajectory", highlight=False)


def nest_tracking(cfg: RunConfig, home: Path) -> TrackingConfig:
    """The parent run's tracking; both halves are pointed at one MLflow store (the one either sets,
    else `home`/mlflow.db) so the parent shows them nested: reward and trajectory age against
    version on one page."""
    uri = cfg.collect.tracking.uri or cfg.train.tracking.uri or default_tracking_uri(home)
    for tracking in (cfg.collect.tracking, cfg.train.tracking):
        tracking.uri = uri
    enabled = cfg.collect.tracking.enabled or cfg.train.tracking.enabled
    return TrackingConfig(enabled=enabled, uri=uri, experiment=cfg.collect.tracking.experiment)


def collect_and_train(cfg: RunConfig) -> None:
    """The trainer as a supervised child process and the collector here, to the end of the plan."""
    cfg.train.run_dir.mkdir(parents=True, exist_ok=True)
    train_config = cfg.train.run_dir / "run-train.yaml"
    train_config.write_text(yaml.safe_dump(cfg.train.model_dump(mode="json"), sort_keys=False))
    done_file = cfg.train.run_dir / "collect.done"
    done_file.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "agentsd.cli.main",
        "train",
        "-c",
        str(train_config),
        "--wait",
        "--until",
        str(done_file),
    ]
    err_console.print(f"starting the trainer: {' '.join(cmd[2:])}")
    trainer = TrainerProcess(cmd)
    died: list[int] = []

    def watch(collector: Collector) -> None:
        def on_death(code: int) -> None:
            died.append(code)
            collector.stop(f"the trainer exited with status {code}")

        trainer.watch(on_death)

    try:
        run_collect(cfg.collect, on_collector=watch)
        if died:
            raise AgentsdError(
                f"the trainer died (exit status {died[0]}) while collecting: collection stopped, the "
                f"turns stored so far are kept; rerun `agentsd run` to resume. The trainer said:\n"
                f"{trainer.tail()}"
            )
        trainer.expect_exit()
        done_file.touch()
        err_console.print("collection done; the trainer trains what is left")
        code = trainer.wait()
    except BaseException:
        trainer.stop()  # it resumes from its last checkpoint next time
        raise
    if code != 0:
        raise AgentsdError(
            f"the trainer exited with status {code}; rerun `agentsd run` to resume. The trainer said:\n"
            f"{trainer.tail()}"
        )
