"""The sandbox fleet: a concurrency bound per engine and a warm pool, on both backends."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sandbox_fixtures import backend_config, spec

from agentsd.config import DockerSandboxConfig
from agentsd.envs.common import SUITES_DIR
from agentsd.envs.harbor import load_harbor_task
from agentsd.envs.terminal import TerminalEnv
from agentsd.sandboxes import fleet as fleet_module
from agentsd.sandboxes.base import Sandbox, SandboxError, owner_identity
from agentsd.sandboxes.fleet import SandboxFleet
from agentsd.sandboxes.reaper import list_docker, list_local

SUITE = SUITES_DIR / "terminal"


def _ids_alive(backend: str, config: object, *, mine: bool = False) -> set[str]:
    """Recorded sandboxes; with `mine`, only this process's (others on the machine run their own)."""
    records = list_local() if backend == "local" else list_docker(config.engines[0])  # pyright: ignore[reportAttributeAccessIssue]
    return {r.id for r in records if not mine or r.owner == owner_identity()}


def test_fleet_never_runs_more_than_its_capacity(backend: str) -> None:
    config = backend_config(backend).model_copy(
        update={"max_sandboxes": 2} if backend == "local" else {"max_per_engine": 2}
    )
    active, peak, done = 0, 0, []
    changed = threading.Condition()

    def episode(i: int) -> None:
        nonlocal active, peak
        with fleet.acquire(spec(episode=str(i))) as sandbox:
            with changed:
                active += 1
                peak = max(peak, active)
                changed.notify_all()
                # the first two wait for each other (starts may finish seconds apart on a loaded
                # machine), so a third one let in beside them would show in the peak
                changed.wait_for(lambda: peak >= 2, timeout=120)
            assert sandbox.exec(f"echo {i}").stdout == f"{i}\n"
            time.sleep(0.3)
            with changed:
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
        deadline = time.monotonic() + 120
        while fleet.warm_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fleet.warm_count() == 2
        warm_ids = _ids_alive(backend, config, mine=True)
        assert len(warm_ids) >= 2
        with fleet.acquire(spec(episode="e1")) as sandbox:
            assert sandbox.id in warm_ids  # no start on the episode's path
            assert sandbox.exec("echo warm").stdout == "warm\n"
        deadline = time.monotonic() + 120  # the refill's own bound
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
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(here)},
    )
    assert owner.stdout is not None
    ids = {owner.stdout.readline().strip() for _ in range(2)}
    owner.kill()
    owner.wait()
    assert ids <= _ids_alive(backend, config)
    SandboxFleet(config).close()
    assert not ids & _ids_alive(backend, config)


def _second_name_for(engine: str, tmp: Path) -> str:
    """Another URL of the same Docker engine (a link to its socket): two engine entries on one machine."""
    assert engine.startswith("unix://"), engine
    alias = tmp / "engine-alias.sock"
    alias.symlink_to(engine.removeprefix("unix://"))
    return f"unix://{alias}"


@pytest.mark.docker
def test_sandboxes_spread_over_two_engines_within_each_engines_limit(tmp_path: Path) -> None:
    # every sandbox used to go to the first engine, and max_per_engine did nothing in collect
    first = backend_config("docker").engines[0]  # pyright: ignore[reportAttributeAccessIssue]
    engines = [first, _second_name_for(first, tmp_path)]
    config = DockerSandboxConfig(engines=engines, max_per_engine=2)
    with SandboxFleet(config) as fleet:
        held = [fleet.lease(spec(episode=str(i))) for i in range(4)]
        assert sorted(fleet.engine_of(s) for s in held) == sorted(engines * 2)
        waiting: list[Sandbox] = []
        late = threading.Thread(target=lambda: waiting.append(fleet.lease(spec(episode="late"))))
        late.start()
        late.join(timeout=1.0)
        assert not waiting  # both engines full: the fifth waits for a slot
        fleet.release(held.pop(0))
        late.join(timeout=120)
        assert len(waiting) == 1 and waiting[0].exec("echo ok").stdout == "ok\n"
        for sandbox in [*held, *waiting]:
            fleet.release(sandbox)
    assert fleet.leased == Counter({engines[0]: 3, engines[1]: 2}) or fleet.leased == Counter(
        {engines[0]: 2, engines[1]: 3}
    )


@pytest.mark.docker
def test_an_engine_that_stops_answering_is_taken_out_and_episodes_start_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out for the whole test: a loaded machine must not see the dead engine's cooldown end midway
    monkeypatch.setattr(fleet_module, "ENGINE_COOLDOWN_S", 3600.0)
    good = backend_config("docker").engines[0]  # pyright: ignore[reportAttributeAccessIssue]
    dead = f"unix://{tmp_path}/no-engine.sock"
    # not reaped at start: the dead engine looks healthy until a sandbox fails on it
    config = DockerSandboxConfig(engines=[dead, good], max_per_engine=2)
    with SandboxFleet(config, reap_leaked=False) as fleet:
        sandbox = fleet.lease(spec(episode="first"))  # tried on the dead engine first, then moved
        assert fleet.engine_of(sandbox) == good and fleet.engines_up() == [good]
        assert sandbox.exec("echo moved").stdout == "moved\n"
        fleet.release(sandbox)
    with SandboxFleet(config) as fleet:  # reaping at start finds it dead at once
        assert fleet.engines_up() == [good]
        env = TerminalEnv(fleet=fleet)
        try:
            env.reset(options={"task": load_harbor_task(SUITE / "count-lines")})
            assert fleet.engine_of(env.sandbox) == good  # pyright: ignore[reportArgumentType]
        finally:
            env.close()
    only_dead = DockerSandboxConfig(engines=[dead])
    with SandboxFleet(only_dead) as fleet, pytest.raises(SandboxError, match=r"no sandbox engine answers"):
        fleet.lease(spec(episode="nowhere"))
