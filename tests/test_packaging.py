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
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, directory in setuptools["package-dir"].items():
        for dirpath, dirnames, filenames in os.walk(ROOT / directory):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "suites")]  # suites: task data
            if "__init__.py" in filenames:
                found.add(".".join((package, *Path(dirpath).relative_to(ROOT / directory).parts)))
    assert found == set(setuptools["packages"])


def test_the_repository_has_no_symlinks_and_envs_import_from_the_top_level_folders() -> None:
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True)
    links = [line.split("\t")[1] for line in listing.stdout.splitlines() if line.startswith("120000")]
    assert links == []  # tools that skip links would miss what a link stands for
    import agentsd.envs
    import agentsd.sandboxes

    assert Path(agentsd.envs.__file__).resolve() == (ROOT / "envs" / "__init__.py").resolve()
    assert Path(agentsd.sandboxes.__file__).resolve() == (ROOT / "sandboxes" / "__init__.py").resolve()


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
