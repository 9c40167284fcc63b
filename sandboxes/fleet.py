"""A fleet: many sandboxes at once over one backend's engines, with a warm pool.

`SandboxFleet(config).acquire(spec)` is a context manager that yields a started sandbox and always
closes it. The fleet spreads sandboxes over the configured engines (the least loaded first), never
runs more than `max_per_engine` (docker) or `max_sandboxes` (local) at once per engine, and waits
for a free slot otherwise. With a warm pool, that many sandboxes per engine are started ahead of
need for each sandbox shape asked for (image, limits, network, workdir), so an episode does not wait
for a start; warm sandboxes carry the label pool=warm instead of the episode's labels.

A new fleet first reaps what dead owners left on its engines (sandboxes/reaper.py), so a collector
that restarts after a crash cleans up after itself.

Not guaranteed: sandboxes of a fleet whose process is killed stay until the next fleet starts or
`agentsd sandbox reap` runs (local ones die with the process; their cgroups and records stay).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from agentsd.config import DockerSandboxConfig, LocalSandboxConfig
from agentsd.sandboxes.base import Sandbox
from agentsd.types import SandboxSpec

log = logging.getLogger("agentsd.sandbox")

SandboxConfig = LocalSandboxConfig | DockerSandboxConfig
LOCAL_ENGINE = "local"


def make_sandbox(config: SandboxConfig, spec: SandboxSpec, engine: str | None = None) -> Sandbox:
    """An unstarted sandbox of the configured backend."""
    if isinstance(config, LocalSandboxConfig):
        from agentsd.sandboxes.local import LocalSandbox

        return LocalSandbox(spec, rootfs=config.rootfs, host_user=config.host_user)
    from agentsd.sandboxes.docker_sandbox import DockerSandbox

    return DockerSandbox(spec, engine=engine or config.engines[0], network_mode=config.network_mode)


def _shape(spec: SandboxSpec) -> str:
    """What makes two sandboxes interchangeable: everything but the labels."""
    return spec.model_copy(update={"labels": {}}).model_dump_json()


class SandboxFleet:
    """Sandboxes for concurrent episodes over the engines of one backend."""

    def __init__(self, config: SandboxConfig, *, reap_leaked: bool = True) -> None:
        self.config = config
        if reap_leaked:  # what a crashed collector left on these engines goes before new work starts
            self._reap()
        if isinstance(config, LocalSandboxConfig):
            self.engines, self.capacity = [LOCAL_ENGINE], config.max_sandboxes
        else:
            self.engines, self.capacity = list(config.engines), config.max_per_engine
        self.warm_pool = min(config.warm_pool, self.capacity)
        self._busy = dict.fromkeys(self.engines, 0)  # running episodes + warm sandboxes, per engine
        self._pool: dict[tuple[str, str], deque[Sandbox]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._refill = ThreadPoolExecutor(max_workers=2, thread_name_prefix="agentsd-warm")

    def _reap(self) -> None:
        from agentsd.sandboxes.reaper import reap_docker, reap_local

        if isinstance(self.config, LocalSandboxConfig):
            removed = reap_local()
        else:
            removed = [r for engine in self.config.engines for r in reap_docker(engine)]
        for record in removed:
            log.info("reaped leaked sandbox %s on %s (owner %s died)", record.id, record.engine, record.owner)

    @contextlib.contextmanager
    def acquire(self, spec: SandboxSpec) -> Iterator[Sandbox]:
        engine, sandbox = self._take(spec)
        try:
            if sandbox is None:
                sandbox = make_sandbox(self.config, spec, None if engine == LOCAL_ENGINE else engine)
                sandbox.start()
            yield sandbox
        finally:
            if sandbox is not None:
                sandbox.close()
            with self._cond:
                self._busy[engine] -= 1
                self._cond.notify_all()
            self._schedule_refill(spec)

    def _take(self, spec: SandboxSpec) -> tuple[str, Sandbox | None]:
        shape = _shape(spec)
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the sandbox fleet is closed")
                for engine in sorted(self.engines, key=lambda e: self._busy[e]):
                    pool = self._pool.get((engine, shape))
                    if pool:
                        return engine, pool.popleft()  # already counted in _busy
                engine = min(self.engines, key=lambda e: self._busy[e])
                if self._busy[engine] < self.capacity:
                    self._busy[engine] += 1
                    return engine, None
                self._cond.wait()

    def prewarm(self, spec: SandboxSpec) -> None:
        """Fill the warm pool for this shape of sandbox (in the background)."""
        self._schedule_refill(spec)

    def _schedule_refill(self, spec: SandboxSpec) -> None:
        if self.warm_pool and not self._closed:
            warm = spec.model_copy(update={"labels": {"pool": "warm"}})
            for engine in self.engines:
                with contextlib.suppress(RuntimeError):  # executor shut down by close()
                    self._refill.submit(self._fill, engine, warm)

    def _fill(self, engine: str, spec: SandboxSpec) -> None:
        key = (engine, _shape(spec))
        while True:
            with self._cond:
                pool = self._pool.setdefault(key, deque())
                if self._closed or len(pool) >= self.warm_pool or self._busy[engine] >= self.capacity:
                    return
                self._busy[engine] += 1
            sandbox = make_sandbox(self.config, spec, None if engine == LOCAL_ENGINE else engine)
            try:
                sandbox.start()
            except Exception as exc:
                log.warning("warm pool: could not start a sandbox on %s: %s", engine, exc)
                with self._cond:
                    self._busy[engine] -= 1
                return
            with self._cond:
                if self._closed:
                    self._busy[engine] -= 1
                    sandbox.close()
                    return
                pool.append(sandbox)
                self._cond.notify_all()

    def warm_count(self) -> int:
        with self._cond:
            return sum(len(pool) for pool in self._pool.values())

    def close(self) -> None:
        """Close every warm sandbox; episodes still running close theirs on the way out."""
        with self._cond:
            self._closed = True
            pools, self._pool = list(self._pool.values()), {}
            self._cond.notify_all()
        self._refill.shutdown(wait=True, cancel_futures=True)
        for pool in pools:
            for sandbox in pool:
                sandbox.close()

    def __enter__(self) -> SandboxFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
