"""Grading a finished episode inside its sandbox: script, Harbor and Terminal-Bench verifiers.

Grading executes nothing the agent controls except the work under test. The caller has killed
every agent process first (TerminalEnv.stop_agent). Then, before anything of the verifier runs,
what the agent may have planted where grading reads or writes is removed (the contents of /tests
and /logs, the verifier's own scratch paths), and test files reach the sandbox only now. Every
verifier command runs with a fixed system PATH, a fresh HOME, no Python user site, no startup
files, and Python's safe path: the working directory joins sys.path last (a sitecustomize written
now), so a test can import the agent's modules but none can shadow the standard library, pytest or
an installed package. pytest reads no configuration or conftest.py from agent-writable places:
harbor and Terminal-Bench runs take `-c /dev/null --rootdir=/tests --confcutdir=/tests`; SWE runs
get the repository's test files, conftest.py files and pytest configuration rewritten from the
task's own copy (the test patch applied on the host) and agent-added ones removed, and no git
command runs on the agent's repository. GUI checkers get a fresh copy of the driver.

The Verdict carries the reward, its components, and `feedback`: the failing tests and their
assertion messages (bounded), which is what SDPO's teacher reads as hindsight. A verifier that
crashes, times out or writes no reward yields `error` (termination env_error) and reward 0, never 1;
so does one that could not run because its own script fetches from the network (curl, pip, uv, apt)
and the sandbox has none (`could_not_run`): a wrong solution and a missing network never read alike.
Without network, pip and uv install from the family's offline wheelhouse (OFFLINE_ENV), so the
common `uv venv; uv pip install pytest==8.4.1; uv run pytest` scripts run after their failed fetch of
uv itself.

Not guaranteed: the work under test runs with the agent's rights inside the tests that exercise it
and can lie to them (a module that exits 0 when imported); that is the task's tests' to detect.
Python older than 3.11 in an image ignores PYTHONSAFEPATH (the working directory stays first).
A verifier script that runs the work under test before any pytest session, and fetches from the
network, lets that work print a network error and make its run ungraded (env_error) instead of 0.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
from dataclasses import dataclass, field

from agentsd.elision import elide_text
from agentsd.envs.gui_install import DRIVER_PATH, DRIVER_SOURCE, driver_env
from agentsd.envs.swe_grading import PYTEST_CONFIG_NAMES, graded_files
from agentsd.sandboxes.base import DEFAULT_PATH, Sandbox
from agentsd.types import Task

FEEDBACK_CHARS = 4000
GRADER_HOME = "/tmp/.agentsd-grader"
GUI_VERIFIER_DIR = "/tmp/.agentsd-verifier"
SCRIPT_PATH = "/tmp/agentsd-verify.sh"
GRADER_PYTHON = f"{GRADER_HOME}/python"  # holds the sitecustomize below; first on PYTHONPATH
_EMPTIED = ("/tests", "/logs")  # mount points of harbor-style tasks: their contents go
_REMOVED = (GRADER_HOME, GUI_VERIFIER_DIR, SCRIPT_PATH)
# Every command of a verifier gets these: a system PATH, a HOME the agent never wrote, no user site,
# no startup files, Python's safe path (a .pth, .bashrc, pytest.py or python3 the agent planted
# would otherwise run inside the verifier).
VERIFIER_ENV = {
    "PATH": DEFAULT_PATH,
    "HOME": GRADER_HOME,
    "PYTHONSAFEPATH": "1",
    "PYTHONNOUSERSITE": "1",
    "PYTHONPATH": GRADER_PYTHON,
    "PYTHONSTARTUP": "",
    "BASH_ENV": "",
    "ENV": "",
}
OFFLINE_WHEELS = "/usr/local/share/agentsd/offline/wheels"
# A verifier in a sandbox without network installs from the family's wheelhouse (the pytest pins
# verifier scripts use) instead of failing on an index it cannot reach; uv finds the system Python.
OFFLINE_ENV = {
    "UV_OFFLINE": "1",
    "UV_FIND_LINKS": OFFLINE_WHEELS,
    "UV_PYTHON_DOWNLOADS": "never",
    "PIP_NO_INDEX": "1",
    "PIP_FIND_LINKS": OFFLINE_WHEELS,
}
PYTEST_ISOLATED = "-p no:cacheprovider -c /dev/null --rootdir=/tests --confcutdir=/tests"
SITECUSTOMIZE = """\
# agentsd's grader: the working directory and the task's own PYTHONPATH join sys.path last, so tests
# can import the agent's modules, but none of them can shadow the standard library, the test runner
# or an installed package.
import os
import sys

for _entry in [os.getcwd(), *os.environ.get("AGENTSD_TASK_PYTHONPATH", "").split(os.pathsep)]:
    if _entry and _entry not in sys.path:
        sys.path.append(_entry)
"""
_RESET = (
    'for d in {emptied}; do [ -d "$d" ] && [ ! -L "$d" ] || continue; chmod -R u+rwX "$d" 2>/dev/null; '
    'find "$d" -mindepth 1 -delete || exit 1; done; '
    'for p in {removed}; do chmod -R u+rwX "$p" 2>/dev/null; rm -rf "$p" || exit 1; done; '
    "mkdir -p {home}"
)
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)(?: - (.*))?$", re.MULTILINE)
_ASSERT = re.compile(r"^E\s+(.*)$", re.MULTILINE)
MAX_REWARD_FILE_BYTES = 1 << 20
_COUNTS = re.compile(r"(\d+) (passed|failed|error|errors)")
# What package clients print when there is no network (curl, wget, pip, uv, apt).
_NO_NETWORK = re.compile(
    r"Could not resolve host|Temporary failure (?:in name )?resolution|Name or service not known|"
    r"Network is unreachable|Failed to establish a new connection|failed to lookup address|dns error|"
    r"Could not connect to|Failed to fetch"
)
# A verifier script line that fetches from the network.
_FETCHES = re.compile(
    r"\b(?:curl|wget)\b.*https?://|\b(?:pip3?|uv pip|python3? -m pip) install\b"
    r"|\buvx\b|\buv (?:run|sync|venv|tool)\b|\bapt(?:-get)? (?:update|install)\b"
    r"|\bnpm (?:install|ci)\b|\bgit clone\b"
)
_TESTS_STARTED = re.compile(r"^=+ test session starts =+$", re.MULTILINE)


@dataclass
class Verdict:
    reward: float
    feedback: str
    components: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # set when the verifier itself failed: the reward means nothing
    output: str = ""


def verify(task: Task, sandbox: Sandbox, answer: str | None = None) -> Verdict:
    """Grade the episode; `answer` is what the agent passed to submit (GUI checkers read it).
    The caller has already stopped the agent's processes (TerminalEnv.stop_agent)."""
    reset = sandbox.exec(
        [
            "bash",
            "-c",
            _RESET.format(
                emptied=" ".join(_EMPTIED),
                removed=" ".join(shlex.quote(p) for p in _REMOVED),
                home=shlex.quote(GRADER_HOME),
            ),
        ],
        timeout=60,
        cwd="/",
    )
    if reset.exit_code != 0:
        error = f"could not clear what grading reads before the verifier ran: {reset.stderr[-500:]}"
        return Verdict(0.0, "", error=error)
    sandbox.write_file(f"{GRADER_PYTHON}/sitecustomize.py", SITECUSTOMIZE.encode())
    kind = task.verifier.kind
    if kind == "script":
        return _script(task, sandbox)
    if kind == "harbor":
        return _harbor(task, sandbox)
    if kind == "terminal-bench":
        return _terminal_bench(task, sandbox)
    if kind == "swebench":
        return _swebench(task, sandbox)
    if kind == "gui":
        return _gui(task, sandbox, answer)
    return Verdict(0.0, "", error=f"task {task.id}: verifier kind {kind!r} is not one the terminal env runs")


def _upload_tests(task: Task, sandbox: Sandbox) -> None:
    for rel, text in task.verifier.files.items():
        sandbox.write_file(f"/tests/{rel}", text.encode(), mode=0o755 if rel.endswith(".sh") else 0o644)
    for rel, encoded in task.verifier.blobs.items():
        sandbox.write_file(f"/tests/{rel}", base64.b64decode(encoded), mode=0o644)


def _run(
    task: Task, sandbox: Sandbox, command: str, env: dict[str, str] | None = None
) -> tuple[str, int | None, Verdict | None]:
    """(output, exit code, a Verdict when the verifier timed out)."""
    isolated = {**VERIFIER_ENV, "AGENTSD_TASK_PYTHONPATH": task.world.env.get("PYTHONPATH", "")}
    if not task.environment.network:
        isolated.update(OFFLINE_ENV)
    result = sandbox.exec(
        ["bash", "-c", command],
        timeout=task.verifier.timeout_s,
        env={**isolated, **(env or {})},
        cwd=task.environment.workdir,
    )
    output = (result.stdout + ("\n" + result.stderr if result.stderr else "")).strip()
    if result.timed_out:
        error = f"verifier timed out after {task.verifier.timeout_s:.0f}s"
        return output, None, Verdict(0.0, bounded(output), error=error, output=output)
    return output, result.exit_code, None


def _script(task: Task, sandbox: Sandbox) -> Verdict:
    sandbox.write_file(SCRIPT_PATH, (task.verifier.script or "exit 1").encode(), mode=0o755)
    output, code, failed = _run(task, sandbox, f"bash {SCRIPT_PATH}")
    if failed:
        return failed
    reward = 1.0 if code == 0 else 0.0
    return Verdict(reward, bounded(output) if reward < 1 else "", output=output)


def _gui(task: Task, sandbox: Sandbox, answer: str | None) -> Verdict:
    """The checker script: a reward written to $AGENTSD_REWARD_FILE, else exit code 0 -> 1, other -> 0."""
    sandbox.write_file(DRIVER_PATH, DRIVER_SOURCE.read_bytes())  # the copy from reset may be rewritten
    reward_file = f"{GUI_VERIFIER_DIR}/reward.txt"
    sandbox.write_file(
        f"{GUI_VERIFIER_DIR}/check.sh", (task.verifier.checker or "exit 1").encode(), mode=0o755
    )
    env = {**driver_env(answer), "AGENTSD_REWARD_FILE": reward_file}
    output, code, failed = _run(task, sandbox, f"bash {GUI_VERIFIER_DIR}/check.sh", env=env)
    if failed:
        return failed
    try:
        reward = _reward(sandbox.read_file(reward_file).decode().strip())
    except FileNotFoundError:
        reward = 1.0 if code == 0 else 0.0
    except ValueError as exc:
        return Verdict(0.0, bounded(output), error=f"the checker's reward file: {exc}", output=output)
    return Verdict(reward, bounded(output) if reward < 1 else "", output=output)


def _harbor(task: Task, sandbox: Sandbox) -> Verdict:
    verdict = _harbor_reward(task, sandbox)
    reason = None if verdict.error else could_not_run(task, verdict.output, verdict.reward)
    return Verdict(0.0, verdict.feedback, error=reason, output=verdict.output) if reason else verdict


def _harbor_reward(task: Task, sandbox: Sandbox) -> Verdict:
    _upload_tests(task, sandbox)
    env = {"PYTEST_ADDOPTS": PYTEST_ISOLATED}
    output, _, failed = _run(task, sandbox, "mkdir -p /logs/verifier && bash /tests/test.sh", env=env)
    if failed:
        return failed
    feedback = test_feedback(output)
    try:
        text = (
            sandbox.read_file("/logs/verifier/reward.txt", max_bytes=MAX_REWARD_FILE_BYTES).decode().strip()
        )
        return Verdict(_reward(text), feedback, output=output)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        return Verdict(0.0, feedback, error=f"reward.txt: {exc}", output=output)
    try:
        raw = sandbox.read_file("/logs/verifier/reward.json", max_bytes=MAX_REWARD_FILE_BYTES)
    except FileNotFoundError:
        return Verdict(
            0.0,
            feedback,
            error="the verifier wrote no /logs/verifier/reward.txt or reward.json",
            output=output,
        )
    parsed = reward_components(raw)
    if isinstance(parsed, str):
        return Verdict(0.0, feedback, error=f"reward.json: {parsed}", output=output)
    reward, components = parsed
    return Verdict(reward, feedback, components=components, output=output)


def network_fetch(task: Task) -> str | None:
    """The first line of the task's verifier scripts that fetches from the network (file:line: text)."""
    for name, text in sorted(task.verifier.files.items()):
        if not name.endswith(".sh"):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if not line.lstrip().startswith("#") and _FETCHES.search(line):
                return f"{name}:{number}: {line.strip()[:120]}"
    return None


def could_not_run(task: Task, output: str, reward: float) -> str | None:
    """Why a verifier that did not award 1 could not run, or None: its own scripts fetch from the
    network, the sandbox has none, a package client said so, and no test session ever started.
    Once pytest's session header is out the verifier ran (the fetch was not needed) and its verdict
    stands: the work under test runs only after that header, so it cannot turn its own failure into
    an ungraded run by printing the same words."""
    if reward >= 1.0 or task.environment.network or _TESTS_STARTED.search(output):
        return None
    fetch = network_fetch(task)
    if fetch is None or not _NO_NETWORK.search(output):
        return None
    return (
        f"the verifier could not run: it fetches from the network ({fetch}) and this sandbox has none; "
        "give the task network (environment.network; Harbor: [environment] allow_internet = true) or "
        "an image that already has what it fetches"
    )


def reward_components(raw: bytes) -> tuple[float, dict[str, float]] | str:
    """(reward, components) of a reward.json, or what is wrong with it: a number, or an object of
    finite numbers whose `reward` (else their mean) is in [0, 1]."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not JSON, bad UTF-8, huge integers, deep nesting
        return f"not JSON ({str(exc)[:200]})"
    if isinstance(data, int | float) and not isinstance(data, bool):
        data = {"reward": data}
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in data.values())
    ):
        return f"must map names to numbers, got {repr(data)[:200]}"
    try:
        components = {str(k): float(v) for k, v in data.items()}
    except OverflowError:
        return "a component is too large for a number"
    if not all(math.isfinite(v) for v in components.values()):
        return f"components must be finite numbers, got {repr(components)[:200]}"
    reward = components.get("reward", sum(components.values()) / len(components))
    if not 0.0 <= reward <= 1.0:
        return f"reward {reward} is outside [0, 1]"
    return reward, components


def _terminal_bench(task: Task, sandbox: Sandbox) -> Verdict:
    _upload_tests(task, sandbox)
    env = {"TEST_DIR": "/tests", "PYTEST_ADDOPTS": PYTEST_ISOLATED}
    output, _, failed = _run(task, sandbox, "bash /tests/run-tests.sh", env=env)
    if failed:
        return failed
    # digits past Python's int limit cannot be a real count: such a summary is no summary
    counts = {kind.rstrip("s"): int(n) for n, kind in _COUNTS.findall(_last_summary(output)) if len(n) < 10}
    passed, failures = counts.get("passed", 0), counts.get("failed", 0) + counts.get("error", 0)
    reward = 1.0 if passed and not failures else 0.0
    if reason := could_not_run(task, output, reward):
        return Verdict(0.0, bounded(output), error=reason, output=output)
    if not counts:
        return Verdict(0.0, bounded(output), error="run-tests.sh printed no pytest summary", output=output)
    return Verdict(
        reward, test_feedback(output), components={"passed": passed, "failed": failures}, output=output
    )


_RESULT = re.compile(r"^(PASSED|FAILED|ERROR|XPASS|XFAIL|SKIPPED) (\S+)", re.MULTILINE)


def _swebench(task: Task, sandbox: Sandbox) -> Verdict:
    verifier, workdir = task.verifier, task.environment.workdir.rstrip("/")
    files = graded_files(task)
    # Agent-added conftest.py and pytest configuration go; the task's own test files, conftest.py
    # and configuration come back from the host's copy (symlinks and directories in the way too).
    names = " -o ".join(f"-name {shlex.quote(n)}" for n in PYTEST_CONFIG_NAMES)
    doomed = " ".join(shlex.quote(p) for p in files)
    cleanup = f"find . -path ./.git -prune -o \\( {names} \\) -print0 | xargs -0 rm -f --; rm -rf -- {doomed}"
    output, code, failed = _run(task, sandbox, cleanup)
    if failed:
        return failed
    if code != 0:  # the agent made the test paths unremovable: nothing trustworthy to run
        error = f"could not clear the task's test paths: {output[-500:]}"
        return Verdict(0.0, "", error=error, output=output)
    try:
        for path, text in files.items():
            if text is not None:
                sandbox.write_file(f"{workdir}/{path}", text.encode())
    except OSError as exc:  # the agent made the test paths unwritable: nothing trustworthy to run
        return Verdict(0.0, "", error=f"could not restore the task's test files: {exc}", output=output)
    ids = [*verifier.fail_to_pass, *verifier.pass_to_pass]
    command = "python3 -m pytest -p no:cacheprovider -rA " + " ".join(shlex.quote(i) for i in ids)
    output, _, failed = _run(task, sandbox, command)
    if failed:
        return failed
    results = {test_id: status for status, test_id in _RESULT.findall(output)}
    if not results and "no tests ran" not in output and "error" not in output.lower():
        return Verdict(0.0, bounded(output), error="pytest printed no per-test results", output=output)
    f2p_ok = [i for i in verifier.fail_to_pass if results.get(i) == "PASSED"]
    p2p_ok = [i for i in verifier.pass_to_pass if results.get(i) == "PASSED"]
    components = {
        "fail_to_pass": len(f2p_ok) / max(len(verifier.fail_to_pass), 1),
        "pass_to_pass": len(p2p_ok) / max(len(verifier.pass_to_pass), 1),
    }
    solved = len(f2p_ok) == len(verifier.fail_to_pass) and len(p2p_ok) == len(verifier.pass_to_pass)
    failing = [i for i in ids if results.get(i) != "PASSED"]
    feedback = "" if solved else test_feedback(output)
    if failing and not solved:
        listed = "\n".join(f"{i}: {results.get(i, 'not run (collection error?)')}" for i in failing)
        feedback = bounded(f"Tests that must pass but do not:\n{listed}\n{feedback}")
    return Verdict(1.0 if solved else 0.0, feedback, components=components, output=output)


def _last_summary(output: str) -> str:
    lines = [line for line in output.splitlines() if _COUNTS.search(line) and (" in " in line or "=" in line)]
    return lines[-1] if lines else ""


def _reward(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"reward {value} is outside [0, 1]")
    return value


def test_feedback(output: str) -> str:
    """Failing tests with their assertion messages when pytest ran; else the output's tail."""
    failed = [f"{name}: {why}" if why else name for name, why in _FAILED.findall(output)]
    asserts = _ASSERT.findall(output)
    if failed or asserts:
        text = "Failing tests:\n" + "\n".join(failed) if failed else ""
        if asserts:
            text += ("\n" if text else "") + "Assertions:\n" + "\n".join(asserts[:40])
        return bounded(text)
    return bounded(output)


def bounded(text: str, limit: int = FEEDBACK_CHARS) -> str:
    return elide_text(text, limit)
