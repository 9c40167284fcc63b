"""The staleness experiment's report: learning curves with bootstrap bands, tables, a results JSON.

Reads what the arms recorded (agentsd.experiments.arm) and writes `<report_dir>/<name>.md`,
`<name>.json` and `<name>_*.png`. Every interval is a 95% percentile bootstrap over held-out tasks
(each task's value averaged over the seeds that have it); a difference between two arms is
bootstrapped over the tasks both have, paired. Statements about the targets are computed from the
intervals, never written by hand. The curves and their intervals come from
agentsd.experiments.curves, the figures from agentsd.experiments.plots.

Not guaranteed: meaningful intervals from a handful of tasks or seeds (the table says how many);
seed-to-seed variance beyond what resampling tasks shows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from agentsd.config import ArmConfig, ExperimentConfig
from agentsd.eval.metrics import Estimate, bootstrap
from agentsd.experiments.arm import BASE_ARM, arm_sources, eval_steps
from agentsd.experiments.curves import (
    COMPARED,
    HELDOUT,
    LABELS,
    ArmRecords,
    Curves,
    load_records,
    mean_of,
)
from agentsd.experiments.plots import plot
from agentsd.jobs.gap import gap_key


def seed_table(exp: ExperimentConfig, records: dict[str, dict[int, ArmRecords]]) -> list[dict[str, Any]]:
    """Arm x seed: the final held-out numbers and the step metrics over the arm's run."""
    rows = []
    for arm, seeds in records.items():
        for seed, rec in sorted(seeds.items()):
            final = rec.evals[max(rec.evals)] if rec.evals else None
            steps = rec.steps
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "done": rec.done,
                    "steps": len(steps),
                    "eval_step": final["step"] if final else None,
                    **{m: (final.get(m) if final else None) for m in ("mean_reward", "pass@1", *HELDOUT[1:])},
                    "rho_p99_max": max((s.get("rho/p99", float("nan")) for s in steps), default=None),
                    "rho_max": max((s.get("rho/max", float("nan")) for s in steps), default=None),
                    "truncated": mean_of([s.get("fraction/truncated", float("nan")) for s in steps])
                    if steps
                    else None,
                    "rejected": mean_of([s.get("fraction/rejected", float("nan")) for s in steps])
                    if steps
                    else None,
                    "masked": mean_of([s.get("fraction/masked", float("nan")) for s in steps])
                    if steps
                    else None,
                    "drift_max": max(
                        (s.get("drift/log_ratio_m2", float("nan")) for s in steps), default=None
                    ),
                    "staleness": mean_of([s.get("staleness/mean", float("nan")) for s in steps])
                    if steps
                    else None,
                    "rollout_valid": _rollout_validity(rec.rounds),
                }
            )
    return rows


def budget_table(records: dict[str, dict[int, ArmRecords]]) -> list[dict[str, Any]]:
    """Arm x seed, for arms whose steps recorded their cost: completions sampled and CPU seconds
    spent training, the final held-out reward and reference log-prob beside the base model's of the
    same seed, and each gain per CPU-hour (None where a number is missing)."""
    base = {seed: rec.evals.get(0) for seed, rec in records.get(BASE_ARM.name, {}).items()}
    rows = []
    for arm, seeds in records.items():
        for seed, rec in sorted(seeds.items()):
            costed = [s for s in rec.steps if "cpu_seconds" in s]
            if arm == BASE_ARM.name or not costed or not rec.evals:
                continue
            cpu_s = sum(float(s["cpu_seconds"]) for s in costed)
            final, before = rec.evals[max(rec.evals)], base.get(seed)
            row: dict[str, Any] = {
                "arm": arm,
                "seed": seed,
                "completions": sum(int(s.get("completions", 0)) for s in costed),
                "examples": sum(int(s.get("examples", 0)) for s in costed) or None,
                "cpu_seconds": cpu_s,
            }
            for metric in ("mean_reward", "reference_logprob"):
                after = final.get(metric)
                start = before.get(metric) if before else None
                row[f"{metric}_before"], row[f"{metric}_after"] = start, after
                gain = after - start if after is not None and start is not None else None
                row[f"{metric}_gain_per_cpu_hour"] = (
                    gain / (cpu_s / 3600) if gain is not None and cpu_s else None
                )
            rows.append(row)
    return rows


def _budget_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = [
        "",
        "## Budget",
        "",
        "What each arm x seed spent training (CPU seconds of its process and finished children: "
        "rollouts, grading sandboxes, optimizer steps; model loading and evaluation excluded) and "
        "what it gained on the held-out tasks over the base model of the same seed. Completions: "
        "replies sampled while training (SFT samples none; it trains on `examples` reference replies).",
        "",
        "| arm | seed | completions | examples | CPU s | reward before | reward after | reward gain / CPU-h "
        "| log-prob before | log-prob after | log-prob gain / CPU-h |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["arm"],
            str(r["seed"]),
            str(r["completions"]),
            _fmt(r["examples"]),
            _fmt(r["cpu_seconds"], 0),
        ]
        cells += [
            _fmt(r[k]) for k in ("mean_reward_before", "mean_reward_after", "mean_reward_gain_per_cpu_hour")
        ]
        cells += [
            _fmt(r[k])
            for k in (
                "reference_logprob_before",
                "reference_logprob_after",
                "reference_logprob_gain_per_cpu_hour",
            )
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _rollout_validity(rounds: list[dict[str, Any]]) -> float | None:
    turns = sum(r["turns"] for r in rounds)
    return sum(r["valid_turns"] for r in rounds) / turns if turns else None


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def reference_arm(exp: ExperimentConfig) -> str | None:
    """The arm the others are compared with: `compare_with`, else the one with no lag and the full
    correction (None when there is neither)."""
    if exp.compare_with is not None:
        return exp.compare_with
    return next((a.name for a in exp.arms if a.version_lag == 0 and a.correction == "full"), None)


def write_report(exp: ExperimentConfig, *, command: str, commit: str, wall_s: float) -> list[Path]:
    """Write the markdown report, the results JSON and the plots; returns their paths."""
    records = load_records(exp)
    curves = Curves(exp, records)
    out = exp.report_dir
    out.mkdir(parents=True, exist_ok=True)
    plots = plot(exp, curves, records, out)
    reference = reference_arm(exp)
    final: dict[str, dict[str, Any]] = {}
    for arm in [BASE_ARM.name, *[a.name for a in exp.arms]]:
        step = 0 if arm == BASE_ARM.name else curves.last_step(arm)
        if step is None:
            continue
        entry: dict[str, Any] = {"step": step}
        for metric in HELDOUT:
            entry[metric] = _as_dict(curves.estimate(arm, step, metric))
            if arm != BASE_ARM.name:
                entry[f"{metric}_minus_base"] = _as_dict(
                    curves.difference(arm, BASE_ARM.name, step, 0, metric)
                )
                if reference and arm != reference and curves.last_step(reference) is not None:
                    ref_step = curves.last_step(reference) or 0
                    entry[f"{metric}_minus_{reference}"] = _as_dict(
                        curves.difference(arm, reference, step, ref_step, metric)
                    )
        final[arm] = entry
    table = seed_table(exp, records)
    gaps = gap_table(records)
    budget = budget_table(records)
    results = {
        "budget": budget,
        "gaps": gaps,
        "experiment": exp.model_dump(mode="json"),
        "command": command,
        "commit": commit,
        "wall_s": wall_s,
        "final": final,
        "by_arm_and_seed": table,
        "curves": {
            arm: {
                str(s): {m: _as_dict(curves.estimate(arm, s, m)) for m in HELDOUT}
                for s in [0, *eval_steps(exp)]
                if curves.evaluations(arm, s)
            }
            for arm in [a.name for a in exp.arms]
        },
    }
    json_path = out / f"{exp.name}.json"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    md_path = out / f"{exp.name}.md"
    md_path.write_text(
        _markdown(exp, curves, final, table, reference, plots, command, commit, wall_s)
        + _budget_markdown(budget)
        + _gap_markdown(exp, gaps, final)
    )
    return [md_path, json_path, *plots]


def gap_table(records: dict[str, dict[int, ArmRecords]]) -> dict[str, dict[str, Any]]:
    """Hindsight sources -> the step-0 gap (teacher minus student reward, reference-action log-prob
    per token), each task averaged over the seeds that measured it, bootstrapped over tasks."""
    by_sources: dict[str, dict[str, dict[str, list[float]]]] = {}
    for rec in records.get(BASE_ARM.name, {}).values():
        for key, gap in rec.gaps.items():
            tasks = by_sources.setdefault(key, {})
            for row in gap["rows"]:
                for metric in ("student", "teacher", "gap", "reference_gap"):
                    if row.get(metric) is not None:
                        tasks.setdefault(metric, {}).setdefault(row["task_id"], []).append(row[metric])
    out: dict[str, dict[str, Any]] = {}
    for key, metrics in by_sources.items():
        out[key] = {
            metric: _as_dict(bootstrap([mean_of(v) for v in per_task.values()]))
            for metric, per_task in metrics.items()
        }
    return out


def _missing_seeds(exp: ExperimentConfig, table: list[dict[str, Any]]) -> str:
    present = {row["seed"] for row in table}
    missing = [s for s in exp.seeds if s not in present]
    if not missing:
        return ""
    return f" (no records for seed {', '.join(map(str, missing))}: the run stopped before it)"


def _as_dict(e: Estimate | None) -> dict[str, float] | None:
    if e is None or math.isnan(e.value):
        return None
    return {"value": e.value, "low": e.low, "high": e.high, "tasks": e.tasks}


def _interval(d: dict[str, float] | None) -> str:
    return "-" if d is None else f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _gap_markdown(
    exp: ExperimentConfig, gaps: dict[str, dict[str, Any]], final: dict[str, dict[str, Any]]
) -> str:
    """The step-0 gap by teacher context, and each arm's measured gain beside its context's gap."""
    if not gaps:
        return ""
    lines = [
        "",
        "## The self-teacher's gap at step 0",
        "",
        "The base model with the teacher's context in each held-out task's prompt, where the trainer's "
        "teacher view puts it (`agentsd gap`'s teacher pass), against the base model without it; at "
        "step 0 every teacher mode is the base "
        "model, so the gap depends on the context only.",
        "",
        "| teacher context | student reward | teacher reward | teacher - student | reference log-prob gap |",
        "|---|---|---|---|---|",
    ]
    for key, g in gaps.items():
        cells = [_interval(g.get(m)) for m in ("student", "teacher", "gap", "reference_gap")]
        lines.append(f"| {key.replace('_', ' + ')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| arm | its context's reward gap | its reference log-prob gap | measured reward - base "
        "| measured log-prob - base |",
        "|---|---|---|---|---|",
    ]
    for arm in exp.arms:
        key = gap_key(arm_sources(exp, arm))
        entry, g = final.get(arm.name, {}), gaps.get(key, {})
        lines.append(
            f"| {arm.name} | {_interval(g.get('gap'))} | {_interval(g.get('reference_gap'))} | "
            f"{_interval(entry.get('mean_reward_minus_base'))} | "
            f"{_interval(entry.get('reference_logprob_minus_base'))} |"
        )
    lines.append("")
    return "\n".join(lines)


def _arm_summary(exp: ExperimentConfig, arm: ArmConfig) -> str:
    t, peer = exp.train, arm.peer
    if peer is not None:
        group = "" if peer.trainer == "trl-sft" else f", groups of {peer.num_generations}"
        return (
            f"`{arm.name}` ({peer.trainer}{group}, LoRA rank {peer.lora_rank} alpha {peer.lora_alpha} on "
            f"{', '.join(peer.lora_targets)}, lr {peer.lr:g})"
        )
    return (
        f"`{arm.name}` (K={arm.version_lag}, {arm.correction}, teacher `{(arm.teacher or t.teacher).mode}`, "
        f"context {' + '.join(arm.sources or t.hindsight.sources)}, lr {arm.lr or t.effective_lr:g})"
    )


def _verdict(d: dict[str, float] | None) -> str:
    if d is None:
        return "not measured"
    if d["low"] > 0:
        return "above zero"
    if d["high"] < 0:
        return "below zero"
    return "interval includes zero"


def _markdown(
    exp: ExperimentConfig,
    curves: Curves,
    final: dict[str, dict[str, Any]],
    table: list[dict[str, Any]],
    reference: str | None,
    plots: list[Path],
    command: str,
    commit: str,
    wall_s: float,
) -> str:
    t = exp.train
    lines = [
        f"# Learning experiment `{exp.name}`",
        "",
        "Generated by the experiment runner; every number below is computed from the arms' records.",
        "",
        f"- command: `{command}`",
        f"- commit: `{commit}`",
        f"- wall time: {wall_s / 60:.1f} min"
        if wall_s
        else "- wall time: not recorded (the runner was stopped before it added its time)",
        f"- model `{exp.model.name}`; "
        + (f"LoRA rank {t.lora.rank}" if t.lora else "full fine-tune")
        + f", lr {t.effective_lr:g}, {t.batch_trajectories} trajectories per step, {exp.steps} steps, "
        f"teacher `{t.teacher.mode}`, K_max {t.sdpo.max_staleness}",
        f"- rollouts: suite `{exp.collect.suite}`, temperature {exp.collect.sampling.temperature}, "
        f"{exp.collect.max_turns} turns, {exp.collect.sampling.max_new_tokens} tokens per turn",
        f"- held-out: `{exp.heldout_suite}`, first {exp.eval_tasks} tasks, after steps "
        f"{', '.join(map(str, eval_steps(exp)))}; seeds {', '.join(map(str, exp.seeds))}"
        + _missing_seeds(exp, table),
        "- arms: " + "; ".join(_arm_summary(exp, a) for a in exp.arms),
        "",
        "Intervals: 95% bootstrap over held-out tasks (each task averaged over seeds); differences are "
        "paired by task.",
        "",
        "## Final held-out results",
        "",
        "| arm | step | mean reward | valid tool-call rate | reference log-prob | KL to base | reward - base "
        "| validity - base | log-prob - base |"
        + (f" reward - {reference} | validity - {reference} | log-prob - {reference} |" if reference else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if reference else ""),
    ]
    for arm, entry in final.items():
        row = [arm, str(entry["step"])]
        row += [_interval(entry.get(m)) for m in HELDOUT]
        row += [_interval(entry.get(f"{m}_minus_base")) for m in COMPARED]
        if reference:
            row += [_interval(entry.get(f"{m}_minus_{reference}")) for m in COMPARED]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Against the targets", ""]
    if reference and reference in final:
        for metric in COMPARED:
            d = final[reference].get(f"{metric}_minus_base")
            lines.append(f"- `{reference}` minus base, {LABELS[metric]}: {_interval(d)}: {_verdict(d)}.")
        ref_final = final[reference]
        for arm in [a for a in exp.arms if a.name != reference]:
            if arm.name not in final:
                continue
            for metric in COMPARED:
                d = final[arm.name].get(f"{metric}_minus_{reference}")
                lines.append(
                    f"- `{arm.name}` minus `{reference}`, {LABELS[metric]}: {_interval(d)}: {_verdict(d)}."
                )
            kl, ref_kl = final[arm.name].get("kl_to_base"), ref_final.get("kl_to_base")
            if kl and ref_kl:
                lines.append(
                    f"- `{arm.name}` KL to base {kl['value']:.4f} vs `{reference}` {ref_kl['value']:.4f}."
                )
    else:
        lines.append("- no arm with K=0 and `full` finished: nothing to compare against.")
    lines += [
        "",
        "## By arm and seed",
        "",
        "Final held-out numbers; rho p99 and max and the drift (mean (log rho)^2 of a step) are the "
        "largest over the arm's steps; truncated (tokens with rho > C, truncated under `full` only), "
        "rejected (tokens the correction's trust region rejected), masked (by every rule, K_max "
        "included) and staleness are means over its steps; rollout validity is over its training "
        "rollouts.",
        "",
        "| arm | seed | steps | eval step | mean reward | pass@1 | valid tool calls | reference log-prob | "
        "KL to base | rho p99 | rho max | drift | truncated | rejected | masked | staleness | "
        "rollout validity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        cells = [r["arm"], str(r["seed"]), str(r["steps"]), _fmt(r["eval_step"])]
        cells += [_fmt(r[k]) for k in ("mean_reward", "pass@1", "valid_tool_calls", "reference_logprob")]
        cells += [_fmt(r["kl_to_base"], 4), _fmt(r["rho_p99_max"], 2), _fmt(r["rho_max"], 2)]
        cells += [_fmt(r[k]) for k in ("drift_max", "truncated", "rejected", "masked")] + [
            _fmt(r["staleness"], 2),
            _fmt(r["rollout_valid"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Curves", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    lines.append("")
    return "\n".join(lines)
