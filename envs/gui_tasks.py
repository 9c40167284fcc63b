"""GUI task suites: a tasks.yaml (format documented at the top of envs/suites/gui/tasks.yaml) -> Tasks.

Every entry is validated before any task is returned; an error names the file, the entry and the
field. Page files named under `pages` are read from the suite directory into the task's world, so a
stored task is self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentsd.config import read_yaml_mapping
from agentsd.envs.common import TaskFormatError
from agentsd.types import Environment, Family, GuiApp, Task, Verifier, World

TASKS_FILE = "tasks.yaml"


class ReferenceAction(BaseModel):
    """One action of a reference solution; `target` is resolved to an element id at run time."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    target: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)


class GuiTaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    app: GuiApp
    files: dict[str, str] = Field(default_factory=dict)
    pages: dict[str, str] = Field(default_factory=dict)
    checker: str = Field(min_length=1)
    reference: list[ReferenceAction] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class GuiSuiteFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: Environment = Field(default_factory=Environment)
    tasks: list[dict[str, Any]] = Field(min_length=1)


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(entry)'}: {err['msg']}" for err in exc.errors()
    )


def load_gui_suite(root: Path) -> list[Task]:
    """Every task of a GUI suite directory (its tasks.yaml and page files)."""
    path = root / TASKS_FILE
    try:
        suite = GuiSuiteFile.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        raise TaskFormatError(f"{path}: {_field_errors(exc)}") from None
    tasks, seen = [], set()
    for index, raw in enumerate(suite.tasks):
        where = f"{path}: tasks[{index}]" + (f" ({raw['id']})" if isinstance(raw.get("id"), str) else "")
        try:
            entry = GuiTaskEntry.model_validate(raw)
        except ValidationError as exc:
            raise TaskFormatError(f"{where}: {_field_errors(exc)}") from None
        if entry.id in seen:
            raise TaskFormatError(f"{where}: id {entry.id!r} is used twice")
        seen.add(entry.id)
        files = dict(entry.files)
        for world_path, rel in entry.pages.items():
            page = root / rel
            if not page.is_file():
                raise TaskFormatError(f"{where}: pages.{world_path}: {page} does not exist")
            files[world_path] = page.read_text()
        tasks.append(
            Task(
                id=entry.id,
                family=Family.GUI,
                instruction=entry.instruction,
                world=World(files=files, app=entry.app),
                environment=suite.defaults,
                verifier=Verifier(kind="gui", checker=entry.checker),
                reference={"actions": [a.model_dump(exclude_none=True) for a in entry.reference]},
                meta={"source": f"agentsd-gui:{root.name}", **entry.meta},
            )
        )
    return tasks
