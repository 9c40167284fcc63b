"""The SWE environment family: a repository at a base commit (agentsd/SWE-v0), and SWE-bench import.

Tools: bash (as in the terminal family), view_file, edit_file (exact string replacement that fails
with a clear observation when the old string is missing or ambiguous) and submit. At submit the
verifier resets the files the task's test patch touches, applies it, and runs the FAIL_TO_PASS and
PASS_TO_PASS tests with pytest; the reward is 1 only when all of them pass, and the feedback lists the
failing tests with their assertion output (bounded).

SWE-bench instances (JSONL with instance_id, repo, base_commit, patch, test_patch, problem_statement,
FAIL_TO_PASS, PASS_TO_PASS) import with a directory of repositories, each either a git clone named
`<owner>__<name>` or a git bundle `<owner>__<name>.bundle`: nothing is fetched from the network. The
repository at base_commit becomes the task's world under /testbed, committed once so `git diff`
shows the agent's changes. Files that are not UTF-8 text are left out (recorded in meta).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from agentsd.envs.task_formats import GRADING_DIRS, SUITES_DIR, TaskFormatError
from agentsd.envs.terminal import TerminalEnv
from agentsd.envs.tools import BASH, EDIT_FILE, SUBMIT, VIEW_FILE, ToolCall
from agentsd.types import Environment, Family, Task, Verifier, World

WORKDIR = "/testbed"
VIEW_LINES = 400
_FIELDS = (
    "instance_id",
    "repo",
    "base_commit",
    "patch",
    "test_patch",
    "problem_statement",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
)
_BASE_COMMIT = (
    "git init -q -b main . && git add -A && "
    "git -c user.name=agentsd -c user.email=base@agentsd -c commit.gpgsign=false commit -qm base"
)


class SWEEnv(TerminalEnv):
    """One repository task per episode, in a fresh sandbox."""

    tools = (BASH, VIEW_FILE, EDIT_FILE, SUBMIT)

    def _act(self, call: ToolCall) -> tuple[str, dict[str, Any]]:
        if call.name == "view_file":
            return self._view(call), {}
        if call.name == "edit_file":
            return self._edit(call), {}
        return super()._act(call)

    def _path(self, call: ToolCall) -> str:
        return self.in_workdir(str(call.arguments["path"]))

    def _read(self, path: str) -> str | None:
        assert self.sandbox is not None
        try:
            return self.sandbox.read_file(path, max_bytes=2_000_000).decode()
        except (OSError, UnicodeDecodeError):
            return None

    def _view(self, call: ToolCall) -> str:
        path = self._path(call)
        text = self._read(path)
        if text is None:
            return f"view_file: {path} does not exist, is not a file, or is not UTF-8 text"
        lines = text.splitlines()
        start = max(int(call.arguments.get("start_line", 1)), 1)
        end = min(int(call.arguments.get("end_line", start + VIEW_LINES - 1)), len(lines))
        shown = "\n".join(f"{n:6d}\t{lines[n - 1]}" for n in range(start, end + 1))
        more = f"\n[lines {end + 1}-{len(lines)} not shown]" if end < len(lines) else ""
        return f"{path} ({len(lines)} lines)\n{shown}{more}"

    def _edit(self, call: ToolCall) -> str:
        assert self.sandbox is not None
        path, old, new = self._path(call), str(call.arguments["old_str"]), str(call.arguments["new_str"])
        text = self._read(path)
        if old == "":
            if text is not None:
                return f"edit_file: {path} exists; give old_str to change it"
            self.sandbox.write_file(path, new.encode())
            return f"Created {path} ({len(new.splitlines())} lines)."
        if text is None:
            return f"edit_file: {path} does not exist, is not a file, or is not UTF-8 text"
        count = text.count(old)
        if count == 0:
            return f"edit_file: old_str was not found in {path}; nothing changed (whitespace matters)"
        if count > 1:
            return (
                f"edit_file: old_str occurs {count} times in {path}; include more context to make it unique"
            )
        self.sandbox.write_file(path, text.replace(old, new, 1).encode())
        first = text[: text.index(old)].count("\n") + 1
        return f"Edited {path}: replaced lines {first}-{first + old.count(chr(10))}."


# ---------------------------------------------------------------------------- SWE-bench import


def _checkout(repos: Path, repo: str, cache: dict[str, Path], scratch: Path) -> Path:
    key = repo.replace("/", "__")
    if key in cache:
        return cache[key]
    clone, bundle = repos / key, repos / f"{key}.bundle"
    if (clone / ".git").exists() or (clone / "HEAD").exists():
        cache[key] = clone
    elif bundle.exists():
        target = scratch / key
        subprocess.run(["git", "clone", "-q", str(bundle), str(target)], check=True, capture_output=True)
        cache[key] = target
    else:
        raise TaskFormatError(f"repository {repo}: neither {clone} (a git clone) nor {bundle} exists")
    return cache[key]


def _files_at(repo_dir: Path, commit: str, where: str) -> tuple[dict[str, str], list[str]]:
    def git(*args: str) -> bytes:
        proc = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True)
        if proc.returncode != 0:
            raise TaskFormatError(f"{where}: git {' '.join(args[:2])} failed: {proc.stderr.decode().strip()}")
        return proc.stdout

    if subprocess.run(["git", "-C", str(repo_dir), "cat-file", "-e", f"{commit}^{{commit}}"]).returncode != 0:
        raise TaskFormatError(f"{where}: base_commit {commit} is not in the repository at {repo_dir}")
    files, skipped = {}, []
    for path in git("ls-tree", "-r", "-z", "--name-only", commit).decode().split("\0"):
        if path:
            try:
                files[path] = git("show", f"{commit}:{path}").decode()
            except UnicodeDecodeError:
                skipped.append(path)
    return files, skipped


def _test_ids(instance: dict[str, Any], field: str, where: str) -> list[str]:
    value = instance[field]
    try:
        ids = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        raise TaskFormatError(f"{where}: {field} is not a JSON list of test ids") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise TaskFormatError(f"{where}: {field} must be a list of test id strings")
    return ids


def load_swebench(jsonl: Path, repos: Path) -> list[Task]:
    """SWE-bench instances from a JSONL file, with repositories from a local directory."""
    tasks, cache = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for number, line in enumerate(Path(jsonl).read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{jsonl}:{number}"
            try:
                instance = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskFormatError(f"{where}: not a JSON object ({exc.msg})") from None
            missing = [f for f in _FIELDS if f not in instance]
            if missing:
                raise TaskFormatError(f"{where}: missing field(s) {', '.join(missing)}")
            f2p, p2p = _test_ids(instance, "FAIL_TO_PASS", where), _test_ids(instance, "PASS_TO_PASS", where)
            if not f2p:
                raise TaskFormatError(f"{where}: FAIL_TO_PASS is empty; nothing would show the fix")
            repo_dir = _checkout(repos, instance["repo"], cache, Path(scratch))
            files, skipped = _files_at(repo_dir, instance["base_commit"], where)
            patch = instance["patch"]
            tasks.append(
                Task(
                    id=instance["instance_id"],
                    family=Family.SWE,
                    instruction=f"Resolve this issue in the repository at {WORKDIR}:\n\n"
                    f"{instance['problem_statement'].strip()}",
                    world=World(files=files, setup=_BASE_COMMIT),
                    environment=Environment(workdir=WORKDIR, scratch_dirs=GRADING_DIRS),
                    verifier=Verifier(
                        kind="swebench", fail_to_pass=f2p, pass_to_pass=p2p, test_patch=instance["test_patch"]
                    ),
                    reference={
                        "files": {
                            "gold.patch": patch,
                            "solve.sh": f"cd {WORKDIR} && git apply /solution/gold.patch\n",
                        },
                        "entry": "solve.sh",
                        "patch": patch,
                    },
                    meta={
                        "source": "swebench",
                        "repo": instance["repo"],
                        "base_commit": instance["base_commit"],
                        "skipped_files": skipped,
                    },
                )
            )
    return tasks


def load_swe_suite(name: str = "swe") -> list[Task]:
    root = SUITES_DIR / name
    return load_swebench(root / "instances.jsonl", root / "repos")


PYTEST_CONFIG_NAMES = ("conftest.py", "pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml")


def graded_files(task: Task) -> dict[str, str | None]:
    """What the files the tests depend on must hold when the task is graded, from the task's own copy
    of the repository, never the agent's: the modules of the graded test ids, every file the test
    patch touches (the patch applied here, on the host, with git on task data only), and every
    conftest.py and pytest configuration file. Paths are relative to the repository; None means the
    test patch deletes the file."""
    world, verifier = task.world.files, task.verifier
    wanted: dict[str, str | None] = {
        path: text for path, text in world.items() if PurePosixPath(path).name in PYTEST_CONFIG_NAMES
    }
    for test_id in [*verifier.fail_to_pass, *verifier.pass_to_pass]:
        module = test_id.split("::", 1)[0]
        if module in world:
            wanted[module] = world[module]
    patch = verifier.test_patch or ""
    touched = sorted(
        {line.split(" b/", 1)[1] for line in patch.splitlines() if line.startswith("diff --git ")}
    )
    if not touched:
        return wanted
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for path in touched:
            if path in world:
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(world[path])
        applied = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", "-"], cwd=root, input=patch.encode(), capture_output=True
        )
        if applied.returncode != 0:
            raise TaskFormatError(
                f"task {task.id}: the test patch does not apply to the task's own files: "
                f"{applied.stderr.decode(errors='replace').strip()}"
            )
        for path in touched:
            wanted[path] = (root / path).read_text() if (root / path).is_file() else None
    return wanted
