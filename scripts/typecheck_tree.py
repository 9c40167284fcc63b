"""Lay out the installed package tree for pyright: build/typecheck/agentsd/..., one link per file.

The wheel maps `agentsd.envs` to envs/ and `agentsd.sandboxes` to sandboxes/ (setuptools
package-dir); an editable install serves that mapping through an import hook, which Python follows
and pyright cannot. setuptools' strict editable mode writes the same mapping out as a tree of links
to the source files; this script builds that tree under build/ (ignored by git) and pyright reads it
through `extraPaths`. Run by scripts/check.sh before every pyright run, so new files are in it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from setuptools import build_meta

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def main() -> None:
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as wheel_dir:
        wheel = build_meta.build_editable(wheel_dir, {"editable_mode": "strict"})
    name, version = wheel.split("-")[:2]
    built = ROOT / "build" / f"__editable__.{name}-{version}-py3-none-any"
    shutil.rmtree(TREE, ignore_errors=True)
    built.rename(TREE)  # the links are absolute, so the tree can move


if __name__ == "__main__":
    main()
