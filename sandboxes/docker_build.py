"""Building a task's environment on a Docker engine: one build container per recipe, committed.

The build container runs the task's base image (the Dockerfile's FROM when the engine has it or can
pull it, else the family image, recorded in the image's labels) as root on the host's network with
the task's memory and process limits; each step runs as `docker build` runs it (COPY unpacked at /,
RUN through `docker exec` in its WORKDIR with its ENV and ARG values, WORKDIR made), the host's
package-client settings placed under builds.SETTINGS_DIR. The container is then committed as
`agentsd/task:<key>`; a second request for the key finds the image and builds nothing. The steps are
run over the engine API rather than by `docker build`, whose classic builder cannot mount the
host's settings into RUN steps.

The local package sources the host's pip settings name (package_sources: a `file:` index and the
directories its pages link to, a wheelhouse, constraints) are bound read-only at their own paths
when the engine runs on this machine (a unix socket). They are bound rather than copied in as a
build context would be: a mirror on disk runs to gigabytes, of which pip reads the few files its
resolution picks, and which those are is known only once pip has resolved. An engine on another
machine cannot bind this machine's files, and its builds go without them (with a warning that names
the paths, never the settings' URLs, which may carry credentials): a mirror meant for builds on
remote engines is served over HTTP, a network URL that reaches every build as it is. The host's apt
sources are not carried: a docker build's apt reads its image's own.

Not guaranteed: two processes on different machines building one key at once both build (the
image is the same; the last commit names it); a pull that fails for any reason falls back to the
family image; a unix socket is taken for an engine on this machine: one that leads elsewhere binds
that machine's files at the same paths, or, where one of them is missing there, none (a warning
says so); the bound paths' empty mountpoints stay in the committed image.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tarfile
import threading
import time
import uuid
from typing import Any

from agentsd.sandboxes.base import LABEL, owner_identity
from agentsd.sandboxes.builds import (
    BUILD_LABEL,
    BUILD_STEP_TIMEOUT_S,
    SETTINGS_DIR,
    BuildError,
    HostSettings,
    build_key,
    copy_archive,
    finish_script,
    host_settings,
    image_name,
    step_failed,
)
from agentsd.types import BuildStep, SandboxSpec

log = logging.getLogger("agentsd.sandbox")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_pull_failed: set[tuple[str, str]] = set()


def ensure_image(client: Any, engine: str, spec: SandboxSpec, family_image: str) -> str:
    """The name of the spec's built image on this engine, built first if the engine lacks it."""
    import docker.errors

    assert spec.build is not None
    base, base_id = _base_image(client, engine, spec.build.base, family_image)
    key = build_key(spec, f"docker:{base_id}")
    name = image_name(key)
    with _lock(f"{engine}|{key}"):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(name)
            with contextlib.suppress(docker.errors.DockerException):  # only a record of use
                client.api.tag(name, *name.split(":"))  # its LastTagTime moves (build_cache)
            return name
        started = time.monotonic()
        log.info("building %s on %s from %s (%d steps)", name, engine, base, len(spec.build.steps))
        _build(client, engine, spec, base, key)
        log.info("built %s in %.1f s", name, time.monotonic() - started)
    return name


def _lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def _base_image(client: Any, engine: str, wanted: str | None, family_image: str) -> tuple[str, str]:
    """(image, id) a build starts from: the Dockerfile's FROM when the engine has it or can pull it,
    else the family image."""
    import docker.errors

    if wanted and (engine, wanted) not in _pull_failed:
        try:
            return wanted, client.images.get(wanted).id
        except docker.errors.ImageNotFound:
            pass
        try:
            return wanted, client.images.pull(wanted).id
        except docker.errors.DockerException as exc:
            _pull_failed.add((engine, wanted))
            log.info("cannot pull %s (%s): building on %s instead", wanted, str(exc)[:200], family_image)
    try:
        return family_image, client.images.get(family_image).id
    except docker.errors.ImageNotFound:
        raise BuildError(
            f"image {family_image} is not on the engine {engine}: build it with scripts/build_images.sh"
        ) from None


def _build(client: Any, engine: str, spec: SandboxSpec, base: str, key: str) -> None:
    import docker.errors
    from docker.types import Mount

    settings = host_settings()
    paths = settings.paths if engine.startswith("unix://") else []
    if len(paths) < len(settings.paths):
        # paths only: a setting's URL may carry credentials
        log.warning(
            "building on %s, another machine's engine: the local package sources the pip settings "
            "name are not there (%s); pip in the build reaches only network indexes",
            engine,
            ", ".join(settings.paths),
        )
    labels = {
        LABEL: f"build-{key}",
        "agentsd.owner": owner_identity(),
        "agentsd.created": f"{time.time():.3f}",
    }
    limits = spec.limits
    options: dict[str, Any] = {
        "name": f"agentsd-build-{key[:12]}-{uuid.uuid4().hex[:6]}",
        "detach": True,
        "network_mode": "host",
        "user": "0:0",
        "init": True,
        "labels": labels,
        "mem_limit": f"{limits.memory_mb}m",
        "memswap_limit": f"{limits.memory_mb}m",
        "pids_limit": max(limits.pids, 1024),
        "working_dir": "/",
    }
    # mounts, not volumes: volumes would be recorded in the committed image and mounted in every episode
    mounts = [Mount(path, path, type="bind", read_only=True) for path in paths]
    try:
        try:
            container = client.containers.run(base, ["sleep", "infinity"], mounts=mounts, **options)
        except docker.errors.APIError as exc:
            if not mounts or "bind source path does not exist" not in str(exc):
                raise
            # a unix socket that leads to an engine elsewhere (a socket forwarded from another
            # machine or into a container): the build goes on without this machine's sources
            log.warning(
                "%s cannot bind this machine's package sources (%s): building without them", engine, exc
            )
            container = client.containers.run(base, ["sleep", "infinity"], **options)
    except docker.errors.DockerException as exc:
        raise BuildError(f"cannot start a build container from {base} on {engine}: {exc}") from exc
    try:
        container.put_archive("/", _settings_archive(settings))
        for step in spec.build.steps if spec.build else []:
            _step(client, container, step, settings)
        code, output = _exec(client, container, ["/bin/sh", "-c", finish_script(spec)], "/", {})
        if code != 0:
            raise BuildError(
                f"agentsd: finishing the build of {image_name(key)} failed (exit {code}): {output[-1500:]!r}"
            )
        container.commit(
            repository="agentsd/task",
            tag=key,
            changes=[f"LABEL {BUILD_LABEL}={key}", f"LABEL agentsd.base={base}"],
        )
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True, v=True)


def _step(client: Any, container: Any, step: BuildStep, settings: HostSettings) -> None:
    if step.kind == "copy":
        if not container.put_archive("/", copy_archive(step)):
            raise step_failed(step, 1, "the engine refused the files")
        return
    code, output = _exec(client, container, ["mkdir", "-p", step.workdir], "/", {})
    if code != 0:
        raise step_failed(step, code, output)
    if step.kind == "run":
        argv = ["timeout", "-k", "10", str(int(BUILD_STEP_TIMEOUT_S)), *step.argv]
        code, output = _exec(client, container, argv, step.workdir, {**settings.env, **step.env})
        if code != 0:
            raise step_failed(step, None if code == 124 else code, output)


def _exec(
    client: Any, container: Any, argv: list[str], workdir: str, env: dict[str, str]
) -> tuple[int, bytes]:
    api = client.api
    exec_id = api.exec_create(container.id, argv, workdir=workdir, environment=env, user="0:0")["Id"]
    output = api.exec_start(exec_id)
    return int(api.exec_inspect(exec_id)["ExitCode"] or 0), output


def _settings_archive(settings: HostSettings) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in settings.files.items():
            info = tarfile.TarInfo(f"{SETTINGS_DIR.lstrip('/')}/{name}")
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
