"""Import of the APEX-Agents release format into rubric tasks (family `rubric`).

A release directory holds:

    tasks_and_rubrics.json        a list of tasks: task_id, world_id, domain, prompt,
                                  rubric [{verifier_id, criteria}], task_input_files, expected_output,
                                  gold_response, gold_response_type
    world_files_zipped/<world_id>.zip   (or world_files/<world_id>/) a world: files under filesystem/
    task_files/<task_id>/         (optional) files overlaid on the world for one task

agentsd reads these extra, optional fields (ignored by other tools): on a rubric item `weight`,
`primary` (default true), `negative` (default false) and `check` (a programmatic check,
envs/rubric_checks.py); on a task `expected_output_path` (the file a file-output task must write)
and `gold_files` (a directory of the release holding the gold output files, relative paths kept).

A task that cannot be imported (no criteria, a missing world, a malformed field) is skipped with a
message naming the task and the field; the rest of the suite still loads (`load_apex` returns both).
Output types: `message_in_console` is an answer given in submit; with `expected_output_path` the
deliverable is that file; any other type (a new document, an edited one ...) is the files the agent
creates or changes in the working directory, which the judge sees (envs/rubric.py).
World files that are UTF-8 text go to `world.files`, others (xlsx, docx, pdf...) base64 to
`world.blobs`; the `filesystem/` prefix is dropped, so the world is the agent's working directory.

Not guaranteed: the apps of APEX worlds beyond files (mail, calendar, chat servers).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from agentsd.envs.common import TaskFormatError
from agentsd.types import Environment, Family, Limits, Task, Verifier, World

CONSOLE_OUTPUT = "message_in_console"  # the release's type for an answer given in the chat
INDEX = "tasks_and_rubrics.json"
MAX_WORLD_BYTES = 200_000_000
log = logging.getLogger("agentsd.envs.apex")


def _strip_filesystem(name: str) -> str | None:
    """'<anything>/filesystem/a/b.xlsx' -> 'a/b.xlsx'; None for entries outside filesystem/."""
    parts = PurePosixPath(name).parts
    if "filesystem" not in parts:
        return None
    rest = parts[parts.index("filesystem") + 1 :]
    return "/".join(rest) if rest else None


def _add(files: dict[str, str], blobs: dict[str, str], path: str, data: bytes) -> None:
    files.pop(path, None)
    blobs.pop(path, None)
    try:
        files[path] = data.decode()
    except UnicodeDecodeError:
        blobs[path] = base64.b64encode(data).decode()


def _world(root: Path, world_id: str, where: str) -> tuple[dict[str, str], dict[str, str]]:
    files: dict[str, str] = {}
    blobs: dict[str, str] = {}
    zipped = root / "world_files_zipped" / f"{world_id}.zip"
    unzipped = root / "world_files" / world_id
    if zipped.is_file():
        try:
            with zipfile.ZipFile(zipped) as archive:
                total = sum(i.file_size for i in archive.infolist())
                if total > MAX_WORLD_BYTES:
                    raise TaskFormatError(f"{where}: world {world_id} unpacks to {total} bytes (> limit)")
                for info in archive.infolist():
                    path = _strip_filesystem(info.filename)
                    if path and not info.is_dir():
                        _add(files, blobs, path, archive.read(info))
        except zipfile.BadZipFile:
            raise TaskFormatError(f"{where}: world_id {world_id}: {zipped} is not a zip file") from None
    elif unzipped.is_dir():
        base = unzipped / "filesystem" if (unzipped / "filesystem").is_dir() else unzipped
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            _add(files, blobs, path.relative_to(base).as_posix(), path.read_bytes())
    else:
        raise TaskFormatError(
            f"{where}: world_id {world_id}: neither {zipped} nor {unzipped} exists (a missing world file)"
        )
    return files, blobs


def _overlay(directory: Path, files: dict[str, str], blobs: dict[str, str]) -> None:
    if not directory.is_dir():
        return
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        _add(files, blobs, _strip_filesystem(rel) or rel, path.read_bytes())


def _criteria(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise TaskFormatError(f"{where}: rubric is missing or empty; a rubric task needs criteria")
    out = []
    for number, item in enumerate(raw):
        at = f"{where}: rubric[{number}]"
        if not isinstance(item, dict):
            raise TaskFormatError(f"{at}: expected an object with verifier_id and criteria")
        text = item.get("criteria")
        if not isinstance(text, str) or not text.strip():
            raise TaskFormatError(f"{at}: field `criteria` (the criterion's text) is missing or empty")
        criterion: dict[str, Any] = {
            "id": str(item.get("verifier_id") or f"c{number + 1}"),
            "text": text.strip(),
            "weight": float(item.get("weight", 1.0)),
            "primary": bool(item.get("primary", item.get("is_primary", True))),
            "negative": bool(item.get("negative", item.get("is_negative", False))),
        }
        if item.get("check") is not None:
            if not isinstance(item["check"], dict) or "kind" not in item["check"]:
                raise TaskFormatError(f"{at}: field `check` must be an object with a `kind`")
            criterion["check"] = item["check"]
        out.append(criterion)
    return out


def _expected_output(raw: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
    """(meta.expected_output, the instruction's closing sentence) for the task's output type:
    an answer in the console, a file at `expected_output_path`, or (any other type of the release:
    a new document, an edited one, a spreadsheet, a deck...) the files the agent creates or changes,
    which the judge then sees."""
    kind = raw.get("expected_output")
    if kind is not None and not isinstance(kind, str):
        raise TaskFormatError(f"{where}: field `expected_output` must be a string, got {type(kind).__name__}")
    if raw.get("expected_output_path"):
        path = str(raw["expected_output_path"])
        return {"type": "file", "path": path}, f"Write the deliverable to {path}, then call submit."
    if kind in (None, "", CONSOLE_OUTPUT):
        return {"type": "console"}, "Give your final answer in submit(answer)."
    closing = (
        "Make the changes in the existing files of the working directory, then call submit."
        if kind.startswith("edit")
        else "Save the deliverable as a file in the working directory, then call submit."
    )
    return {"type": "files", "kind": kind}, closing


def _task(root: Path, raw: dict[str, Any], number: int, worlds: dict[str, Any]) -> Task:
    where = f"{root / INDEX}: task {raw.get('task_id', f'#{number}')}"
    for key in ("task_id", "world_id", "prompt"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise TaskFormatError(f"{where}: field `{key}` is missing or not a string")
    criteria = _criteria(raw.get("rubric"), where)
    world_id = raw["world_id"]
    if world_id not in worlds:
        worlds[world_id] = _world(root, world_id, where)
    files, blobs = dict(worlds[world_id][0]), dict(worlds[world_id][1])
    _overlay(root / "task_files" / raw["task_id"], files, blobs)
    inputs = raw.get("task_input_files") or []
    if isinstance(inputs, str):
        inputs = [inputs]
    missing = [f for f in inputs if isinstance(f, str) and f not in files and f not in blobs]
    if missing:
        raise TaskFormatError(f"{where}: task_input_files {missing} are not in world {world_id}")
    expected, closing = _expected_output(raw, where)
    instruction = raw["prompt"].strip()
    if inputs:
        instruction += "\n\nInput files: " + ", ".join(str(i) for i in inputs)
    instruction += f"\n\n{closing}"
    reference: dict[str, Any] = {
        "gold_response": raw.get("gold_response"),
        "gold_response_type": raw.get("gold_response_type"),
    }
    if raw.get("gold_files"):
        gold_dir = root / str(raw["gold_files"])
        if not gold_dir.is_dir():
            raise TaskFormatError(f"{where}: gold_files {gold_dir} is not a directory")
        reference["gold_files"] = {
            p.relative_to(gold_dir).as_posix(): base64.b64encode(p.read_bytes()).decode()
            for p in sorted(gold_dir.rglob("*"))
            if p.is_file()
        }
    return Task(
        id=raw["task_id"],
        family=Family.RUBRIC,
        instruction=instruction,
        world=World(files=files, blobs=blobs),
        environment=Environment(limits=Limits()),
        verifier=Verifier(kind="rubric", criteria=criteria),
        reference=reference,
        meta={
            "source": "apex-agents",
            "upstream_id": raw["task_id"],
            "world_id": world_id,
            "domain": str(raw.get("domain") or "unknown"),
            "expected_output": expected,
            "upstream_expected_output": raw.get("expected_output"),
        },
    )


def load_apex(root: Path) -> tuple[list[Task], list[str]]:
    """(tasks, problems): every importable task, and one message per task that was skipped."""
    index = Path(root) / INDEX
    try:
        data = json.loads(index.read_text())
    except FileNotFoundError:
        raise TaskFormatError(f"{index}: not found; an APEX release has {INDEX} at its top") from None
    except json.JSONDecodeError as exc:
        raise TaskFormatError(f"{index}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict):
        data = data.get("tasks")
    if not isinstance(data, list):
        raise TaskFormatError(f"{index}: expected a list of tasks (or an object with `tasks`)")
    tasks, problems, worlds = [], [], {}
    for number, raw in enumerate(data):
        if not isinstance(raw, dict):
            problems.append(f"{index}: task #{number}: not an object")
            continue
        try:
            tasks.append(_task(Path(root), raw, number, worlds))
        except TaskFormatError as exc:
            problems.append(str(exc))
    for problem in problems:
        log.warning("skipped: %s", problem)
    return tasks, problems


def gold_blobs(task: Task) -> dict[str, bytes]:
    """The task's gold output files (for tests and reference runs), path -> bytes."""
    return {p: base64.b64decode(b) for p, b in (task.reference.get("gold_files") or {}).items()}


def zip_world(directory: Path) -> bytes:
    """A world directory (holding filesystem/) as a deterministic zip: fixed dates, sorted names."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return out.getvalue()
