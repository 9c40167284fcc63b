"""Many collectors, one plan (issue: many collector machines): collector processes started with the
same run name share its episodes through leases in the store (SQLite and a real PostgreSQL), every
episode runs once and none is lost when a collector is killed mid-episode, a collector that joins
late takes work, a collector on another machine that falls silent has its episode taken over once
its lease expires, a collector that lost its lease drops its episode, and `agentsd replay plan`
shows where the plan stands."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sandbox_fixtures import backend_config
from test_collector import collect_config, make_task, solver

from agentsd.collect.collector import Collector
from agentsd.modelcache import resolve_model
from agentsd.policies.scripted import ScriptedPolicy
from agentsd.store import ReplayStore
from agentsd.store.leases import trajectory_id
from agentsd.types import LeaseState, Termination, TrajectoryStatus

ROOT = Path(__file__).resolve().parents[1]
EPISODES = 30
REMOTE = "gpu-box-7:4242:1/remote"  # a collector on another machine: its pid says nothing here

COLLECTOR = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from transformers import AutoTokenizer
    from agentsd.collect.collector import Collector
    from agentsd.config import CollectConfig
    from agentsd.modelcache import resolve_model
    from agentsd.policies.scripted import ScriptedPolicy
    from agentsd.store import ReplayStore
    sys.path.insert(0, {tests!r})
    from test_collector import make_task, solver

    def slow(prompt):
        time.sleep(0.2)
        while os.path.exists({gate!r}):  # held by the test (heartbeats go on meanwhile)
            time.sleep(0.05)
        return solver(prompt)

    cfg = CollectConfig.model_validate_json(sys.argv[1])
    policy = ScriptedPolicy(AutoTokenizer.from_pretrained(resolve_model("default")), slow)
    with ReplayStore(cfg.store.url) as store:
        tasks = [make_task(i) for i in range({episodes})]
        collector = Collector(cfg, policy, store, tasks, run_name="shared")
        stats = asyncio.run(collector.run())
    print("STATS " + json.dumps({{"holder": collector.holder, "episodes": stats.episodes,
                                 "interrupted": stats.interrupted}}))
    """
)


def _start(script: Path, config: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen(
        [sys.executable, str(script), config],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _plan_cli(store_url: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "agentsd.cli.main", "replay", "plan", "shared", "--store", store_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_collectors_share_one_plan_through_kills_joins_and_a_silent_remote_collector(
    store_url: str, tmp_path: Path
) -> None:
    backend_config("local")
    cfg = collect_config(tmp_path, concurrency=2, lease_s=3.0, store={"url": store_url})
    script = tmp_path / "collector.py"
    gate = tmp_path / "hold-first"  # while it exists, the first collector's episodes make no progress
    script.write_text(COLLECTOR.format(tests=str(Path(__file__).parent), episodes=EPISODES, gate=str(gate)))
    with ReplayStore(store_url) as store:
        # a collector on another machine claimed episode 0, began it, and then fell silent
        store.open_plan("shared", EPISODES)
        claim = store.claim_episode("shared", REMOTE, cfg.lease_s)
        assert claim is not None and claim.episode == 0
        remote_tid = trajectory_id("shared", 0, 0)
        store.begin(task=make_task(0), policy_model="scripted", version=0, trajectory_id=remote_tid)
        status = _plan_cli(store_url)
        assert f"{EPISODES} episodes: 0 done, 1 running, {EPISODES - 1} waiting, 0 interrupted" in status
        assert REMOTE in status

        first, second = _start(script, cfg.model_dump_json()), _start(script, cfg.model_dump_json())

        def second_is_mid_episode() -> bool:
            leases = store.plan_leases("shared")
            done = sum(lease.state is LeaseState.DONE for lease in leases)
            return done >= 3 and any(
                lease.state is LeaseState.RUNNING and lease.holder and f":{second.pid}:" in lease.holder
                for lease in leases
            )

        _wait_for(second_is_mid_episode, 240, "the second collector to be mid-episode")
        second.send_signal(signal.SIGKILL)
        second.wait()
        gate.touch()  # hold the first collector so that the late one surely finds work
        late = _start(script, cfg.model_dump_json())  # joins the running plan

        def late_took_work() -> bool:
            return any(
                lease.holder and f":{late.pid}:" in lease.holder for lease in store.plan_leases("shared")
            )

        _wait_for(late_took_work, 240, "the late collector to claim an episode")
        gate.unlink()
        outputs = {}
        for name, process in (("first", first), ("late", late)):
            out, err = process.communicate(timeout=600)
            assert process.returncode == 0, err[-3000:]
            outputs[name] = json.loads(out.split("STATS ", 1)[1])
        trajectories = store.list(id_prefix="shared.", limit=None)
        final_status = _plan_cli(store_url)
        remote = store.get(remote_tid, with_turns=False)
        interrupted_reasons = [
            store.get(s.id, with_turns=False).meta.get("interrupted_because", "")
            for s in trajectories
            if s.termination is Termination.INTERRUPTED
        ]

    by_episode: dict[int, list[Any]] = {}
    for summary in trajectories:
        by_episode.setdefault(int(summary.id.split(".")[1]), []).append(summary)
    assert sorted(by_episode) == list(range(EPISODES)), "an episode of the plan was lost"
    for episode, attempts in by_episode.items():
        done = [s for s in attempts if s.termination is Termination.DONE]
        assert len(done) == 1, f"episode {episode} ran {len(done)} times: {[s.id for s in attempts]}"
        assert done[0].reward == 1.0
        assert all(s.status is TrajectoryStatus.FINALIZED for s in attempts)
        assert all(s.termination is Termination.INTERRUPTED for s in attempts if s is not done[0])
    # the silent remote collector's attempt was closed as interrupted once its lease expired, and rerun
    assert remote.termination is Termination.INTERRUPTED
    assert REMOTE in remote.meta["interrupted_because"] and "expired" in remote.meta["interrupted_because"]
    # the killed collector's episodes were taken over; the late collector took work
    interrupted = [s for s in trajectories if s.termination is Termination.INTERRUPTED]
    assert len(interrupted) >= 2  # the remote one and at least one of the killed collector
    # each closed by the collector that took it over (the killed one may have taken the remote's)
    assert outputs["first"]["interrupted"] + outputs["late"]["interrupted"] <= len(interrupted)
    assert all("expired" in s_meta for s_meta in interrupted_reasons)
    assert outputs["late"]["episodes"] >= 1
    ran = outputs["first"]["episodes"] + outputs["late"]["episodes"]
    killed_done = sum(
        1 for s in trajectories if s.termination is Termination.DONE and f":{second.pid}:" in s.writer
    )
    assert ran + killed_done == EPISODES
    assert f"{EPISODES} episodes: {EPISODES} done, 0 running, 0 waiting, 0 interrupted" in final_status


class _Noticed(logging.Handler):
    """Set once a log record containing `text` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__(level=logging.WARNING)
        self.text = text
        self._seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self._seen.set()

    def wait(self, timeout: float) -> bool:
        return self._seen.wait(timeout)


def test_a_collector_that_lost_its_lease_drops_its_episode(
    tmp_path: Path, tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Silent past its lease (here: the lease is made to expire under it), the collector learns at
    its next heartbeat that another collector took the episode over and closed its attempt: it
    stops the episode without writing to it, and the plan goes on without it."""
    backend_config("local")
    cfg = collect_config(tmp_path, concurrency=1, lease_s=1.0)
    stolen = threading.Event()
    noticed = _Noticed("lost the lease on episode 0")

    with ReplayStore(cfg.store.url) as store:

        def steal() -> None:
            with ReplayStore(cfg.store.url) as other:
                from sqlalchemy import update

                from agentsd.store.schema import episode_leases

                with other._tx(write=True) as conn:  # the lease runs out (the holder looks silent)
                    conn.execute(update(episode_leases).values(expires_at=0.0))
                taken = other.claim_episode("lost", REMOTE, 60)
                assert taken is not None and taken.taken_over == 0
                other.interrupt(trajectory_id("lost", 0, 0), "lease expired")
            stolen.set()

        def policy_fn(prompt: str) -> str:
            if not stolen.is_set():
                steal()
                # the episode is busy while its heartbeat (every 0.25 s) notices: an event, not a
                # sleep, since a loaded machine can take longer than any fixed time to get there
                assert noticed.wait(120), "the collector never noticed its lost lease"
            return solver(prompt)

        def finish_remotely() -> None:  # the remote collector reruns and finishes it
            stolen.wait(60)
            time.sleep(1.0)
            with ReplayStore(cfg.store.url) as other:
                assert other.settle_episode("lost", 0, REMOTE, 1, state=LeaseState.DONE)

        helper = threading.Thread(target=finish_remotely)
        helper.start()
        policy = ScriptedPolicy(tokenizer, policy_fn)
        logging.getLogger("agentsd.collect.collector").addHandler(noticed)
        try:
            with caplog.at_level(logging.WARNING, logger="agentsd.collect.collector"):
                stats = asyncio.run(Collector(cfg, policy, store, [make_task(0)], run_name="lost").run())
        finally:
            logging.getLogger("agentsd.collect.collector").removeHandler(noticed)
        helper.join()
        attempt = store.get(trajectory_id("lost", 0, 0), with_turns=False)
    assert stats.episodes == 0  # its episode was not finished here
    assert (
        attempt.termination is Termination.INTERRUPTED
        and attempt.meta["interrupted_because"] == "lease expired"
    )
    assert "lost the lease on episode 0" in caplog.text


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("default"))


class _PolicyServer(http.server.ThreadingHTTPServer):
    """A tiny OpenAI-compatible server (the `vllm serve` subset agentsd uses) answering with the
    scripted solver's replies as token ids; it counts what it was asked."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(("127.0.0.1", 0), _PolicyHandler)
        self.tokenizer = tokenizer
        self.completions: list[str] = []  # the model name of each completion request
        self.adapters: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _PolicyHandler(http.server.BaseHTTPRequestHandler):
    @property
    def policy_server(self) -> _PolicyServer:
        assert isinstance(self.server, _PolicyServer)
        return self.server

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        names = ["smollm2", *self.policy_server.adapters]
        self._send({"data": [{"id": name, "root": name} for name in names]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/load_lora_adapter"):
            self.policy_server.adapters.append(body["lora_name"])
            self._send({})
            return
        self.policy_server.completions.append(body["model"])
        tokenizer = self.policy_server.tokenizer
        reply = solver(tokenizer.decode(body["prompt"], skip_special_tokens=False))
        ids = [*tokenizer(reply, add_special_tokens=False)["input_ids"], *body["stop_token_ids"][:1]]
        tokens = [f"token_id:{i}" for i in ids]
        self._send(
            {
                "choices": [
                    {
                        "finish_reason": "stop",
                        "logprobs": {"tokens": tokens, "token_logprobs": [-0.1] * len(ids)},
                    }
                ]
            }
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_requests_spread_over_policy_servers_and_the_run_completes_when_one_stops(
    tmp_path: Path, tokenizer: Any
) -> None:
    from agentsd.config import ModelConfig, OpenAIPolicyConfig
    from agentsd.policies.openai import OpenAIPolicy

    backend_config("local")
    first, second = _PolicyServer(tokenizer), _PolicyServer(tokenizer)
    cfg = collect_config(
        tmp_path, concurrency=2, policy={"backend": "openai", "base_url": [first.url, second.url]}
    )
    adapter = tmp_path / "v1"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")

    def stop_second() -> None:  # the second server goes away mid-run
        _wait_for(lambda: len(second.completions) >= 3, 120, "the second server to serve")
        second.shutdown()
        second.server_close()

    stopper = threading.Thread(target=stop_second)
    try:
        policy = OpenAIPolicy(ModelConfig(), OpenAIPolicyConfig.model_validate(cfg.policy.model_dump()))
        with ReplayStore(cfg.store.url) as store:
            version = store.register_version(
                1, model="default", checkpoint_uri=str(adapter), lineage="t", parent=None, weights_hash=None
            )
            policy.load_version(version)  # a LoRA version reaches every server
            assert first.adapters == second.adapters == ["agentsd-v1"]
            stopper.start()
            tasks = [make_task(i) for i in range(8)]
            stats = asyncio.run(Collector(cfg, policy, store, tasks, run_name="pool").run())
            trajectories = store.list(id_prefix="pool.", limit=None)
        policy.close()
    finally:
        stopper.join()
        first.shutdown()
    assert stats.episodes == 8 and all(t.reward == 1.0 for t in trajectories)
    assert len(second.completions) >= 3 and len(first.completions) >= 3  # both served while both ran
    assert len(first.completions) + len(second.completions) == 8 * 3  # three turns an episode, none lost
    assert set(first.completions) == set(second.completions) == {"agentsd-v1"}


def test_a_collector_stopped_with_sigterm_hands_its_episodes_back(tmp_path: Path) -> None:
    """A service manager stops a collector machine: `agentsd collect` closes its running episodes as
    interrupted (turns kept), hands them back to the plan, and exits cleanly; a collector started
    later finishes the plan, rerunning them as new attempts."""
    backend_config("local")
    url = f"sqlite:///{tmp_path}/r.db"
    config = str(ROOT / "configs/collect/terminal.yaml")
    cmd = [
        *(sys.executable, "-m", "agentsd.cli.main", "collect", "-c", config, "max_tasks=3", "max_turns=2"),
        *("sampling.max_new_tokens=24", "concurrency=2", "name=fleet", f"run_dir={tmp_path}/run"),
        *(f"store.url={url}", "tracking.enabled=false"),
    ]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    with ReplayStore(url) as store:
        _wait_for(lambda: store.count(status=TrajectoryStatus.RUNNING) >= 1, 300, "an episode to be running")
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-3000:]
        assert "received SIGTERM" in err
        leases = store.plan_leases("fleet")
        assert not [lease for lease in leases if lease.state is LeaseState.RUNNING]  # nothing held
        handed_back = [lease for lease in leases if lease.state is LeaseState.WAITING and lease.attempt >= 0]
        assert handed_back, leases
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert all(lease.state is LeaseState.DONE for lease in store.plan_leases("fleet"))
        for lease in handed_back:  # its interrupted attempt is kept, and it ran again
            attempts = [
                store.summary(trajectory_id("fleet", lease.episode, a)) for a in range(lease.attempt + 2)
            ]
            assert attempts[lease.attempt].termination is Termination.INTERRUPTED
            assert attempts[-1].status is TrajectoryStatus.FINALIZED
            assert attempts[-1].termination is not Termination.INTERRUPTED
