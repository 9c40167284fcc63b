"""Histograms of what the trainer consumed: trajectory age (versions and seconds) and reward.

MLflow has scalar metrics only, so a distribution is logged two ways: quantile metrics every step
(`age_versions/p50`, `reward/p90`, ...), and from time to time an artifact per distribution (a JSON
of bin edges and counts, and a PNG bar chart) under `histograms/step_NNNNNN/`.

Not guaranteed: exact quantiles over a long run; the reservoir keeps the newest `capacity` values.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agentsd.plotting import pyplot

QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Distribution:
    """The newest `capacity` values of one quantity."""

    name: str
    unit: str
    capacity: int = 100_000
    values: deque[float] = field(default_factory=deque)

    def add(self, values: list[float]) -> None:
        self.values.extend(values)
        while len(self.values) > self.capacity:
            self.values.popleft()

    def quantiles(self) -> dict[str, float]:
        if not self.values:
            return {}
        data = np.fromiter(self.values, dtype=np.float64)
        return {f"{self.name}/p{round(q * 100)}": float(np.quantile(data, q)) for q in QUANTILES}

    def histogram(self, bins: int = 20) -> dict[str, object]:
        data = np.fromiter(self.values, dtype=np.float64)
        if data.size and data.min() == data.max():  # one value: a single bin around it
            edges = np.array([data.min() - 0.5, data.max() + 0.5])
            counts = np.array([data.size])
        else:
            counts, edges = np.histogram(data, bins=bins) if data.size else (np.zeros(0), np.zeros(1))
        return {
            "name": self.name,
            "unit": self.unit,
            "count": int(data.size),
            "edges": [float(e) for e in edges],
            "counts": [int(c) for c in counts],
        }

    def write(self, directory: Path) -> list[Path]:
        """`<name>.json` and `<name>.png` in `directory`; the files written."""
        directory.mkdir(parents=True, exist_ok=True)
        hist = self.histogram()
        stem = self.name.replace("/", "_")
        as_json = directory / f"{stem}.json"
        as_json.write_text(json.dumps(hist, indent=1))
        as_png = directory / f"{stem}.png"
        _plot(hist, as_png)
        return [as_json, as_png]


def _plot(hist: dict[str, object], path: Path) -> None:
    plt = pyplot()
    edges = np.asarray(hist["edges"], dtype=np.float64)
    counts = np.asarray(hist["counts"], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    try:
        if counts.size:
            ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black")
        ax.set_xlabel(f"{hist['name']} ({hist['unit']})")
        ax.set_ylabel("trajectories")
        ax.set_title(f"{hist['name']}: {hist['count']} trajectories")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


class TrainingHistograms:
    """Age and reward of every trajectory a trainer stepped on."""

    def __init__(self) -> None:
        self.age_versions = Distribution("age_versions", "policy versions behind the trainer")
        self.age_seconds = Distribution("age_s", "seconds since the trajectory finished")
        self.reward = Distribution("reward", "verifier reward")

    @property
    def all(self) -> tuple[Distribution, ...]:
        return (self.age_versions, self.age_seconds, self.reward)

    def add(self, age_versions: list[float], age_seconds: list[float], rewards: list[float]) -> None:
        self.age_versions.add(age_versions)
        self.age_seconds.add(age_seconds)
        self.reward.add(rewards)

    def quantiles(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for dist in self.all:
            out.update(dist.quantiles())
        return out

    def write(self, directory: Path) -> list[Path]:
        return [path for dist in self.all for path in dist.write(directory)]
