"""The sandbox fleet: a concurrency bound per engine and a warm pool, on both backends."""

from __future__ import annotations

import threading
import time

from sandbox_fixtures import backend_config, spec

from agentsd.sandboxes.base import owner_identity
from agentsd.sandboxes.fleet import SandboxFleet
from agentsd.sandboxes.reaper import list_docker, list_local


def _ids_alive(backend: str, config: object, *, mine: bool = False) -> set[str]:
    """Recorded sandboxes; with `mine`, only this process's (others on the machine run their own)."""
    records = list_local() if backend == "local" else list_docker(config.engines[0])  # type: ignore[attr-defined]
    return {r.id for r in records if not mine or r.owner == owner_identity()}


def test_fleet_never_runs_more_than_its_capacity(backend: str) -> None:
    config = backend_config(backend).model_copy(
        update={"max_sandboxes": 2} if backend == "local" else {"max_per_engine": 2}
    )
    active, peak, done = 0, 0, []
    lock = threading.Lock()

    def episode(i: int) -> None:
        nonlocal active, peak
        with fleet.acquire(spec(episode=str(i))) as sandbox:
            with lock:
                active += 1
                peak = max(peak, active)
            assert sandbox.exec(f"echo {i}").stdout == f"{i}\n"
            time.sleep(0.3)
            with lock:
                active -= 1
        done.append(i)

    with SandboxFleet(config) as fleet:
        threads = [threading.Thread(target=episode, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(done) == [0, 1, 2, 3, 4] and peak == 2


def test_warm_pool_hands_out_started_sandboxes_and_refills(backend: str) -> None:
    config = backend_config(backend).model_copy(update={"warm_pool": 2})
    shape = spec()
    with SandboxFleet(config) as fleet:
        fleet.prewarm(shape)
        deadline = time.monotonic() + 60
        while fleet.warm_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fleet.warm_count() == 2
        warm_ids = _ids_alive(backend, config, mine=True)
        assert len(warm_ids) >= 2
        with fleet.acquire(spec(episode="e1")) as sandbox:
            assert sandbox.id in warm_ids  # no start on the episode's path
            assert sandbox.exec("echo warm").stdout == "warm\n"
        while fleet.warm_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fleet.warm_count() == 2  # refilled after the episode
        pooled = _ids_alive(backend, config, mine=True)
    assert not pooled & _ids_alive(backend, config, mine=True)  # close() released the pool


def test_a_new_fleet_reaps_what_a_dead_owner_left(backend: str) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    config = backend_config(backend)
    here = Path(__file__).parent
    owner = subprocess.Popen(
        [sys.executable, str(here / "sandbox_owner.py"), config.model_dump_json()],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(here)},
    )  # fmt: skip
    assert owner.stdout is not None
    ids = {owner.stdout.readline().strip() for _ in range(2)}
    owner.kill()
    owner.wait()
    assert ids <= _ids_alive(backend, config)
    SandboxFleet(config).close()
    assert not ids & _ids_alive(backend, config)
