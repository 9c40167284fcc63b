"""The wheel installs agentsd, agentsd.envs and agentsd.sandboxes, and no generic top-level module."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_every_package_directory_is_declared() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for dirpath, dirnames, filenames in os.walk(ROOT / "agentsd", followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "suites")]  # suites: task data
        if "__init__.py" in filenames:
            found.add(".".join(Path(dirpath).relative_to(ROOT).parts))
    assert found == declared


def test_envs_and_sandboxes_are_the_top_level_directories() -> None:
    for name in ("envs", "sandboxes"):
        assert (ROOT / "agentsd" / name).resolve() == (ROOT / name).resolve()


@pytest.mark.slow
def test_wheel_has_no_generic_top_level_modules(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("agentsd-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"agentsd"}
    assert "agentsd/envs/__init__.py" in names and "agentsd/sandboxes/__init__.py" in names
    assert "agentsd/store/store.py" in names
    assert "agentsd/envs/suites/terminal/count-lines/tests/test.sh" in names  # suites ship as data
    assert "agentsd/envs/suites/swe/repos/agentsd-suite__ledger.bundle" in names
    assert "agentsd/sandboxes/images/terminal/Dockerfile" in names
    assert "agentsd/sandboxes/images/terminal/provides.txt" in names  # what the Dockerfile COPYs
    assert "agentsd/templates/deepspeed/zero2.json" in names  # `train` runs outside the checkout
