"""Environment benchmark: env.step overhead over the bare sandbox exec of the same command.

Both run in one sandbox, interleaved, median of N: `TerminalEnv.step` with a bash tool call (parse,
persistent-shell wrapper, observation formatting) against `sandbox.exec` of the same command line.
Target: overhead <= 10% on a typical command. Then the GUI family's per-step observation latency,
for a desktop app (AT-SPI) and a Chromium page (DevTools): the driver's observation alone (tree +
screenshot), and a whole env.step (a key press, the settle time, tree + screenshot, diff, copy-out).

usage: python scripts/bench_envs.py [--n 100] [--gui-n 10] [--backend local|docker]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

from agentsd.config import DockerSandboxConfig, LocalSandboxConfig
from agentsd.envs.gui import GUIEnv
from agentsd.envs.gui_install import DRIVER_PATH
from agentsd.envs.oracle import tool_call
from agentsd.envs.task_formats import load_suite
from agentsd.envs.terminal import TerminalEnv

COMMANDS = {
    "true": "true",
    "typical (ls, grep, wc)": "ls -la /usr/bin | grep -c py; wc -l /etc/passwd",
    "python3 -c": "python3 -c 'print(sum(range(1000)))'",
    "git status": "git status --short",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--gui-n", type=int, default=10, help="GUI steps per app (0: skip the GUI part)")
    parser.add_argument("--backend", choices=["local", "docker"], default="local")
    args = parser.parse_args()
    config = LocalSandboxConfig() if args.backend == "local" else DockerSandboxConfig()
    task = next(t for t in load_suite("terminal") if t.id == "git-last-author")  # a repository to run git in
    env = TerminalEnv(sandbox=config)
    env.reset(options={"task": task})
    sandbox = env.sandbox
    assert sandbox is not None
    try:
        print(f"{args.backend}: median of {args.n}, interleaved")
        for name, command in COMMANDS.items():
            action = tool_call("bash", command=command)
            env.step(action)
            sandbox.exec(command)
            stepped, bare, bare_bash = [], [], []
            calls = [
                (stepped, partial(env.step, action)),
                (bare, partial(sandbox.exec, command)),
                (bare_bash, partial(sandbox.exec, ["bash", "-c", command])),
            ]
            for _ in range(args.n):
                for runs, call in calls:
                    start = time.perf_counter()
                    call()
                    runs.append(time.perf_counter() - start)
            s, b, bb = (statistics.median(r) * 1e3 for r in (stepped, bare, bare_bash))
            print(
                f"  {name:24s} env.step {s:6.2f} ms | bare exec: sh -c {b:6.2f} ms "
                f"({100 * (s / b - 1):+5.1f}%), bash -c {bb:6.2f} ms ({100 * (s / bb - 1):+5.1f}%)"
            )
    finally:
        env.close()
    if args.gui_n:
        bench_gui(config, args.gui_n)


def bench_gui(config: LocalSandboxConfig | DockerSandboxConfig, n: int) -> None:
    suite = {t.id: t for t in load_suite("gui")}
    print(f"GUI observation latency, median of {n}")
    apps = (("desktop (mousepad, AT-SPI)", "mousepad-append"), ("web (Chromium)", "web-login"))
    for label, task_id in apps:
        env = GUIEnv(sandbox=config)
        try:
            start = time.perf_counter()
            obs, _ = env.reset(options={"task": suite[task_id]})
            reset_s = time.perf_counter() - start
            sandbox = env.sandbox
            assert sandbox is not None
            observed, stepped = [], []
            for _ in range(n):
                start = time.perf_counter()
                sandbox.exec(["python3", DRIVER_PATH, "observe"])
                observed.append(time.perf_counter() - start)
                start = time.perf_counter()
                env.step(tool_call("key", combo="shift"))
                stepped.append(time.perf_counter() - start)
            o, s = (statistics.median(r) * 1e3 for r in (observed, stepped))
            print(
                f"  {label:28s} reset {reset_s * 1e3:7.0f} ms | observe (tree + screenshot) {o:6.0f} ms"
                f" | env.step {s:6.0f} ms ({len(obs.splitlines())} observation lines)"
            )
        finally:
            env.close()


if __name__ == "__main__":
    main()
