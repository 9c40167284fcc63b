"""Sandbox benchmark, side by side in one run:
  1. local: exec("true") round trip vs a bare subprocess.run(["true"]) (target: overhead <= 15 ms);
  2. docker: episode start with and without the warm pool; exec round trip vs the `docker exec` CLI;
  3. 8 concurrent sandboxes x 200 execs: throughput, per backend;
  4. per backend: write_file + read_file of 4 KiB and kill_agent against the exec round trip, and the
     channel's own cost (HMAC tag + JSON of a 4 KiB answer, both ways) against the same round trip.

usage: DOCKER_HOST=unix:///path/docker.sock python scripts/bench_sandbox.py [--execs 200] [--no-docker]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable

from agentsd.config import DockerSandboxConfig, LocalSandboxConfig
from agentsd.sandboxes.fleet import SandboxFleet, make_sandbox
from agentsd.sandboxes.supervisor import ANSWER, decode_frame, encode_frame
from agentsd.types import Limits, SandboxSpec

SPEC = SandboxSpec(limits=Limits(memory_mb=512, pids=128, disk_mb=256))


def median_ms(fn: Callable[[], object], n: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def bench_local(n: int) -> None:
    bare = median_ms(lambda: subprocess.run(["true"], check=True), n)
    sandbox = make_sandbox(LocalSandboxConfig(), SPEC)
    sandbox.start()
    try:
        boxed = median_ms(lambda: sandbox.exec("true"), n)
    finally:
        sandbox.close()
    print(
        f"local exec('true') round trip: sandbox {boxed:.2f} ms, bare subprocess.run {bare:.2f} ms, "
        f"ratio {boxed / bare:.1f}x, overhead {boxed - bare:.2f} ms (target <= 15 ms)"
    )


def bench_docker(config: DockerSandboxConfig, n: int) -> None:
    cold = []
    for _ in range(5):
        start = time.perf_counter()
        sandbox = make_sandbox(config, SPEC)
        sandbox.start()
        cold.append(time.perf_counter() - start)
        sandbox.close()
    warm = []
    with SandboxFleet(config.model_copy(update={"warm_pool": 2})) as fleet:
        for _ in range(5):
            fleet.prewarm(SPEC)
            deadline = time.monotonic() + 60
            while fleet.warm_count() < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            start = time.perf_counter()
            with fleet.acquire(SPEC):
                warm.append(time.perf_counter() - start)
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    print(
        f"docker episode start: cold {cold_s * 1e3:.0f} ms, warm pool {warm_s * 1e3:.1f} ms, "
        f"ratio {cold_s / warm_s:.0f}x"
    )

    sandbox = make_sandbox(config, SPEC)
    sandbox.start()
    try:
        container = sandbox.container.name  # pyright: ignore[reportAttributeAccessIssue]
        cli = median_ms(lambda: subprocess.run(["docker", "exec", container, "true"], check=True), min(n, 50))
        boxed = median_ms(lambda: sandbox.exec("true"), n)
    finally:
        sandbox.close()
    print(
        f"docker exec('true') round trip: sandbox {boxed:.2f} ms, `docker exec` CLI {cli:.2f} ms, "
        f"ratio {boxed / cli:.2f}x"
    )


def bench_file_ops(name: str, config: LocalSandboxConfig | DockerSandboxConfig, n: int) -> None:
    key, blob = os.urandom(32), os.urandom(4096)
    answer = {"ok": True, "data": base64.b64encode(blob).decode()}
    framing = median_ms(lambda: decode_frame(key, ANSWER, 7, encode_frame(key, ANSWER, 7, answer)[4:]), n)
    sandbox = make_sandbox(config, SPEC)
    sandbox.start()
    try:
        exec_ms = median_ms(lambda: sandbox.exec("true"), n)
        write_ms = median_ms(lambda: sandbox.write_file("/workspace/blob", blob), n)
        read_ms = median_ms(lambda: sandbox.read_file("/workspace/blob"), n)
        kill_ms = median_ms(sandbox.kill_agent, min(n, 50))
    finally:
        sandbox.close()
    print(
        f"{name}: exec('true') {exec_ms:.2f} ms; write_file 4 KiB {write_ms:.2f} ms "
        f"({write_ms / exec_ms:.2f}x); read_file 4 KiB {read_ms:.2f} ms ({read_ms / exec_ms:.2f}x); "
        f"kill_agent {kill_ms:.2f} ms ({kill_ms / exec_ms:.2f}x); channel framing of a 4 KiB answer "
        f"{framing * 1e3:.1f} us ({framing / exec_ms:.1%} of an exec round trip)"
    )


def bench_concurrent(name: str, config: LocalSandboxConfig | DockerSandboxConfig, n: int) -> None:
    sandboxes = [make_sandbox(config, SPEC) for _ in range(8)]
    for sandbox in sandboxes:
        sandbox.start()
    try:
        one_start = time.perf_counter()
        for _ in range(n):
            sandboxes[0].exec("true")
        one = n / (time.perf_counter() - one_start)

        def run(sandbox: object) -> None:
            for _ in range(n):
                sandbox.exec("true")  # pyright: ignore[reportAttributeAccessIssue]

        threads = [threading.Thread(target=run, args=(s,)) for s in sandboxes]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        eight = 8 * n / (time.perf_counter() - start)
    finally:
        for sandbox in sandboxes:
            sandbox.close()
    print(
        f"{name}: 8 sandboxes x {n} execs: {eight:.0f} execs/s; 1 sandbox: {one:.0f} execs/s; "
        f"ratio {eight / one:.2f}x on 2 cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    if shutil.which("bwrap"):
        bench_local(args.execs)
        bench_concurrent("local", LocalSandboxConfig(), args.execs)
        bench_file_ops("local", LocalSandboxConfig(), args.execs)
    else:
        print("local: skipped (bubblewrap not installed)")
    if not args.no_docker:
        from agentsd.sandboxes.docker_sandbox import engine_url

        config = DockerSandboxConfig(engines=[engine_url()])
        bench_docker(config, args.execs)
        bench_concurrent("docker", config, args.execs)
        bench_file_ops("docker", config, args.execs)


if __name__ == "__main__":
    main()
