"""A task's service: the start command its image declares (ENTRYPOINT, with the harness's command as
its arguments) runs before the agent's first step and again, fresh, for grading, on both backends;
COPY to a file directly under / builds into the image. Each test is written as the failure it
guards against."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_task_formats import HARBOR, write

from agentsd.envs.dockerfile import start_command, world_from_dockerfile
from agentsd.envs.harbor import load_harbor_task, load_terminal_bench_task
from agentsd.envs.oracle import run_nothing, run_reference, tool_call
from agentsd.envs.services import SERVICE_LOG
from agentsd.envs.terminal import EnvSetupError, TerminalEnv
from agentsd.types import Task, World

# A lookup service of the shape of a DNS blocker: it answers whether a name is blocked, reading the
# blocklist in the agent's workdir on every request.
LOOKUPD = """\
import http.server
import pathlib


class Lookup(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        blocked = self.path.lstrip("/") in pathlib.Path("/app/blocklist.txt").read_text().split()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"blocked" if blocked else b"allowed")

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 8053), Lookup)
print("lookupd: serving on 127.0.0.1:8053", flush=True)
server.serve_forever()
"""
ENTRYPOINT = """\
#!/bin/sh
# the container's start: the lookup service in the background, then the container's command
python3 /usr/local/lib/lookupd.py &
exec "$@"
"""
DOCKERFILE = """\
FROM ubuntu:24.04
WORKDIR /app
COPY lookupd.py /usr/local/lib/lookupd.py
COPY blocklist.txt /app/blocklist.txt
COPY entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["bash"]
"""
ASK = (
    "python3 -c 'import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())'"
)
TEST = f"""\
#!/bin/bash
answer=$({ASK} http://127.0.0.1:8053/ads.example 2>&1 | tail -n 1)
if [ "$answer" = blocked ]; then echo 1 > /logs/verifier/reward.txt
else echo "lookupd answered for ads.example: $answer"; echo 0 > /logs/verifier/reward.txt; fi
"""
# What the agent would do to cheat: stop the task's service and answer `blocked` itself.
IMPOSTOR = """\
pkill -f '[l]ookupd[.]py'; sleep 0.5
cat > /tmp/impostor.py <<'EOF'
import http.server
class Yes(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"blocked")
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", 8053), Yes).serve_forever()
EOF
nohup python3 /tmp/impostor.py >/dev/null 2>&1 &
sleep 1
"""


def lookup_task(root: Path, entrypoint: str = ENTRYPOINT, dockerfile: str = DOCKERFILE) -> Task:
    write(
        root,
        {
            **HARBOR,
            "instruction.md": "A lookup service answers on http://127.0.0.1:8053/<name> whether a name is "
            "blocked. Make it block ads.example.\n",
            "environment/Dockerfile": dockerfile,
            "environment/lookupd.py": LOOKUPD,
            "environment/blocklist.txt": "tracker.example\n",
            "environment/entrypoint.sh": entrypoint,
            "tests/test.sh": TEST,
            "solution/solve.sh": "#!/bin/bash\necho ads.example >> /app/blocklist.txt\n",
        },
    )
    return load_harbor_task(root)


def test_the_entrypoints_service_runs_before_the_first_step_and_for_grading(
    env: TerminalEnv, tmp_path: Path
) -> None:
    # COPY to /entrypoint.sh failed the build (mkdir: cannot create directory '/entrypoint.sh'),
    # and the ENTRYPOINT that starts the task's service was only noted: the task was unsolvable
    task = lookup_task(tmp_path / "t")
    assert task.world.service == ["/entrypoint.sh", "sh", "-c", "sleep infinity"]
    assert run_reference(env, task)[0] == 1.0
    assert run_nothing(env, task)[0] == 0.0

    env.reset(options={"task": task})
    asked = env.run_command(f"{ASK} http://127.0.0.1:8053/tracker.example")
    assert (asked.exit_code, asked.stdout) == (0, "blocked\n")  # up before the agent's first step
    owner = env.run_command("ps -eo uid=,args= | grep '[l]ookupd[.]py'")
    assert owner.stdout.split()[0] == "1000"  # the agent's uid: nothing it could not start itself
    # startup files the agent may plant in its HOME (the workdir) or user site never run in it
    environ = env.run_command(
        "tr '\\0' '\\n' < /proc/$(pgrep -f '[l]ookupd[.]py')/environ | grep -E '^(HOME|PYTHONNOUSERSITE)='"
    )
    assert sorted(environ.stdout.split()) == ["HOME=/tmp/.agentsd-service/home", "PYTHONNOUSERSITE=1"]
    assert env.run_command("echo x > /entrypoint.sh").exit_code != 0  # in the image, read-only
    assert env.sandbox is not None
    assert "lookupd: serving on 127.0.0.1:8053" in env.sandbox.read_file(SERVICE_LOG).decode()

    # an agent that replaces the service with one that says `blocked` gets nothing: its processes
    # die before grading and the task's own service is started again for the tests
    env.step(tool_call("bash", command=IMPOSTOR))
    assert env.run_command(f"{ASK} http://127.0.0.1:8053/ads.example").stdout == "blocked\n"
    _, reward, _, _, info = env.step(tool_call("submit"))
    assert reward == 0.0 and "lookupd answered for ads.example: allowed" in info["feedback"]
    left = env.sandbox.exec("ps -eo args=").stdout
    assert "impostor.py" not in left and "lookupd.py" in left


def test_an_entrypoint_that_dies_at_once_is_an_env_error_naming_it(env: TerminalEnv, tmp_path: Path) -> None:
    # a task whose service cannot start would otherwise be graded 0 as if the agent had failed
    dying = "#!/bin/sh\necho 'lookupd: cannot read /etc/lookupd.conf' >&2\nexit 3\n"
    task = lookup_task(tmp_path / "t", dying)
    with pytest.raises(EnvSetupError) as failed:
        env.reset(options={"task": task})
    message = str(failed.value)
    assert "service /entrypoint.sh sh -c 'sleep infinity' exited with status 3" in message
    assert "lookupd: cannot read /etc/lookupd.conf" in message
    missing = lookup_task(tmp_path / "m", dockerfile=DOCKERFILE.replace('["/entrypoint.sh"]', '["/no/such"]'))
    with pytest.raises(EnvSetupError, match=r"service /no/such sh -c 'sleep infinity' could not start"):
        env.reset(options={"task": missing})


def test_copy_to_a_file_under_the_root_goes_into_the_image(env: TerminalEnv, tmp_path: Path) -> None:
    # a file directly under / had its path made a private mount (a directory) over it
    root = write(
        tmp_path / "t",
        {**HARBOR, "environment/Dockerfile": "FROM ubuntu:24.04\nWORKDIR /app\nCOPY motd.txt /motd.txt\n"},
    )
    (root / "environment/motd.txt").write_text("welcome\n")
    task = load_harbor_task(root)
    assert task.environment.build is not None and "/motd.txt" not in task.environment.scratch_dirs
    env.reset(options={"task": task})
    assert env.run_command("cat /motd.txt").stdout == "welcome\n"
    # a hand-made task with a world file directly under / and no build is refused by name
    unbuilt = task.model_copy(
        update={
            "environment": task.environment.model_copy(update={"build": None}),
            "world": World(files={"/motd.txt": "welcome\n"}),
        }
    )
    with pytest.raises(EnvSetupError, match=r"world files under /motd.txt .* directly under / go into"):
        env.reset(options={"task": unbuilt})


def test_the_start_command_follows_docker_and_the_harness_replaces_cmd(tmp_path: Path) -> None:
    def read(text: str) -> tuple[list[str] | None, list[str] | None]:
        (tmp_path / "Dockerfile").write_text(text)
        built = world_from_dockerfile(tmp_path / "Dockerfile", tmp_path)
        return built.entrypoint, built.cmd

    # exec-form ENTRYPOINT takes CMD as its arguments; shell forms run through the SHELL in force
    assert start_command(*read('FROM x\nENTRYPOINT ["/e.sh", "-v"]\nCMD ["serve", "--port=1"]\n')) == [
        "/e.sh",
        "-v",
        "serve",
        "--port=1",
    ]
    assert start_command(
        *read('FROM x\nSHELL ["/bin/bash", "-c"]\nENTRYPOINT exec lookupd\nCMD ["x"]\n')
    ) == [
        "/bin/bash",
        "-c",
        "exec lookupd",
        "x",
    ]
    assert start_command(*read("FROM x\nCMD python3 -m http.server\n")) == [
        "/bin/sh",
        "-c",
        "python3 -m http.server",
    ]
    assert start_command(*read('FROM x\nCMD ["a"]\nCMD ["b"]\nENTRYPOINT ["/e"]\nENTRYPOINT []\n')) == ["b"]
    assert start_command(*read("FROM x\nWORKDIR /app\n")) is None

    # Harbor and Terminal-Bench start the container with their own command in place of CMD
    task = load_harbor_task(write(tmp_path / "cmd-only", HARBOR))  # CMD ["bash"], no ENTRYPOINT
    assert task.world.service is None
    assert any("CMD bash is not run" in note for note in task.meta["dockerfile_notes"])
    compose = "services:\n  client:\n    build: .\n    command: [python3, -m, http.server]\n"
    tb = write(
        tmp_path / "tb",
        {
            "task.yaml": "instruction: Serve.\n",
            "Dockerfile": 'FROM x\nWORKDIR /app\nENTRYPOINT ["/e.sh"]\nCMD ["bash"]\n',
            "docker-compose.yaml": compose,
            "tests/test_outputs.py": "def test_x():\n    pass\n",
        },
    )
    assert load_terminal_bench_task(tb).world.service == ["/e.sh", "python3", "-m", "http.server"]
