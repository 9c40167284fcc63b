"""Import of SWE-bench instances into SWE tasks (family swe), from local repositories only.

Instances (JSONL with instance_id, repo, base_commit, patch, test_patch, problem_statement,
FAIL_TO_PASS, PASS_TO_PASS) import with a directory of repositories, each either a git clone named
`<owner>__<name>` or a git bundle `<owner>__<name>.bundle`: nothing is fetched from the network. The
repository at base_commit becomes the task's world under /testbed, committed once so `git diff`
shows the agent's changes; the gold patch becomes the reference solution. A malformed instance or a
missing repository or commit raises TaskFormatError naming the line and the field.

Not guaranteed: files that are not UTF-8 text are left out of the world (listed in
meta["skipped_files"]); a test needing them fails.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from agentsd.envs.common import SUITES_DIR, TaskFormatError
from agentsd.types import GRADING_DIRS, Environment, Family, Task, Verifier, World

WORKDIR = "/testbed"
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
