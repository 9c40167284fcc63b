"""Peer arms (agentsd.experiments.peers): TRL reads the single-turn tasks as agentsd's agent sees them,
its rewards come from the tasks' own verifiers, its trained adapter is evaluated by agentsd's eval
path like every arm, and the report puts each arm's budget beside its gain. The comparison's
numbers live in docs/results/peers.md; nothing here asserts a learning outcome."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from agentsd.agent import ChatFormat
from agentsd.config import ArmConfig, ExperimentConfig, LocalSandboxConfig, load_config
from agentsd.experiments.arm import ArmRun, arm_dir
from agentsd.experiments.curves import ArmRecords, committed_record
from agentsd.experiments.peers import PeerError, ReplyGrader, dataset_rows, reply_tasks
from agentsd.experiments.report import budget_table
from agentsd.modelcache import resolve_model
from agentsd.store import ReplayStore
from agentsd.suites import load_tasks
from agentsd.tracking import NullTracker

ROOT = Path(__file__).resolve().parents[1]


def test_trl_reads_the_prompt_the_agent_sees_and_rewards_come_from_the_verifier() -> None:
    tasks = load_tasks("learn-reply-train", "")[:3]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("default"))
    chat = ChatFormat(tokenizer, demonstration=True)
    sandbox = LocalSandboxConfig()
    rows = dataset_rows(tasks, chat, sandbox)
    for task, row in zip(tasks, rows, strict=True):
        answer = task.reference["reply"]
        # token for token the context agentsd's collector samples the first reply from
        assert tokenizer(row["prompt"], add_special_tokens=False)["input_ids"] == chat.first_prompt(
            task.instruction, ()
        )
        assert row["completion"] == answer and row["task_id"] == task.id
        # the teacher's feedback is the verifier's verdict, which names what was expected
        assert answer.splitlines()[0] in row["privileged_context"]
    grader = ReplyGrader(tasks, sandbox)
    replies = [tasks[0].reference["reply"], "not the answer", [{"role": "assistant", "content": "x"}]]
    rewards = grader(prompts=[r["prompt"] for r in rows], completions=replies, task_id=[t.id for t in tasks])
    assert rewards == [1.0, 0.0, 0.0] and grader.graded == 3


def test_a_peer_arm_refuses_tasks_that_are_not_single_turn() -> None:
    with pytest.raises(PeerError, match=r"collect.suite learn-train: task learn-.* single-turn"):
        reply_tasks(load_tasks("learn-train", "")[:2], "learn-train")
    with pytest.raises(ValueError, match=r"peer\.trainer"):
        ArmConfig.model_validate(
            {
                "name": "x",
                "peer": {
                    "trainer": "trl-ppo",
                    "lr": 1e-5,
                    "lora_rank": 1,
                    "lora_alpha": 2,
                    "lora_targets": ["q_proj"],
                },
            }
        )


def test_records_committed_before_newer_settings_existed_still_match() -> None:
    """Settings added after a record was made (an arm's `peer`, the policy's decode cache, the drift
    bounds) are not 'other settings': the committed runs go on from their records."""
    checked = 0
    for name in ("learning", "drift-lr3e-3"):
        exp = load_config(ExperimentConfig, [ROOT / "configs" / "experiments" / f"{name}.yaml"])
        for path in sorted((ROOT / "docs" / "results" / name).glob("*-s[0-9]*.json")):
            arm, seed = path.stem.rsplit("-s", 1)
            assert committed_record(exp, arm, int(seed)) is not None, path
            checked += 1
    assert checked >= 3


def test_the_budget_table_puts_cost_beside_gain() -> None:
    def final(reward: float, logprob: float) -> dict[str, Any]:
        return {"mean_reward": reward, "reference_logprob": logprob}

    records = {
        "base": {0: ArmRecords(evals={0: final(0.25, -2.0)})},
        "trl-sft": {
            0: ArmRecords(
                evals={4: final(0.5, -1.0)},
                steps=[{"step": 4, "cpu_seconds": 1800.0, "completions": 0, "examples": 16}],
            )
        },
        "agentsd-k0": {
            0: ArmRecords(
                evals={4: final(0.25, -1.5)},
                steps=[{"step": s, "cpu_seconds": 450.0, "completions": 4} for s in range(1, 5)],
            )
        },
    }
    rows = {r["arm"]: r for r in budget_table(records)}
    assert set(rows) == {"trl-sft", "agentsd-k0"}
    sft, k0 = rows["trl-sft"], rows["agentsd-k0"]
    assert (sft["completions"], sft["examples"], sft["cpu_seconds"]) == (0, 16, 1800.0)
    assert sft["mean_reward_gain_per_cpu_hour"] == pytest.approx(0.5)  # +0.25 in half an hour
    assert sft["reference_logprob_gain_per_cpu_hour"] == pytest.approx(2.0)
    assert (k0["completions"], k0["cpu_seconds"], k0["mean_reward_gain_per_cpu_hour"]) == (16, 1800.0, 0.0)


@pytest.mark.slow
def test_trl_peer_arms_train_publish_and_are_evaluated_like_every_arm(
    tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("trl") is None:  # .ci/run installs it and requires this test to run
        if os.environ.get("AGENTSD_REQUIRE_BENCH") == "1":
            pytest.fail("TRL is required here but missing (the bench extra)")
        pytest.skip("TRL is not installed: bash scripts/setup_bench.sh (the bench extra)")
    for launcher_variable in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):  # a peer trains in one process
        monkeypatch.delenv(launcher_variable, raising=False)
    exp = load_config(
        ExperimentConfig,
        [ROOT / "configs" / "experiments" / "peers.yaml"],
        [
            f"work_dir={tmp_path / 'work'}",
            f"model.name={tiny}",
            "steps=2",  # 2 x 4 = 8 completions: one group of 8 for SDPO and GRPO, two SFT steps
            "train.batch_trajectories=4",
            "eval_every=2",
            "eval_tasks=2",
            "collect.sampling.max_new_tokens=8",
        ],
    )
    arms = {a.name: a for a in exp.arms}
    for name in ("trl-sdpo", "trl-grpo", "trl-sft"):
        ArmRun(exp, arms[name], 0, NullTracker()).run()
        root = arm_dir(exp, name, 0)
        (step,) = [json.loads(line) for line in (root / "steps.jsonl").read_text().splitlines()]
        assert step["peer"] == name and step["cpu_seconds"] > 0 and step["libraries"]["trl"]
        sampled = name != "trl-sft"
        assert (step["completions"], step["optimizer_steps"]) == ((8, 1) if sampled else (0, 2)), name
        with ReplayStore(f"sqlite:///{root / 'replay.db'}") as store:
            published = store.get_version(1)
        assert published is not None and published.meta["peer"] == name
        assert (Path(published.checkpoint_uri) / "adapter_config.json").is_file()
        evaluation = json.loads((root / "evals" / "step002.json").read_text())
        assert evaluation["version"] == 1 and len(evaluation["trajectories"]) == 2
        # the eval loaded the peer's weights, not the base model's; GRPO moves nothing when every
        # reward of a group is 0 (a random model's), as its advantages are then all 0
        assert evaluation["kl_to_base"] > 0 if name != "trl-grpo" else evaluation["kl_to_base"] >= 0, name
