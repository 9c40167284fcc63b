"""`agentsd run`: collectors and the trainer at once on one machine (continual learning).

The trainer runs as a child process, the collector in this process (agentsd.jobs.collect.collect_and_train);
they share only the replay store: trajectories go one way, published policy versions the other (the
collector picks them up per `collect.version_pickup`), and staleness stays bounded by the trainer's
K_max. When the collector's plan is done, the trainer trains what is left and exits. A trainer that
dies early is noticed within a second: the collector stops (running episodes close as interrupted,
every stored turn kept) and the run exits non-zero with the trainer's last words. Either side can be
killed and restarted: both resume. In MLflow both halves are child runs of one parent run, in one
tracking store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from agentsd.cli.collect import print_collected
from agentsd.cli.common import ConfigFiles, StoreUrl, console


def run(
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.")] = None,
    config: ConfigFiles = None,
    store: StoreUrl = None,
) -> None:
    """Collect and train at once until the collect plan is done and every trajectory is trained on."""
    from agentsd.config import RunConfig, load_config
    from agentsd.jobs.collect import collect_and_train, nest_tracking
    from agentsd.tracking import open_tracker

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
        print_collected(collect_and_train(cfg))
    console.print("run done: collected the plan and trained on every trajectory", highlight=False)
