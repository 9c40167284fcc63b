"""`agentsd run`: collectors and the trainer at once on one machine (continual learning).

The trainer runs as a child process (`agentsd train --wait --until FILE` on the run's train section),
the collector in this process; they share only the replay store: trajectories go one way, published
policy versions the other (the collector picks them up per `collect.version_pickup`), and staleness
stays bounded by the trainer's K_max. When the collector's plan is done, the trainer trains what is
left and exits. Either side can be killed and restarted: both resume.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer
import yaml

from agentsd.cli.common import ConfigFiles, StoreUrl, console, err_console


def run(
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.")] = None,
    config: ConfigFiles = None,
    store: StoreUrl = None,
) -> None:
    """Collect and train at once until the collect plan is done and every trajectory is trained on."""
    from agentsd.cli.collect import run_collect
    from agentsd.config import RunConfig, load_config
    from agentsd.errors import AgentsdError

    cfg = load_config(RunConfig, config or [], overrides or [])
    if store:
        cfg.collect.store.url = cfg.train.store.url = store
    cfg.train.run_dir.mkdir(parents=True, exist_ok=True)
    train_config = cfg.train.run_dir / "run-train.yaml"
    train_config.write_text(yaml.safe_dump(cfg.train.model_dump(mode="json"), sort_keys=False))
    done_file = cfg.train.run_dir / "collect.done"
    done_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "agentsd.cli.main", "train", "-c", str(train_config), "--wait",
           "--until", str(done_file)]  # fmt: skip
    err_console.print(f"starting the trainer: {' '.join(cmd[2:])}")
    trainer = subprocess.Popen(cmd)
    try:
        run_collect(cfg.collect)
        done_file.touch()
        err_console.print("collection done; the trainer trains what is left")
        code = trainer.wait()
    except BaseException:
        trainer.terminate()  # it resumes from its last checkpoint next time
        trainer.wait()
        raise
    if code != 0:
        raise AgentsdError(f"the trainer exited with status {code}; rerun `agentsd run` to resume")
    console.print("run done: collected the plan and trained on every trajectory", highlight=False)
