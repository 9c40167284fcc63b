"""Where a run's tasks come from: a shipped suite by name, a task directory (or a directory of
them), or tasks imported into a store (`store:SELECTOR`, a glob on task ids or a hash prefix).

Importing validates a task once (`agentsd tasks import`); selecting it from the store later reads
the stored, validated body and nothing on disk.
"""

from __future__ import annotations

from agentsd.envs.common import TaskFormatError
from agentsd.envs.task_formats import load_suite
from agentsd.store import ReplayStore
from agentsd.types import Task

STORE_PREFIX = "store:"


def load_tasks(suite: str, store_url: str) -> list[Task]:
    """The tasks `suite` names; `store_url` is read for a `store:` suite."""
    if not suite.startswith(STORE_PREFIX):
        return load_suite(suite)
    selector = suite.removeprefix(STORE_PREFIX) or "*"
    with ReplayStore(store_url) as store:
        chosen = store.select_tasks(selector)
    if not chosen:
        raise TaskFormatError(
            f"suite {suite}: no task imported into {store_url} has an id matching {selector!r} or a hash "
            "starting with it (agentsd tasks import FORMAT PATH --store URL imports tasks; "
            "agentsd tasks ls --store URL lists them)"
        )
    return [task for _, task in chosen]
