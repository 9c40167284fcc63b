"""Importers of task directories into agentsd Tasks: Harbor and Terminal-Bench 1, and task suites.

Harbor:          instruction.md, task.toml, environment/Dockerfile (+ build context), tests/test.sh
                 (+ files), solution/solve.sh (optional).
Terminal-Bench:  task.yaml, Dockerfile (+ context), run-tests.sh (optional: the harness's default
                 runner, pytest on tests/test_outputs.py), tests/, solution.sh (optional).

A task's Dockerfile is read, then built only where it must be. WORKDIR, ENV, ARG, SHELL, COPY/ADD
of build-context files and RUN lines become either the task's World (files laid into the sandbox at
reset, when the Dockerfile only copies files) or an EnvironmentBuild (its steps in order, when it
runs commands or fills system directories), which the sandbox backend builds once into an image
with network and caches (sandboxes/builds.py); the agent then runs without network. No image
registry is reachable here, so FROM is the family's local image unless the named one is on the
engine; the Task's meta records the upstream base image and the instructions read without effect
(ENTRYPOINT, CMD, USER...). Files that are not UTF-8 are carried as bytes (World.blobs,
Verifier.blobs, reference blobs). A Dockerfile feature that cannot be carried over this way (COPY
--from, ADD of a URL, a source outside the context), sidecar services and multi-step tasks are
errors naming the file and the line.

A missing or malformed file raises TaskFormatError naming the file and the field; a directory of
tasks loads past a bad one (`read_suite`, `load_task_dirs` return the problems beside the tasks).

Not guaranteed: the agent runs as an unprivileged user on a read-only root: only the workdir, /tmp
and the directories outside the workdir that COPY fills stay writable to it; what a build leaves in
/tmp is not carried over.
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import yaml

from agentsd.envs.learnable import SUITES as LEARN_SUITES
from agentsd.envs.learnable import learn_suite
from agentsd.errors import AgentsdError
from agentsd.types import (
    GRADING_DIRS,
    SYSTEM_DIRS,
    BuildStep,
    Environment,
    EnvironmentBuild,
    Family,
    Limits,
    Task,
    Verifier,
    World,
)

log = logging.getLogger("agentsd.tasks")
SUITES_DIR = Path(__file__).parent / "suites"
FALLBACK_IMAGE = {
    Family.TERMINAL: "agentsd/terminal:latest",
    Family.SWE: "agentsd/swe:latest",
    Family.GUI: "agentsd/gui:latest",
    Family.RUBRIC: "agentsd/terminal:latest",  # documents are parsed on the host: a shell is enough
}


class TaskFormatError(AgentsdError):
    """A task directory is missing a file or has a malformed one."""


# ---------------------------------------------------------------------------- shared readers


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: missing (required)") from None
    except UnicodeDecodeError:
        raise TaskFormatError(f"{path}: not UTF-8 text") from None


def _read_content(path: Path) -> str | bytes:
    """A task file's content: text when it is UTF-8, else its bytes (binary files are ordinary task
    content: images, archives, compiled fixtures)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: missing (required)") from None
    except OSError as exc:
        raise TaskFormatError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def _tree(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Every file under root as (relative path -> text, relative path -> base64 of binary bytes)."""
    if not root.is_dir():
        raise TaskFormatError(f"{root}: missing directory (required)")
    texts: dict[str, str] = {}
    blobs: dict[str, str] = {}
    inside = root.resolve()
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise TaskFormatError(f"{path}: a symbolic link out of {root} (to {path.resolve()})")
        if path.is_file():
            _put(texts, blobs, str(path.relative_to(root)), _read_content(path))
    return texts, blobs


def _put(texts: dict[str, str], blobs: dict[str, str], key: str, content: str | bytes) -> None:
    if isinstance(content, str):
        texts[key] = content
    else:
        blobs[key] = base64.b64encode(content).decode()


def _number(data: dict[str, Any], key: str, where: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TaskFormatError(f"{where}: {key} = {value!r}, expected a positive number")
    return float(value)


def _size_mb(data: dict[str, Any], key_mb: str, key_text: str, where: str, default: int) -> int:
    if key_mb in data:
        return int(_number(data, key_mb, where, default))
    text = data.get(key_text)
    if text is None:
        return default
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    raw = str(text).strip().upper().removesuffix("B")
    try:
        return max(1, int(float(raw[:-1]) * units[raw[-1]]) if raw[-1] in units else int(float(raw) / 2**20))
    except (ValueError, IndexError):
        raise TaskFormatError(
            f"{where}: {key_text} = {text!r}, expected a size like '4G' or '512M'"
        ) from None


# ---------------------------------------------------------------------------- Dockerfiles


class DockerfileWorld(NamedTuple):
    """What a Dockerfile gives the task: its world, working directory, upstream base image, notes on
    instructions that were read but have no effect here (ENTRYPOINT, EXPOSE ...), and, when it must
    be built (RUN steps, files for system directories), the build and the directories outside the
    workdir its COPY steps fill that stay writable to the agent."""

    world: World
    workdir: str
    base: str | None
    notes: list[str]
    build: EnvironmentBuild | None = None
    scratch_dirs: list[str] = []  # noqa: RUF012 - a NamedTuple default, never mutated


# Read and without effect on the agent's world; ENTRYPOINT and CMD are noted (the agent's shell
# starts instead of them), the rest are build metadata.
_NOTED = ("ENTRYPOINT", "CMD", "USER", "VOLUME", "HEALTHCHECK", "ONBUILD")
_SKIPPED = ("LABEL", "EXPOSE", "STOPSIGNAL", "MAINTAINER")


def world_from_dockerfile(dockerfile: Path, context: Path) -> DockerfileWorld:
    """The task's world read from a Dockerfile and its build context.

    A Dockerfile with RUN lines, or with files for system directories (/usr, /etc ...), becomes an
    EnvironmentBuild: its steps in order, each RUN run like `docker build` runs it (the WORKDIR and
    SHELL of its line, `/bin/sh -c` unless changed, the ENV and ARG values declared before it), as
    root with network, once per recipe; the first step that exits non-zero fails the build with its
    Dockerfile line (a failure inside an `a && b` chain included). Any other Dockerfile only copies
    files into writable directories: those are laid into the sandbox at reset, no image needed."""
    text = _read_text(dockerfile)
    workdir, base = "/", None
    files: dict[str, str] = {}
    blobs: dict[str, str] = {}
    env: dict[str, str] = {}
    args: dict[str, str] = {}
    shell = ["/bin/sh", "-c"]
    setup: list[str] = []
    steps: list[BuildStep] = []
    notes: list[str] = []
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
        elif op in _NOTED:
            notes.append(f"{where_short}: {op} is not run (the agent's shell starts instead)")
        elif op not in _SKIPPED:
            raise TaskFormatError(f"{where}: unknown Dockerfile instruction {op}")
    agent_workdir = workdir if workdir != "/" else "/workspace"
    tops = {"/" + PurePosixPath(path).parts[1] for path in [*files, *blobs]}
    if any(step.kind == "run" for step in steps) or any(top.lstrip("/") in SYSTEM_DIRS for top in tops):
        scratch = sorted(
            top
            for top in tops
            if top.lstrip("/") not in SYSTEM_DIRS
            and top != "/tmp"
            and not (agent_workdir == top or agent_workdir.startswith(top + "/"))
        )
        build = EnvironmentBuild(base=base, steps=steps)
        return DockerfileWorld(World(env=env), agent_workdir, base, notes, build, scratch)
    script = "set -e\n" + "\n".join(setup) if setup else None
    return DockerfileWorld(World(files=files, blobs=blobs, setup=script, env=env), agent_workdir, base, notes)


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
            sub_texts, sub_blobs = _tree(path)
            texts.update({f"{dest.rstrip('/')}/{rel}": text for rel, text in sub_texts.items()})
            blobs.update({f"{dest.rstrip('/')}/{rel}": data for rel, data in sub_blobs.items()})
        else:
            into_dir = dest.endswith("/") or len(sources) > 1
            _put(texts, blobs, f"{dest.rstrip('/')}/{path.name}" if into_dir else dest, _read_content(path))
    return texts, blobs


def _provenance(source: str, task_dir: Path, built: DockerfileWorld | None) -> dict[str, Any]:
    """Where an imported task came from, whether it runs on the fallback image, and what of its
    Dockerfile has no effect here."""
    base = built.base if built else None
    meta: dict[str, Any] = {
        "source": source,
        "path": str(task_dir),
        "upstream_image": base,
        "image_fallback": base is not None,
    }
    if built and built.notes:
        meta["dockerfile_notes"] = built.notes
    return meta


def _refuse_sidecars(task_dir: Path) -> None:
    """A docker-compose file with more than the task's own service needs sidecars agentsd does not
    start: refused by name rather than run without them."""
    for name in ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml"):
        path = task_dir / name
        if not path.is_file():
            continue
        try:
            compose = yaml.safe_load(_read_text(path)) or {}
        except yaml.YAMLError as exc:
            raise TaskFormatError(f"{path}: not valid YAML: {exc}") from None
        services = compose.get("services") if isinstance(compose, dict) else None
        if isinstance(services, dict) and len(services) > 1:
            raise TaskFormatError(
                f"{path}: services {', '.join(map(str, services))}: tasks with sidecar services are not "
                "supported (agentsd starts one sandbox per episode)"
            )


def _looks_like_apex(task_dir: Path) -> None:
    if (task_dir / "tasks_and_rubrics.json").exists():
        raise TaskFormatError(
            f"{task_dir}: this looks like an APEX release (tasks_and_rubrics.json): "
            f"agentsd tasks import apex {task_dir}"
        )


def _reference(files: tuple[dict[str, str], dict[str, str]], entry: str) -> dict[str, Any]:
    texts, blobs = files
    if not texts and not blobs:
        return {}
    return {"files": texts, "entry": entry, **({"blobs": blobs} if blobs else {})}


# ---------------------------------------------------------------------------- Harbor


def load_harbor_task(task_dir: Path) -> Task:
    task_dir = Path(task_dir)
    _looks_like_apex(task_dir)
    if not (task_dir / "instruction.md").exists() and (
        (task_dir / "steps").is_dir()
        or any(p.name.startswith("step") for p in task_dir.glob("*/instruction.md"))
    ):
        raise TaskFormatError(
            f"{task_dir}: a multi-step Harbor task (an instruction per step): not supported, agentsd runs "
            "one instruction per episode"
        )
    instruction = _read_text(task_dir / "instruction.md").strip()
    if not instruction:
        raise TaskFormatError(f"{task_dir / 'instruction.md'}: empty instruction")
    toml_path = task_dir / "task.toml"
    try:
        config = tomllib.loads(_read_text(toml_path))
    except tomllib.TOMLDecodeError as exc:
        raise TaskFormatError(f"{toml_path}: not valid TOML: {exc}") from None
    sections = {}
    for name in ("metadata", "verifier", "agent", "environment", "task"):
        section = config.get(name, {})
        if not isinstance(section, dict):
            raise TaskFormatError(f"{toml_path}: [{name}] must be a table")
        sections[name] = section
    env_cfg = sections["environment"]
    where = f"{toml_path} [environment]"
    limits = Limits(
        cpus=_number(env_cfg, "cpus", where, 1.0),
        memory_mb=_size_mb(env_cfg, "memory_mb", "memory", where, 2048),
        disk_mb=min(_size_mb(env_cfg, "storage_mb", "storage", where, 2048), 4096),
        timeout_s=_number(sections["agent"], "timeout_sec", f"{toml_path} [agent]", 3600.0),
    )
    tests, test_blobs = _tree(task_dir / "tests")
    if "test.sh" not in tests:
        raise TaskFormatError(f"{task_dir / 'tests' / 'test.sh'}: missing (required)")
    _refuse_sidecars(task_dir / "environment")
    dockerfile = task_dir / "environment" / "Dockerfile"
    built = world_from_dockerfile(dockerfile, dockerfile.parent) if dockerfile.exists() else None
    solution = _tree(task_dir / "solution") if (task_dir / "solution").is_dir() else ({}, {})
    name = sections["task"].get("name") or task_dir.name
    return Task(
        id=str(name),
        family=Family.TERMINAL,
        instruction=instruction,
        world=built.world if built else World(),
        environment=Environment(
            limits=limits,
            network=bool(env_cfg.get("allow_internet", False)),
            workdir=built.workdir if built else "/app",
            scratch_dirs=[*GRADING_DIRS, *(built.scratch_dirs if built else [])],
            build=built.build if built else None,
        ),
        verifier=Verifier(
            kind="harbor",
            files=tests,
            blobs=test_blobs,
            timeout_s=_number(sections["verifier"], "timeout_sec", f"{toml_path} [verifier]", 600.0),
        ),
        reference=_reference(solution, "solve.sh"),
        meta={
            **_provenance("harbor", task_dir, built),
            **sections["metadata"],
        },
    )


# ---------------------------------------------------------------------------- Terminal-Bench 1

# What the Terminal-Bench harness runs when a task brings no run-tests.sh: pytest on the task's
# tests/test_outputs.py (here from the family image, offline), with the full report.
DEFAULT_RUN_TESTS = """\
#!/bin/bash
# agentsd: the task has no run-tests.sh; the Terminal-Bench harness's default runner
python3 -m pytest -rA "${TEST_DIR:-/tests}/test_outputs.py"
"""


def load_terminal_bench_task(task_dir: Path) -> Task:
    task_dir = Path(task_dir)
    _looks_like_apex(task_dir)
    yaml_path = task_dir / "task.yaml"
    try:
        config = yaml.safe_load(_read_text(yaml_path))
    except yaml.YAMLError as exc:
        raise TaskFormatError(f"{yaml_path}: not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise TaskFormatError(f"{yaml_path}: expected a mapping")
    instruction = config.get("instruction")
    if instruction is None and isinstance(config.get("descriptions"), list) and config["descriptions"]:
        instruction = config["descriptions"][0].get("description")  # the older layout
    if not isinstance(instruction, str) or not instruction.strip():
        raise TaskFormatError(f"{yaml_path}: instruction is missing or empty")
    tests, test_blobs = _tree(task_dir / "tests")
    run_tests = task_dir / "run-tests.sh"
    default_runner = not run_tests.exists()
    if default_runner and "test_outputs.py" not in tests:
        raise TaskFormatError(
            f"{run_tests}: missing, and tests/test_outputs.py (what the default runner runs) is missing too"
        )
    tests["run-tests.sh"] = DEFAULT_RUN_TESTS if default_runner else _read_text(run_tests)
    _refuse_sidecars(task_dir)
    built = world_from_dockerfile(task_dir / "Dockerfile", task_dir)
    where = str(yaml_path)
    solution_path = task_dir / "solution.sh"
    solution = ({"solve.sh": _read_text(solution_path)}, {}) if solution_path.exists() else ({}, {})
    return Task(
        id=task_dir.name,
        family=Family.TERMINAL,
        instruction=instruction.strip(),
        world=built.world,
        environment=Environment(
            limits=Limits(timeout_s=_number(config, "max_agent_timeout_sec", where, 3600.0)),
            workdir=built.workdir,
            scratch_dirs=[*GRADING_DIRS, *built.scratch_dirs],
            build=built.build,
        ),
        verifier=Verifier(
            kind="terminal-bench",
            files=tests,
            blobs=test_blobs,
            timeout_s=_number(config, "max_test_timeout_sec", where, 600.0),
        ),
        reference=_reference(solution, "solve.sh"),
        meta={
            **_provenance("terminal-bench", task_dir, built),
            **({"default_test_runner": True} if default_runner else {}),
            **{k: config[k] for k in ("author_name", "difficulty", "category", "tags") if k in config},
        },
    )


# ---------------------------------------------------------------------------- suites


def is_task_dir(path: Path) -> bool:
    return (path / "task.toml").exists() or (path / "task.yaml").exists()


def load_task_dir(task_dir: Path) -> Task:
    """A task directory in whichever format it is."""
    if (task_dir / "task.toml").exists():
        return load_harbor_task(task_dir)
    if (task_dir / "task.yaml").exists():
        return load_terminal_bench_task(task_dir)
    _looks_like_apex(task_dir)
    raise TaskFormatError(f"{task_dir}: neither task.toml (Harbor) nor task.yaml (Terminal-Bench) found")


def task_dirs(path: Path) -> list[Path]:
    """The task directories a path names: itself when it is one, else its visible subdirectories."""
    if is_task_dir(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_task_dirs(
    path: Path, loader: Callable[[Path], Task] = load_task_dir
) -> tuple[list[Task], list[str]]:
    """(tasks, problems): every task directory under path loaded, each bad one a problem that names
    it and what is wrong; one bad task never hides the others."""
    if not path.is_dir():
        raise TaskFormatError(f"{path}: not a directory")
    _looks_like_apex(path)
    tasks: list[Task] = []
    problems: list[str] = []
    for task_dir in task_dirs(path):
        try:
            tasks.append(loader(task_dir))
        except (TaskFormatError, ValueError) as exc:  # ValueError: a Task field out of range
            problems.append(f"{task_dir.name}: {exc}")
    return tasks, problems


def suite_names() -> list[str]:
    shipped = sorted(p.name for p in SUITES_DIR.iterdir() if p.is_dir()) if SUITES_DIR.is_dir() else []
    return [*shipped, "miniwob", *LEARN_SUITES]


def load_suite(name_or_path: str | Path) -> list[Task]:
    """A shipped suite by name (see suite_names()) or every task under a path. A bad task is logged
    (a warning naming it and what is wrong) and the others load; a suite with no good task is an
    error naming every bad one."""
    tasks, problems = read_suite(name_or_path)
    if problems and not tasks:
        raise TaskFormatError(f"suite {name_or_path!s}: no task loads:\n" + "\n".join(problems))
    for problem in problems:
        log.warning("suite %s: skipped %s", name_or_path, problem)
    return tasks


def read_suite(name_or_path: str | Path) -> tuple[list[Task], list[str]]:
    """(tasks, problems) of a shipped suite by name or of a path: a task directory, a directory of
    them, SWE-bench instances, an APEX release or a GUI suite.

    `miniwob` is the MiniWoB++ suite of the installed `miniwob` package (envs/miniwob.py); `learn`,
    `learn-train` and `learn-heldout` are generated (envs/learnable.py).
    """
    if str(name_or_path) == "miniwob":
        from agentsd.envs.miniwob import load_miniwob

        return load_miniwob(), []
    if str(name_or_path) in LEARN_SUITES:  # generated from a seed (envs/learnable.py)
        return learn_suite(str(name_or_path)), []
    root = SUITES_DIR / str(name_or_path)
    if not root.is_dir():
        root = Path(name_or_path)
    if not root.is_dir():
        shipped = ", ".join(suite_names()) or "none"
        raise TaskFormatError(f"suite {name_or_path!s}: not a shipped suite ({shipped}) nor a directory")
    if (root / "instances.jsonl").exists():  # SWE-bench instances with their repositories
        from agentsd.envs.swe import load_swebench

        return load_swebench(root / "instances.jsonl", root / "repos"), []
    if (root / "tasks_and_rubrics.json").exists():  # an APEX-Agents release (rubric tasks)
        from agentsd.envs.apex import load_apex

        return load_apex(root)
    if (root / "tasks.yaml").exists():  # a GUI suite
        from agentsd.envs.gui_tasks import load_gui_suite

        return load_gui_suite(root), []
    return load_task_dirs(root)
