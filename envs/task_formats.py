"""Importers of task directories into agentsd Tasks: Harbor and Terminal-Bench 1, and task suites.

Harbor:          instruction.md, task.toml, environment/Dockerfile (+ build context), tests/test.sh
                 (+ files), solution/solve.sh (optional).
Terminal-Bench:  task.yaml, Dockerfile (+ context), run-tests.sh, tests/, solution.sh (optional).

No image registry is reachable here, so a task's Dockerfile is not built: it is read. WORKDIR,
ENV, COPY/ADD of build-context files and RUN lines become the task's World (files laid into the
sandbox, a setup script run before the first turn) on the family's local image, and the Task's meta
records the upstream base image and that the fallback was used. A Dockerfile feature that cannot be
carried over this way (COPY --from, ADD of a URL) is an error naming the file and the line.

A missing or malformed file raises TaskFormatError naming the file and the field.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from agentsd.envs.learnable import SUITES as LEARN_SUITES
from agentsd.envs.learnable import learn_suite
from agentsd.errors import AgentsdError
from agentsd.types import GRADING_DIRS, Environment, Family, Limits, Task, Verifier, World

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


def _tree(root: Path) -> dict[str, str]:
    """Every file under root as relative path -> text."""
    if not root.is_dir():
        raise TaskFormatError(f"{root}: missing directory (required)")
    return {str(p.relative_to(root)): _read_text(p) for p in sorted(root.rglob("*")) if p.is_file()}


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


def world_from_dockerfile(dockerfile: Path, context: Path) -> tuple[World, str, str | None]:
    """(world, workdir, upstream base image) read from a Dockerfile and its build context."""
    text = _read_text(dockerfile)
    workdir, base = "/", None
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    setup: list[str] = []
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    for number, line in logical:
        where = f"{dockerfile}:{number}"
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            base = rest.split()[0]
        elif op == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
            setup.append(f"mkdir -p {shlex.quote(workdir)}")
        elif op == "ENV":
            env.update(_env_pairs(rest, where))
        elif op in ("COPY", "ADD"):
            files.update(_copy(rest, context, workdir, where))
        elif op == "RUN":
            command = _exec_form(rest, where) if rest.startswith("[") else rest
            setup.append(f"cd {shlex.quote(workdir)} && {command}")
        elif op in ("ARG", "LABEL", "EXPOSE", "CMD", "ENTRYPOINT", "USER", "SHELL", "VOLUME", "STOPSIGNAL",
                    "HEALTHCHECK", "ONBUILD", "MAINTAINER"):  # fmt: skip
            continue  # irrelevant to the world the agent starts in
        else:
            raise TaskFormatError(f"{where}: unknown Dockerfile instruction {op}")
    script = "set -e\n" + "\n".join(setup) if setup else None
    return World(files=files, setup=script, env=env), (workdir if workdir != "/" else "/workspace"), base


def _exec_form(rest: str, where: str) -> str:
    try:
        argv = json.loads(rest)
    except json.JSONDecodeError:
        raise TaskFormatError(f"{where}: RUN [...] is not a JSON array") from None
    return shlex.join(str(a) for a in argv)


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


def _copy(rest: str, context: Path, workdir: str, where: str) -> dict[str, str]:
    args = [a for a in shlex.split(rest) if not a.startswith("--")]
    if any(a.startswith("--from") for a in shlex.split(rest)):
        raise TaskFormatError(f"{where}: COPY --from (multi-stage) cannot be laid out without building")
    if len(args) < 2:
        raise TaskFormatError(f"{where}: COPY needs a source and a destination")
    *sources, dest = args
    if not dest.startswith("/"):
        dest = f"{workdir.rstrip('/')}/{dest}"
    files = {}
    for source in sources:
        if "://" in source:
            raise TaskFormatError(f"{where}: ADD of a URL ({source}) needs network at build time")
        path = (context / source).resolve()
        if not path.exists():
            raise TaskFormatError(f"{where}: COPY source {source} not found in {context}")
        if path.is_dir():
            for rel, text in _tree(path).items():
                files[f"{dest.rstrip('/')}/{rel}"] = text
        else:
            into_dir = dest.endswith("/") or len(sources) > 1
            files[f"{dest.rstrip('/')}/{path.name}" if into_dir else dest] = _read_text(path)
    return files


def _provenance(source: str, task_dir: Path, base: str | None) -> dict[str, Any]:
    """Where an imported task came from, and whether it runs on the fallback image."""
    return {
        "source": source,
        "path": str(task_dir),
        "upstream_image": base,
        "image_fallback": base is not None,
    }


# ---------------------------------------------------------------------------- Harbor


def load_harbor_task(task_dir: Path) -> Task:
    task_dir = Path(task_dir)
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
    tests = _tree(task_dir / "tests")
    if "test.sh" not in tests:
        raise TaskFormatError(f"{task_dir / 'tests' / 'test.sh'}: missing (required)")
    dockerfile = task_dir / "environment" / "Dockerfile"
    world, workdir, base = (
        world_from_dockerfile(dockerfile, dockerfile.parent)
        if dockerfile.exists()
        else (World(), "/app", None)
    )
    solution = _tree(task_dir / "solution") if (task_dir / "solution").is_dir() else {}
    name = sections["task"].get("name") or task_dir.name
    return Task(
        id=str(name),
        family=Family.TERMINAL,
        instruction=instruction,
        world=world,
        environment=Environment(
            limits=limits,
            network=bool(env_cfg.get("allow_internet", False)),
            workdir=workdir,
            scratch_dirs=GRADING_DIRS,
        ),
        verifier=Verifier(
            kind="harbor",
            files=tests,
            timeout_s=_number(sections["verifier"], "timeout_sec", f"{toml_path} [verifier]", 600.0),
        ),
        reference={"files": solution, "entry": "solve.sh"} if solution else {},
        meta={
            **_provenance("harbor", task_dir, base),
            **sections["metadata"],
        },
    )


# ---------------------------------------------------------------------------- Terminal-Bench 1


def load_terminal_bench_task(task_dir: Path) -> Task:
    task_dir = Path(task_dir)
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
    tests = {**_tree(task_dir / "tests"), "run-tests.sh": _read_text(task_dir / "run-tests.sh")}
    world, workdir, base = world_from_dockerfile(task_dir / "Dockerfile", task_dir)
    where = str(yaml_path)
    solution_path = task_dir / "solution.sh"
    return Task(
        id=task_dir.name,
        family=Family.TERMINAL,
        instruction=instruction.strip(),
        world=world,
        environment=Environment(
            limits=Limits(timeout_s=_number(config, "max_agent_timeout_sec", where, 3600.0)),
            workdir=workdir,
            scratch_dirs=GRADING_DIRS,
        ),
        verifier=Verifier(
            kind="terminal-bench",
            files=tests,
            timeout_s=_number(config, "max_test_timeout_sec", where, 600.0),
        ),
        reference={"files": {"solve.sh": _read_text(solution_path)}, "entry": "solve.sh"}
        if solution_path.exists()
        else {},
        meta={
            **_provenance("terminal-bench", task_dir, base),
            **{k: config[k] for k in ("author_name", "difficulty", "category", "tags") if k in config},
        },
    )


# ---------------------------------------------------------------------------- suites


def load_task_dir(task_dir: Path) -> Task:
    """A task directory in whichever format it is."""
    if (task_dir / "task.toml").exists():
        return load_harbor_task(task_dir)
    if (task_dir / "task.yaml").exists():
        return load_terminal_bench_task(task_dir)
    raise TaskFormatError(f"{task_dir}: neither task.toml (Harbor) nor task.yaml (Terminal-Bench) found")


def suite_names() -> list[str]:
    shipped = sorted(p.name for p in SUITES_DIR.iterdir() if p.is_dir()) if SUITES_DIR.is_dir() else []
    return [*shipped, "miniwob", *LEARN_SUITES]


def load_suite(name_or_path: str | Path) -> list[Task]:
    """A shipped suite by name (see suite_names()) or every task directory under a path.

    `miniwob` is the MiniWoB++ suite of the installed `miniwob` package (envs/miniwob.py); `learn`,
    `learn-train` and `learn-heldout` are generated (envs/learnable.py).
    """
    if str(name_or_path) == "miniwob":
        from agentsd.envs.miniwob import load_miniwob

        return load_miniwob()
    if str(name_or_path) in LEARN_SUITES:  # generated from a seed (envs/learnable.py)
        return learn_suite(str(name_or_path))
    root = SUITES_DIR / str(name_or_path)
    if not root.is_dir():
        root = Path(name_or_path)
    if not root.is_dir():
        shipped = ", ".join(suite_names()) or "none"
        raise TaskFormatError(f"suite {name_or_path!s}: not a shipped suite ({shipped}) nor a directory")
    if (root / "instances.jsonl").exists():  # SWE-bench instances with their repositories
        from agentsd.envs.swe import load_swebench

        return load_swebench(root / "instances.jsonl", root / "repos")
    if (root / "tasks_and_rubrics.json").exists():  # an APEX-Agents release (rubric tasks)
        from agentsd.envs.apex import load_apex

        return load_apex(root)[0]
    if (root / "tasks.yaml").exists():  # a GUI suite
        from agentsd.envs.gui_tasks import load_gui_suite

        return load_gui_suite(root)
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [load_task_dir(d) for d in dirs]
