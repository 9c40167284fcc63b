"""Trajectory age and reward distributions logged by the trainer: quantiles and histogram files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentsd.histograms import Distribution, TrainingHistograms


def test_quantiles_and_histogram_counts_match_numpy() -> None:
    dist = Distribution("reward", "verifier reward")
    dist.add([0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.25])
    q = dist.quantiles()
    assert q["reward/p50"] == pytest.approx(0.75)
    assert q["reward/p99"] == pytest.approx(1.0)
    hist = dist.histogram(bins=4)
    assert hist["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert hist["counts"] == [2, 1, 1, 4] and hist["count"] == 8


def test_a_single_value_gets_one_bin_and_an_empty_distribution_no_quantiles() -> None:
    dist = Distribution("age_versions", "versions")
    assert dist.quantiles() == {}
    dist.add([3.0, 3.0])
    assert dist.histogram() == {
        "name": "age_versions",
        "unit": "versions",
        "count": 2,
        "edges": [2.5, 3.5],
        "counts": [2],
    }


def test_the_reservoir_keeps_the_newest_values() -> None:
    dist = Distribution("age_s", "s", capacity=3)
    dist.add([1.0, 2.0, 3.0, 4.0, 5.0])
    assert list(dist.values) == [3.0, 4.0, 5.0]


def test_write_produces_json_and_png_per_distribution(tmp_path: Path) -> None:
    histograms = TrainingHistograms()
    histograms.add([0.0, 1.0, 2.0], [10.0, 20.0, 30.0], [0.0, 1.0, 1.0])
    written = histograms.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        f"{n}.{ext}" for n in ("age_versions", "age_s", "reward") for ext in ("json", "png")
    )
    assert json.loads((tmp_path / "reward.json").read_text())["count"] == 3
    assert (tmp_path / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(histograms.quantiles()) >= {"age_versions/p50", "age_s/p90", "reward/p99"}
