"""`agentsd eval`: roll a policy out on a suite the way collection does, then grade and report.

The rollouts are a collect run (agentsd.collect.collector: same sandboxes, envs, policies, judge), so a
score here is the reward training would see; its trajectories land in the eval store. Then each
finalized trajectory of the run becomes one results record: rubric tasks carry their per-criterion
grading, the other families their verifier reward (passed = reward 1). A trajectory whose grading
failed (termination env_error) is recorded with score None: not graded, never a zero.

Not guaranteed: results of trajectories that are not finalized (an interrupted run resumes first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentsd.config import EvalConfig
from agentsd.eval.metrics import SuiteMetrics, suite_metrics
from agentsd.eval.report import RESULTS, as_runs, write_report, write_results
from agentsd.store import ReplayStore
from agentsd.tracking import open_tracker
from agentsd.types import Task, Termination, TrajectoryStatus


def records_of_run(store: ReplayStore, run_name: str, tasks: list[Task]) -> list[dict[str, Any]]:
    by_id = {t.id: t for t in tasks}
    records = []
    for summary in store.list(id_prefix=f"{run_name}.", limit=None, newest_first=False):
        if summary.status != TrajectoryStatus.FINALIZED:
            continue
        trajectory = store.get(summary.id, with_turns=False)
        task = by_id.get(trajectory.task_id)
        meta = trajectory.meta
        graded = trajectory.termination not in (Termination.ENV_ERROR, None) and trajectory.reward is not None
        score = float(trajectory.reward) if graded and trajectory.reward is not None else None
        if "passed" in meta:
            passed = meta["passed"] if graded else None
        else:
            passed = (score >= 1.0) if score is not None else None
        records.append(
            {
                "trajectory_id": trajectory.id,
                "task_id": trajectory.task_id,
                "domain": str(
                    (task.meta.get("domain") if task else None) or (task.family.value if task else "unknown")
                ),
                "family": task.family.value if task else meta.get("family"),
                "episode": meta.get("episode"),
                "attempt": meta.get("attempt"),
                "score": score,
                "passed": passed,
                "reward": trajectory.reward,
                "termination": trajectory.termination.value if trajectory.termination else None,
                "policy_version": trajectory.version_start,
                "answer": meta.get("answer"),
                "criteria": meta.get("grading") or [],
                "error": meta.get("error"),
            }
        )
    return records


def finish(cfg: EvalConfig, run_name: str, tasks: list[Task]) -> tuple[Path, SuiteMetrics]:
    """Results, metrics, reports and MLflow for the finished collect run `run_name`."""
    with ReplayStore(cfg.store.url) as store:
        records = records_of_run(store, run_name, tasks)
    out = cfg.run_dir / run_name
    write_results(out / RESULTS, records)
    metrics = suite_metrics(as_runs(records), cfg.k, seed=cfg.seed)
    written = write_report(out, f"{cfg.suite} ({run_name}, {cfg.model.name})", records, metrics)
    with open_tracker(cfg.tracking, cfg.run_dir, f"eval-{run_name}") as tracker:
        tracker.log_params(
            {
                "suite": cfg.suite,
                "repeats": cfg.repeats,
                "model": cfg.model.name,
                "policy": cfg.policy.backend,
                "judge": cfg.judge.backend if cfg.judge else "none",
            }
        )
        tracker.log_metrics(metrics.flat())
        for path in [out / RESULTS, *written]:
            tracker.log_artifact(path, "eval")
    return out, metrics
