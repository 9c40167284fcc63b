"""Run plans: a collect or eval run's name means one plan, recorded in the store and checked on resume.

A plan is what decides which episodes a run has and how they are played: the suite, its tasks (ids
in order, and a hash of their content), repeats, shuffle and seed, and the settings an episode
depends on (model, sampling, turn and time limits, grading on truncation, the judge). The first
start of a run records its plan; every later start of the same name compares and refuses a mismatch,
naming each setting that changed, before any episode runs. Eval runs are new unless resumed by name.

Not guaranteed: operational settings (concurrency, sandbox backend, store, tracking) may change
between starts of one run; they do not change which episodes the run has. Secrets (api_key) are
never recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from agentsd.config import CollectConfig
from agentsd.errors import AgentsdError
from agentsd.store import ReplayStore
from agentsd.types import Task

RunKind = Literal["collect", "eval"]
_EPISODE_SETTINGS = (
    "model",
    "sampling",
    "max_turns",
    "episode_timeout_s",
    "grade_on_truncation",
    "judge",
    "version",
    "demonstration",
)


class RunPlanError(AgentsdError):
    """A run name whose recorded plan differs from the one asked for (or a name already taken)."""


def plan_of(cfg: CollectConfig, tasks: Sequence[Task]) -> dict[str, Any]:
    settings = _without_secrets(cfg.model_dump(mode="json", include=set(_EPISODE_SETTINGS)))
    digest = hashlib.sha256("".join(t.content_hash() for t in tasks).encode()).hexdigest()
    return {
        "suite": cfg.suite,
        "tasks": [t.id for t in tasks],
        "tasks_hash": digest,
        "repeats": cfg.repeats,
        "shuffle": cfg.shuffle,
        "seed": cfg.seed,
        "settings": settings,
        "config_hash": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest(),
    }


def claim_run(store: ReplayStore, name: str, kind: RunKind, plan: dict[str, Any], *, new: bool) -> None:
    """Record run `name`'s plan, or check it against the recorded one. `new`: the name must not
    have been used yet (an eval run not resumed)."""
    recorded = store.run_plan(name)
    if recorded is None:
        if new and store.list(id_prefix=f"{name}.", limit=1):
            raise RunPlanError(
                f"run {name!r} already has trajectories in {store.url}; resume it or pick a new name"
            )
        if not store.record_run(name, kind, plan):  # another process recorded it meanwhile
            claim_run(store, name, kind, plan, new=new)
        return
    recorded_kind, before = recorded
    if new:
        raise RunPlanError(
            f"{kind} run {name!r} already exists in {store.url}; pass --resume {name} to continue it, or "
            "choose another name"
        )
    if recorded_kind != kind:
        article = "an" if kind == "eval" else "a"
        raise RunPlanError(f"run {name!r} is a {recorded_kind} run, not {article} {kind} run")
    changes = plan_changes(before, plan)
    if changes:
        raise RunPlanError(
            f"{kind} run {name!r} was planned differently; resuming would mix two plans. Changed: "
            + "; ".join(changes)
            + ". Restore those settings, or start a run under another name"
        )


def plan_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Each difference between two plans, as `field: old -> new`."""
    changes = []
    for key in ("suite", "repeats", "shuffle", "seed"):
        if before.get(key) != after.get(key):
            changes.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    old_tasks, new_tasks = before.get("tasks", []), after.get("tasks", [])
    if old_tasks != new_tasks:
        first = next((i for i, (a, b) in enumerate(zip(old_tasks, new_tasks, strict=False)) if a != b), None)
        where = f", first difference at #{first}" if first is not None else ""
        changes.append(f"tasks: {len(old_tasks)} -> {len(new_tasks)} tasks{where}")
    elif before.get("tasks_hash") != after.get("tasks_hash"):
        changes.append("tasks: the same ids with different content")
    for key in sorted(set(before.get("settings", {})) & set(after.get("settings", {}))):
        was, now = before["settings"][key], after["settings"][key]
        if (was is None) != (now is None):  # e.g. a judge added or removed
            changes.append(f"{key}: {'none' if was is None else 'set'} -> {'none' if now is None else 'set'}")
    old, new = flatten(before.get("settings", {})), flatten(after.get("settings", {}))
    for key in sorted(set(old) & set(new)):  # a setting only one agentsd version knows is not compared
        if old[key] != new[key]:
            changes.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return changes


def setting_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Each difference between two flattened settings (a key only one side has included), as
    `key: old -> new`."""
    return [
        f"{k}: {before.get(k)!r} -> {after.get(k)!r}"
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    ]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {"a.b.c": value}, values kept as they are."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _without_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_secrets(v) for k, v in data.items() if k != "api_key"}
    return data
