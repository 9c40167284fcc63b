"""What the staleness experiment's arms recorded, as curves: held-out evaluations by arm, seed and
step, with 95% percentile bootstrap intervals over held-out tasks.

`load_records` reads each arm x seed's directory (agentsd.experiments.arm); `Curves` answers an arm's
estimate of a metric at a step, and the paired difference between two arms over the tasks both
have (each task's value averaged over the seeds that have it).

Not guaranteed: meaningful intervals from a handful of tasks or seeds; seed-to-seed variance beyond
what resampling tasks shows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsd.config import ExperimentConfig
from agentsd.eval.metrics import Estimate, bootstrap
from agentsd.experiments.arm import BASE_ARM, ExperimentError, arm_dir, eval_steps, read_jsonl
from agentsd.runs import flatten, setting_changes

HELDOUT = ("mean_reward", "valid_tool_calls", "reference_logprob", "kl_to_base")
COMPARED = HELDOUT[:3]  # the measures of an agent getting better; KL only says how far it moved
LABELS = {
    "mean_reward": "held-out mean reward",
    "valid_tool_calls": "valid tool-call rate (per turn)",
    "kl_to_base": "KL(student || base) per token",
    "reference_logprob": "log-prob of the reference action (per token)",
}


@dataclass
class ArmRecords:
    """What one arm x seed recorded: held-out evaluations by step, the trainer's steps, the
    collect rounds and (the base arm) the self-teacher's gaps by hindsight sources."""

    evals: dict[int, dict[str, Any]] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    gaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: bool = False

    def packed(self) -> dict[str, Any]:
        """The records as one JSON-able mapping (the committed form)."""
        return {
            "evals": {str(step): data for step, data in sorted(self.evals.items())},
            "steps": self.steps,
            "rounds": self.rounds,
            "gaps": self.gaps,
            "done": self.done,
        }

    @classmethod
    def unpacked(cls, data: dict[str, Any]) -> ArmRecords:
        return cls(
            evals={int(step): e for step, e in data.get("evals", {}).items()},
            steps=list(data.get("steps", [])),
            rounds=list(data.get("rounds", [])),
            gaps=dict(data.get("gaps", {})),
            done=bool(data.get("done")),
        )


def records_dir(exp: ExperimentConfig) -> Path:
    """Where finished arm x seed records are committed."""
    return exp.records_dir or exp.report_dir / exp.name


def record_path(exp: ExperimentConfig, arm: str, seed: int) -> Path:
    return records_dir(exp) / f"{arm}-s{seed}.json"


def record_settings(exp: ExperimentConfig, arm: str) -> dict[str, Any]:
    """What an arm x seed's numbers depend on, flattened: the experiment's settings but where its
    files go, which arms and seeds it has and which extra gaps it measures, plus the arm's own."""
    shared = exp.model_dump(
        mode="json",
        exclude={
            "arms",
            "seeds",
            "work_dir",
            "report_dir",
            "records_dir",
            "compare_with",
            "gap_sources",
            "tracking",
        },
    )
    own = next((a for a in exp.arms if a.name == arm), BASE_ARM)
    return flatten({"experiment": shared, "arm": own.model_dump(mode="json")})


def committed_record(exp: ExperimentConfig, arm: str, seed: int) -> ArmRecords | None:
    """The committed records of an arm x seed, None when there are none; ExperimentError when they
    were made with other settings (they must not be merged with these)."""
    path = record_path(exp, arm, seed)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    recorded = data.get("settings", {})
    # A setting the record does not name was added to agentsd after it was made, and a new
    # setting's default keeps what older code did: only the settings the record names can differ.
    current = {k: v for k, v in record_settings(exp, arm).items() if k in recorded}
    changed = setting_changes(recorded, current)
    if changed:
        raise ExperimentError(
            f"{path} was made with other settings ({'; '.join(changed[:5])}): give this experiment "
            "another name, or move that record away to rerun it"
        )
    return ArmRecords.unpacked(data)


def read_arm_dir(root: Path) -> ArmRecords:
    """What an arm x seed's working directory holds (agentsd.experiments.arm)."""
    rec = ArmRecords(done=(root / "done.json").exists())
    for path in sorted((root / "evals").glob("step*.json")):
        data = json.loads(path.read_text())
        rec.evals[int(data["step"])] = data
    for path in sorted((root / "gaps").glob("*.json")):
        rec.gaps[path.stem] = json.loads(path.read_text())
    rec.steps = read_jsonl(root / "steps.jsonl")
    rec.rounds = read_jsonl(root / "rounds.jsonl")
    return rec


def commit_records(exp: ExperimentConfig, arm: str, seed: int, *, commit: str) -> Path:
    """Write a finished arm x seed's records, with the commit that made them, into the records
    directory (atomically) and return the file; the working directory can then go."""
    path = record_path(exp, arm, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = read_arm_dir(arm_dir(exp, arm, seed)).packed()
    packed = {"arm": arm, "seed": seed, "commit": commit, "settings": record_settings(exp, arm), **records}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(packed, indent=1, default=str))
    tmp.replace(path)
    return path


def load_records(exp: ExperimentConfig) -> dict[str, dict[int, ArmRecords]]:
    """arm -> seed -> records, for the base arm and every configured arm (missing seeds left out):
    the committed record where there is one, else the working directory (a run in progress)."""
    out: dict[str, dict[int, ArmRecords]] = {}
    names = ([BASE_ARM.name] if exp.base else []) + [a.name for a in exp.arms]
    for name in names:
        for seed in exp.seeds:
            committed, root = committed_record(exp, name, seed), arm_dir(exp, name, seed)
            if committed is not None:
                out.setdefault(name, {})[seed] = committed
            elif root.exists():
                out.setdefault(name, {})[seed] = read_arm_dir(root)
    return out


def _task_values(evaluation: dict[str, Any], metric: str) -> dict[str, float]:
    """Per held-out task: the metric of its trajectory (validity: valid turns / turns)."""
    out: dict[str, float] = {}
    for row in evaluation["trajectories"]:
        task = row["task_id"]
        if task is None:
            continue
        if metric == "mean_reward":
            value = row["score"]
        elif metric == "valid_tool_calls":
            value = row["valid_turns"] / row["turns"] if row["turns"] else None
        else:
            value = row.get(metric)
        if value is not None:
            out[task] = float(value)
    return out


def _per_task(evaluations: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Each task's metric averaged over the evaluations (seeds) that have it."""
    sums: dict[str, list[float]] = {}
    for evaluation in evaluations:
        for task, value in _task_values(evaluation, metric).items():
            sums.setdefault(task, []).append(value)
    return {task: sum(v) / len(v) for task, v in sums.items()}


class Curves:
    """Held-out evaluations by arm and step, each seed's step 0 being the base model's."""

    def __init__(self, exp: ExperimentConfig, records: dict[str, dict[int, ArmRecords]]) -> None:
        self.exp, self.records = exp, records
        base = records.get(BASE_ARM.name, {})
        self.base_by_seed = {seed: rec.evals[0] for seed, rec in base.items() if 0 in rec.evals}

    def evaluations(self, arm: str, step: int) -> list[dict[str, Any]]:
        if step == 0:
            seeds = self.records.get(arm, {}).keys() if arm != BASE_ARM.name else self.base_by_seed.keys()
            return [self.base_by_seed[s] for s in seeds if s in self.base_by_seed]
        return [rec.evals[step] for rec in self.records.get(arm, {}).values() if step in rec.evals]

    def estimate(self, arm: str, step: int, metric: str) -> Estimate | None:
        values = _per_task(self.evaluations(arm, step), metric)
        return bootstrap(list(values.values())) if values else None

    def difference(self, arm: str, other: str, step: int, other_step: int, metric: str) -> Estimate | None:
        mine = _per_task(self.evaluations(arm, step), metric)
        theirs = _per_task(self.evaluations(other, other_step), metric)
        common = sorted(set(mine) & set(theirs))
        return bootstrap([mine[t] - theirs[t] for t in common]) if common else None

    def last_step(self, arm: str) -> int | None:
        steps = [s for s in [0, *eval_steps(self.exp)] if self.evaluations(arm, s)]
        return max(steps) if steps else None


def mean_of(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return sum(clean) / len(clean) if clean else float("nan")
