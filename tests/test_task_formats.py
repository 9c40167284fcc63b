"""Importing Harbor and Terminal-Bench task directories, on fixtures written in those formats."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from sandbox_fixtures import backend_config

from agentsd.envs.common import TaskFormatError
from agentsd.envs.harbor import load_harbor_task, load_task_dir, load_terminal_bench_task
from agentsd.envs.task_formats import load_suite
from agentsd.envs.terminal import TerminalEnv


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


HARBOR = {
    "instruction.md": "# Greet\n\nWrite `hello` to /app/out.txt.\n",
    "task.toml": """
        version = "1.0"
        [metadata]
        author_name = "someone"
        difficulty = "easy"
        [verifier]
        timeout_sec = 45.0
        [agent]
        timeout_sec = 300.0
        [environment]
        cpus = 2
        memory = "1G"
        storage = "512M"
        allow_internet = false
    """,
    "environment/Dockerfile": """
        FROM ubuntu:24.04
        ARG DEBIAN_FRONTEND=noninteractive
        WORKDIR /app
        ENV GREETING=hello \\
            MODE=test
        COPY seed.txt data/seed.txt
        COPY conf/ /app/conf/
        RUN echo built > built.txt
        CMD ["bash"]
    """,
    "environment/seed.txt": "seed\n",
    "environment/conf/app.ini": "[app]\n",
    "tests/test.sh": """
        #!/bin/bash
        if [ "$(cat /app/out.txt 2>/dev/null)" = hello ]; then echo 1 > /logs/verifier/reward.txt;
        else echo "out.txt is wrong"; echo 0 > /logs/verifier/reward.txt; fi
    """,
    "solution/solve.sh": "#!/bin/bash\necho hello > /app/out.txt\n",
}


def test_harbor_task_fields(tmp_path: Path) -> None:
    task = load_harbor_task(write(tmp_path / "greet", HARBOR))
    assert task.id == "greet" and task.instruction.startswith("# Greet")
    env = task.environment
    assert (env.workdir, env.limits.cpus, env.limits.memory_mb, env.limits.disk_mb) == (
        "/app",
        2.0,
        1024,
        512,
    )
    assert env.limits.timeout_s == 300.0 and task.verifier.timeout_s == 45.0 and not env.network
    # a RUN step: the Dockerfile is built into the task's image, its steps in order
    assert env.build is not None and env.build.base == "ubuntu:24.04" and not task.world.files
    assert [(s.kind, s.where) for s in env.build.steps] == [
        ("workdir", "Dockerfile:3"),
        ("copy", "Dockerfile:6"),
        ("copy", "Dockerfile:7"),
        ("run", "Dockerfile:8"),
    ]
    copies = {**env.build.steps[1].files, **env.build.steps[2].files}
    assert copies == {"/app/data/seed.txt": "seed\n", "/app/conf/app.ini": "[app]\n"}
    run = env.build.steps[3]
    assert (run.argv, run.workdir) == (["/bin/sh", "-c", "echo built > built.txt"], "/app")
    assert run.env == {"DEBIAN_FRONTEND": "noninteractive", "GREETING": "hello", "MODE": "test"}
    assert task.world.env == {"GREETING": "hello", "MODE": "test"}
    assert task.verifier.kind == "harbor" and "test.sh" in task.verifier.files
    assert task.reference == {
        "files": {"solve.sh": "#!/bin/bash\necho hello > /app/out.txt\n"},
        "entry": "solve.sh",
    }
    assert task.meta["upstream_image"] == "ubuntu:24.04" and task.meta["image_fallback"] is True
    assert load_task_dir(tmp_path / "greet") == task


TERMINAL_BENCH = {
    "task.yaml": """
        instruction: |
          Create /app/result.txt containing the number 42.
        author_name: someone
        difficulty: easy
        tags: [files]
        max_agent_timeout_sec: 200
        max_test_timeout_sec: 60
    """,
    "Dockerfile": "FROM python:3.11\nWORKDIR /app\n",
    "run-tests.sh": """
        #!/bin/bash
        cd /app
        python3 -m pytest -p no:cacheprovider -rA $TEST_DIR/test_outputs.py
    """,
    "tests/test_outputs.py": """
        from pathlib import Path

        def test_file_exists():
            assert Path("/app/result.txt").exists(), "result.txt missing"

        def test_content():
            assert Path("/app/result.txt").read_text().strip() == "42", "wrong number"
    """,
    "solution.sh": "#!/bin/bash\necho 42 > /app/result.txt\n",
}


def test_terminal_bench_task_runs_and_grades_by_pytest(tmp_path: Path) -> None:
    task = load_terminal_bench_task(write(tmp_path / "answer-42", TERMINAL_BENCH))
    assert task.environment.workdir == "/app" and task.environment.limits.timeout_s == 200
    assert task.verifier.kind == "terminal-bench" and task.verifier.timeout_s == 60
    assert set(task.verifier.files) == {"run-tests.sh", "test_outputs.py"}
    env = TerminalEnv(sandbox=backend_config("local"))
    try:
        env.reset(options={"task": task})
        _, reward, _, _, info = env.step('<tool_call>{"name": "submit"}</tool_call>')
        assert reward == 0.0 and info["termination"] == "done"
        assert "test_file_exists" in info["feedback"] and "result.txt missing" in info["feedback"]
        assert info["reward_components"] == {"passed": 0, "failed": 2}
        env.reset(options={"task": task})
        command = json.dumps({"name": "bash", "arguments": {"command": task.reference["files"]["solve.sh"]}})
        env.step(f"<tool_call>{command}</tool_call>")
        _, reward, _, _, info = env.step('<tool_call>{"name": "submit"}</tool_call>')
        assert reward == 1.0 and info["reward_components"] == {"passed": 2, "failed": 0}
    finally:
        env.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instruction.md": None}, r"instruction\.md: missing \(required\)"),
        ({"instruction.md": "   \n"}, r"instruction\.md: empty instruction"),
        ({"task.toml": "[verifier\n"}, r"task\.toml: not valid TOML"),
        (
            {"task.toml": "[verifier]\ntimeout_sec = -1\n"},
            r"task\.toml \[verifier\]: timeout_sec = -1, expected a positive",
        ),
        ({"task.toml": '[environment]\nmemory = "lots"\n'}, r"memory = 'lots', expected a size like '4G'"),
        ({"tests/test.sh": None, "tests/helper.py": "x = 1\n"}, r"tests/test\.sh: missing \(required\)"),
        ({"tests/test.sh": None}, r"broken/tests: missing directory \(required\)"),
        (
            {"environment/Dockerfile": "FROM x\nCOPY nowhere.txt /app/\n"},
            r"Dockerfile:2: COPY source nowhere\.txt not found",
        ),
        (
            {"environment/Dockerfile": "FROM x\nFROBNICATE y\n"},
            r"Dockerfile:2: unknown Dockerfile instruction FROBNICATE",
        ),
        ({"environment/Dockerfile": "FROM x\nCOPY --from=build /a /b\n"}, r"COPY --from: multi-stage builds"),
    ],
)
def test_malformed_harbor_tasks_name_the_file_and_field(tmp_path: Path, change: dict, message: str) -> None:
    files = {k: v for k, v in {**HARBOR, **change}.items() if v is not None}
    with pytest.raises(TaskFormatError, match=message):
        load_harbor_task(write(tmp_path / "broken", files))


def test_malformed_terminal_bench_tasks_and_unknown_layouts(tmp_path: Path) -> None:
    files = {**TERMINAL_BENCH, "task.yaml": "author_name: x\n"}
    with pytest.raises(TaskFormatError, match=r"task\.yaml: instruction is missing or empty"):
        load_terminal_bench_task(write(tmp_path / "tb", files))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskFormatError, match=r"neither task\.toml"):
        load_task_dir(tmp_path / "empty")
    with pytest.raises(TaskFormatError, match="not a shipped suite"):
        load_suite(tmp_path / "missing")


def test_tasks_import_stores_validated_tasks_by_hash(tmp_path: Path) -> None:
    import subprocess
    import sys

    from agentsd.store import ReplayStore

    tasks_dir = tmp_path / "tasks"
    write(tasks_dir / "greet", HARBOR)
    write(tasks_dir / "greet-too", HARBOR)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    cli = [sys.executable, "-m", "agentsd.cli.main", "tasks", "import"]
    out = subprocess.run(
        [*cli, "harbor", str(tasks_dir), "--store", url], capture_output=True, text=True, check=True
    )
    stored = dict(line.split()[1::2] for line in out.stdout.splitlines() if line.startswith("stored "))
    assert set(stored) == {"greet", "greet-too"}
    store = ReplayStore(url)
    assert store.get_task(stored["greet"]) == load_harbor_task(tasks_dir / "greet")
    # a bad task is skipped with its reason, the good ones are stored; nothing good: exit 1
    broken = write(tmp_path / "mixed" / "bad", {**HARBOR, "instruction.md": " \n"})
    write(tmp_path / "mixed" / "good", HARBOR)
    mixed = subprocess.run(
        [*cli, "harbor", str(broken.parent), "--store", url], capture_output=True, text=True
    )
    assert mixed.returncode == 0, mixed.stderr
    assert "stored good as" in mixed.stdout and "import: 1 ok, 0 failed, 1 skipped" in mixed.stdout
    assert "skipped bad:" in mixed.stdout and "empty instruction" in mixed.stdout
    only_bad = subprocess.run([*cli, "harbor", str(broken), "--store", url], capture_output=True, text=True)
    assert only_bad.returncode == 1 and "empty instruction" in only_bad.stdout
