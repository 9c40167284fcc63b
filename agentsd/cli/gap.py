"""`agentsd gap`: the self-teacher's gap on a suite (student pass, teacher pass, per-task difference)."""

from __future__ import annotations

from typing import Annotated

import typer

from agentsd.cli.common import ConfigFiles, StoreUrl, console


def gap(
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.")] = None,
    config: ConfigFiles = None,
    store: StoreUrl = None,
) -> None:
    """Measure how much better the model does with the trainer's hindsight in its prompt, before training.

    The student pass is an eval run; the teacher pass runs the same tasks with the hindsight
    (`hindsight.sources`) before each task's text. A rerun with the same `name` resumes both."""
    from agentsd.config import GapConfig, load_config
    from agentsd.jobs.gap import run_gap

    cfg = load_config(GapConfig, config or [], overrides or [])
    if store:
        cfg.store.url = store
    result = run_gap(cfg)
    s = result.summary

    def cell(key: str) -> str:
        e = s[key]
        return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" if e["tasks"] else "n/a"

    console.print(f"teacher context: {', '.join(s['sources'])}", highlight=False)
    console.print(f"student mean reward {cell('student')}   teacher {cell('teacher')}", highlight=False)
    console.print(f"teacher - student {cell('gap')}", highlight=False)
    console.print(f"reference action log-prob gap per token {cell('reference_gap')}", highlight=False)
    console.print(f"report in {result.directory}", highlight=False)
