"""The staleness experiment runner: every arm x seed in its own process, then the report.

`python scripts/experiments/staleness.py -c configs/experiments/staleness.yaml [key=value ...]`
validates the experiment, records it in its work directory (a rerun with other settings is
refused: change `work_dir`), opens the parent MLflow run, runs the base evaluation and each arm x
seed as a worker process (seed-major, so an interrupted experiment has every arm at the same seeds),
skips those already done, resumes the one that stopped, and writes the report
(agentsd.experiments.report) with the command and commit of the run's first start
(`provenance.json` in the records directory), whichever invocation writes it. Workers run one at a
time: one machine, one experiment.

Not guaranteed: identical numbers on a rerun (sampling and threads); a report from workers that
failed (the report is written from what exists, and the command exits non-zero).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from agentsd.config import ExperimentConfig, load_config
from agentsd.errors import AgentsdError
from agentsd.experiments.arm import BASE_ARM, EXPERIMENT_FILE, ExperimentError, arm_dir, load_experiment
from agentsd.experiments.curves import commit_records, committed_record, records_dir
from agentsd.experiments.report import write_report
from agentsd.runs import flatten, setting_changes
from agentsd.tracking import MlflowTracker, NullTracker, Tracker, default_tracking_uri


def jobs(exp: ExperimentConfig) -> list[tuple[str, int]]:
    """(arm, seed) in the order they run: seed-major, the base model first."""
    out = []
    for seed in exp.seeds:
        out += [(BASE_ARM.name, seed)] if exp.base else []
        out += [(arm.name, seed) for arm in exp.arms]
    return out


def record_experiment(exp: ExperimentConfig) -> None:
    """Write the experiment into its work directory, or check it matches the one there."""
    exp.work_dir.mkdir(parents=True, exist_ok=True)
    path = exp.work_dir / EXPERIMENT_FILE
    if path.exists():
        before = flatten(load_experiment(exp.work_dir).model_dump(mode="json", exclude={"report_dir"}))
        after = flatten(exp.model_dump(mode="json", exclude={"report_dir"}))
        changes = setting_changes(before, after)
        if changes:
            raise ExperimentError(
                f"{exp.work_dir} holds an experiment with other settings ({'; '.join(changes[:5])}); "
                "use another work_dir, or delete it to start over"
            )
    path.write_text(exp.model_dump_json(indent=1))


def open_parent(exp: ExperimentConfig) -> Tracker:
    if not exp.tracking.enabled:
        return NullTracker()
    run_file = exp.work_dir / "mlflow_parent_run.txt"
    known = run_file.read_text().strip() if run_file.exists() else None
    uri = exp.tracking.uri or default_tracking_uri(exp.work_dir)
    tracker = MlflowTracker(uri, exp.name, exp.name, exp.work_dir / "mlartifacts", run_id=known)
    run_file.write_text(tracker.run_id)
    return tracker


def commit_of(directory: Path) -> str:
    try:
        found = subprocess.run(
            ["git", "-C", str(directory), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return found.stdout.strip()


def run_worker(exp: ExperimentConfig, arm: str, seed: int, parent_run: str | None) -> int:
    root = arm_dir(exp, arm, seed)
    root.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "agentsd.experiments.arm",
        "--work-dir",
        str(exp.work_dir),
        "--arm",
        arm,
        "--seed",
        str(seed),
    ]
    cmd += ["--parent-run", parent_run] if parent_run else []
    print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: running (log {root / 'worker.log'})", flush=True)
    with (root / "worker.log").open("a") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode


def add_wall_time(exp: ExperimentConfig, seconds: float) -> float:
    """The experiment's wall time over every invocation that ran workers (interrupted ones too)."""
    path = exp.work_dir / "wall_s.txt"
    total = (float(path.read_text()) if path.exists() else 0.0) + seconds
    path.write_text(f"{total:.1f}")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the staleness experiment (arms x seeds) and write its report.",
    )
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides of the experiment.")
    parser.add_argument("-c", "--config", action="append", default=[], help="Experiment YAML (repeatable).")
    parser.add_argument("--report-only", action="store_true", help="Write the report from what exists.")
    args = parser.parse_args(argv)
    command = shlex.join(
        ["python", "scripts/experiments/staleness.py", *(argv if argv is not None else sys.argv[1:])]
    )
    try:
        exp = load_config(ExperimentConfig, args.config, args.overrides)
        record_experiment(exp)
        for arm, seed in jobs(exp):  # committed records made with other settings stop it here
            committed_record(exp, arm, seed)
    except AgentsdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    provenance = records_dir(exp) / "provenance.json"  # committed with the records
    provenance.parent.mkdir(parents=True, exist_ok=True)
    if not provenance.exists() and not args.report_only:  # the code and command that made the records
        provenance.write_text(json.dumps({"command": command, "commit": commit_of(Path.cwd())}))
    recorded = json.loads(provenance.read_text()) if provenance.exists() else {}
    failed: list[str] = []
    parent = open_parent(exp) if not args.report_only else NullTracker()
    parent_id = getattr(parent, "run_id", None)
    try:
        if not args.report_only:
            parent.log_params(exp.model_dump(mode="json"))
            for arm, seed in jobs(exp):
                if committed_record(exp, arm, seed) is not None:  # done, on this machine or another
                    continue
                done = (arm_dir(exp, arm, seed) / "done.json").exists()
                code = 0 if done else run_worker(exp, arm, seed, parent_id)
                if code != 0:
                    failed.append(
                        f"{arm} seed {seed} (exit {code}, log {arm_dir(exp, arm, seed) / 'worker.log'})"
                    )
                    break  # the next ones would likely fail the same way; a rerun resumes here
                written = commit_records(exp, arm, seed, commit=commit_of(Path.cwd()))
                print(f"records: {written} (commit it)", flush=True)
        wall_s = add_wall_time(exp, 0.0 if args.report_only else time.monotonic() - started)
        written = write_report(
            exp,
            command=recorded.get("command", command),
            commit=recorded.get("commit", commit_of(Path.cwd())),
            wall_s=wall_s,
        )
        for path in written:
            parent.log_artifact(path, "report")
    except BaseException:
        parent.close("FAILED")
        raise
    parent.close("FAILED" if failed else "FINISHED")
    print(f"report: {written[0]}", flush=True)
    if failed:
        print("failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0
