"""The staleness experiment runner (scripts/experiments/staleness.py) on a tiny budget: the real
default model, local sandboxes, two arms, a run killed mid-arm and resumed, `version_lag` checked
against the store, the report files written. The learning result itself is never asserted here:
it lives in docs/results/ with the command and commit that produced it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentsd.config import ExperimentConfig, load_config
from agentsd.errors import ConfigError
from agentsd.experiments.arm import ExperimentError, arm_dir, eval_steps
from agentsd.experiments.curves import load_records, record_settings
from agentsd.experiments.report import reference_arm
from agentsd.experiments.staleness import main, record_experiment
from agentsd.store import ReplayStore

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {
    "name": "smoke",
    "seeds": [0],
    "steps": 2,  # round 1 already tells lag 1 (version 0) from lag 0 (version 1)
    "eval_every": 2,
    "eval_tasks": 2,
    "collect": {
        "suite": "learn-train",
        "max_turns": 1,
        "demonstration": True,
        "sampling": {"temperature": 0.7, "max_new_tokens": 24},
    },
    "train": {
        "batch_trajectories": 2,
        "lora": {"rank": 4, "alpha": 8},
        "lr": 1.0e-4,
        "keep_versions": 3,
        "sdpo": {"max_staleness": 2},
        "hindsight": {"budget_tokens": 512},
    },
    "arms": [
        {"name": "k0-full", "version_lag": 0, "correction": "full"},
        {"name": "k1-none", "version_lag": 1, "correction": "none"},
    ],
}


def _config(tmp_path: Path) -> Path:
    data = {**SMOKE, "work_dir": str(tmp_path / "work"), "report_dir": str(tmp_path / "report")}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_arm_whose_lag_full_correction_would_drop_everything_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(ConfigError, match=r"k3-full.*max_staleness"):
        load_config(ExperimentConfig, [config], ["arms=[{name: k3-full, version_lag: 3}]"])
    with pytest.raises(ConfigError, match="keep_versions"):
        load_config(ExperimentConfig, [config], ["train.keep_versions=1"])
    with pytest.raises(ConfigError, match="unique"):
        load_config(ExperimentConfig, [config], ["arms=[{name: base}]"])


def test_the_arm_others_are_compared_with_is_one_of_the_arms(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert reference_arm(load_config(ExperimentConfig, [config])) == "k0-full"  # no lag, full
    assert reference_arm(load_config(ExperimentConfig, [config], ["compare_with=k1-none"])) == "k1-none"
    only_stale = "arms=[{name: k1-none, version_lag: 1, correction: none}]"
    no_default = load_config(ExperimentConfig, [config], [only_stale])
    assert reference_arm(no_default) is None
    with pytest.raises(ConfigError, match=r"compare_with.*k9-full"):
        load_config(ExperimentConfig, [config], ["compare_with=k9-full"])


def test_a_work_dir_keeps_the_experiment_it_was_started_with(tmp_path: Path) -> None:
    config = _config(tmp_path)
    record_experiment(load_config(ExperimentConfig, [config]))
    record_experiment(load_config(ExperimentConfig, [config], ["report_dir=elsewhere"]))  # not a setting
    with pytest.raises(ExperimentError, match=r"other settings.*steps"):
        record_experiment(load_config(ExperimentConfig, [config], ["steps=5"]))
    assert main(["-c", str(config), "steps=5"]) == 2


def _evaluation(arm: str, step: int, scores: list[float], logprobs: list[float]) -> dict[str, Any]:
    rows = [
        {
            "task_id": f"t{i}",
            "score": s,
            "valid_turns": 1,
            "turns": 2,
            "kl_to_base": 0.1,
            "reference_logprob": lp,
        }
        for i, (s, lp) in enumerate(zip(scores, logprobs, strict=True))
    ]
    return {"arm": arm, "seed": 0, "step": step, "version": step, "trajectories": rows}


def test_committed_records_are_skipped_and_merged_into_the_report(tmp_path: Path) -> None:
    """A fresh machine: no work directory, only the records a run committed. The runner runs no
    worker for them and the report is made from them, the step-0 gap included."""
    config = _config(tmp_path)
    exp = load_config(ExperimentConfig, [config], ["gap=true"])
    records = tmp_path / "report" / "smoke"
    records.mkdir(parents=True)
    gap_rows = [{"task_id": f"t{i}", "student": 0.0, "teacher": 1.0 * i, "gap": 1.0 * i} for i in range(2)]
    packed = {
        "base": {
            "evals": {"0": _evaluation("base", 0, [0.0, 0.0], [-2.0, -2.0])},
            "gaps": {"feedback_success": {"summary": {}, "rows": gap_rows}},
        },
        "k0-full": {"evals": {"2": _evaluation("k0-full", 2, [1.0, 0.0], [-1.0, -1.5])}},
        "k1-none": {"evals": {"2": _evaluation("k1-none", 2, [0.0, 0.0], [-2.5, -2.0])}},
    }
    for arm, data in packed.items():
        steps = [{"step": 1, "rho/p99": 1.5}, {"step": 2, "rho/p99": 1.7}] if arm != "base" else []
        settings = record_settings(exp, arm)
        record = {"arm": arm, "seed": 0, "commit": "abc", "settings": settings, "steps": steps, "rounds": []}
        (records / f"{arm}-s0.json").write_text(json.dumps({**record, "done": True, **data}))

    assert main(["-c", str(config), "gap=true"]) == 0
    assert not any(arm_dir(exp, arm, 0).exists() for arm in packed)  # nothing ran
    results = json.loads((tmp_path / "report" / "smoke.json").read_text())
    assert {(r["arm"], r["steps"]) for r in results["by_arm_and_seed"]} == {
        ("base", 0),
        ("k0-full", 2),
        ("k1-none", 2),
    }
    assert results["final"]["k0-full"]["mean_reward"]["value"] == 0.5
    assert results["final"]["k0-full"]["reference_logprob_minus_base"]["value"] == pytest.approx(0.75)
    assert results["gaps"]["feedback_success"]["gap"]["value"] == 0.5
    assert "The self-teacher's gap at step 0" in (tmp_path / "report" / "smoke.md").read_text()

    # records made with other settings are never merged, nor skipped: the run stops and says why
    assert main(["-c", str(config), "gap=true", "steps=3", f"work_dir={tmp_path / 'other'}"]) == 2
    with pytest.raises(ExperimentError, match=r"base-s0.json was made with other settings.*steps: 2 -> 3"):
        load_records(load_config(ExperimentConfig, [config], ["gap=true", "steps=3"]))


def _wait_for(path: Path, lines: int, process: subprocess.Popen[bytes], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= lines:
            return
        assert process.poll() is None, f"the runner exited early ({process.returncode})"
        time.sleep(0.5)
    raise AssertionError(f"{path} never reached {lines} lines")


@pytest.mark.slow
def test_the_runner_runs_arms_survives_a_kill_and_writes_the_report(tmp_path: Path) -> None:
    config = _config(tmp_path)
    exp = load_config(ExperimentConfig, [config])
    script = ROOT / "scripts" / "experiments" / "staleness.py"
    runner = subprocess.Popen(
        [sys.executable, str(script), "-c", str(config)],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # killed, worker and all, once the first trained arm has made one step
        _wait_for(arm_dir(exp, "k0-full", 0) / "steps.jsonl", 1, runner)
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
    assert not (arm_dir(exp, "k0-full", 0) / "done.json").exists()

    assert main(["-c", str(config)]) == 0  # resumes where it stopped

    for arm in ("base", "k0-full", "k1-none"):
        assert (arm_dir(exp, arm, 0) / "done.json").exists(), arm
    for arm, lag in (("k0-full", 0), ("k1-none", 1)):
        root = arm_dir(exp, arm, 0)
        records = [json.loads(line) for line in (root / "steps.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in records]
        assert steps == [1, 2], (arm, steps)  # every step once, none lost to the kill
        # what a step cost: the round's two one-turn episodes and the optimizer step, in CPU seconds
        assert all(r["completions"] == 2 and r["cpu_seconds"] > 0 for r in records), (arm, records)
        assert sorted(p.name for p in (root / "evals").glob("*.json")) == [
            f"step{s:03d}.json" for s in eval_steps(exp)
        ]
        with ReplayStore(f"sqlite:///{root / 'replay.db'}") as store:  # the lag, from the store itself
            for round_ in range(exp.steps):
                turns = [
                    turn
                    for summary in store.list(id_prefix=f"r{round_:03d}.", limit=None)
                    for turn in store.get(summary.id).turns
                ]
                assert turns, (arm, round_)
                # round r runs while the trainer's newest version is r
                assert {t.policy_version for t in turns} == {max(0, round_ - lag)}, (arm, round_)
        evaluation = json.loads((root / "evals" / f"step{exp.steps:03d}.json").read_text())
        assert evaluation["version"] == exp.steps and len(evaluation["trajectories"]) == 2
        assert evaluation["kl_to_base"] > 0  # a trained version differs from the base model

    report = tmp_path / "report"
    for arm in ("base", "k0-full", "k1-none"):  # each finished arm x seed, packed for committing
        packed = json.loads((report / "smoke" / f"{arm}-s0.json").read_text())
        assert packed["done"] and packed["commit"] and packed["evals"], arm
    results = json.loads((report / "smoke.json").read_text())
    assert {(r["arm"], r["seed"]) for r in results["by_arm_and_seed"]} == {
        ("base", 0),
        ("k0-full", 0),
        ("k1-none", 0),
    }
    assert results["commit"] and results["command"].startswith("python scripts/experiments/staleness.py")
    assert {(r["arm"], r["completions"]) for r in results["budget"]} == {("k0-full", 4), ("k1-none", 4)}
    markdown = (report / "smoke.md").read_text()
    assert "k1-none" in markdown and "## By arm and seed" in markdown
    for plot in ("smoke_heldout.png", "smoke_steps.png"):
        assert (report / plot).stat().st_size > 1000
        assert f"]({plot})" in markdown


def test_an_eval_of_a_version_the_store_never_published_is_refused(tmp_path: Path) -> None:
    from agentsd.config import EvalConfig, StoreConfig, TrackingConfig
    from agentsd.jobs.collect import run_collect

    with pytest.raises(ConfigError, match="versions_store"):
        load_config(EvalConfig, [], ["version=3"])
    training = f"sqlite:///{tmp_path / 'train.db'}"
    with ReplayStore(training):
        pass
    cfg = EvalConfig(
        suite="learn-heldout",
        max_tasks=1,
        run_dir=tmp_path / "eval",
        name="v3",
        store=StoreConfig(url=f"sqlite:///{tmp_path / 'eval.db'}"),
        version=3,
        versions_store=StoreConfig(url=training),
        tracking=TrackingConfig(enabled=False),
    )
    with pytest.raises(ConfigError, match="published no version 3"):
        run_collect(cfg, kind="eval")
