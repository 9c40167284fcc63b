"""One arm x seed of a staleness experiment, run to its end or resumed where it stopped.

Lock-step rounds reproduce a fleet whose rollouts arrive K versions late on one machine: round r
runs `train.batch_trajectories` episodes of the training suite (the seed's task order, the next B
tasks) with the version K = `version_lag` behind the newest (`collect.version_lag`), then the
trainer makes one optimizer step on exactly those trajectories. Every `eval_every` steps and at
the end, the newest version runs the held-out suite through the eval path (`agentsd eval`'s
rollouts, grading and results), and KL(student || base) is measured on those rollouts.

Records under `<work_dir>/<arm>-s<seed>/`: `rounds.jsonl` (rollout validity, reward, the versions
that sampled), `steps.jsonl` (the trainer's step metrics), `evals/stepNNN.json` (held-out results)
and `done.json`. A restart resumes: the trainer from its checkpoint, a round's collect run from its
plan, evaluations already written are not rerun. The arm named `base` only evaluates the base
model (its step 0, shared by every arm of the seed).

Not guaranteed: a step's record when the process died between the trainer's checkpoint and the
record's write (its metrics reached MLflow); bitwise-equal reruns (threads, sampling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from agentsd.collect.collector import Collector
from agentsd.config import (
    ArmConfig,
    EvalConfig,
    ExperimentConfig,
    HindsightSource,
    PeerConfig,
    StoreConfig,
    TrackingConfig,
)
from agentsd.errors import AgentsdError
from agentsd.eval.probes import first_prompts, reference_logprob, reference_text
from agentsd.eval.report import read_results
from agentsd.eval.runner import finish
from agentsd.experiments.measure import cpu_seconds, kl_to_base, run_trajectory_ids, turn_validity
from agentsd.experiments.peers import train_peer
from agentsd.jobs.collect import run_collect
from agentsd.jobs.gap import GAP_JSON, gap_key, measure_gap
from agentsd.store import ReplayStore
from agentsd.suites import load_tasks
from agentsd.tracking import MlflowTracker, NullTracker, Tracker, default_tracking_uri
from agentsd.weights import weights_hash

EXPERIMENT_FILE = "experiment.json"
BASE_ARM = ArmConfig(name="base")


class ExperimentError(AgentsdError):
    """An experiment that cannot go on as configured (its records say why)."""


def arm_dir(exp: ExperimentConfig, arm: str, seed: int) -> Path:
    return exp.work_dir / f"{arm}-s{seed}"


def eval_steps(exp: ExperimentConfig) -> list[int]:
    """The steps after which an arm's newest version is evaluated (0 is the base arm's)."""
    return sorted({*range(exp.eval_every, exp.steps + 1, exp.eval_every), exp.steps})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


class ArmRun:
    """The rounds, steps and evaluations of one arm and seed."""

    def __init__(self, exp: ExperimentConfig, arm: ArmConfig, seed: int, tracker: Tracker) -> None:
        self.exp, self.arm, self.seed, self.tracker = exp, arm, seed, tracker
        self.root = arm_dir(exp, arm.name, seed)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "evals").mkdir(exist_ok=True)
        self.store_url = f"sqlite:///{(self.root / 'replay.db').absolute()}"
        self.collect = exp.collect.model_copy(
            update={
                "run_dir": self.root / "collect",
                "store": StoreConfig(url=self.store_url),
                "model": exp.model,
                "seed": seed,
                "shuffle": False,
                "repeats": 1,
                "concurrency": exp.train.batch_trajectories,
                "version_lag": arm.version_lag,
                "lineage": None,
                "tracking": TrackingConfig(enabled=False),
            }
        )
        self.train = exp.train.model_copy(
            update={
                "run_dir": self.root / "train",
                "store": StoreConfig(url=self.store_url),
                "model": exp.model,
                "sdpo": exp.train.sdpo.model_copy(update={"correction": arm.correction}),
                "hindsight": exp.train.hindsight.model_copy(update={"sources": arm_sources(exp, arm)}),
                "teacher": arm.teacher or exp.train.teacher,
                "lr": arm.lr or exp.train.lr,
                "tracking": TrackingConfig(enabled=False),
                "fork": False,
            }
        )
        tasks = load_tasks(exp.collect.suite, exp.collect.tasks_url)
        random.Random(seed).shuffle(tasks)
        self.train_tasks = tasks
        self._base_model: Any = None  # HFPolicy of the base model, for KL and reference log-probs
        self._probe: Any = None  # HFPolicy loaded with the version being measured

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        if self.arm.name == BASE_ARM.name:
            self.evaluate(0, version=0)
            if self.exp.gap and self.seed == self.exp.seeds[0]:
                for sources in gap_sources(self.exp):
                    self.measure_gap(sources)
        elif self.arm.peer is not None:
            self.train_peer_and_evaluate(self.arm.peer)
        else:
            self.train_and_evaluate()
        (self.root / "done.json").write_text(json.dumps({"arm": self.arm.name, "seed": self.seed}))

    def train_and_evaluate(self) -> None:
        import torch

        from agentsd.policies import make_policy
        from agentsd.train.trainer import Trainer

        torch.manual_seed(self.seed)  # the adapter's initialisation
        batch = self.exp.train.batch_trajectories
        policy = make_policy(self.collect.policy, self.exp.model, seed=self.seed)
        with ReplayStore(self.store_url) as store:
            trainer = Trainer(self.train, store, name=f"{self.arm.name}-s{self.seed}", tracker=self.tracker)
            with trainer:
                self._evaluate_due(trainer.step_count, store)
                while trainer.step_count < self.exp.steps:
                    round_ = trainer.step_count
                    start = round_ * batch % len(self.train_tasks)
                    tasks = (self.train_tasks * 2)[start : start + batch]
                    newest = trainer.version
                    name = f"r{round_:03d}"
                    spent = cpu_seconds()
                    collector = Collector(self.collect, policy, store, tasks, run_name=name)
                    asyncio.run(collector.run())
                    completions = self._record_round(store, round_, name, newest)["turns"]
                    result = trainer.step()
                    spent = cpu_seconds() - spent  # the round's rollouts, grading and optimizer step
                    if result is None:
                        raise ExperimentError(
                            f"{self.root}: round {round_} left nothing to train on (every episode "
                            "failed or was filtered out); see the store with `agentsd replay ls`"
                        )
                    _append(
                        self.root / "steps.jsonl",
                        {
                            "step": result.step,
                            "version": result.version,
                            "trajectories": result.trajectories,
                            "completions": completions,  # agent turns sampled in the round
                            "cpu_seconds": spent,
                            **result.metrics,
                        },
                    )
                    self._evaluate_due(trainer.step_count, store)
        policy.close()

    def train_peer_and_evaluate(self, peer: PeerConfig) -> None:
        """Train with the peer library (agentsd.experiments.peers) within the same budget, publish its
        adapter as version 1 of this arm's store and evaluate it after the last step, as every arm is.
        A restart retrains unless the adapter was published."""
        with ReplayStore(self.store_url) as store:
            published = store.get_version(1)
            if published is None:
                result = train_peer(self.exp, peer, self.train_tasks, self.seed, self.root)
                published = store.register_version(
                    1,
                    model=self.exp.model.name,
                    checkpoint_uri=str(Path(result.adapter).absolute()),
                    lineage=self.arm.name,
                    parent=None,
                    weights_hash=weights_hash(result.adapter),
                    meta={"peer": peer.trainer},
                )
                _append(
                    self.root / "steps.jsonl",
                    {
                        "step": self.exp.steps,
                        "version": 1,
                        "peer": peer.trainer,
                        "optimizer_steps": result.optimizer_steps,
                        "completions": result.completions,
                        "examples": result.examples,
                        "cpu_seconds": result.cpu_seconds,
                        "wall_seconds": result.wall_seconds,
                        "libraries": result.libraries,
                    },
                )
        if not self._eval_path(self.exp.steps).exists():
            self.evaluate(self.exp.steps, version=published.version)

    def _record_round(self, store: ReplayStore, round_: int, run_name: str, newest: int) -> dict[str, Any]:
        ids = run_trajectory_ids(store, run_name)
        trajectories = [store.get(i) for i in ids]
        validity = turn_validity(trajectories)
        versions = [turn.policy_version for t in trajectories for turn in t.turns]
        record = {
            "round": round_,
            "newest_version": newest,
            "version_lag": self.arm.version_lag,
            "turn_versions": sorted(set(versions)),
            "valid_turns": sum(v for v, _ in validity.values()),
            "turns": sum(n for _, n in validity.values()),
            "mean_reward": sum(t.reward or 0.0 for t in trajectories) / max(len(trajectories), 1),
            "trajectories": len(trajectories),
        }
        _append(self.root / "rounds.jsonl", record)
        self.tracker.log_metrics(
            {
                "rollout/valid_tool_calls": record["valid_turns"] / max(record["turns"], 1),
                "rollout/mean_reward": record["mean_reward"],
                "rollout/behaviour_version": float(max(versions, default=0)),
            },
            step=round_,
        )
        return record

    # ------------------------------------------------------------------ held-out evaluation

    def _evaluate_due(self, step: int, store: ReplayStore) -> None:
        for due in eval_steps(self.exp):
            if due <= step and not self._eval_path(due).exists():
                published = store.latest_version()
                if due != step or published is None:
                    raise ExperimentError(
                        f"{self.root}: the evaluation after step {due} is missing and its version is "
                        "no longer the newest; delete this arm's directory to rerun it"
                    )
                self.evaluate(due, version=published.version)

    def _eval_path(self, step: int) -> Path:
        return self.root / "evals" / f"step{step:03d}.json"

    def measure_gap(self, sources: list[HindsightSource]) -> None:
        """The self-teacher's gap at step 0 with `sources`, the base evaluation as the student pass."""
        path = self.root / "gaps" / f"{gap_key(sources)}.json"
        if path.exists():
            return
        hindsight = self.exp.train.hindsight.model_copy(update={"sources": sources})
        cfg = self._eval_config(0, version=0)
        tasks = load_tasks(cfg.suite, cfg.tasks_url)[: cfg.max_tasks]
        result = measure_gap(
            cfg, hindsight, "step000", tasks, name=f"gap-{gap_key(sources)}", model=self._base()
        )
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(result.directory / GAP_JSON, path)  # the gap's own record, as agentsd gap wrote it
        self.tracker.log_metrics(
            {
                f"gap/{gap_key(sources)}/{k}": float(result.summary[k]["value"])
                for k in ("gap", "reference_gap")
                if result.summary[k]["tasks"]
            },
            step=0,
        )

    def _eval_config(self, step: int, *, version: int) -> EvalConfig:
        return EvalConfig(
            **self.collect.model_dump(
                exclude={
                    "run_dir",
                    "store",
                    "suite",
                    "max_tasks",
                    "version_lag",
                    "concurrency",
                    "name",
                    "shuffle",
                    "lineage",
                }
            ),
            run_dir=self.root / "eval",
            store=StoreConfig(url=f"sqlite:///{(self.root / 'eval.db').absolute()}"),
            suite=self.exp.heldout_suite,
            max_tasks=self.exp.eval_tasks,
            concurrency=8,
            name=f"step{step:03d}",
            version=version,
            versions_store=StoreConfig(url=self.store_url) if version else None,
        )

    def evaluate(self, step: int, *, version: int) -> None:
        cfg = self._eval_config(step, version=version)
        name = str(cfg.name)
        run_collect(cfg, kind="eval")
        tasks = load_tasks(cfg.suite, cfg.tasks_url)[: cfg.max_tasks]
        directory, metrics = finish(cfg, name, tasks)
        records = read_results(directory)
        by_id = {r["trajectory_id"]: r for r in records}
        references = {t.id: reference_text(t.reference) for t in tasks}
        with ReplayStore(cfg.store.url) as eval_store:
            ids = run_trajectory_ids(eval_store, name)
            validity = turn_validity([eval_store.get(i) for i in ids])
            tokens = eval_store.load_tokens(ids)
        student = self._student(version)
        kl = kl_to_base(student.model, self._base().model, tokens) if version else dict.fromkeys(ids, 0.0)
        prompts = first_prompts(tokens)
        reference = {
            i: reference_logprob(student.model, student.tokenizer, prompts[i], text)
            for i in ids
            if i in prompts and i in by_id and (text := references.get(by_id[i]["task_id"]))
        }
        rows = [
            {
                "task_id": by_id[i]["task_id"] if i in by_id else None,
                "score": by_id[i]["score"] if i in by_id else None,
                "valid_turns": validity[i][0],
                "turns": validity[i][1],
                "kl_to_base": kl.get(i),
                "reference_logprob": reference.get(i),
            }
            for i in ids
        ]
        valid, turns = sum(r["valid_turns"] for r in rows), sum(r["turns"] for r in rows)
        summary = {
            "mean_reward": metrics.mean_score.value,
            "pass@1": metrics.pass_at[1].value,
            "valid_tool_calls": valid / turns if turns else 0.0,
            "kl_to_base": _mean_of(kl.values()),
            "reference_logprob": _mean_of(reference.values()),
        }
        result = {
            "arm": self.arm.name,
            "seed": self.seed,
            "step": step,
            "version": version,
            **summary,
            "trajectories": rows,
        }
        self._eval_path(step).write_text(json.dumps(result, indent=1))
        self.tracker.log_metrics(
            {f"heldout/{k.replace('@', '_at_')}": float(v) for k, v in summary.items()}, step=step
        )

    def _base(self) -> Any:
        from agentsd.policies.hf import HFPolicy

        if self._base_model is None:
            self._base_model = HFPolicy(self.exp.model)
        return self._base_model

    def _student(self, version: int) -> Any:
        """A model holding published `version` (the base model itself for 0), hash-checked."""
        from agentsd.policies.base import load_checked
        from agentsd.policies.hf import HFPolicy

        if not version:
            return self._base()
        if self._probe is None:
            self._probe = HFPolicy(self.exp.model)
        with ReplayStore(self.store_url) as store:
            published = store.get_version(version)
        if published is None:
            raise ExperimentError(f"{self.root}: version {version} is not in {self.store_url}")
        load_checked(self._probe, published)
        return self._probe


def arm_sources(exp: ExperimentConfig, arm: ArmConfig) -> list[HindsightSource]:
    """The hindsight sources an arm's teacher is trained with."""
    return list(arm.sources or exp.train.hindsight.sources)


def gap_sources(exp: ExperimentConfig) -> list[list[HindsightSource]]:
    """Every distinct set of hindsight sources among the arms (in arm order) and in gap_sources."""
    found: dict[str, list[HindsightSource]] = {}
    for sources in [*(arm_sources(exp, arm) for arm in exp.arms), *exp.gap_sources]:
        found.setdefault(gap_key(list(sources)), list(sources))
    return list(found.values())


def _mean_of(values: Any) -> float:
    found = [float(v) for v in values if v is not None]
    return sum(found) / len(found) if found else float("nan")


def open_arm_tracker(exp: ExperimentConfig, root: Path, name: str, parent_run: str | None) -> Tracker:
    """The arm's MLflow run, a child of the experiment's run; resumed when the arm restarts."""
    if not exp.tracking.enabled:
        return NullTracker()
    uri = exp.tracking.uri or default_tracking_uri(exp.work_dir)
    run_file = root / "mlflow_run.txt"
    tags = {"mlflow.parentRunId": parent_run} if parent_run else {}
    known = run_file.read_text().strip() if run_file.exists() else None
    tracker = MlflowTracker(uri, exp.name, name, exp.work_dir / "mlartifacts", run_id=known, tags=tags)
    run_file.write_text(tracker.run_id)
    return tracker


def load_experiment(work_dir: Path) -> ExperimentConfig:
    path = work_dir / EXPERIMENT_FILE
    try:
        return ExperimentConfig.model_validate_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"{path}: not a readable experiment ({exc})") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one arm x seed of an experiment (the runner's worker).")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--arm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--parent-run", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    exp = load_experiment(args.work_dir)
    arms = {a.name: a for a in exp.arms} | {BASE_ARM.name: BASE_ARM}
    if args.arm not in arms or args.seed not in exp.seeds:
        raise ExperimentError(f"--arm {args.arm} --seed {args.seed}: not an arm and seed of {args.work_dir}")
    root = arm_dir(exp, args.arm, args.seed)
    root.mkdir(parents=True, exist_ok=True)
    tracker = open_arm_tracker(exp, root, root.name, args.parent_run)
    try:
        ArmRun(exp, arms[args.arm], args.seed, tracker).run()
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
