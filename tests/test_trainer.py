"""The SDPO trainer on DeepSpeed (CPU, gloo): steps on collected trajectories, publishes versions,
and a killed trainer resumes without training a trajectory twice or skipping one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_fixtures import backend_config
from test_collector import make_task

from agentsd.collector import Collector
from agentsd.config import CollectConfig, ModelConfig
from agentsd.policies.hf import HFPolicy
from agentsd.store import ReplayStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Six trajectories sampled by the default model (behaviour log-probs from the hf backend)."""
    backend_config("local")
    root = tmp_path_factory.mktemp("collected")
    cfg = CollectConfig.model_validate(
        {"run_dir": str(root / "c"), "store": {"url": f"sqlite:///{root}/r.db"}, "max_turns": 2,
         "concurrency": 3, "sampling": {"max_new_tokens": 24}, "tracking": {"enabled": False}}
    )  # fmt: skip
    policy = HFPolicy(ModelConfig(), seed=0)
    with ReplayStore(cfg.store.url) as store:
        asyncio.run(Collector(cfg, policy, store, [make_task(i) for i in range(6)], run_name="c").run())
        assert store.count() == 6
    return cfg.store.url


def train_cmd(store: str, run_dir: Path, *extra: str) -> list[str]:
    config = str(REPO / "configs/train/sdpo.yaml")
    return [sys.executable, "-m", "agentsd.cli.main", "train", "-c", config, f"store.url={store}",
            f"run_dir={run_dir}", "batch_trajectories=2", "chunk_tokens=64", "tracking.enabled=false",
            f"deepspeed={REPO / 'configs/deepspeed/zero2.json'}", *extra]  # fmt: skip


def test_train_publishes_versions_and_resumes_after_a_kill(collected: str, tmp_path: Path) -> None:
    import shutil

    store_path = Path(collected.removeprefix("sqlite:///"))
    shutil.copy(store_path, tmp_path / "r.db")
    store = f"sqlite:///{tmp_path}/r.db"
    run_dir = tmp_path / "train"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        train_cmd(store, run_dir),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill it right after its first checkpoint
        if (run_dir / "checkpoints" / "latest").exists():
            break
        if first.poll() is not None:
            pytest.fail(f"the trainer exited early:\n{first.stdout.read() if first.stdout else ''}")
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = subprocess.run(train_cmd(store, run_dir), env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    with ReplayStore(store) as replay:
        consumed = replay.consumed_by("train")
        versions = [v.version for v in replay.versions()]
        assert consumed == {s.id for s in replay.list(limit=None)}  # all six, none skipped
        assert versions == [1, 2, 3]  # three steps of two: no trajectory trained twice
        assert all(Path(v.checkpoint_uri, "config.json").is_file() for v in replay.versions())
    assert "trained to version 3 (3 steps)" in second.stdout
    again = subprocess.run(train_cmd(store, run_dir), env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "trained to version 3 (3 steps)" in again.stdout  # nothing left


def test_a_published_version_loads_into_the_hf_policy(collected: str, tmp_path: Path) -> None:
    import shutil

    from agentsd.config import TrainConfig
    from agentsd.trainer import Trainer

    shutil.copy(Path(collected.removeprefix("sqlite:///")), tmp_path / "r.db")
    cfg = TrainConfig.model_validate(
        {"run_dir": str(tmp_path / "t"), "store": {"url": f"sqlite:///{tmp_path}/r.db"},
         "batch_trajectories": 6, "lr": 1e-4, "deepspeed": str(REPO / "configs/deepspeed/zero1.json"),
         "tracking": {"enabled": False}}
    )  # fmt: skip
    with ReplayStore(cfg.store.url) as replay:
        trainer = Trainer(cfg, replay, name="t")
        [result] = trainer.run(max_steps=1)
        assert result.version == 1 and result.metrics["tokens/used"] > 0 and result.metrics["loss"] > 0
        assert result.metrics["rho/mean"] == pytest.approx(1.0, abs=0.05)  # sampled by these weights
        version = replay.latest_version()
    assert version is not None
    policy = HFPolicy(ModelConfig(), seed=0)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    policy.load_version(version)
    assert policy.version == 1
    changed = [k for k, v in policy.model.state_dict().items() if not (v == before[k]).all()]
    assert changed  # the step moved the weights the collector now samples with


def test_agentsd_run_collects_and_trains_at_once(tmp_path: Path) -> None:
    backend_config("local")
    store = f"sqlite:///{tmp_path}/r.db"
    cmd = [
        sys.executable, "-m", "agentsd.cli.main", "run", "-c", str(REPO / "configs/run/local.yaml"),
        f"collect.store.url={store}", f"train.store.url={store}", f"collect.run_dir={tmp_path}/c",
        f"train.run_dir={tmp_path}/t", "collect.max_tasks=2", "collect.max_turns=2",
        "collect.sampling.max_new_tokens=16", "collect.tracking.enabled=false",
        "train.tracking.enabled=false",
        "train.batch_trajectories=1", "train.chunk_tokens=64",
        f"train.deepspeed={REPO / 'configs/deepspeed/zero2.json'}",
    ]  # fmt: skip
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "trained on every trajectory" in done.stdout
    with ReplayStore(store) as replay:
        trajectories = {s.id for s in replay.list(limit=None)}
        assert len(trajectories) == 2
        assert replay.consumed_by("t") == trajectories
        assert [v.version for v in replay.versions()] == [1, 2]
