"""Importers of Harbor and Terminal-Bench 1 task directories into agentsd Tasks (family terminal).

Harbor:          instruction.md, task.toml, environment/Dockerfile (+ build context), tests/test.sh
                 (+ files), solution/solve.sh (optional).
Terminal-Bench:  task.yaml, Dockerfile (+ context), run-tests.sh (optional: the harness's default
                 runner, pytest on tests/test_outputs.py), tests/, solution.sh (optional).

A task's Dockerfile becomes its World or its EnvironmentBuild (envs/dockerfile.py); the Task's meta
records the upstream base image and the instructions read without effect. The task's service
(World.service, envs/services.py) is what the harness's container runs: both harnesses start it with
the image's ENTRYPOINT (or the compose file's `entrypoint`) and their own command in place of CMD
(the compose file's `command`, by default `sh -c "sleep infinity"`, which only keeps the container
up), so CMD never runs there and an ENTRYPOINT script's `exec "$@"` runs that command; an image
without ENTRYPOINT has no service. Test and solution files that are not UTF-8 are carried as bytes
(Verifier.blobs, reference blobs). Sidecar services (a compose file with more than one service) and
multi-step tasks are refused by name.

A missing or malformed file raises TaskFormatError naming the file and the field; a directory of
tasks loads past a bad one (`load_task_dirs` returns the problems beside the tasks).

Not guaranteed: that an imported task is solvable or its tests sound (`agentsd tasks verify` runs
its reference solution and a do-nothing agent to check).
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agentsd.envs.common import TaskFormatError
from agentsd.envs.dockerfile import DockerfileWorld, start_command, world_from_dockerfile
from agentsd.envs.task_files import positive_number, read_text, read_tree, size_mb
from agentsd.types import GRADING_DIRS, Environment, Family, Limits, Task, Verifier, World


def _provenance(
    source: str, task_dir: Path, built: DockerfileWorld | None, notes: list[str]
) -> dict[str, Any]:
    """Where an imported task came from, whether it runs on the fallback image, and what of its
    Dockerfile has no effect here."""
    base = built.base if built else None
    meta: dict[str, Any] = {
        "source": source,
        "path": str(task_dir),
        "upstream_image": base,
        "image_fallback": base is not None,
    }
    if notes:
        meta["dockerfile_notes"] = notes
    return meta


# What both harnesses' compose files give the task's container as its command (CMD replaced).
HARNESS_COMMAND = ["sh", "-c", "sleep infinity"]


def _compose_service(task_dir: Path) -> tuple[Path | None, dict[str, Any]]:
    """The task's compose file and its one service's settings ({} without either). A file with more
    than the task's own service needs sidecars agentsd does not start: refused by name rather than
    run without them."""
    for name in ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml"):
        path = task_dir / name
        if not path.is_file():
            continue
        try:
            compose = yaml.safe_load(read_text(path)) or {}
        except yaml.YAMLError as exc:
            raise TaskFormatError(f"{path}: not valid YAML: {exc}") from None
        services = compose.get("services") if isinstance(compose, dict) else None
        if isinstance(services, dict) and len(services) > 1:
            raise TaskFormatError(
                f"{path}: services {', '.join(map(str, services))}: tasks with sidecar services are not "
                "supported (agentsd starts one sandbox per episode)"
            )
        if isinstance(services, dict) and services:
            service = next(iter(services.values()))
            return path, service if isinstance(service, dict) else {}
        return path, {}
    return None, {}


def _compose_argv(value: Any, where: str) -> list[str] | None:
    """A compose `command` or `entrypoint`: a list of strings, or a string split as compose splits it."""
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise TaskFormatError(f"{where}: expected a string or a list of strings, got {value!r}")


def _service(
    built: DockerfileWorld | None, compose: tuple[Path | None, dict[str, Any]], notes: list[str]
) -> list[str] | None:
    """The task's service: the image's ENTRYPOINT (or compose's) with the harness's command as its
    arguments, as the harness's container runs it; None when nothing but the keep-alive would run.
    A CMD the harness replaces is added to `notes`."""
    path, settings = compose
    where = f"{path} services"
    entrypoint = _compose_argv(settings.get("entrypoint"), f"{where} entrypoint")
    command = _compose_argv(settings.get("command"), f"{where} command") or HARNESS_COMMAND
    if entrypoint is None:
        entrypoint = built.entrypoint if built else None
    if built and built.cmd:
        notes.append(
            f"CMD {shlex.join(built.cmd)} is not run: the harness runs {shlex.join(command)} instead"
        )
    service = start_command(entrypoint, command)
    return None if service == HARNESS_COMMAND else service


def _world(
    built: DockerfileWorld | None, compose: tuple[Path | None, dict[str, Any]]
) -> tuple[World, list[str]]:
    """The task's World (its service included) and the notes on its Dockerfile."""
    notes = list(built.notes) if built else []
    service = _service(built, compose, notes)
    world = built.world if built else World()
    return (world.model_copy(update={"service": service}) if service else world), notes


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
    instruction = read_text(task_dir / "instruction.md").strip()
    if not instruction:
        raise TaskFormatError(f"{task_dir / 'instruction.md'}: empty instruction")
    toml_path = task_dir / "task.toml"
    try:
        config = tomllib.loads(read_text(toml_path))
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
        cpus=positive_number(env_cfg, "cpus", where, 1.0),
        memory_mb=size_mb(env_cfg, "memory_mb", "memory", where, 2048),
        disk_mb=min(size_mb(env_cfg, "storage_mb", "storage", where, 2048), 4096),
        timeout_s=positive_number(sections["agent"], "timeout_sec", f"{toml_path} [agent]", 3600.0),
    )
    tests, test_blobs = read_tree(task_dir / "tests")
    if "test.sh" not in tests:
        raise TaskFormatError(f"{task_dir / 'tests' / 'test.sh'}: missing (required)")
    compose = _compose_service(task_dir / "environment")
    dockerfile = task_dir / "environment" / "Dockerfile"
    built = world_from_dockerfile(dockerfile, dockerfile.parent) if dockerfile.exists() else None
    world, notes = _world(built, compose)
    solution = read_tree(task_dir / "solution") if (task_dir / "solution").is_dir() else ({}, {})
    name = sections["task"].get("name") or task_dir.name
    return Task(
        id=str(name),
        family=Family.TERMINAL,
        instruction=instruction,
        world=world,
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
            timeout_s=positive_number(sections["verifier"], "timeout_sec", f"{toml_path} [verifier]", 600.0),
        ),
        reference=_reference(solution, "solve.sh"),
        meta={
            **_provenance("harbor", task_dir, built, notes),
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
        config = yaml.safe_load(read_text(yaml_path))
    except yaml.YAMLError as exc:
        raise TaskFormatError(f"{yaml_path}: not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise TaskFormatError(f"{yaml_path}: expected a mapping")
    instruction = config.get("instruction")
    if instruction is None and isinstance(config.get("descriptions"), list) and config["descriptions"]:
        instruction = config["descriptions"][0].get("description")  # the older layout
    if not isinstance(instruction, str) or not instruction.strip():
        raise TaskFormatError(f"{yaml_path}: instruction is missing or empty")
    tests, test_blobs = read_tree(task_dir / "tests")
    run_tests = task_dir / "run-tests.sh"
    default_runner = not run_tests.exists()
    if default_runner and "test_outputs.py" not in tests:
        raise TaskFormatError(
            f"{run_tests}: missing, and tests/test_outputs.py (what the default runner runs) is missing too"
        )
    tests["run-tests.sh"] = DEFAULT_RUN_TESTS if default_runner else read_text(run_tests)
    compose = _compose_service(task_dir)
    built = world_from_dockerfile(task_dir / "Dockerfile", task_dir)
    world, notes = _world(built, compose)
    where = str(yaml_path)
    solution_path = task_dir / "solution.sh"
    solution = ({"solve.sh": read_text(solution_path)}, {}) if solution_path.exists() else ({}, {})
    return Task(
        id=task_dir.name,
        family=Family.TERMINAL,
        instruction=instruction.strip(),
        world=world,
        environment=Environment(
            limits=Limits(timeout_s=positive_number(config, "max_agent_timeout_sec", where, 3600.0)),
            workdir=built.workdir,
            scratch_dirs=[*GRADING_DIRS, *built.scratch_dirs],
            build=built.build,
        ),
        verifier=Verifier(
            kind="terminal-bench",
            files=tests,
            blobs=test_blobs,
            timeout_s=positive_number(config, "max_test_timeout_sec", where, 600.0),
        ),
        reference=_reference(solution, "solve.sh"),
        meta={
            **_provenance("terminal-bench", task_dir, built, notes),
            **({"default_test_runner": True} if default_runner else {}),
            **{k: config[k] for k in ("author_name", "difficulty", "category", "tags") if k in config},
        },
    )


# ---------------------------------------------------------------------------- task directories


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
