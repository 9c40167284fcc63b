"""Sandbox backends for tests: the local bubblewrap sandbox and Docker, started for real.

A backend that cannot run here is skipped with its reason, except when AGENTSD_REQUIRE_SANDBOXES=1
(as .ci/run sets): then a missing backend fails the test, so CI never skips them silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from agentsd.config import DockerSandboxConfig, LocalSandboxConfig
from agentsd.envs.terminal import TerminalEnv
from agentsd.sandboxes.base import Sandbox
from agentsd.sandboxes.fleet import make_sandbox
from agentsd.types import Limits, SandboxSpec

SMALL = Limits(cpus=1.0, memory_mb=256, pids=64, disk_mb=64, timeout_s=600, command_timeout_s=60)


def unavailable(reason: str) -> None:
    if os.environ.get("AGENTSD_REQUIRE_SANDBOXES") == "1":
        pytest.fail(f"sandbox backend required but unavailable: {reason}")
    pytest.skip(reason)


def backend_config(name: str) -> LocalSandboxConfig | DockerSandboxConfig:
    if name == "local":
        if shutil.which("bwrap") is None:
            unavailable("bubblewrap is not installed (apt-get install bubblewrap)")
        return LocalSandboxConfig()
    try:
        from agentsd.sandboxes.docker_sandbox import docker_client, engine_url
    except ImportError:
        unavailable("the docker extra is not installed")
        raise
    try:
        client = docker_client()
        client.ping()
        client.images.get("agentsd/terminal:latest")
        client.close()
    except Exception as exc:
        unavailable(f"no Docker engine with agentsd images at {engine_url()}: {exc}")
    return DockerSandboxConfig(engines=[engine_url()])


def spec(**labels: str) -> SandboxSpec:
    return SandboxSpec(limits=SMALL, labels=labels)


BACKENDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def sandbox_factory(backend: str) -> Iterator[Callable[..., Sandbox]]:
    """Starts sandboxes of the backend under test; closes every one at teardown."""
    config = backend_config(backend)
    started: list[Sandbox] = []

    def make(spec_: SandboxSpec | None = None) -> Sandbox:
        sandbox = make_sandbox(config, spec_ or spec(test="1"))
        sandbox.start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.close()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    return sandbox_factory()


@pytest.fixture
def env(backend: str) -> Iterator[TerminalEnv]:
    """A terminal environment on the backend under test, closed at teardown (a test module may
    define its own `env`, which wins)."""
    environment = TerminalEnv(sandbox=backend_config(backend))
    yield environment
    environment.close()
