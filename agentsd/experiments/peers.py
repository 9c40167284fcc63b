"""Peer arms: TRL's trainers on the same tasks, model and budget as agentsd's arms, for the
side-by-side comparison of scripts/bench_learning.py.

An arm with `peer` set is trained by TRL instead of agentsd's trainer, on the single-turn form of
the training suite (a task's one reply is its answer; envs/learnable.py). TRL reads the tasks as a
dataset:
- `prompt`: the exact text agentsd's agent is shown for the task (its chat format, reply prompt and
  demonstration setting), so TRL's and agentsd's policies sample from the same context;
- the reward function grades each completion with the task's own verifier in a fresh sandbox, as an
  episode's reply is graded (envs/terminal.py writes the reply to the task's file, then verifies);
- `privileged_context` (TRL SDPO's feedback column): the verifier's verdict on an empty reply, the
  text agentsd's teacher reads after a failed attempt, which names the expected answer;
- SFT trains on the tasks' reference replies (a user with solutions tries that first).
The trained LoRA adapter is then published as version 1 of the arm's store, and the held-out
evaluation is agentsd's own (ArmRun.evaluate), the same for every arm.

Budget: `completions` sampled while training (SDPO, GRPO: prompts x num_generations; SFT: none,
`examples` reference replies instead), and the CPU seconds of `trainer.train()` (this process's
threads and its finished children, the graders' sandboxes included; model loading excluded, as it
is for agentsd's arms).

TRL is an optional dependency (`pip install -e '.[bench]'`): it is imported when a peer arm trains.

Not guaranteed: TRL's feedback column is fixed per prompt, so its teacher reads the verdict on an
empty reply rather than on the attempt it re-scores (agentsd's teacher reads the attempt's own);
equal numbers across TRL versions (its defaults move).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsd.agent import ChatFormat
from agentsd.config import ExperimentConfig, PeerConfig, SandboxConfig
from agentsd.envs import env_class
from agentsd.errors import AgentsdError
from agentsd.experiments.measure import cpu_seconds
from agentsd.modelcache import resolve_model
from agentsd.types import Task

ADAPTER_DIR = "adapter"


class PeerError(AgentsdError):
    """A peer arm that cannot run as configured (the message says which setting or task)."""


@dataclass(frozen=True)
class PeerResult:
    """What a peer arm's training cost and produced."""

    trainer: str
    adapter: str
    cpu_seconds: float
    wall_seconds: float
    completions: int
    examples: int
    optimizer_steps: int
    libraries: dict[str, str] = field(default_factory=dict)


def reply_tasks(tasks: list[Task], suite: str) -> list[Task]:
    """`tasks`, checked to be single-turn tasks with a reference reply (what TRL's trainers take)."""
    for task in tasks:
        if task.environment.reply_file is None or not isinstance(task.reference.get("reply"), str):
            raise PeerError(
                f"collect.suite {suite}: task {task.id} is not a single-turn task with a reference reply; "
                "peer arms train on a single-turn suite (e.g. learn-reply-train)"
            )
    return tasks


def grade_reply(task: Task, reply: str, sandbox: SandboxConfig) -> tuple[float, str]:
    """(reward, the verifier's feedback) for `reply` as the task's answer, graded in a fresh sandbox
    exactly as an episode's reply is."""
    env = env_class(task.family)(sandbox=sandbox)
    try:
        env.reset(options={"task": task})
        _, reward, _, _, info = env.step(reply)
    finally:
        env.close()
    return float(reward), str(info.get("feedback") or "")


class ReplyGrader:
    """TRL's reward function: each completion graded by its task's verifier (the dataset's `task_id`)."""

    __name__ = "verifier"  # TRL names logged rewards after the function

    def __init__(self, tasks: list[Task], sandbox: SandboxConfig) -> None:
        self.tasks = {t.id: t for t in tasks}
        self.sandbox = sandbox
        self.graded = 0

    def __call__(
        self, prompts: list[Any], completions: list[Any], task_id: list[str], **_: Any
    ) -> list[float]:
        rewards = []
        for tid, completion in zip(task_id, completions, strict=True):
            text = completion if isinstance(completion, str) else str(completion[-1]["content"])
            rewards.append(grade_reply(self.tasks[tid], text, self.sandbox)[0])
        self.graded += len(rewards)
        return rewards


def dataset_rows(tasks: list[Task], chat: ChatFormat, sandbox: SandboxConfig) -> list[dict[str, str]]:
    """One row per task: the prompt as agentsd renders it, the reference reply and the verifier's
    verdict on an empty reply (TRL SDPO's `privileged_context`)."""
    rows = []
    for task in tasks:
        prompt = chat.tokenizer.decode(chat.first_prompt(task.instruction, ()))
        rows.append(
            {
                "task_id": task.id,
                "prompt": prompt,
                "completion": str(task.reference["reply"]),
                "privileged_context": grade_reply(task, "", sandbox)[1],
            }
        )
    return rows


def train_peer(
    exp: ExperimentConfig, peer: PeerConfig, tasks: list[Task], seed: int, out: Path
) -> PeerResult:
    """Train `peer` on the first tasks of `tasks` (the seed's order) within the experiment's budget;
    the adapter goes to out/adapter; the caller records the result (the arm's steps.jsonl)."""
    import peft
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # the bench extra, imported by name: typed as Any whether or not it is installed where pyright runs
    datasets: Any = importlib.import_module("datasets")
    trl: Any = importlib.import_module("trl")

    budget = exp.steps * exp.train.batch_trajectories
    if peer.trainer == "trl-sft":
        prompts, steps = budget, -(-budget // peer.batch_size)
    else:
        if budget % peer.num_generations:
            raise PeerError(
                f"peer.num_generations {peer.num_generations} must divide the budget of {budget} "
                "completions (steps x train.batch_trajectories)"
            )
        prompts = steps = budget // peer.num_generations
    chosen = reply_tasks((tasks * (prompts // max(len(tasks), 1) + 1))[:prompts], exp.collect.suite)
    path = resolve_model(exp.model.name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    chat = ChatFormat(tokenizer, demonstration=exp.collect.demonstration)
    rows = dataset_rows(chosen, chat, exp.collect.sandbox)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    targets: str | list[str] = "all-linear" if peer.lora_targets == ["all-linear"] else peer.lora_targets
    lora = peft.LoraConfig(
        r=peer.lora_rank,
        lora_alpha=peer.lora_alpha,
        lora_dropout=0.0,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    common: dict[str, Any] = {
        "output_dir": str(out / "trl"),
        "learning_rate": peer.lr,
        "max_steps": steps,
        "seed": seed,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "lr_scheduler_type": "constant",
        "max_grad_norm": exp.train.grad_clip,
        "dataloader_num_workers": 0,
    }
    sampling = exp.collect.sampling
    grader = ReplyGrader(chosen, exp.collect.sandbox)
    dataset = datasets.Dataset.from_list(rows)
    if peer.trainer == "trl-sft":
        args = trl.SFTConfig(**common, per_device_train_batch_size=peer.batch_size, completion_only_loss=True)
        trainer: Any = trl.SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset.remove_columns(["task_id", "privileged_context"]),
            processing_class=tokenizer,
            peft_config=lora,
        )
    else:
        rollout = {
            **common,
            "per_device_train_batch_size": peer.num_generations,
            "num_generations": peer.num_generations,
            "max_completion_length": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "shuffle_dataset": False,
        }
        if peer.trainer == "trl-sdpo":
            sdpo: Any = importlib.import_module("trl.experimental.sdpo")
            trainer = sdpo.SDPOTrainer(
                model=model,
                reward_funcs=grader,
                args=sdpo.SDPOConfig(**rollout, include_environment_feedback=True),
                train_dataset=dataset,
                processing_class=tokenizer,
                peft_config=lora,
            )
        else:
            trainer = trl.GRPOTrainer(
                model=model,
                reward_funcs=grader,
                args=trl.GRPOConfig(**rollout),
                train_dataset=dataset.remove_columns(["privileged_context"]),
                processing_class=tokenizer,
                peft_config=lora,
            )
    spent, started = cpu_seconds(), time.monotonic()
    trainer.train()
    spent, wall = cpu_seconds() - spent, time.monotonic() - started
    adapter = out / ADAPTER_DIR
    trainer.model.save_pretrained(str(adapter))
    result = PeerResult(
        trainer=peer.trainer,
        adapter=str(adapter),
        cpu_seconds=spent,
        wall_seconds=wall,
        completions=0 if peer.trainer == "trl-sft" else grader.graded,
        examples=len(rows),
        optimizer_steps=int(trainer.state.global_step),
        libraries={
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "torch": torch.__version__,
        },
    )
    return result
