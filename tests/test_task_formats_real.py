"""Real task directories as users bring them: Dockerfile steps that fail, binary content, a
Terminal-Bench task without run-tests.sh, layouts agentsd refuses by name, and the `tasks` commands
going on past a bad task. Each test is written as the failure it guards against."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_task_formats import HARBOR, TERMINAL_BENCH, write

from agentsd.config import EvalConfig, StoreConfig
from agentsd.envs.common import TaskFormatError
from agentsd.envs.harbor import load_harbor_task, load_terminal_bench_task
from agentsd.envs.oracle import run_nothing, run_reference
from agentsd.envs.task_formats import load_suite
from agentsd.envs.terminal import EnvSetupError, TerminalEnv
from agentsd.store import ReplayStore
from agentsd.suites import load_tasks
from agentsd.types import World

BINARY = bytes(range(256)) * 4  # not UTF-8
CLI = [sys.executable, "-m", "agentsd.cli.main", "tasks"]


def harbor(root: Path, dockerfile: str, **files: str) -> Path:
    return write(root, {**HARBOR, "environment/Dockerfile": dockerfile, **files})


def tasks_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


# ---------------------------------------------------------------------------------------- Dockerfiles


def test_a_failing_step_inside_an_and_chain_fails_the_setup_naming_its_line(
    env: TerminalEnv, tmp_path: Path
) -> None:
    # docker build stops at `RUN false && touch x`; a `set -e` script running the chain does not
    task = load_harbor_task(
        harbor(
            tmp_path / "t",
            "FROM ubuntu:24.04\nWORKDIR /app\nRUN echo one > one.txt\nRUN false && touch /app/x\n",
        )
    )
    with pytest.raises(EnvSetupError, match=r"Dockerfile:4 failed: RUN false && touch /app/x"):
        env.reset(options={"task": task})


def test_steps_run_like_docker_build_runs_them(env: TerminalEnv, tmp_path: Path) -> None:
    dockerfile = (
        "FROM ubuntu:24.04\n"
        "ARG GREETING=hi\n"
        "WORKDIR /app\n"
        'RUN echo "$GREETING" > arg.txt\n'  # ARG defaults reach RUN
        'RUN ["sh", "-c", "echo exec > exec.txt"]\n'  # exec form: no shell around it
        'SHELL ["/bin/bash", "-c"]\n'
        'RUN [[ -n "$BASH_VERSION" ]] && echo bash > shell.txt\n'  # the SHELL of its line
        "WORKDIR sub\n"
        "RUN pwd > /app/where.txt\n"  # the WORKDIR of its line
        "WORKDIR /app\n"
        "USER app\n"
    )
    task = load_harbor_task(harbor(tmp_path / "t", dockerfile))
    assert task.meta["dockerfile_notes"] == [
        "Dockerfile:11: USER has no effect (the agent and the task's service run as uid 1000)"
    ]
    env.reset(options={"task": task})
    assert env.sandbox is not None
    read = {
        name: env.sandbox.read_file(f"/app/{name}").decode().strip()
        for name in ("arg.txt", "exec.txt", "shell.txt", "where.txt")
    }
    assert read == {"arg.txt": "hi", "exec.txt": "exec", "shell.txt": "bash", "where.txt": "/app/sub"}


def test_binary_files_are_task_content_in_the_world_the_tests_and_the_solution(
    env: TerminalEnv, tmp_path: Path
) -> None:
    solve = (
        "#!/bin/bash\ncmp /solution/expected.bin /app/data/blob.bin && cp /app/data/blob.bin /app/out.bin\n"
    )
    test = (
        "#!/bin/bash\nif cmp /tests/golden.bin /app/out.bin; then echo 1 > /logs/verifier/reward.txt;\n"
        "else echo 0 > /logs/verifier/reward.txt; fi\n"
    )
    root = harbor(tmp_path / "bin", "FROM ubuntu:24.04\nWORKDIR /app\nCOPY blob.bin data/blob.bin\n")
    write(root, {"tests/test.sh": test, "solution/solve.sh": solve})
    for rel in ("environment/blob.bin", "tests/golden.bin", "solution/expected.bin"):
        (root / rel).write_bytes(BINARY)
    task = load_harbor_task(root)
    assert base64.b64decode(task.world.blobs["/app/data/blob.bin"]) == BINARY
    assert set(task.verifier.blobs) == {"golden.bin"} and set(task.reference["blobs"]) == {"expected.bin"}
    assert run_reference(env, task)[0] == 1.0
    assert run_nothing(env, task)[0] == 0.0


def test_copy_into_system_directories_builds_the_files_into_the_tasks_image(
    env: TerminalEnv, tmp_path: Path
) -> None:
    # an empty scratch mount over /usr used to kill the sandbox (bwrap: execvp /usr/bin/python3)
    root = harbor(
        tmp_path / "t", "FROM x\nWORKDIR /app\nCOPY tool /usr/local/bin/tool\nCOPY app.conf /etc/app.conf\n"
    )
    write(root, {"environment/tool": "#!/bin/sh\necho tool\n", "environment/app.conf": "x=1\n"})
    task = load_harbor_task(root)
    assert task.environment.build is not None and not task.world.files
    env.reset(options={"task": task})
    result = env.run_command("tool && cat /etc/app.conf && ls /usr/bin/python3")
    assert (result.exit_code, result.stdout) == (0, "tool\nx=1\n/usr/bin/python3\n")
    # a hand-made task with files for /usr and no build is refused by name, not a broken sandbox
    unbuilt = task.model_copy(
        update={
            "environment": task.environment.model_copy(update={"build": None}),
            "world": World(files={"/usr/local/bin/tool": "#!/bin/sh\n", "/etc/app.conf": "x=1\n"}),
        }
    )
    with pytest.raises(
        EnvSetupError, match=r"world files under /etc, /usr \(/etc/app.conf, /usr/local/bin/tool\)"
    ):
        env.reset(options={"task": unbuilt})


def test_copy_sources_stay_inside_the_build_context(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("host file\n")
    with pytest.raises(TaskFormatError, match=r"Dockerfile:2: COPY source \.\./\.\./secret\.txt is outside"):
        load_harbor_task(harbor(tmp_path / "a" / "t", "FROM x\nCOPY ../../secret.txt /app/\n"))
    root = harbor(tmp_path / "b", "FROM x\nCOPY conf/ /app/conf/\n")
    (root / "environment" / "conf" / "link").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(TaskFormatError, match=r"conf/link: a symbolic link out of"):
        load_harbor_task(root)


def test_sidecar_services_and_other_formats_are_refused_by_name(tmp_path: Path) -> None:
    compose = "services:\n  client:\n    build: .\n  database:\n    image: postgres\n"
    with pytest.raises(TaskFormatError, match=r"services client, database: tasks with sidecar services"):
        load_terminal_bench_task(write(tmp_path / "tb", {**TERMINAL_BENCH, "docker-compose.yaml": compose}))
    single = write(
        tmp_path / "tb1", {**TERMINAL_BENCH, "docker-compose.yaml": "services:\n  client:\n    build: .\n"}
    )
    assert load_terminal_bench_task(single).id == "tb1"
    multi = write(tmp_path / "multi", {k: v for k, v in HARBOR.items() if k != "instruction.md"})
    write(multi, {"steps/1/instruction.md": "first\n", "steps/2/instruction.md": "second\n"})
    with pytest.raises(TaskFormatError, match=r"multi-step Harbor task .* not supported"):
        load_harbor_task(multi)
    apex = write(tmp_path / "release", {"tasks_and_rubrics.json": "[]", "task.toml": "[metadata]\n"})
    with pytest.raises(TaskFormatError, match=r"looks like an APEX release .*agentsd tasks import apex"):
        load_harbor_task(apex)


# ---------------------------------------------------------------------------------------- Terminal-Bench


def test_a_terminal_bench_task_without_run_tests_uses_the_default_runner(
    env: TerminalEnv, tmp_path: Path
) -> None:
    files = {k: v for k, v in TERMINAL_BENCH.items() if k != "run-tests.sh"}
    task = load_terminal_bench_task(write(tmp_path / "answer-42", files))
    assert task.meta["default_test_runner"] is True and "run-tests.sh" in task.verifier.files
    solved, info = run_reference(env, task)
    assert solved == 1.0 and info["reward_components"] == {"passed": 2, "failed": 0}
    nothing, info = run_nothing(env, task)
    assert nothing == 0.0 and info["reward_components"] == {"passed": 0, "failed": 2}
    del files["tests/test_outputs.py"]
    files["tests/other.py"] = "x = 1\n"
    with pytest.raises(TaskFormatError, match=r"run-tests\.sh: missing, and tests/test_outputs\.py"):
        load_terminal_bench_task(write(tmp_path / "no-tests", files))


# The run-tests.sh public Terminal-Bench tasks ship: fetch uv from the internet (fails here, and the
# script goes on), then a venv with a pinned pytest.
UV_RUN_TESTS = """\
#!/bin/bash
apt-get update
apt-get install -y curl
curl -LsSf https://astral.sh/uv/0.7.13/install.sh | sh
source $HOME/.local/bin/env
if [ "$PWD" = "/" ]; then
    echo "Error: No working directory set. Please set a WORKDIR in your Dockerfile."
    exit 1
fi
uv venv .tbench-testing
source .tbench-testing/bin/activate
uv pip install pytest==8.4.1 pytest-json-ctrf==0.3.5
uv run pytest $TEST_DIR/test_outputs.py -rA
"""


def test_a_verifier_that_installs_its_pinned_pytest_with_uv_runs_offline(
    env: TerminalEnv, tmp_path: Path
) -> None:
    # its `uv pip install pytest==8.4.1` used to need the index: every run was ungraded (env_error)
    task = load_terminal_bench_task(
        write(tmp_path / "answer-42", {**TERMINAL_BENCH, "run-tests.sh": UV_RUN_TESTS})
    )
    assert not task.environment.network
    solved, info = run_reference(env, task)
    assert (solved, info["termination"], info["reward_components"]) == (
        1.0,
        "done",
        {"passed": 2, "failed": 0},
    )
    assert "pytest-8.4.1" in info["verifier_output"]  # the pinned one, not the system's pytest
    nothing, info = run_nothing(env, task)
    assert (nothing, info["termination"], info["reward_components"]) == (
        0.0,
        "done",
        {"passed": 0, "failed": 2},
    )


# ---------------------------------------------------------------------------------------- the tasks commands


def test_tasks_ls_and_verify_take_one_task_directory_and_go_on_past_bad_ones(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    write(suite / "good", HARBOR)
    (write(suite / "binary", HARBOR) / "tests" / "fixture.bin").write_bytes(BINARY)  # was "not UTF-8 text"
    write(suite / "broken", {**HARBOR, "task.toml": "[verifier\n"})
    harbor(suite / "setup-fails", "FROM x\nWORKDIR /app\nRUN false && true\n")
    write(suite / "no-solution", {k: v for k, v in HARBOR.items() if not k.startswith("solution/")})
    listed = tasks_cli("ls", str(suite))
    assert listed.returncode == 1
    assert "5 tasks: 4 ok, 1 failed" in listed.stdout and "failed broken:" in listed.stdout
    assert "not valid TOML" in listed.stdout and "binary" in listed.stdout
    one = tasks_cli("ls", str(suite / "good"))
    assert one.returncode == 0 and "1 tasks: 1 ok, 0 failed" in one.stdout

    verified = tasks_cli("verify", str(suite))
    assert verified.returncode == 1, verified.stdout + verified.stderr
    out = verified.stdout
    assert "5 tasks verified" not in out and "4 tasks verified: 2 ok, 2 failed, 1 skipped" in out, out
    assert "failed broken:" in out and "failed setup-fails:" in out and "Dockerfile:3 failed" in out
    assert "skipped no-solution: no reference solution" in out and "reference None" not in out
    assert "FAIL setup-fails:" in out and "[red]" not in out  # markup rendered, not printed
    single = tasks_cli("verify", str(suite / "good"))
    assert single.returncode == 0 and "1 tasks verified: 1 ok, 0 failed, 0 skipped" in single.stdout


def test_task_text_that_looks_like_markup_is_listed_as_written(tmp_path: Path) -> None:
    write(tmp_path / "tagged", {**HARBOR, "instruction.md": "Close [/x] and open [red]y[/] as text.\n"})
    listed = tasks_cli("ls", str(tmp_path / "tagged"))  # `[/x]` used to crash the table
    assert listed.returncode == 0, listed.stderr
    assert "Close [/x] and open [red]y[/] as text." in listed.stdout


def test_imported_tasks_are_listed_and_collected_from_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    write(tmp_path / "tasks" / "greet", HARBOR)
    write(tmp_path / "tasks" / "answer-42", TERMINAL_BENCH)
    assert tasks_cli("import", "harbor", str(tmp_path / "tasks" / "greet"), "--store", url).returncode == 0
    assert (
        tasks_cli(
            "import", "terminal-bench", str(tmp_path / "tasks" / "answer-42"), "--store", url
        ).returncode
        == 0
    )
    listed = tasks_cli("ls", "--from-store", "--store", url)
    assert listed.returncode == 0 and "2 tasks in" in listed.stdout
    assert "greet" in listed.stdout and "answer-42" in listed.stdout
    with ReplayStore(url) as store:
        digest = store.select_tasks("greet")[0][0]
    assert [t.id for t in load_tasks("store:gr*", url)] == ["greet"]
    assert [t.id for t in load_tasks(f"store:{digest[:8]}", url)] == ["greet"]
    assert [t.id for t in load_tasks("store:", url)] == ["answer-42", "greet"]
    with pytest.raises(TaskFormatError, match=r"no task imported into .* matching 'nothing\*'"):
        load_tasks("store:nothing*", url)


def test_a_suite_loads_past_a_bad_task_and_refuses_one_with_none_good(tmp_path: Path) -> None:
    write(tmp_path / "s" / "good", HARBOR)
    write(tmp_path / "s" / "bad", {**HARBOR, "instruction.md": " \n"})
    assert [t.id for t in load_suite(tmp_path / "s")] == ["good"]
    with pytest.raises(TaskFormatError, match=r"no task loads:\nbad: .*empty instruction"):
        load_suite(tmp_path / "s" / "bad")


def test_eval_trajectories_move_with_run_dir(tmp_path: Path) -> None:
    assert EvalConfig(run_dir=tmp_path / "e").store.url == f"sqlite:///{tmp_path / 'e' / 'eval.db'}"
    explicit = EvalConfig(run_dir=tmp_path / "e", store=StoreConfig(url="sqlite:///elsewhere.db"))
    assert explicit.store.url == "sqlite:///elsewhere.db"
    assert EvalConfig().store.url == "sqlite:///runs/eval/eval.db"


# ---------------------------------------------------------------------------------------- grading offline

# Harbor's usual test.sh: uv from the internet, then a Python the image does not have (3.13): uv
# would download it. Offline, nothing can run it: the run is ungraded, not a 0.
FETCHING_TEST = """\
#!/bin/bash
curl -LsSf https://astral.sh/uv/0.7.13/install.sh | sh
source $HOME/.local/bin/env
uvx -p 3.13 -w pytest==8.4.1 pytest /tests/test_out.py -rA
if [ $? -eq 0 ]; then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi
"""
FALLBACK_TEST = """\
#!/bin/bash
curl -LsSf https://astral.sh/uv/0.7.13/install.sh | sh || true
python3 -m pytest /tests/test_out.py -rA
if [ $? -eq 0 ]; then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi
"""
TEST_OUT = """\
import subprocess
from pathlib import Path

def test_out():
    subprocess.run(["python3", "/app/check.py"])  # the agent's program runs inside the test
    assert Path("/app/out.txt").read_text().strip() == "hello"
"""


def test_a_verifier_that_needs_the_network_it_lacks_is_an_env_error_never_a_zero(
    env: TerminalEnv, tmp_path: Path
) -> None:
    task = load_harbor_task(
        write(tmp_path / "t", {**HARBOR, "tests/test.sh": FETCHING_TEST, "tests/test_out.py": TEST_OUT})
    )
    assert not task.environment.network
    for run in (run_nothing, run_reference):  # Python 3.13 never arrives: no test can run either way
        reward, info = run(env, task)
        assert reward == 0.0 and info["termination"] == "env_error", info
        assert "could not run: it fetches from the network (test.sh:2: curl" in info["feedback"], info


def test_a_verifier_whose_fetch_was_not_needed_grades_and_the_work_cannot_fake_a_missing_network(
    env: TerminalEnv, tmp_path: Path
) -> None:
    files = {**HARBOR, "tests/test.sh": FALLBACK_TEST, "tests/test_out.py": TEST_OUT}
    task = load_harbor_task(write(tmp_path / "t", files))
    assert run_reference(env, task)[0] == 1.0
    nothing, info = run_nothing(env, task)
    assert nothing == 0.0 and info["termination"] == "done"  # tests ran: a real 0, not "no network"
    # the attack: the agent's program prints what a package client prints offline and kills the run
    env.reset(options={"task": task})
    assert env.sandbox is not None
    forged = "import os, sys\nprint('curl: (6) Could not resolve host: astral.sh', flush=True)\nos._exit(1)\n"
    env.sandbox.write_file("/app/check.py", forged.encode())
    from agentsd.envs.oracle import tool_call

    _, reward, _, _, info = env.step(tool_call("submit"))
    assert reward == 0.0 and info["termination"] == "done", info
