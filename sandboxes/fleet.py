"""A fleet: many sandboxes at once over one backend's engines, with a warm pool.

`SandboxFleet(config).lease(spec)` returns a started sandbox and `release(sandbox)` gives it back
(`acquire(spec)` is both around a block); collect, run, eval and `tasks verify` get every episode's
sandbox this way. The fleet spreads sandboxes over the configured engines (the least loaded
first), never runs more than `max_per_engine` (docker) or `max_sandboxes` (local) at once per
engine, and waits for a free slot otherwise. With a warm pool, that many sandboxes per engine are
started ahead of need for each sandbox shape asked for (image, limits, network, workdir, build), so
an episode does not wait for a start; warm sandboxes carry the label pool=warm instead of the
episode's labels. An engine that does not answer when the fleet starts, or whose sandbox fails to
start and which then fails a ping, is taken out for ENGINE_COOLDOWN_S (its warm sandboxes closed)
and the start is retried on another engine (tenacity).

A new fleet first reaps what dead owners left on its engines (sandboxes/reaper.py), so a collector
that restarts after a crash cleans up after itself. With `build_cache_gb`, a fleet that starts a
sandbox from a task's built environment then prunes that engine's builds to the budget in the
background (sandboxes/build_cache.py: least recently used first, never one in use), at most once
per PRUNE_EVERY_S per engine.

Not guaranteed: sandboxes of a fleet whose process is killed stay until the next fleet starts or
`agentsd sandbox reap` runs (local ones die with the process; their cgroups and records stay); an
episode whose engine dies after its sandbox started is not moved to another engine (it ends with
the sandbox's error).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from agentsd.config import DockerSandboxConfig, LocalSandboxConfig
from agentsd.sandboxes.base import Sandbox, SandboxError
from agentsd.sandboxes.builds import BuildError
from agentsd.types import SandboxSpec

log = logging.getLogger("agentsd.sandbox")

SandboxConfig = LocalSandboxConfig | DockerSandboxConfig
LOCAL_ENGINE = "local"
ENGINE_COOLDOWN_S = 30.0  # how long an engine that failed its health check stays out
PRUNE_EVERY_S = 300.0  # builds are pruned to sandbox.build_cache_gb at most this often per engine


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


class _EngineDown(SandboxError):
    """A sandbox could not start because its engine stopped answering: try another engine."""


class SandboxFleet:
    """Sandboxes for concurrent episodes over the engines of one backend."""

    def __init__(self, config: SandboxConfig, *, reap_leaked: bool = True) -> None:
        self.config = config
        if isinstance(config, LocalSandboxConfig):
            self.engines, self.capacity = [LOCAL_ENGINE], config.max_sandboxes
        else:
            self.engines, self.capacity = list(config.engines), config.max_per_engine
        self.warm_pool = min(config.warm_pool, self.capacity)
        self._busy = dict.fromkeys(self.engines, 0)  # running episodes + warm sandboxes, per engine
        self._down_until = dict.fromkeys(self.engines, 0.0)  # engines taken out after a failed check
        self._pool: dict[tuple[str, str], deque[Sandbox]] = {}
        self._leases: dict[str, tuple[str, SandboxSpec]] = {}  # sandbox id -> (engine, spec)
        self._next_prune: dict[str, float] = {}  # engine -> when its builds may be pruned again
        self.leased: Counter[str] = Counter()  # sandboxes handed out per engine, over the fleet's life
        self._cond = threading.Condition()
        self._closed = False
        self._refill = ThreadPoolExecutor(max_workers=2, thread_name_prefix="agentsd-warm")
        self._pruner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentsd-prune")
        if reap_leaked:  # what a crashed collector left on these engines goes before new work starts
            self._reap()

    def _reap(self) -> None:
        from agentsd.sandboxes.reaper import reap_docker, reap_local

        if isinstance(self.config, LocalSandboxConfig):
            removed = reap_local()
        else:
            removed = []
            for engine in self.config.engines:
                try:
                    removed += reap_docker(engine)
                except SandboxError as exc:  # an engine that does not answer is out until it does
                    self._take_out(engine, exc)
        for record in removed:
            log.info("reaped leaked sandbox %s on %s (owner %s died)", record.id, record.engine, record.owner)

    # ------------------------------------------------------------------ leases

    def lease(self, spec: SandboxSpec) -> Sandbox:
        """A started sandbox for `spec` on the least-loaded healthy engine (a warm one when the pool
        has it), waiting while every engine is at capacity; give it back with `release`. An engine
        whose sandbox fails to start and which then fails its health check is taken out for
        ENGINE_COOLDOWN_S and the start is retried on another one."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        retrying = Retrying(
            retry=retry_if_exception_type(_EngineDown),
            stop=stop_after_attempt(len(self.engines) + 1),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._lease_once(spec)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _lease_once(self, spec: SandboxSpec) -> Sandbox:
        engine, sandbox = self._take(spec)
        if sandbox is None:
            sandbox = make_sandbox(self.config, spec, None if engine == LOCAL_ENGINE else engine)
            try:
                sandbox.start()
            except BuildError:  # the task's own build failed: no engine is to blame
                self._free(engine)
                raise
            except SandboxError as exc:
                self._free(engine)
                if engine != LOCAL_ENGINE and not self._healthy(engine):
                    self._take_out(engine, exc)
                    raise _EngineDown(f"engine {engine} failed: {exc}") from exc
                raise
            except BaseException:
                self._free(engine)
                raise
        with self._cond:
            self._leases[sandbox.id] = (engine, spec)
            self.leased[engine] += 1
        if spec.build is not None:
            self._prune_builds(engine)
        return sandbox

    def release(self, sandbox: Sandbox) -> None:
        """Close a leased sandbox and free its slot (then refill the warm pool)."""
        try:
            sandbox.close()
        finally:
            with self._cond:
                engine, spec = self._leases.pop(sandbox.id)
            self._free(engine)
            self._schedule_refill(spec)

    @contextlib.contextmanager
    def acquire(self, spec: SandboxSpec) -> Iterator[Sandbox]:
        """`lease` and `release` around a block."""
        sandbox = self.lease(spec)
        try:
            yield sandbox
        finally:
            self.release(sandbox)

    def engine_of(self, sandbox: Sandbox) -> str:
        """The engine a leased sandbox runs on."""
        with self._cond:
            return self._leases[sandbox.id][0]

    def _free(self, engine: str) -> None:
        with self._cond:
            self._busy[engine] -= 1
            self._cond.notify_all()

    def _take(self, spec: SandboxSpec) -> tuple[str, Sandbox | None]:
        shape = _shape(spec)
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the sandbox fleet is closed")
                now = time.monotonic()
                up = [e for e in self.engines if self._down_until[e] <= now]
                if not up:
                    back = min(self._down_until.values()) - now
                    raise SandboxError(
                        f"no sandbox engine answers ({', '.join(self.engines)}); the first is retried in "
                        f"{back:.0f} s"
                    )
                for engine in sorted(up, key=lambda e: self._busy[e]):
                    pool = self._pool.get((engine, shape))
                    if pool:
                        return engine, pool.popleft()  # already counted in _busy
                engine = min(up, key=lambda e: self._busy[e])
                if self._busy[engine] < self.capacity:
                    self._busy[engine] += 1
                    return engine, None
                self._cond.wait(timeout=ENGINE_COOLDOWN_S)

    # ------------------------------------------------------------------ built environments

    def _prune_builds(self, engine: str) -> None:
        """Prune `engine`'s builds to build_cache_gb in the background, unless done lately."""
        budget = self.config.build_cache_gb
        if budget is None:
            return
        with self._cond:
            if self._closed or time.monotonic() < self._next_prune.get(engine, 0.0):
                return
            self._next_prune[engine] = time.monotonic() + PRUNE_EVERY_S
            self._pruner.submit(self._prune_builds_now, engine, int(budget * 1e9))

    def _prune_builds_now(self, engine: str, keep_bytes: int) -> None:
        from agentsd.sandboxes.build_cache import prune_docker, prune_local

        try:
            if engine == LOCAL_ENGINE:
                removed = prune_local(keep_bytes=keep_bytes, unused_for_s=None)
            else:
                from agentsd.sandboxes.docker_sandbox import docker_client

                client = docker_client(engine)
                try:
                    removed = prune_docker(client, engine, keep_bytes=keep_bytes, unused_for_s=None)
                finally:
                    client.close()
        except Exception as exc:  # pruning must never fail an episode: the next lease tries again
            log.warning("pruning the built environments on %s failed: %s", engine, exc)
            return
        if removed:
            freed = sum(r.size_bytes for r in removed) / 1e9
            log.info("pruned %d built environments on %s (%.2f GB)", len(removed), engine, freed)

    # ------------------------------------------------------------------ engine health

    def _healthy(self, engine: str) -> bool:
        """Whether a docker engine answers a ping."""
        from agentsd.sandboxes.docker_sandbox import docker_client

        try:
            client = docker_client(engine)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # any failure to answer is a failed check
            return False

    def _take_out(self, engine: str, why: Exception) -> None:
        with self._cond:
            self._down_until[engine] = time.monotonic() + ENGINE_COOLDOWN_S
            pools = [key for key in self._pool if key[0] == engine]
            for key in pools:  # warm sandboxes on a dead engine are not handed out
                for sandbox in self._pool.pop(key):
                    self._busy[engine] -= 1
                    with contextlib.suppress(Exception):
                        sandbox.close()
            self._cond.notify_all()
        log.warning("sandbox engine %s taken out for %.0f s: %s", engine, ENGINE_COOLDOWN_S, why)

    def engines_up(self) -> list[str]:
        now = time.monotonic()
        with self._cond:
            return [e for e in self.engines if self._down_until[e] <= now]

    def prewarm(self, spec: SandboxSpec) -> None:
        """Fill the warm pool for this shape of sandbox (in the background)."""
        self._schedule_refill(spec)

    def _schedule_refill(self, spec: SandboxSpec) -> None:
        if self.warm_pool and not self._closed:
            warm = spec.model_copy(update={"labels": {"pool": "warm"}})
            for engine in self.engines_up():
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
        self._pruner.shutdown(wait=False, cancel_futures=True)  # a prune under way finishes on its own
        for pool in pools:
            for sandbox in pool:
                sandbox.close()

    def __enter__(self) -> SandboxFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
