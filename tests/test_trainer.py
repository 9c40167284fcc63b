"""The SDPO trainer on DeepSpeed (CPU, gloo): steps on collected trajectories, publishes versions,
and a killed trainer resumes without training a trajectory twice or skipping one."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_turn
from sandbox_fixtures import backend_config
from test_collector import make_task

from agentsd.collect.collector import Collector
from agentsd.config import CollectConfig, ModelConfig, TrainConfig, deepspeed_config_path
from agentsd.policies.hf import HFPolicy
from agentsd.store import ReplayStore
from agentsd.types import Termination, TrajectoryStatus
from agentsd.weights import weights_hash

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory, tiny: str) -> str:
    """Six trajectories sampled by the tiny model (behaviour log-probs from the hf backend)."""
    backend_config("local")
    root = tmp_path_factory.mktemp("collected")
    cfg = CollectConfig.model_validate(
        {
            "run_dir": str(root / "c"),
            "store": {"url": f"sqlite:///{root}/r.db"},
            "max_turns": 2,
            "concurrency": 3,
            "sampling": {"max_new_tokens": 24},
            "tracking": {"enabled": False},
            "model": {"name": tiny},
        }
    )
    policy = HFPolicy(ModelConfig(name=tiny), seed=0)
    with ReplayStore(cfg.store.url) as store:
        asyncio.run(Collector(cfg, policy, store, [make_task(i) for i in range(6)], run_name="c").run())
        assert store.count() == 6
    return cfg.store.url


def train_cmd(store: str, run_dir: Path, model: str, *extra: str) -> list[str]:
    config = str(REPO / "configs/train/sdpo.yaml")
    return [
        sys.executable,
        "-m",
        "agentsd.cli.main",
        "train",
        "-c",
        config,
        f"store.url={store}",
        f"run_dir={run_dir}",
        "batch_trajectories=2",
        "chunk_tokens=64",
        "tracking.enabled=false",
        "deepspeed=zero2",
        "keep_versions=2",
        "keep_checkpoints=1",
        f"model.name={model}",
        *extra,
    ]


def test_train_publishes_versions_and_resumes_after_a_kill(collected: str, tiny: str, tmp_path: Path) -> None:
    import shutil

    store_path = Path(collected.removeprefix("sqlite:///"))
    shutil.copy(store_path, tmp_path / "r.db")
    store = f"sqlite:///{tmp_path}/r.db"
    with ReplayStore(store) as replay:  # outcomes not to learn from: a crashed verifier, a dead writer
        rng = random.Random(0)
        untrusted = [replay.begin(task_id="task-0", policy_model="m", version=0) for _ in range(2)]
        for trajectory_id in untrusted:
            replay.append_turn(trajectory_id, make_turn(0, rng, version=0))
        replay.finalize(untrusted[0], termination=Termination.ENV_ERROR, reward=1.0)
        replay.interrupt(untrusted[1])
    run_dir = tmp_path / "train"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        train_cmd(store, run_dir, tiny),
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
    # resumed from another directory: the default DeepSpeed config was once a path relative to the
    # checkout (the preset zero2 is the default); and with the heartbeat file `agentsd run` watches
    assert deepspeed_config_path(TrainConfig.model_fields["deepspeed"].default).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = subprocess.run(
        [*train_cmd(store, run_dir, tiny), "--heartbeat", str(tmp_path / "beats")],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert second.returncode == 0, second.stderr[-4000:]
    assert (tmp_path / "beats").exists()
    with ReplayStore(store) as replay:
        [lineage] = {v.lineage for v in replay.versions()}  # the resumed trainer kept its lineage
        consumed = replay.consumed_by(replay.versions()[0].meta["run_id"])
        versions = [v.version for v in replay.versions()]
        for version in replay.versions()[1:]:  # a number names the files it was published with
            assert version.weights_hash == weights_hash(version.checkpoint_uri), version.version
        assert [v.parent for v in replay.versions()] == [None, 1, 2] and lineage.startswith("train-")
        trusted = {s.id for s in replay.list(limit=None)} - set(untrusted)
        assert consumed == trusted and len(trusted) == 6  # all six, none skipped, nothing untrusted
        assert versions == [1, 2, 3]  # three steps of two: no trajectory trained twice
        # keep_versions=2: every version stays registered, the files of the oldest are gone
        on_disk = [Path(v.checkpoint_uri, "config.json").is_file() for v in replay.versions()]
        assert on_disk == [False, True, True]
    assert [p.name for p in sorted((run_dir / "checkpoints").glob("step*"))] == ["step000003"]
    assert "trained to version 3 (3 steps)" in second.stdout
    again = subprocess.run(
        train_cmd(store, run_dir, tiny), env=env, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0 and "trained to version 3 (3 steps)" in again.stdout  # nothing left


def test_a_published_version_loads_into_the_hf_policy(collected: str, tiny: str, tmp_path: Path) -> None:
    import shutil

    from agentsd.tracking import MemoryTracker
    from agentsd.train.trainer import Trainer

    shutil.copy(Path(collected.removeprefix("sqlite:///")), tmp_path / "r.db")
    cfg = TrainConfig.model_validate(
        {
            "run_dir": str(tmp_path / "t"),
            "store": {"url": f"sqlite:///{tmp_path}/r.db"},
            "model": {"name": tiny},
            "batch_trajectories": 6,
            "lr": 1e-4,
            "deepspeed": "zero1",
            "tracking": {"enabled": False},
            "histogram_every": 1,
            "teacher": {"mode": "sync_every", "sync_every": 1, "gate_on_eval": True},
        }
    )
    tracker = MemoryTracker()
    with ReplayStore(cfg.store.url) as replay:
        with Trainer(cfg, replay, name="t", tracker=tracker) as trainer:
            [result] = trainer.run(max_steps=1)
        assert result.version == 1 and result.metrics["tokens/used"] > 0 and result.metrics["loss"] > 0
        assert result.metrics["rho/mean"] == pytest.approx(1.0, abs=0.05)  # sampled by these weights
        version = replay.latest_version()
        rewards = [s.reward for s in replay.list(limit=None) if s.reward is not None]
    # the gate tracks the reward of the newest trajectories; the first hard sync always happens
    assert result.metrics["teacher/tracked_reward"] == pytest.approx(sum(rewards) / len(rewards))
    assert result.metrics["teacher/syncs"] == 1 and result.metrics["teacher/event_sync"] == 1
    # trajectory age and reward: quantiles per step and histogram artifacts (JSON + PNG)
    assert tracker.metrics["age_versions/p50"] == [(1, 0.0)]
    assert tracker.metrics["age_s/p90"][0][1] >= 0
    logged = {(p.name, where) for p, where in tracker.artifacts}
    for name in ("age_versions", "age_s", "reward"):
        assert {
            (f"{name}.json", "histograms/step_000001"),
            (f"{name}.png", "histograms/step_000001"),
        } <= logged
    counts = json.loads((tmp_path / "t/histograms/step_000001/reward.json").read_text())
    assert counts["count"] == 6 and sum(counts["counts"]) == 6
    assert version is not None
    policy = HFPolicy(ModelConfig(name=tiny), seed=0)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    policy.load_version(version)
    assert policy.version == 1
    changed = [k for k, v in policy.model.state_dict().items() if not (v == before[k]).all()]
    assert changed  # the step moved the weights the collector now samples with


def test_a_number_names_one_set_of_weights_and_one_lineage_publishes_at_a_time(
    collected: str, tiny: str, tmp_path: Path
) -> None:
    """Killed between checkpoint and publish, a trainer republishes the checkpoint's weights under the
    same number; a fresh trainer on a store with versions refuses to fork it unless told; a forked
    lineage numbers after the newest; the old lineage, now behind, refuses to publish beside it.

    Run in its own process: it makes six trainers, and DeepSpeed keeps an engine's optimizer state
    alive after a step even when the engine is destroyed (this process would hold GBs after)."""
    import shutil

    shutil.copy(Path(collected.removeprefix("sqlite:///")), tmp_path / "r.db")
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_trainer; "
        f"test_trainer.lineage_scenario({str(tmp_path)!r}, {tiny!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert "LINEAGE SCENARIO OK" in done.stdout


def lineage_scenario(tmp: str, model: str) -> None:
    """The body of the test above, in a process of its own."""
    from agentsd.errors import LineageError
    from agentsd.train.trainer import Trainer

    tmp_path = Path(tmp)

    def config(run_dir: str, **extra: object) -> TrainConfig:
        return TrainConfig.model_validate(
            {
                "run_dir": str(tmp_path / run_dir),
                "store": {"url": f"sqlite:///{tmp_path}/r.db"},
                "model": {"name": model},
                "batch_trajectories": 2,
                "chunk_tokens": 64,
                "tracking": {"enabled": False},
                "deepspeed": "zero2",
                **extra,
            }
        )

    with ReplayStore(f"sqlite:///{tmp_path}/r.db") as replay:
        first = Trainer(config("a"), replay, name="a")

        def killed(self: Trainer, *_: object) -> None:
            raise KeyboardInterrupt("killed between checkpoint and publish")

        publish = Trainer._publish
        Trainer._publish = killed  # pyright: ignore[reportAttributeAccessIssue]
        try:
            with pytest.raises(KeyboardInterrupt):
                first.step()
        finally:
            Trainer._publish = publish
        first.close()
        assert replay.versions() == [] and replay.consumed_by(first.run_id) == set()
        resumed = Trainer(config("a"), replay, name="a")  # republishes the checkpoint, same number
        [v1] = replay.versions()
        assert (v1.version, v1.lineage, v1.parent) == (1, first.lineage, None)
        assert v1.weights_hash == weights_hash(v1.checkpoint_uri)
        assert resumed.run_id == first.run_id and len(replay.consumed_by(first.run_id)) == 2
        assert resumed.step() is not None and replay.latest_version().parent == 1  # pyright: ignore[reportOptionalMemberAccess]

        with pytest.raises(LineageError, match=r"already has policy versions \(newest 2.*--fork"):
            Trainer(config("b"), replay, name="b")
        # staleness counts steps along the line, not numbers: the fork's weights are the base model's,
        # so what the base model sampled is fresh to it even with K_max 1 and the newest number 2
        fork = Trainer(config("b", fork=True, sdpo={"max_staleness": 1}), replay, name="b")
        assert fork.lineage != first.lineage and fork.version == 2
        stepped = fork.step()
        assert stepped is not None and stepped.metrics["staleness/max"] == 0
        fork.close()
        v3 = replay.latest_version()
        assert v3 is not None and (v3.version, v3.lineage, v3.parent) == (3, fork.lineage, None)
        # the fork trains on what the base model sampled and on its own line, never on lineage a's
        ancestry = replay.ancestry(fork.lineage, fork.origin)
        assert ancestry == [(fork.lineage, None)]

        # the first lineage's trainer, still running, would now publish number 3: refused, not reused
        with pytest.raises(LineageError, match=r"version 3 of lineage .* was published into the store while"):
            resumed.step()
        resumed.close()
        # its checkpoint (version 3, taken before the refused publish) is kept; a restart refuses
        with pytest.raises(
            LineageError, match=r"version 3 of lineage .* the store has moved on: version 3 belongs"
        ):
            Trainer(config("a"), replay, name="a")
        onward = Trainer(config("a", fork=True), replay, name="a")  # a's newest weights, as a new lineage
        assert (
            onward.version == 3 and onward.origin == 2 and onward.lineage not in (first.lineage, fork.lineage)
        )
        assert replay.ancestry(onward.lineage, onward.origin) == [(onward.lineage, None), (first.lineage, 2)]
        onward.close()
    print("LINEAGE SCENARIO OK")


def test_agentsd_run_collects_and_trains_at_once(tmp_path: Path) -> None:
    backend_config("local")
    store = f"sqlite:///{tmp_path}/r.db"
    cmd = [
        sys.executable,
        "-m",
        "agentsd.cli.main",
        "run",
        "-c",
        str(REPO / "configs/run/local.yaml"),
        f"collect.store.url={store}",
        f"train.store.url={store}",
        f"collect.run_dir={tmp_path}/c",
        f"train.run_dir={tmp_path}/t",
        "collect.max_tasks=2",
        "collect.max_turns=2",
        "collect.sampling.max_new_tokens=16",
        "collect.tracking.enabled=false",
        "train.tracking.enabled=false",
        "train.batch_trajectories=1",
        "train.chunk_tokens=64",
        "train.deepspeed=zero2",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "trained on every trajectory" in done.stdout
    with ReplayStore(store) as replay:
        trajectories = {s.id for s in replay.list(limit=None)}
        assert len(trajectories) == 2
        assert replay.consumed_by(replay.versions()[0].meta["run_id"]) == trajectories
        assert [v.version for v in replay.versions()] == [1, 2]


def test_agentsd_run_stops_and_fails_when_its_trainer_is_killed(tmp_path: Path) -> None:
    # a dead trainer went unnoticed until collection ended
    backend_config("local")
    store = f"sqlite:///{tmp_path}/r.db"
    cmd = [
        sys.executable,
        "-m",
        "agentsd.cli.main",
        "run",
        "-c",
        str(REPO / "configs/run/local.yaml"),
        f"collect.store.url={store}",
        f"train.store.url={store}",
        f"collect.run_dir={tmp_path}/c",
        f"train.run_dir={tmp_path}/t",
        "collect.max_tasks=20",
        "collect.repeats=5",
        "collect.max_turns=30",
        "collect.sampling.max_new_tokens=64",
        "collect.tracking.enabled=false",
        "train.tracking.enabled=false",
        "train.deepspeed=zero2",
    ]
    run = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        trainer = None
        with ReplayStore(store) as replay:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and run.poll() is None:
                children = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
                trainers = [c for c in children if b"--until" in Path(f"/proc/{c}/cmdline").read_bytes()]
                if trainers and replay.count() >= 1:  # collecting, the trainer up: kill it
                    trainer = int(trainers[0])
                    break
                time.sleep(0.5)
        assert trainer is not None, "the trainer never started"
        os.kill(trainer, signal.SIGKILL)
        _, err = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 2, err[-3000:]
    assert "the trainer exited with status -9 while collecting" in err
    with ReplayStore(store) as replay:
        rows = replay.list(limit=None)
        assert 1 <= len(rows) < 100 and all(r.status is TrajectoryStatus.FINALIZED for r in rows)


def _grad_norms(output: str) -> list[float]:
    flat = re.sub(r"\s+", " ", output)
    return [float(m) for m in re.findall(r"step \d+ -> version \d+: .*?grad norm ([0-9.e+-]+)", flat)]


def test_two_ranks_under_the_deepspeed_launcher_train_the_global_batch(
    collected: str, tiny: str, tmp_path: Path
) -> None:
    """`deepspeed --num_gpus 2` (CPU ranks over gloo): each rank trains half of every step's
    trajectories, and the first step's gradient equals the one-process gradient of the same batch."""
    import shutil
    import socket

    for name in ("one", "two"):
        shutil.copy(Path(collected.removeprefix("sqlite:///")), tmp_path / f"{name}.db")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    one = subprocess.run(
        train_cmd(f"sqlite:///{tmp_path}/one.db", tmp_path / "one", tiny, "max_steps=1"),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert one.returncode == 0, one.stderr[-4000:]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launcher = [
        str(Path(sys.executable).parent / "deepspeed"),
        "--num_gpus",
        "2",
        "--master_port",
        str(port),
        "--module",
        "agentsd.cli.main",
    ]
    run_dir = tmp_path / "two"
    two = subprocess.run(
        launcher + train_cmd(f"sqlite:///{tmp_path}/two.db", run_dir, tiny)[3:],
        env={**env, "LOCAL_SIZE": "2"},  # the CPU accelerator's device count: two ranks on this host
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = two.stdout + two.stderr
    assert two.returncode == 0, output[-4000:]
    [single] = _grad_norms(one.stdout + one.stderr)
    per_rank = _grad_norms(output)
    assert len(per_rank) == 6  # three steps, printed by both ranks
    assert per_rank[0] == pytest.approx(single, rel=1e-3) and per_rank[1] == pytest.approx(single, rel=1e-3)
    with ReplayStore(f"sqlite:///{tmp_path}/two.db") as replay:
        run_id = replay.versions()[0].meta["run_id"]
        assert replay.consumed_by(run_id) == {s.id for s in replay.list(limit=None)}
        assert [v.version for v in replay.versions()] == [1, 2, 3]  # registered once, by rank 0
    partitions = sorted(p.name for p in (run_dir / "checkpoints" / "step000003").glob("*optim_states.pt"))
    assert len(partitions) == 2 and "zero_pp_rank_1" in partitions[1]  # each rank saved its share


def test_lora_trains_an_adapter_that_the_policy_merges(collected: str, tiny: str, tmp_path: Path) -> None:
    import shutil

    from agentsd.train.trainer import Trainer

    shutil.copy(Path(collected.removeprefix("sqlite:///")), tmp_path / "r.db")
    cfg = TrainConfig.model_validate(
        {
            "run_dir": str(tmp_path / "t"),
            "store": {"url": f"sqlite:///{tmp_path}/r.db"},
            "model": {"name": tiny},
            "batch_trajectories": 6,
            "lr": 1e-3,
            "deepspeed": "zero2",
            "lora": {"rank": 4, "alpha": 8},
            "teacher": {"mode": "ema", "ema": 0.5},
            "hindsight": {"sources": ["feedback", "demonstration"]},
            "tracking": {"enabled": False},
        }
    )
    with ReplayStore(cfg.store.url) as replay:
        trainer = Trainer(cfg, replay, name="lora")
        assert trainer.teacher.weights and all("lora_" in name for name in trainer.teacher.weights)
        teacher_before = {k: v.clone() for k, v in trainer.teacher.weights.items()}
        [result] = trainer.run(max_steps=1)
        assert result.metrics["tokens/used"] > 0
        version = replay.latest_version()
        # the EMA teacher moved halfway toward the trained adapter: a second adapter, not a second model
        moved = [k for k, v in trainer.teacher.weights.items() if not torch_equal(v, teacher_before[k])]
        trainer.close()
    assert moved and all("lora_" in k for k in moved)
    assert version is not None and version.meta["lora"] is True
    # what its teacher saw is recorded with the version
    assert (
        version.meta["hindsight_sources"] == ["feedback", "demonstration"]
        and version.meta["teacher"] == "ema"
    )
    published = Path(version.checkpoint_uri)
    assert (published / "adapter_config.json").is_file() and not (published / "model.safetensors").exists()
    policy = HFPolicy(ModelConfig(name=tiny), seed=0)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    policy.load_version(version)
    changed = {k for k, v in policy.model.state_dict().items() if not torch_equal(v, before[k])}
    assert changed and all(any(m in k for m in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in changed)


def torch_equal(a: object, b: object) -> bool:
    import torch

    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    return bool(torch.equal(a, b))


def test_zero3_trains_with_the_live_teacher_and_publishes_whole_weights(
    collected: str, tiny: str, tmp_path: Path
) -> None:
    import shutil

    from agentsd.errors import ConfigError
    from agentsd.train.trainer import Trainer

    shutil.copy(Path(collected.removeprefix("sqlite:///")), tmp_path / "r.db")
    settings = {
        "run_dir": str(tmp_path / "t"),
        "store": {"url": f"sqlite:///{tmp_path}/r.db"},
        "model": {"name": tiny},
        "batch_trajectories": 6,
        "lr": 1e-4,
        "deepspeed": "zero3",
        "teacher": {"mode": "live"},  # the default (ema) keeps a copy ZeRO-3 would partition
        "tracking": {"enabled": False},
    }
    with ReplayStore(f"sqlite:///{tmp_path}/r.db") as replay:
        ema = TrainConfig.model_validate({**settings, "teacher": {}})  # the default, ema
        with pytest.raises(ConfigError, match="ZeRO-3 partitions the weights"):
            Trainer(ema, replay, name="refused")
        with Trainer(TrainConfig.model_validate(settings), replay, name="z3") as trainer:
            [result] = trainer.run(max_steps=1)
        assert result.metrics["tokens/used"] > 0 and result.metrics["loss"] > 0
        assert result.metrics["rho/mean"] == pytest.approx(1.0, abs=0.05)  # the gathered head is the policy's
        version = replay.latest_version()
    assert version is not None
    policy = HFPolicy(ModelConfig(name=tiny), seed=0)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    policy.load_version(version)  # whole tensors: a partitioned save would not fit the model
    changed = [k for k, v in policy.model.state_dict().items() if not torch_equal(v, before[k])]
    assert changed
