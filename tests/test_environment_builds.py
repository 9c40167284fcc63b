"""Task environments built like `docker build` builds them: once, with network, cached by recipe, and
then run without network, on both backends. Each test is written as the failure it guards against:
a package install that cannot work, a build that leaks into the host, a step whose failure is
hidden, a build that reruns every episode, an agent that keeps what it changed."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from test_task_formats import HARBOR, write

from agentsd.envs.harbor import load_harbor_task
from agentsd.envs.oracle import run_nothing, run_reference
from agentsd.envs.terminal import EnvSetupError, TerminalEnv
from agentsd.sandboxes import builds, local_build
from agentsd.sandboxes.builds import BuildError
from agentsd.types import SandboxSpec, Task

# A probe name no host has: the build must put it in the task's image, never on this machine.
PROBE = "agentsd-build-probe"
INSTALLS = f"""\
FROM python:3.11-slim-bookworm
ARG RELEASE=1.0.2
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends figlet && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "pyfiglet==$RELEASE"
COPY greet /usr/local/bin/{PROBE}
COPY app.conf /etc/{PROBE}.conf
COPY data/ /app/data/
RUN date +%s%N > /app/built-at.txt && touch /usr/{PROBE}-escape
"""
TEST = """\
#!/bin/bash
figlet hi > /tmp/expected.txt
version=$(python3 -c 'import importlib.metadata as m; print(m.version("pyfiglet"))')
if cmp -s /tmp/expected.txt /app/banner.txt && [ "$version" = "$(cat /app/version.txt)" ] \\
    && [ "$(agentsd-build-probe)" = greet ] && grep -q level=3 /etc/agentsd-build-probe.conf; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
"""
SOLVE = """\
#!/bin/bash
figlet hi > /app/banner.txt
python3 -c 'import importlib.metadata as m; print(m.version("pyfiglet"))' > /app/version.txt
"""


def installs_task(root: Path, dockerfile: str = INSTALLS) -> Task:
    write(
        root,
        {
            **HARBOR,
            "instruction.md": "Render `hi` with figlet into /app/banner.txt; write pyfiglet's version to "
            "/app/version.txt.\n",
            "environment/Dockerfile": dockerfile,
            "environment/greet": "#!/bin/sh\necho greet\n",
            "environment/app.conf": "level=3\n",
            "environment/data/input.txt": "input\n",
            "tests/test.sh": TEST,
            "solution/solve.sh": SOLVE,
        },
    )
    return load_harbor_task(root)


def run(env: TerminalEnv, command: str) -> tuple[int | None, str]:
    result = env.run_command(command)
    return result.exit_code, (result.stdout + result.stderr).strip()


@pytest.mark.network
def test_a_task_that_installs_its_dependencies_builds_runs_offline_and_verifies_1_and_0(
    env: TerminalEnv, tmp_path: Path
) -> None:
    # an apt-get and a pip install in the Dockerfile used to fail in the network-less sandbox
    task = installs_task(tmp_path / "t")
    assert task.environment.build is not None and not task.environment.network
    assert run_reference(env, task)[0] == 1.0
    assert run_nothing(env, task)[0] == 0.0

    env.reset(options={"task": task})
    assert run(env, "figlet -v >/dev/null && agentsd-build-probe && cat /app/data/input.txt") == (
        0,
        "greet\ninput",
    )
    # the agent runs without network, as the task asked
    offline = "python3 -c \"import socket; socket.create_connection(('deb.debian.org', 80), timeout=5)\""
    assert run(env, offline)[0] != 0
    # the build's layers are read-only to the agent; its workdir is its own
    assert run(env, f"echo x > /usr/local/bin/{PROBE}")[0] != 0
    assert run(env, "echo mine > /app/data/input.txt && cat /app/data/input.txt") == (0, "mine")
    # nothing of the build reached this machine
    assert not Path(f"/usr/local/bin/{PROBE}").exists() and not Path(f"/usr/{PROBE}-escape").exists()
    assert not Path(f"/etc/{PROBE}.conf").exists()


@pytest.mark.network
def test_an_environment_is_built_once_per_recipe_and_every_episode_starts_from_it(
    env: TerminalEnv, tmp_path: Path
) -> None:
    # a build per episode would cost minutes each; a shared writable image would carry the last
    # agent's changes into the next episode
    task = installs_task(tmp_path / "t")
    env.reset(options={"task": task})
    built_at = run(env, "cat /app/built-at.txt")
    assert run(env, "rm /app/data/input.txt && echo changed > /app/built-at.txt")[0] == 0
    env.reset(options={"task": task})
    assert run(env, "cat /app/built-at.txt") == built_at
    assert run(env, "cat /app/data/input.txt") == (0, "input")

    changed = installs_task(tmp_path / "t2", INSTALLS + "RUN echo again > /app/again.txt\n")
    env.reset(options={"task": changed})
    assert run(env, "cat /app/again.txt") == (0, "again")
    assert run(env, "cat /app/built-at.txt") != built_at


@pytest.mark.network
def test_a_failing_build_step_fails_the_setup_with_its_line_and_its_output(
    env: TerminalEnv, tmp_path: Path
) -> None:
    nonce = uuid.uuid4().hex[:8]
    dockerfile = (
        f"FROM ubuntu:24.04\nWORKDIR /app\nRUN echo {nonce} > ok.txt\n"
        "RUN echo the-step-said-this >&2 && apt-get install -y no-such-package-anywhere\nRUN touch /app/x\n"
    )
    task = installs_task(tmp_path / "t", dockerfile)
    for _ in range(2):  # a failed build is never cached as a good one
        with pytest.raises(EnvSetupError) as failed:
            env.reset(options={"task": task})
        message = str(failed.value)
        assert "Dockerfile:4 failed: RUN echo the-step-said-this" in message
        assert "the-step-said-this" in message.split("failed:", 1)[1].split("\n", 1)[1]
        assert "no-such-package-anywhere" in message


def test_a_build_cannot_reach_the_hosts_disks_kernel_settings_or_files(
    env: TerminalEnv, tmp_path: Path
) -> None:
    # a task's RUN lines run as root: a device node of the host's disk, /proc/sys and the host's
    # own directories must stay out of their reach, as in `docker build`
    disk = os.stat("/").st_dev
    probes = (
        f"(mknod /app/disk b {os.major(disk)} {os.minor(disk)} 2>/dev/null; "
        "head -c 1 /app/disk >/dev/null 2>&1 && echo read || echo refused) > /app/disk.txt; rm -f /app/disk",
        "(echo 7 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo wrote || echo refused) "
        "> /app/procsys.txt",
        f"(ls {Path.cwd()} >/dev/null 2>&1 && echo seen || echo hidden) > /app/checkout.txt",
        "(mkdir -p /mnt/x && mount -t tmpfs none /mnt/x 2>/dev/null && echo mounted || echo refused) "
        "> /app/mount.txt",
    )
    dockerfile = "FROM ubuntu:24.04\nWORKDIR /app\n" + "".join(f"RUN {probe}\n" for probe in probes)
    env.reset(options={"task": installs_task(tmp_path / "t", dockerfile)})
    assert run(env, "cat /app/disk.txt /app/procsys.txt /app/checkout.txt /app/mount.txt") == (
        0,
        "refused\nrefused\nhidden\nrefused",
    )


def test_builds_carry_the_hosts_package_client_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # pip in a build container found nothing until it had the host's CA bundle and pip settings
    wheels, constraints, ca = tmp_path / "wheels", tmp_path / "constraints.txt", tmp_path / "ca.pem"
    wheels.mkdir()
    constraints.write_text("six==1.17.0\n")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(
        f"[global]\nfind-links = {wheels}\nconstraint = {constraints}\ncert = /nowhere\n"
        f"extra-index-url = file://{wheels} https://example.invalid/simple\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "99")
    settings = builds.host_settings()
    assert settings.files["ca.crt"] == ca.read_bytes()
    assert {settings.env[v] for v in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")} == {
        f"{builds.SETTINGS_DIR}/ca.crt"
    }
    pip_conf = settings.files["pip.conf"].decode()
    assert f"find-links = {wheels}" in pip_conf and "/nowhere" not in pip_conf
    assert settings.env["PIP_CONFIG_FILE"] == f"{builds.SETTINGS_DIR}/pip.conf"
    assert {str(wheels), str(constraints)} <= set(settings.paths)
    assert (
        settings.env["HTTPS_PROXY"] == "http://proxy.invalid:3128"
        and settings.env["PIP_DEFAULT_TIMEOUT"] == "99"
    )


def test_a_dockerfile_that_only_copies_into_the_workdir_builds_nothing(tmp_path: Path) -> None:
    task = installs_task(tmp_path / "t", "FROM x\nWORKDIR /app\nCOPY data/ /app/data/\n")
    assert task.environment.build is None and task.world.files == {"/app/data/input.txt": "input\n"}
    built = installs_task(
        tmp_path / "b", "FROM x\nWORKDIR /app\nCOPY data/ /srv/data/\nCOPY app.conf /etc/a.conf\n"
    )
    assert built.environment.build is not None and "/srv" in built.environment.scratch_dirs
    assert [step.kind for step in built.environment.build.steps] == ["workdir", "copy", "copy"]


def test_a_local_build_without_root_says_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    task = installs_task(tmp_path / "t")
    monkeypatch.setattr(local_build.os, "geteuid", lambda: 1000)
    spec = SandboxSpec(**task.environment.model_dump())
    with pytest.raises(BuildError, match=r"needs root .* use the docker backend"):
        local_build.ensure_built(spec)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="the local backend needs bubblewrap")
def test_a_failed_or_killed_local_build_leaves_nothing_a_later_build_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Path(f"/tmp/agentsd-build-test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("AGENTSD_BUILD_CACHE", str(cache))
    failing = installs_task(tmp_path / "f", "FROM x\nWORKDIR /app\nRUN echo built > built.txt\nRUN exit 3\n")
    working = installs_task(tmp_path / "w", "FROM x\nWORKDIR /app\nRUN echo built > built.txt\n")
    try:
        with pytest.raises(BuildError, match=r"Dockerfile:4 failed: RUN exit 3 \(exit 3\)"):
            local_build.ensure_built(SandboxSpec(**failing.environment.model_dump()))
        assert not [
            p for p in cache.iterdir() if not p.name.startswith("_var-") and not p.name.endswith(".lock")
        ]
        # what a builder killed mid-build left is removed by the next build of its recipe
        spec = SandboxSpec(**working.environment.model_dump())
        key = builds.build_key(spec, f"local:{local_build._varbase(cache).name}")
        (cache / f"{key}.building-dead" / "root").mkdir(parents=True)
        built = local_build.ensure_built(spec)
        assert built == cache / key and (built / "root/.agentsd/stash/app/built.txt").read_text() == "built\n"
        assert not list(cache.glob("*.building-*"))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
