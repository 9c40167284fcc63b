"""The README's code runs as shown, in a fresh interpreter: a new user's first contact must not raise."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_environments_example_runs_as_shown() -> None:
    # gymnasium.make("agentsd/Terminal-v0") raised NamespaceNotFound without the registering import
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme[readme.index("## Environments") :], re.DOTALL)
    assert code is not None
    script = code.group(1) + "print(observation)\nenv.close()\n"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "answer.txt" in result.stdout


def test_the_layout_table_lists_every_package_module_and_extra() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("## Commands")]
    missing = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "agentsd").iterdir())
        if not path.is_symlink()
        and path.name not in ("__init__.py", "py.typed", "__pycache__", "templates")
        and f"`{path.relative_to(ROOT).as_posix()}{'/' if path.is_dir() else ''}`" not in layout
    ]
    assert not missing, f"README layout misses {missing}"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [e for e in extras if f"`{e}`" not in layout], "README layout misses extras"


def test_no_tracked_file_points_outside_the_repository() -> None:
    # the README and ten docstrings once pointed at design notes that live outside this repository
    outside = "../" + "shared/"  # spelled in two parts so this file does not match itself
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    offenders = []
    for name in tracked.stdout.splitlines():
        path = ROOT / name
        if path.is_file() and path.stat().st_size < 2_000_000:
            text = path.read_bytes().decode(errors="ignore")
            if outside in text:
                offenders.append(name)
    assert not offenders, f"tracked files point outside the repository: {offenders}"
