"""Find and remove sandboxes that outlived the process that started them.

Every sandbox records its owner (host:pid:start-ticks) where it is created, atomically with it:
docker containers in their labels (agentsd's own, which task labels cannot overwrite), local
sandboxes in the names of their cgroups (and, for listing, a state file). A sandbox is leaked when
its owner is dead (known on the owner's host), or, on another host or without a recorded owner,
when it is older than `max_age_s`. It is never judged by whether a state directory knows it.
Containers stuck in Created or Exited count too. `reap` removes leaked sandboxes (containers with
their volumes; local cgroups after killing what is left in them) and returns what it removed.
Collectors reap at start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from agentsd.liveness import writer_alive
from agentsd.sandboxes.base import LABEL, state_dir
from agentsd.sandboxes.cgroups import SandboxCgroup, group_owner, leftover_groups

log = logging.getLogger("agentsd.sandbox")


@dataclass
class SandboxRecord:
    backend: str
    engine: str
    id: str
    owner: str
    created: float
    status: str
    owner_alive: bool | None

    @property
    def age_s(self) -> float:
        return time.time() - self.created

    def leaked(self, max_age_s: float | None) -> bool:
        if self.owner_alive is False:
            return True
        return self.owner_alive is None and max_age_s is not None and self.age_s > max_age_s


def list_local() -> list[SandboxRecord]:
    """Local sandboxes: every agentsd cgroup on this host (its name records the owner) and every
    record in this process's state directory."""
    records: dict[str, SandboxRecord] = {}
    for path in sorted(state_dir().glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        owner = str(data.get("owner", ""))
        sandbox_id = str(data.get("id", path.stem))
        records[sandbox_id] = SandboxRecord(
            "local", "local", sandbox_id, owner, float(data.get("at", 0)), "recorded", writer_alive(owner)
        )
    for directory in leftover_groups():
        sandbox_id, owner = group_owner(directory.name)
        with contextlib.suppress(OSError):
            created = directory.stat().st_mtime
            known = records.get(sandbox_id)
            records[sandbox_id] = SandboxRecord(
                "local",
                "local",
                sandbox_id,
                owner or (known.owner if known else ""),
                known.created if known else created,
                "cgroup",
                writer_alive(owner) if owner else (known.owner_alive if known else None),
            )
    return list(records.values())


def _docker_records(client: Any, engine: str) -> list[tuple[Any, SandboxRecord]]:
    found = []
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        labels = container.labels or {}
        owner = labels.get("agentsd.owner", "")
        created = float(labels.get("agentsd.created", "0") or 0)
        record = SandboxRecord(
            "docker",
            engine,
            labels.get(LABEL, container.name),
            owner,
            created,
            container.status,
            writer_alive(owner),
        )
        found.append((container, record))
    return found


def list_docker(engine: str) -> list[SandboxRecord]:
    from agentsd.sandboxes.docker_sandbox import docker_client

    client = docker_client(engine)
    try:
        return [record for _, record in _docker_records(client, engine)]
    finally:
        client.close()


def reap_local(max_age_s: float | None = None, everything: bool = False) -> list[SandboxRecord]:
    removed = []
    groups = leftover_groups()
    for record in list_local():
        if everything or record.leaked(max_age_s):
            for directory in [d for d in groups if group_owner(d.name)[0] == record.id]:
                SandboxCgroup(directory.name, dirs=[directory]).remove()
            (state_dir() / f"{record.id}.json").unlink(missing_ok=True)
            removed.append(record)
    return removed


def reap_docker(engine: str, max_age_s: float | None = None, everything: bool = False) -> list[SandboxRecord]:
    import docker.errors

    from agentsd.sandboxes.docker_sandbox import docker_client, retrying

    client = docker_client(engine)
    removed = []
    try:
        for container, record in _docker_records(client, engine):
            if everything or record.leaked(max_age_s):
                with contextlib.suppress(docker.errors.NotFound):
                    retrying(container.remove)(force=True, v=True)
                removed.append(record)
    finally:
        client.close()
    return removed
