"""Suite metrics over n runs per task (APEX-Agents style), with bootstrap confidence intervals.

Per task with n graded runs of which c passed: mean score, pass@1 = c/n, pass@k = 1 - C(n-c, k)/C(n, k)
(the chance that at least one of k runs drawn without replacement passes; Chen et al.) and
pass^k = C(c, k)/C(n, k) (all k pass; tau-bench). Suite numbers are means over tasks, overall and per
domain; confidence intervals resample tasks with replacement (percentile bootstrap, seeded).
A run that could not be graded (score None) is left out and counted.

Not guaranteed: k larger than a task's graded runs (that task is left out of pass@k / pass^k).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import comb


@dataclass(frozen=True)
class RunResult:
    """One run of one task, graded."""

    task_id: str
    domain: str
    score: float | None  # None: not graded
    passed: bool | None


@dataclass
class TaskStats:
    task_id: str
    domain: str
    runs: int
    ungraded: int
    mean_score: float
    passes: int
    pass_at: dict[int, float] = field(default_factory=dict)
    pass_all: dict[int, float] = field(default_factory=dict)


def pass_at_k(n: int, c: int, k: int) -> float:
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} runs, got {n}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    if k > n:
        raise ValueError(f"pass^{k} needs at least {k} runs, got {n}")
    return comb(c, k) / comb(n, k)


def task_stats(results: Sequence[RunResult], ks: Sequence[int]) -> list[TaskStats]:
    by_task: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        by_task[r.task_id].append(r)
    out = []
    for task_id, runs in sorted(by_task.items()):
        graded = [r for r in runs if r.score is not None]
        n = len(graded)
        c = sum(1 for r in graded if r.passed)
        stats = TaskStats(
            task_id,
            runs[0].domain,
            len(runs),
            len(runs) - n,
            sum(r.score for r in graded if r.score is not None) / n if n else float("nan"),
            c,
        )
        for k in ks:
            if 0 < k <= n:
                stats.pass_at[k] = pass_at_k(n, c, k)
                stats.pass_all[k] = pass_hat_k(n, c, k)
        out.append(stats)
    return out


@dataclass
class Estimate:
    value: float
    low: float
    high: float
    tasks: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(
    values: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """The mean of per-task values with a percentile-bootstrap interval over tasks."""
    clean = [v for v in values if v == v]  # drop NaN (tasks without graded runs)
    if not clean:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = sum(clean) / len(clean)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(clean, k=len(clean))) / len(clean) for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[int(tail * (resamples - 1))]
    high = means[int((1 - tail) * (resamples - 1))]
    return Estimate(mean, low, high, len(clean))


@dataclass
class SuiteMetrics:
    tasks: int
    runs: int
    ungraded: int
    mean_score: Estimate
    pass_at: dict[int, Estimate]
    pass_all: dict[int, Estimate]
    by_domain: dict[str, SuiteMetrics] = field(default_factory=dict)

    def flat(self, prefix: str = "") -> dict[str, float]:
        """Scalars for MLflow: mean_score, pass@1, pass@k, pass^k (and their CI bounds)."""
        out = {f"{prefix}mean_score": self.mean_score.value, f"{prefix}runs_ungraded": float(self.ungraded)}
        for k, e in self.pass_at.items():
            out[f"{prefix}pass_at_{k}"] = e.value
            out[f"{prefix}pass_at_{k}_ci_low"], out[f"{prefix}pass_at_{k}_ci_high"] = e.low, e.high
        for k, e in self.pass_all.items():
            out[f"{prefix}pass_hat_{k}"] = e.value
        for domain, sub in self.by_domain.items():
            out.update(sub.flat(f"{prefix}{domain}/"))
        return out


def suite_metrics(
    results: Sequence[RunResult], ks: Sequence[int] = (1,), *, seed: int = 0, per_domain: bool = True
) -> SuiteMetrics:
    ks = sorted(set([1, *ks]))
    stats = task_stats(results, ks)

    def over(pick: Callable[[TaskStats], float | None]) -> Estimate:
        return bootstrap([v for v in (pick(s) for s in stats) if v is not None], seed=seed)

    metrics = SuiteMetrics(
        tasks=len(stats),
        runs=len(results),
        ungraded=sum(s.ungraded for s in stats),
        mean_score=over(lambda s: s.mean_score),
        pass_at={k: over(lambda s, k=k: s.pass_at.get(k)) for k in ks},
        pass_all={k: over(lambda s, k=k: s.pass_all.get(k)) for k in ks if k > 1},
    )
    if per_domain:
        domains = sorted({r.domain for r in results})
        if len(domains) > 1:
            metrics.by_domain = {
                d: suite_metrics([r for r in results if r.domain == d], ks, seed=seed, per_domain=False)
                for d in domains
            }
    return metrics
