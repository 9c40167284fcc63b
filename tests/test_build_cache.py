"""Pruning the task environments built from Dockerfiles (sandboxes/build_cache.py), on both backends.
Each test is written as the failure it guards against: a prune that pulls a build from under a
running sandbox, one that removes a build a sandbox just asked for, a cache that only grows until
the disk is full, and a fleet with a budget that never prunes on its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_fixtures import SMALL, backend_config

from agentsd.config import LocalSandboxConfig
from agentsd.sandboxes import build_cache, fleet
from agentsd.sandboxes.base import Sandbox
from agentsd.sandboxes.build_cache import (
    BuildRecord,
    choose,
    list_docker,
    list_local,
    prune_docker,
    prune_local,
)
from agentsd.sandboxes.fleet import SandboxFleet, make_sandbox
from agentsd.types import BuildStep, EnvironmentBuild, SandboxSpec

GB = 10**9


def record(key: str, size_gb: float, used_ago_s: float, in_use: bool = False) -> BuildRecord:
    return BuildRecord("local", "local", key, int(size_gb * GB), 1_000_000.0 - used_ago_s, in_use)


def picked(records: list[BuildRecord], **rules: Any) -> list[str]:
    return [r.key for r in choose(records, now=1_000_000.0, **rules)]


def test_least_recently_used_go_first_until_the_rest_fits_and_nothing_in_use_or_fresh_goes() -> None:
    records = [
        record("old", 3, used_ago_s=9000),
        record("running", 5, used_ago_s=8000, in_use=True),  # a sandbox runs on it: never
        record("older", 2, used_ago_s=9500),
        record("recent", 1, used_ago_s=700),
        record("just-asked-for", 4, used_ago_s=30),  # its sandbox may not have mounted it yet: never
    ]
    # 15 GB; keep 10: the two least recently used (5 GB) go, the rest fits
    assert picked(records, keep_bytes=10 * GB, unused_for_s=None) == ["older", "old"]
    # keep 0: everything that may go goes, oldest first; what runs or was just asked for stays
    assert picked(records, keep_bytes=0, unused_for_s=None) == ["older", "old", "recent"]
    assert picked(records, keep_bytes=None, unused_for_s=3600) == ["older", "old"]
    assert picked(records, keep_bytes=None, unused_for_s=3600, keys={"old"}) == ["old"]
    assert picked(records, keep_bytes=0, unused_for_s=None, min_idle_s=0) == [
        "older",
        "old",
        "recent",
        "just-asked-for",
    ]
    assert picked(records, keep_bytes=None, unused_for_s=None) == []  # no rule, nothing goes


def built_spec(tag: str) -> SandboxSpec:
    """A recipe no other test builds (tag)."""
    command = f"mkdir -p /srv && echo {tag} > /srv/built.txt"
    step = BuildStep(kind="run", where="Dockerfile:2", line=f"RUN {command}", argv=["/bin/sh", "-c", command])
    return SandboxSpec(limits=SMALL, build=EnvironmentBuild(steps=[step]))


def key_of(sandbox: Sandbox) -> str:
    """The build a started sandbox runs on."""
    image = getattr(sandbox, "image", None)
    if isinstance(image, str) and image.startswith("agentsd/task:"):
        return image.split(":", 1)[1]
    rootfs = getattr(sandbox, "rootfs", None)
    assert isinstance(rootfs, Path)
    return rootfs.parent.name


@pytest.fixture
def local_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    cache = Path(f"/tmp/agentsd-build-cache-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("AGENTSD_BUILD_CACHE", str(cache))
    yield cache
    shutil.rmtree(cache, ignore_errors=True)


class Cache:
    """One backend's build cache, as the prune sees it."""

    def __init__(self, backend: str) -> None:
        self.config = backend_config(backend)
        self.client: Any = None
        if backend == "docker":
            from agentsd.sandboxes.docker_sandbox import docker_client

            self.client = docker_client(self.config.engines[0])  # pyright: ignore[reportAttributeAccessIssue]

    def records(self) -> dict[str, BuildRecord]:
        found = list_local() if self.client is None else list_docker(self.client, "test")
        return {r.key: r for r in found}

    def prune(self, **rules: Any) -> list[str]:
        if self.client is None:
            return [r.key for r in prune_local(**rules)]
        return [r.key for r in prune_docker(self.client, "test", **rules)]


def test_a_prune_never_pulls_a_build_from_under_a_running_sandbox(backend: str, local_cache: Path) -> None:
    cache = Cache(backend)
    tag = uuid.uuid4().hex
    spec = built_spec(tag)
    sandbox = make_sandbox(cache.config, spec)
    sandbox.start()
    try:
        key = key_of(sandbox)
        assert cache.records()[key].in_use and cache.records()[key].size_bytes > 0
        # the harshest prune there is, aimed at this build: it stays while the sandbox runs on it
        assert cache.prune(keep_bytes=0, unused_for_s=0, min_idle_s=0, keys={key}) == []
        assert sandbox.exec("cat /srv/built.txt").stdout == f"{tag}\n"
    finally:
        sandbox.close()
    assert not cache.records()[key].in_use
    assert cache.prune(keep_bytes=0, unused_for_s=None, min_idle_s=0, keys={key}) == [key]
    assert key not in cache.records()
    again = make_sandbox(cache.config, spec)  # asked for again: built again
    again.start()
    try:
        assert key_of(again) == key and again.exec("cat /srv/built.txt").stdout == f"{tag}\n"
    finally:
        again.close()


def test_a_build_a_sandbox_just_asked_for_is_kept(backend: str, local_cache: Path) -> None:
    cache = Cache(backend)
    sandbox = make_sandbox(cache.config, built_spec(uuid.uuid4().hex))
    sandbox.start()
    key = key_of(sandbox)
    sandbox.close()
    # not in use any more, but asked for a moment ago (a sandbox may be about to mount or create
    # from it): the default idle guard keeps it from a prune that would remove everything else
    assert cache.prune(keep_bytes=0, unused_for_s=0, keys={key}) == []
    assert key in cache.records()
    assert cache.prune(keep_bytes=0, unused_for_s=0, keys={key}, dry_run=True, min_idle_s=0) == [key]
    assert key in cache.records()  # a dry run removes nothing
    cache.prune(keep_bytes=0, unused_for_s=0, min_idle_s=0, keys={key})


def test_a_fleet_with_a_build_budget_prunes_the_least_recently_used_on_its_own(
    local_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend_config("local")
    monkeypatch.setattr(build_cache, "MIN_IDLE_S", 0.0)
    monkeypatch.setattr(fleet, "PRUNE_EVERY_S", 0.0)
    config = LocalSandboxConfig(build_cache_gb=1e-9)  # room for nothing: every idle build goes
    with SandboxFleet(config) as sandboxes:
        with sandboxes.acquire(built_spec(uuid.uuid4().hex)) as first:
            old = key_of(first)
        with sandboxes.acquire(built_spec(uuid.uuid4().hex)) as second:
            new = key_of(second)
            deadline = time.monotonic() + 120
            while old in (kept := {r.key for r in list_local()}) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert old not in kept and new in kept  # pruned in the background; in use: kept
            assert second.exec("cat /srv/built.txt").exit_code == 0


def test_the_cli_lists_and_prunes_builds_and_asks_what_to_keep(local_cache: Path) -> None:
    backend_config("local")
    sandbox = make_sandbox(LocalSandboxConfig(), built_spec(uuid.uuid4().hex))
    sandbox.start()
    key = key_of(sandbox)
    sandbox.close()

    def agentsd(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            sys.executable,
            "-m",
            "agentsd.cli.main",
            "sandbox",
            *args,
            "--engine",
            "unix:///nonexistent.sock",
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    listed = agentsd("builds", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["backend"], r["key"], r["in_use"]) for r in rows] == [("local", key, False)]
    assert "skipped unix:///nonexistent.sock" in listed.stderr  # an engine that does not answer
    unsure = agentsd("prune-builds")
    assert unsure.returncode == 2 and "give --keep-gb GB, --unused-days DAYS or both" in unsure.stderr
    fresh = agentsd("prune-builds", "--keep-gb", "0")  # idle less than 10 min: kept
    assert fresh.returncode == 0 and "0 built environments removed" in fresh.stdout
    pruned = agentsd("prune-builds", "--keep-gb", "0", "--min-idle-s", "0")
    assert pruned.returncode == 0 and f"removed local {key}" in pruned.stdout
    assert list_local() == []
