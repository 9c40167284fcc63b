"""The live display: a table a person watches on a terminal, periodic lines in a pipe or a log."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from rich.console import Console

from agentsd import progress
from agentsd.progress import LiveStatus


def test_a_terminal_sees_a_live_table_of_the_figures() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    figures = {"episodes": "3 done, 2 running, 10 planned", "policy version": "4"}
    with LiveStatus("collect demo", lambda: figures, console):
        figures["episodes"] = "4 done, 2 running, 10 planned"
        time.sleep(1.5)
    frame = out.getvalue()
    assert "collect demo" in frame and "4 done, 2 running, 10 planned" in frame and "policy version" in frame


class _Clock:
    """progress' monotonic clock, moved by the test; counts its reads."""

    def __init__(self) -> None:
        self.now, self.reads = 0.0, 0

    def monotonic(self) -> float:
        self.reads += 1
        return self.now


def test_a_pipe_gets_one_line_per_interval_and_a_last_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # the display's clock is the test's: a line per interval is then a fact, not a race with a
    # loaded machine's scheduler
    clock = _Clock()
    monkeypatch.setattr(progress, "time", clock)
    monkeypatch.setattr(progress, "REFRESH_S", 0.01)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=4096)
    count = iter(range(1000))

    def printed(n: int) -> None:
        deadline = time.monotonic() + 60
        while len(out.getvalue().splitlines()) < n:
            assert time.monotonic() < deadline, f"{n} lines never came: {out.getvalue()!r}"
            time.sleep(0.01)

    with LiveStatus("train t", lambda: {"step": str(next(count))}, console, interval_s=30):
        while clock.reads == 0:  # the display has read the time it starts from
            time.sleep(0.01)
        for n in (1, 2, 3):
            clock.now += 30
            printed(n)
        time.sleep(0.1)  # refreshes with the clock still: no line
        assert len(out.getvalue().splitlines()) == 3
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and all(line.startswith("train t: step=") for line in lines)


def test_a_failing_snapshot_is_shown_not_raised() -> None:
    out = io.StringIO()

    def broken() -> dict[str, str]:
        raise OSError("database is locked")

    with LiveStatus("collect x", broken, Console(file=out, force_terminal=False)):
        pass
    assert "unavailable (OSError: database is locked)" in out.getvalue()


def test_the_collect_figures_show_episodes_versions_staleness_and_the_trainer(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from agentsd.collect.collector import Collector
    from agentsd.config import CollectConfig
    from agentsd.jobs.collect import collect_figures
    from agentsd.modelcache import resolve_model
    from agentsd.policies.scripted import ScriptedPolicy
    from agentsd.store import ReplayStore
    from agentsd.types import Family, Task, Verifier

    policy = ScriptedPolicy(AutoTokenizer.from_pretrained(resolve_model("default")), lambda _: "ok")
    cfg = CollectConfig.model_validate({"store": {"url": f"sqlite:///{tmp_path}/r.db"}})
    task = Task(
        id="t", family=Family.TERMINAL, instruction="do", verifier=Verifier(kind="script", script="true")
    )
    with ReplayStore(cfg.store.url) as store:
        step = {"step": 3, "step_loss": 0.25, "step_kl": 0.01, "step_rho_p99": 1.5}
        store.register_version(
            3, model="m", checkpoint_uri="/x", lineage="l", parent=None, weights_hash=None, meta=step
        )
        collector = Collector(cfg, policy, store, [task] * 4, run_name="fig")
        collector.stats.episodes, collector.stats.turns = 1, 5
        collector.versions.start("fig.0.0")  # one episode running, on version 0
        figures = collect_figures(collector, store, planned=4)
    with ReplayStore(f"sqlite:///{tmp_path}/eval.db") as elsewhere:  # an eval of version 3: none here
        assert "staleness" not in collect_figures(collector, elsewhere, planned=4)
    assert figures["episodes"] == "1 done, 0 running, 4 planned"
    assert figures["policy version"] == "0 for new episodes; sampling 0"
    assert figures["staleness"] == "3 versions behind the newest (3)"
    assert figures["trainer"] == "step 3 -> version 3: loss 0.2500, kl 0.0100, rho p99 1.50"
