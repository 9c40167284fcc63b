"""What SWE grading restores before it runs the tests: the task's own test files and pytest
configuration, from the task's copy of the repository, never the agent's.

envs/verifiers.py removes every conftest.py and pytest configuration file (PYTEST_CONFIG_NAMES) of
the agent's repository, then writes back what `graded_files` returns. The test patch is applied here,
on the host, with git on task data only.

Not guaranteed: that the tests depend on nothing else the agent can change (the modules under test
are the agent's work).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from agentsd.envs.common import TaskFormatError
from agentsd.types import Task

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
