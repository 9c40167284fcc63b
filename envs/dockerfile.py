"""The Dockerfile interpreter: a task's Dockerfile and build context -> its World, or the build it needs.

WORKDIR, ENV, ARG, SHELL, COPY/ADD of build-context files and RUN lines become either the task's
World (files laid into the sandbox at reset, when the Dockerfile only copies files into writable
directories) or an EnvironmentBuild (its steps in order, when it runs commands or puts files in
system directories or directly under /), which the sandbox backend builds once into an image with
network and caches (sandboxes/builds.py); the agent then runs without network. FROM is recorded as
the upstream base image (no registry is reachable here: the family's local image stands in unless
the named one is on the engine). ENTRYPOINT and CMD are read as argv, their shell forms wrapped in
the SHELL in force (`start_command` joins them as docker does; the importer decides what runs,
envs/harbor.py). USER, VOLUME, HEALTHCHECK and ONBUILD are noted as read without effect; LABEL,
EXPOSE, STOPSIGNAL and MAINTAINER are skipped. Files that are not UTF-8 are carried as bytes
(World.blobs).

Errors (TaskFormatError, naming the file and the line): an unknown instruction, COPY --from
(multi-stage builds), ADD of a URL, a COPY source outside the build context or missing.

Not guaranteed: the agent runs as an unprivileged user on a read-only root: only the workdir, /tmp
and the directories outside the workdir that COPY fills stay writable to it; what a build leaves in
/tmp is not carried over. Nothing here runs docker: building is the sandbox backend's.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from agentsd.envs.common import TaskFormatError
from agentsd.envs.task_files import put_content, read_content, read_text, read_tree
from agentsd.types import SYSTEM_DIRS, BuildStep, EnvironmentBuild, World


class DockerfileWorld(NamedTuple):
    """What a Dockerfile gives the task: its world, working directory, upstream base image, notes on
    instructions that were read but have no effect here (USER, VOLUME ...), and, when it must be
    built (RUN steps, files for system directories or directly under /), the build and the
    directories outside the workdir its COPY steps fill that stay writable to the agent; and the
    last ENTRYPOINT and CMD as argv (None when not declared)."""

    world: World
    workdir: str
    base: str | None
    notes: list[str]
    build: EnvironmentBuild | None = None
    scratch_dirs: list[str] = []  # noqa: RUF012 - a NamedTuple default, never mutated
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None


# Read and without effect here: the agent and the task's service run as the agent's uid (USER),
# the rest is build or run-time metadata.
_NOTED = {
    "USER": "has no effect (the agent and the task's service run as uid 1000)",
    "VOLUME": "has no effect here",
    "HEALTHCHECK": "has no effect here",
    "ONBUILD": "has no effect here",
}
_SKIPPED = ("LABEL", "EXPOSE", "STOPSIGNAL", "MAINTAINER")


def start_command(entrypoint: list[str] | None, cmd: list[str] | None) -> list[str] | None:
    """What a container of the image runs, by docker's rule: ENTRYPOINT with CMD as its arguments
    (a shell-form ENTRYPOINT, `sh -c TEXT`, gets them as $0... and ignores them), CMD alone when
    there is no ENTRYPOINT; None when neither is declared."""
    argv = [*(entrypoint or []), *(cmd or [])]
    return argv or None


def world_from_dockerfile(dockerfile: Path, context: Path) -> DockerfileWorld:
    """The task's world read from a Dockerfile and its build context.

    A Dockerfile with RUN lines, or with files for system directories (/usr, /etc ...) or directly
    under / (/entrypoint.sh), becomes an EnvironmentBuild: its steps in order, each RUN run like
    `docker build` runs it (the WORKDIR and SHELL of its line, `/bin/sh -c` unless changed, the ENV
    and ARG values declared before it), as root with network, once per recipe; the first step that
    exits non-zero fails the build with its Dockerfile line (a failure inside an `a && b` chain
    included). Any other Dockerfile only copies files into writable directories: those are laid
    into the sandbox at reset, no image needed."""
    text = read_text(dockerfile)
    workdir, base = "/", None
    files: dict[str, str] = {}
    blobs: dict[str, str] = {}
    env: dict[str, str] = {}
    args: dict[str, str] = {}
    shell = ["/bin/sh", "-c"]
    setup: list[str] = []
    steps: list[BuildStep] = []
    notes: list[str] = []
    start: dict[str, list[str] | None] = {"ENTRYPOINT": None, "CMD": None}  # the last of each wins
    for number, line in _logical_lines(text):
        where, where_short = f"{dockerfile}:{number}", f"{dockerfile.name}:{number}"
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            base = rest.split()[0] if rest else None
        elif op == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
            setup.append(f"mkdir -p {shlex.quote(workdir)}")
            steps.append(BuildStep(kind="workdir", where=where_short, line=line, workdir=workdir))
        elif op == "ENV":
            env.update(_env_pairs(rest, where))
        elif op == "ARG":
            name, sep, default = rest.partition("=")
            if sep:
                args[name.strip()] = default.strip().strip("'\"")
        elif op == "SHELL":
            shell = _json_argv(rest, where, "SHELL")
        elif op in ("COPY", "ADD"):
            copied_texts, copied_blobs = _copy(rest, context, workdir, where)
            files.update(copied_texts)
            blobs.update(copied_blobs)
            steps.append(
                BuildStep(kind="copy", where=where_short, line=line, files=copied_texts, blobs=copied_blobs)
            )
        elif op == "RUN":
            argv = _exec_form(rest) or [*shell, rest]  # not a JSON array: shell form, as docker reads it
            steps.append(
                BuildStep(
                    kind="run", where=where_short, line=line, workdir=workdir, argv=argv, env={**args, **env}
                )
            )
        elif op in start:
            # `ENTRYPOINT []` clears it; any other non-array is the shell form, as docker reads it
            start[op] = [] if rest.replace(" ", "") == "[]" else _exec_form(rest) or [*shell, rest]
        elif op in _NOTED:
            notes.append(f"{where_short}: {op} {_NOTED[op]}")
        elif op not in _SKIPPED:
            raise TaskFormatError(f"{where}: unknown Dockerfile instruction {op}")
    agent_workdir = workdir if workdir != "/" else "/workspace"
    paths = [PurePosixPath(path) for path in [*files, *blobs]]
    # A file directly under / (COPY entrypoint.sh /entrypoint.sh) has no top directory of its own to
    # mount writable: it goes into the image, read-only, as the root it lies in.
    at_root = any(len(path.parts) == 2 for path in paths)
    tops = {"/" + path.parts[1] for path in paths if len(path.parts) > 2}
    entrypoint, cmd = start["ENTRYPOINT"], start["CMD"]
    if (
        any(step.kind == "run" for step in steps)
        or at_root
        or any(top.lstrip("/") in SYSTEM_DIRS for top in tops)
    ):
        scratch = sorted(
            top
            for top in tops
            if top.lstrip("/") not in SYSTEM_DIRS
            and top != "/tmp"
            and not (agent_workdir == top or agent_workdir.startswith(top + "/"))
        )
        build = EnvironmentBuild(base=base, steps=steps)
        return DockerfileWorld(World(env=env), agent_workdir, base, notes, build, scratch, entrypoint, cmd)
    script = "set -e\n" + "\n".join(setup) if setup else None
    world = World(files=files, blobs=blobs, setup=script, env=env)
    return DockerfileWorld(world, agent_workdir, base, notes, None, [], entrypoint, cmd)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction) with continuation lines joined and comments dropped."""
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continued instruction, as docker reads them
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    if pending:
        logical.append((start, pending.strip()))
    return logical


def _exec_form(rest: str) -> list[str] | None:
    """The argv of an exec-form instruction (a JSON array of strings), else None."""
    if not rest.startswith("["):
        return None
    try:
        argv = json.loads(rest)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    return argv


def _json_argv(rest: str, where: str, op: str) -> list[str]:
    argv = _exec_form(rest)
    if argv is None:
        raise TaskFormatError(f"{where}: {op} expects a JSON array of strings, got {rest[:100]!r}")
    return argv


def _env_pairs(rest: str, where: str) -> dict[str, str]:
    parts = shlex.split(rest)
    if parts and "=" not in parts[0]:  # legacy form: ENV KEY value with spaces
        return {parts[0]: " ".join(parts[1:])}
    pairs = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise TaskFormatError(f"{where}: ENV expects KEY=value, got {part!r}")
        pairs[key] = value
    return pairs


def _copy(rest: str, context: Path, workdir: str, where: str) -> tuple[dict[str, str], dict[str, str]]:
    """(texts, blobs) a COPY/ADD lays into the world, by absolute destination path."""
    words = shlex.split(rest)
    if any(a.startswith("--from") for a in words):
        raise TaskFormatError(f"{where}: COPY --from: multi-stage builds are not supported")
    args = [a for a in words if not a.startswith("--")]
    if len(args) < 2:
        raise TaskFormatError(f"{where}: COPY needs a source and a destination")
    *sources, dest = args
    if not dest.startswith("/"):
        dest = f"{workdir.rstrip('/')}/{dest}"
    texts: dict[str, str] = {}
    blobs: dict[str, str] = {}
    root = context.resolve()
    for source in sources:
        if "://" in source:
            raise TaskFormatError(f"{where}: ADD of a URL ({source}) needs network at build time")
        path = (context / source).resolve()
        if not path.is_relative_to(root):
            raise TaskFormatError(f"{where}: COPY source {source} is outside the build context {context}")
        if not path.exists():
            raise TaskFormatError(f"{where}: COPY source {source} not found in {context}")
        if path.is_dir():
            sub_texts, sub_blobs = read_tree(path)
            texts.update({f"{dest.rstrip('/')}/{rel}": text for rel, text in sub_texts.items()})
            blobs.update({f"{dest.rstrip('/')}/{rel}": data for rel, data in sub_blobs.items()})
        else:
            into_dir = dest.endswith("/") or len(sources) > 1
            put_content(
                texts, blobs, f"{dest.rstrip('/')}/{path.name}" if into_dir else dest, read_content(path)
            )
    return texts, blobs
