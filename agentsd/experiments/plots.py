"""The staleness report's figures: held-out learning curves with bootstrap bands, and the step
metrics (rho p99, truncated and rejected fractions, rollout validity) as seed means.

Not guaranteed: readable figures for more than a handful of arms (one colour per arm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentsd.config import ExperimentConfig
from agentsd.experiments.arm import eval_steps
from agentsd.experiments.curves import HELDOUT, LABELS, ArmRecords, Curves, mean_of
from agentsd.plotting import pyplot


def plot(
    exp: ExperimentConfig, curves: Curves, records: dict[str, dict[int, ArmRecords]], out: Path
) -> list[Path]:
    plt = pyplot()
    arms = [a.name for a in exp.arms]
    paths = []
    fig, axes = plt.subplots(1, 4, figsize=(20, 4), dpi=100)
    try:
        for ax, metric in zip(axes, HELDOUT, strict=True):
            for arm in arms:
                points = [(s, curves.estimate(arm, s, metric)) for s in [0, *eval_steps(exp)]]
                points = [(s, e) for s, e in points if e is not None]
                if not points:
                    continue
                xs = [s for s, _ in points]
                ax.plot(xs, [e.value for _, e in points], marker="o", label=arm)
                ax.fill_between(xs, [e.low for _, e in points], [e.high for _, e in points], alpha=0.15)
            ax.set_xlabel("optimizer step")
            ax.set_title(LABELS[metric])
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / f"{exp.name}_heldout.png")
        fig.savefig(paths[-1])
    finally:
        plt.close(fig)
    fig, axes = plt.subplots(1, 5, figsize=(22, 4), dpi=100)
    try:
        per_step = ("rho/p99", "drift/log_ratio_m2", "fraction/truncated", "fraction/rejected")
        for ax, metric in zip(axes, per_step, strict=False):
            for arm in arms:
                points = [
                    (s["step"], s[metric])
                    for rec in records.get(arm, {}).values()
                    for s in rec.steps
                    if metric in s
                ]
                plot_seed_mean(ax, arm, points)
            ax.set_xlabel("optimizer step")
            ax.set_title(f"{metric} (mean over seeds)")
            if metric.startswith(("rho", "drift")):
                ax.set_yscale("log")
        ax = axes[4]
        for arm in arms:
            points = [
                (r["round"], r["valid_turns"] / r["turns"])
                for rec in records.get(arm, {}).values()
                for r in rec.rounds
                if r["turns"]
            ]
            plot_seed_mean(ax, arm, points)
        ax.set_xlabel("collect round")
        ax.set_title("valid tool-call rate of the training rollouts")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / f"{exp.name}_steps.png")
        fig.savefig(paths[-1])
    finally:
        plt.close(fig)
    return paths


def plot_seed_mean(ax: Any, arm: str, points: list[tuple[int, float]]) -> None:
    """One line per arm: at each x, the mean of the seeds' values there."""
    by_x: dict[int, list[float]] = {}
    for x, value in points:
        by_x.setdefault(int(x), []).append(float(value))
    if by_x:
        xs = sorted(by_x)
        ax.plot(xs, [mean_of(by_x[x]) for x in xs], label=arm)
