"""MiniWoB++ tasks from the `miniwob` package as GUI tasks, scored by MiniWoB's own reward.

Each task page and the scripts and stylesheets it references become the task's world (so a stored
task runs without the package), opened in Chromium from file://. A start script seeds MiniWoB's
random generator (one task per seed), lifts its 10-second episode timer to the task's time limit,
records the first episode result the page reports, and starts the episode. The checker reads that
result: reward = MiniWoB's raw reward clipped to [0, 1] (failure -1 -> 0), and 0 when the agent
submitted before the page ended the episode. The page itself shows the instruction (MiniWoB's
"utterance") at its top, so the agent reads it from the accessibility tree.

Not imported: pages that need binary assets (images) the world cannot carry as text.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from agentsd.envs.common import TaskFormatError
from agentsd.types import Environment, Family, GuiApp, Limits, Task, Verifier, World

WORLD_ROOT = "/workspace/miniwob"
_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"'#:]+)["']""")
CHECKER = """\
result=$(python3 "$GUI" eval 'window.AGENTSD_RESULT || null')
echo "MiniWoB result: $result"
python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(max(0.0, min(1.0, float(r["reward"]))) if r else 0.0)
' "$result" > "$AGENTSD_REWARD_FILE"
"""
LIMITS = Limits(memory_mb=3072, pids=512, timeout_s=1800, command_timeout_s=120)


def html_root() -> Path:
    """The html directory of the installed miniwob package (found without importing it)."""
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise TaskFormatError("MiniWoB++: the miniwob package is not installed (pip install 'agentsd[gui]')")
    root = Path(next(iter(spec.submodule_search_locations))) / "html"
    if not (root / "miniwob").is_dir():
        raise TaskFormatError(f"MiniWoB++: {root}/miniwob does not exist (an unexpected package layout)")
    return root


def task_names(root: Path | None = None) -> list[str]:
    root = root or html_root()
    return sorted(p.stem for p in (root / "miniwob").glob("*.html"))


def init_script(seed: int, time_limit_s: float) -> str:
    return (
        f"core.EPISODE_MAX_TIME = {int(time_limit_s * 1000)}; Math.seedrandom({seed!r});"
        "(function () { var end = core.endEpisode; core.endEpisode = function (r, t, why) {"
        " if (window.AGENTSD_RESULT === undefined) {"
        " window.AGENTSD_RESULT = {reward: r, reason: why || null}; }"
        " return end.apply(this, arguments); }; })();"
        "core.startEpisodeReal();"
    )


def _world_files(root: Path, page: Path) -> dict[str, str] | None:
    """The page and every local file it references, by world path; None when one is not text."""
    files: dict[str, str] = {}
    todo = [page]
    while todo:
        path = todo.pop()
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        if f"{WORLD_ROOT}/{rel}" in files:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            return None
        files[f"{WORLD_ROOT}/{rel}"] = text
        if path.suffix == ".html":
            for ref in _ASSET.findall(text):
                target = (path.parent / ref).resolve()
                if target.is_file() and target.is_relative_to(root.resolve()):
                    todo.append(target)
                elif not target.exists() and PurePosixPath(ref).suffix in (".js", ".css"):
                    return None
    return files


def load_miniwob(
    names: Iterable[str] | None = None, seeds: Sequence[int] = (0,), root: Path | None = None
) -> list[Task]:
    """MiniWoB++ tasks (all by default), one per (name, seed)."""
    root = root or html_root()
    available = task_names(root)
    wanted = list(names) if names is not None else available
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise TaskFormatError(f"MiniWoB++: no task named {', '.join(unknown)} in {root}/miniwob")
    tasks = []
    for name in wanted:
        files = _world_files(root, root / "miniwob" / f"{name}.html")
        if files is None:
            continue
        for seed in seeds:
            tasks.append(
                Task(
                    id=f"miniwob.{name}.s{seed}",
                    family=Family.GUI,
                    instruction=(
                        f"Complete the MiniWoB++ task {name!r} in the browser. The task's instruction "
                        "is the text at the top of the page. Submit when you are done."
                    ),
                    world=World(
                        files=files,
                        app=GuiApp(
                            kind="web",
                            url=f"file://{WORLD_ROOT}/miniwob/{name}.html",
                            init_js=init_script(seed, LIMITS.timeout_s),
                            width=900,
                            height=700,
                        ),
                    ),
                    environment=Environment(limits=LIMITS),
                    verifier=Verifier(kind="gui", checker=CHECKER),
                    meta={"source": "miniwob", "upstream_id": name, "seed": seed},
                )
            )
    return tasks
