"""Which policy version each of a collector's episodes samples with, and switching the policy between
them.

New episodes start on `current`, the newest version verified here (`version_lag` versions behind the
followed lineage's newest); each running episode keeps sampling with its own (`episode_versions`)
and the generation queue serves each version's requests through `generate_as`, which switches the
policy and samples under one lock. A new version is loaded (hash-checked) once, when it is picked
up: before a new episode starts (`version_pickup: episode`) or before a round of generation, for
every running episode at once (`turn`). Switching back to a version still in use is the backend's
cheap path (weights kept in memory, LoRA per request). At most `max_live_versions` versions sample
at once: episodes on the oldest switch to `current`.

Not guaranteed: that a version picked up is the newest at the moment an episode samples (the store
is polled at most every VERSION_POLL_S); a version that fails to load is retried with backoff, never
given up on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from agentsd.agent import STOP_STRINGS
from agentsd.config import CollectConfig
from agentsd.policies.base import Policy, PolicyError, base_version, load_checked
from agentsd.store import ReplayStore
from agentsd.types import Completion, PolicyVersion

VERSION_POLL_S = 5.0
LOAD_RETRY_S = (30.0, 600.0)  # a version that failed to load is retried after 30 s, doubling to 10 min

log = logging.getLogger("agentsd.collect.collector")


class EpisodeVersions:
    """The policy versions a collector's episodes sample with (module doc)."""

    def __init__(
        self,
        policy: Policy,
        store: ReplayStore,
        config: CollectConfig,
        on_load_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.config = config
        self.on_load_failure = on_load_failure  # a version failed to load (counted in the stats)
        self.current = policy.version  # the version new episodes start on
        self.episode_versions: dict[str, int] = {}  # running trajectory id -> the version it samples with
        self._records: dict[int, PolicyVersion] = {0: base_version(policy.model_name)}
        self._switch_lock = threading.Lock()  # the policy serves one version at a time
        self._pickup_lock = asyncio.Lock()  # episodes starting at once load a new version once
        self._load_failures: dict[int, tuple[int, float]] = {}  # version -> (failures, retry after)
        self._last_poll = 0.0

    # ------------------------------------------------------------------ episodes

    def start(self, trajectory_id: str) -> int:
        """A new episode samples with `current`; returns that version."""
        self.episode_versions[trajectory_id] = self.current
        self._bound_live_versions()
        return self.current

    def finish(self, trajectory_id: str) -> None:
        self.episode_versions.pop(trajectory_id, None)

    def version_of(self, trajectory_id: str) -> int:
        """The version the episode samples with now (`current` once it has finished)."""
        return self.episode_versions.get(trajectory_id, self.current)

    def live(self) -> int:
        """How many versions sample now, counting `current`."""
        return len({*self.episode_versions.values(), self.current})

    # ------------------------------------------------------------------ picking up new versions

    def pickup_between_turns(self) -> None:
        """turn mode: a newer version takes over every running episode at its next turn."""
        newer = self._newer_version()
        if newer is not None and self._load(newer):
            for tid in self.episode_versions:
                self.episode_versions[tid] = self.current

    async def pickup_for_new_episode(self) -> None:
        """episode mode: a newer version becomes `current` before the episode starts; running episodes
        keep theirs."""
        async with self._pickup_lock:
            newer = await asyncio.to_thread(self._newer_version)  # store reads stay off the event loop
            if newer is not None:
                await asyncio.to_thread(self._load, newer)

    def _newer_version(self) -> PolicyVersion | None:
        now = time.monotonic()
        if now - self._last_poll < VERSION_POLL_S:
            return None
        self._last_poll = now
        return self._loadable_newer()

    def _loadable_newer(self) -> PolicyVersion | None:
        """The newest version of the followed lineage (`version_lag` steps behind it) if it is newer
        than the one new episodes start on and not waiting out a failed load."""
        latest = self.store.latest_version(self.config.lineage)
        if latest is not None and self.config.version_lag:
            line = [v for v in self.store.versions() if v.lineage == latest.lineage]
            latest = line[-1 - self.config.version_lag] if len(line) > self.config.version_lag else None
        if latest is None or latest.version <= self.current:
            return None
        failed = self._load_failures.get(latest.version)
        if failed is not None and time.monotonic() < failed[1]:
            return None
        return latest

    def _load(self, version: PolicyVersion) -> bool:
        """Load `version` (hash-checked) and make it `current`. Any failure (files pruned or corrupt,
        a weights hash that does not match the store's, the backend refusing them) keeps the current
        version; the version is retried later with backoff (a newer one is tried at the next poll)."""
        with self._switch_lock:
            try:
                load_checked(self.policy, version)
            except Exception as exc:  # a bad version must never stop collection
                count = self._load_failures.get(version.version, (0, 0.0))[0] + 1
                delay = min(LOAD_RETRY_S[0] * 2 ** (count - 1), LOAD_RETRY_S[1])
                self._load_failures[version.version] = (count, time.monotonic() + delay)
                self.on_load_failure()
                log.warning(
                    "version %d could not be loaded (%s); new episodes stay on version %d, retry in %.0f s",
                    version.version,
                    exc,
                    self.current,
                    delay,
                )
                return False
            self._load_failures.pop(version.version, None)
            self._records[version.version] = version
            self.current = version.version
            return True

    # ------------------------------------------------------------------ sampling with a version

    def generate_as(self, version: int, prompts: list[list[int]]) -> list[Completion]:
        """Sample `prompts` with `version` (the queue's worker thread): the switch and the sampling
        under one lock, so a version picked up meanwhile cannot swap the weights mid-batch."""
        with self._switch_lock:
            self._activate(version)
            return self.policy.generate(prompts, self.config.sampling, STOP_STRINGS)

    def _activate(self, version: int) -> None:
        """Make the policy serve `version` (the caller holds the switch lock). A version that no
        longer loads (its files pruned) hands its episodes to `current`."""
        if self.policy.version == version:
            return
        try:
            self.policy.load_version(self._record(version))
            return
        except Exception as exc:
            log.warning(
                "version %d no longer loads (%s): its episodes switch to version %d",
                version,
                exc,
                self.current,
            )
        self._move_episodes(version, self.current)
        if self.policy.version != self.current:
            self.policy.load_version(self._record(self.current))

    def _record(self, version: int) -> PolicyVersion:
        record = self._records.get(version) or self.store.get_version(version)
        if record is None:
            raise PolicyError(f"version {version} is not in the store")
        self._records[version] = record
        return record

    def _move_episodes(self, old: int, new: int) -> None:
        for tid, version in list(self.episode_versions.items()):
            if version == old:
                self.episode_versions[tid] = new

    def _bound_live_versions(self) -> None:
        """At most `max_live_versions` versions sample at once: episodes on the oldest ones switch to
        `current` (their next turns record it; the trainer's correction handles the mix)."""
        live = sorted({*self.episode_versions.values(), self.current})
        while len(live) > self.config.max_live_versions:
            oldest = live.pop(0)
            log.info(
                "max_live_versions=%d: episodes on version %d switch to version %d",
                self.config.max_live_versions,
                oldest,
                self.current,
            )
            self._move_episodes(oldest, self.current)
