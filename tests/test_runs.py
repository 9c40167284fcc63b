"""Run plans: a collect or eval run's name means one plan (agentsd.runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_task

from agentsd.config import CollectConfig
from agentsd.runs import RunPlanError, claim_run, plan_of
from agentsd.store import ReplayStore


def config(**settings: object) -> CollectConfig:
    return CollectConfig.model_validate({"suite": "terminal", **settings})


def test_a_run_name_means_one_plan(tmp_path: Path) -> None:
    tasks = [make_task(f"t{i}") for i in range(3)]
    with ReplayStore(tmp_path / "r.db") as store:
        claim_run(store, "r", "collect", plan_of(config(), tasks), new=False)  # recorded
        claim_run(store, "r", "collect", plan_of(config(concurrency=16), tasks), new=False)  # operational
        with pytest.raises(RunPlanError) as refused:
            changed = config(repeats=2, sampling={"temperature": 0.5})
            claim_run(store, "r", "collect", plan_of(changed, tasks[:2]), new=False)
        message = str(refused.value)
        for change in ("repeats: 1 -> 2", "tasks: 3 -> 2 tasks", "sampling.temperature: 0.7 -> 0.5"):
            assert change in message
        edited = [*tasks[:2], tasks[2].model_copy(update={"instruction": "something else"})]
        with pytest.raises(RunPlanError, match="the same ids with different content"):
            claim_run(store, "r", "collect", plan_of(config(), edited), new=False)
        with pytest.raises(RunPlanError, match=r"already exists .* --resume r"):
            claim_run(store, "r", "eval", plan_of(config(), tasks), new=True)
        with pytest.raises(RunPlanError, match="is a collect run, not an eval run"):
            claim_run(store, "r", "eval", plan_of(config(), tasks), new=False)
        # a run from before plans were recorded: its trajectories already claim the name
        store.begin(task_id="t0", policy_model="m", version=0, trajectory_id="old.000000.0")
        with pytest.raises(RunPlanError, match="already has trajectories"):
            claim_run(store, "old", "eval", plan_of(config(), tasks), new=True)
        claim_run(store, "old", "collect", plan_of(config(), tasks), new=False)  # recorded from now on
        assert store.run_plan("old") is not None


def test_the_judge_is_part_of_the_plan_and_the_policy_server_is_not(tmp_path: Path) -> None:
    served = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-secret"}
    judged = config(judge={"base_url": "http://127.0.0.1:1/v1"}, policy=served)
    plan = plan_of(judged, [make_task("t")])
    assert "sk-secret" not in str(plan) and plan["settings"]["judge"]["base_url"] == "http://127.0.0.1:1/v1"
    with ReplayStore(tmp_path / "r.db") as store:
        claim_run(store, "j", "eval", plan, new=True)
        other = plan_of(config(judge={"base_url": "http://127.0.0.1:2/v1"}), [make_task("t")])
        with pytest.raises(
            RunPlanError, match=r"judge.base_url: 'http://127.0.0.1:1/v1' -> 'http://127.0.0.1:2/v1'"
        ):
            claim_run(store, "j", "eval", other, new=False)
