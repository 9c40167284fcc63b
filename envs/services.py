"""A task's service: the command its image starts (World.service, from an imported Dockerfile's
ENTRYPOINT), run in the sandbox in the background as a container runs it.

`start_service` starts it in the task's workdir with the task's environment, in a session of its
own, its stdin /dev/null and its stdout and stderr in SERVICE_LOG (read back bounded: the last
LOG_TAIL bytes), then waits SETTLE_S. Still running, or finished with status 0 (an entrypoint that
starts a daemon and returns), it is up; a status other than 0, or a command that cannot be executed,
is a failure named by the command, its status and its log's tail. TerminalEnv starts it after the
world is laid out, before the agent's first step (a failure there is the episode's env_error), and,
because killing the agent's processes before grading kills it too, again once they are dead, so the
tests find the task's own service running (a failure there is graded: the agent's changes may have
broken it, and the tests say so).

Who it runs as. A real container would run it as root; here it runs as the agent's uid, on both
backends: the local backend has no other uid, and a root service on docker would escape the kill
before grading, so an agent steering it (its configuration, scripts it reads from writable places)
would keep a process of its own choosing running through grading. As the agent's uid it gives the
agent nothing it could not start itself, and the agent can stop or replace it as it could in a
container; whatever it left is killed before grading and the service grading sees is a fresh start.
Each start gets a fresh HOME, no Python user site and no shell startup files (as verifier commands
do), so files the agent planted there never run in it.

Not guaranteed: a service that needs root fails here (writes to the read-only root; ports below 1024
on the local backend, whose network namespace keeps them privileged, where docker's containers open
them to every uid); a service dying later than SETTLE_S is not noticed at start; what the service
itself reads or runs from agent-writable places (its configuration, scripts or modules in the
workdir) is the agent's to shape, and runs during grading with the agent's rights, as the work under
test does; state the agent-time service held in memory is not carried into the one grading sees.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from agentsd.sandboxes.base import Sandbox
from agentsd.types import Task

SERVICE_DIR = "/tmp/.agentsd-service"
SERVICE_LOG = f"{SERVICE_DIR}/log"
SETTLE_S = 1.0
LOG_TAIL = 2000
# Run as the agent by the sandbox's own python3 (the supervisor needs one): it must be the service's
# parent to learn its exit status, which an orphan reaped by init would lose.
_LAUNCHER = """\
import json, os, shutil, subprocess, sys
c = json.loads(sys.argv[1])
shutil.rmtree(c["dir"], ignore_errors=True)
os.makedirs(c["home"], exist_ok=True)
with open(c["log"], "wb") as log:
    try:
        p = subprocess.Popen(c["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=c["cwd"],
                             start_new_session=True)
    except OSError as e:
        print(json.dumps({"error": e.strerror or str(e)}))
        sys.exit(0)
try:
    code = p.wait(timeout=c["settle"])
except subprocess.TimeoutExpired:
    code = None
with open(c["log"], "rb") as log:
    log.seek(max(0, os.path.getsize(c["log"]) - c["tail"]))
    tail = log.read().decode(errors="replace")
print(json.dumps({"pid": p.pid, "exit": code, "tail": tail}))
"""
# Startup files the agent may have planted never run in the service (the verifier's own rule).
_ENV = {
    "HOME": f"{SERVICE_DIR}/home",
    "PYTHONNOUSERSITE": "1",
    "PYTHONSTARTUP": "",
    "BASH_ENV": "",
    "ENV": "",
}


def start_service(sandbox: Sandbox, task: Task) -> str | None:
    """Start the task's service (nothing when it has none). None when it is up after SETTLE_S, else
    what went wrong: its command, its exit status or why it could not start, and its log's tail."""
    argv = task.world.service
    if not argv:
        return None
    config = {
        "argv": argv,
        "cwd": task.environment.workdir,
        "dir": SERVICE_DIR,
        "home": _ENV["HOME"],
        "log": SERVICE_LOG,
        "settle": SETTLE_S,
        "tail": LOG_TAIL,
    }
    launched = sandbox.exec(
        ["python3", "-I", "-S", "-c", _LAUNCHER, json.dumps(config)],
        timeout=SETTLE_S + 30,
        env=_ENV,  # over the task's own environment, which every command of the sandbox gets
        cwd="/",
    )
    name = f"the task's service {shlex.join(argv)}"
    try:
        answer: dict[str, Any] = json.loads(launched.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        said = (launched.stdout + launched.stderr).strip()[-LOG_TAIL:]
        return f"{name} could not be launched (exit {launched.exit_code}): {said}"
    if answer.get("error"):
        return f"{name} could not start: {answer['error']}"
    if answer.get("exit") in (None, 0):
        return None
    tail = str(answer.get("tail") or "").strip()
    return f"{name} exited with status {answer['exit']} within {SETTLE_S:g} s" + (
        f"; its output ({SERVICE_LOG}):\n{tail}" if tail else f" and wrote nothing to {SERVICE_LOG}"
    )
