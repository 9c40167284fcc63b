"""The `openai` policy backend: OpenAI-compatible completions servers, `vllm serve` at scale.

Prompts go out as token ids and completions come back as token ids with their log-probs (vLLM's
`return_tokens_as_token_ids`), so nothing is re-tokenized on either side. Each prompt is one request,
sent concurrently (the servers batch them continuously). The server must sample and report in the
same distribution: start it with `--logprobs-mode processed_logprobs` so the log-probs are those of
the distribution after temperature and top-p, i.e. behaviour log-probs.

Several servers (`policy.base_url` a list, one `vllm serve` per GPU machine, all serving the same
model): each request goes to the least-loaded server that is up; a server that fails (connection
error, timeout, 5xx) is taken out of rotation for 5 s, doubling per failure in a row up to 5
minutes, and the request goes to another one at once. Retries (tenacity) stop after MAX_ATTEMPTS
tries; a 4xx answer is a bad request and fails at once with the server's message.

Versions: a LoRA version is loaded into every running server (`/v1/load_lora_adapter`, which
needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True on the server; a server that was down loads it before
its next request) and requested by its name `agentsd-vN`. A full-weight version is served only
where the server already serves that checkpoint (a model whose id or root is the checkpoint
directory, i.e. the operator restarted it there); otherwise load_version fails and the policy stays
on its version.

Not guaranteed: that the server's weights are what its model name says; version bookkeeping is as
honest as the deployment.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from agentsd.config import ModelConfig, OpenAIPolicyConfig, SamplingConfig
from agentsd.modelcache import resolve_model
from agentsd.policies.base import PolicyError, checkpoint_kind, end_of_turn_ids, is_base, validate_prompts
from agentsd.types import Completion, PolicyVersion

_TOKEN_ID = re.compile(r"^token_id:(-?\d+)$")
MAX_ATTEMPTS = 6
RETRY_BASE_S = 0.5  # first backoff; doubles per attempt up to 20 s
TAKEN_OUT_S = (5.0, 300.0)  # a failing server rests 5 s, doubling per failure in a row up to 5 min

log = logging.getLogger("agentsd.policies.openai")


class _Retryable(Exception):
    """A connection failure or a 5xx answer: worth another try (on another server, if there is one)."""


@dataclass
class _Server:
    """One server of the pool and what the policy knows about it."""

    url: str
    client: Any  # httpx.Client
    base_served: str = ""  # its name for the base model (version 0)
    in_flight: int = 0
    sent: int = 0  # requests so far: ties between equally loaded servers go to the less used
    failures: int = 0  # in a row
    out_until: float = 0.0  # taken out of rotation until then (time.monotonic)
    served_as: dict[int, str] = field(default_factory=dict)  # version -> the model name it serves it as


class OpenAIPolicy:
    """Completions from OpenAI-compatible servers, token ids in and out."""

    def __init__(self, model: ModelConfig, config: OpenAIPolicyConfig, *, seed: int | None = None) -> None:
        import httpx
        from transformers import AutoTokenizer

        self.config = config
        self.model_name = model.name
        self.max_context = model.max_context
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(model.name))
        self.end_ids = sorted(end_of_turn_ids(self.tokenizer))
        self.seed = seed
        headers = {"Authorization": f"Bearer {config.api_key}"}
        self.servers = [
            _Server(url, httpx.Client(base_url=url, headers=headers, timeout=config.timeout_s))
            for url in config.urls
        ]
        self._lock = threading.Lock()
        for server in self.servers:
            served = list(self._request_on(server, "GET", "/models").get("data", []))
            if not served:
                raise PolicyError(f"policy.base_url {server.url}: the server lists no models")
            name = config.served_model or served[0]["id"]
            if name not in {m["id"] for m in served}:
                raise PolicyError(
                    f"policy.served_model {name!r}: {server.url} serves {[m['id'] for m in served]}"
                )
            server.base_served = name
            server.served_as[0] = name
        self._version = 0
        self._checkpoint: PolicyVersion | None = None  # the version requests are for (None: the base)
        self._pool = ThreadPoolExecutor(max_workers=config.max_concurrent_requests)

    @property
    def version(self) -> int:
        return self._version

    @property
    def served(self) -> str:
        """The model name the first server serves the current version as."""
        return self.servers[0].served_as.get(self._version, self.servers[0].base_served)

    # ------------------------------------------------------------------ HTTP

    def _request_on(self, server: _Server, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request to one server, retried there (tenacity) on connection errors and 5xx."""
        from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

        once = retry(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(MAX_ATTEMPTS),
            wait=wait_exponential(multiplier=RETRY_BASE_S, max=20),
            reraise=True,
        )(lambda: self._once(server, method, path, body))
        try:
            return once()
        except _Retryable as exc:
            raise PolicyError(f"{server.url}: gave up after {MAX_ATTEMPTS} attempts: {exc}") from None

    def _once(self, server: _Server, method: str, path: str, body: dict[str, Any] | None) -> Any:
        import httpx

        try:
            response = server.client.request(method, path, json=body)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise _Retryable(f"{server.url} {method} {path}: {exc!r}") from exc
        if response.status_code >= 500:
            raise _Retryable(
                f"{server.url} {method} {path}: HTTP {response.status_code}: {response.text[:500]}"
            )
        if response.status_code >= 400:
            raise PolicyError(
                f"{server.url} {method} {path}: HTTP {response.status_code}: {response.text[:1000]}"
            )
        return response.json() if response.content else None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A request to the pool: the least-loaded healthy server, another one after a failure (the
        failing one rests, longer each time it fails in a row), until MAX_ATTEMPTS tries."""
        return self._on_pool(lambda server: self._once(server, method, path, body))

    def _on_pool(self, call: Any) -> Any:
        from tenacity import retry, retry_if_exception_type, stop_after_attempt

        def attempt() -> Any:
            with self._lease() as server:
                try:
                    answer = call(server)
                except _Retryable as exc:
                    self._take_out(server, exc)
                    raise
                server.failures = 0
                return answer

        try:
            return retry(
                retry=retry_if_exception_type(_Retryable),
                stop=stop_after_attempt(MAX_ATTEMPTS),
                wait=self._pool_wait,
                reraise=True,
            )(attempt)()
        except _Retryable as exc:
            urls = ", ".join(s.url for s in self.servers)
            raise PolicyError(f"{urls}: gave up after {MAX_ATTEMPTS} attempts: {exc}") from None

    def _pool_wait(self, retry_state: Any) -> float:
        """Between attempts: none while another server is up, else exponential backoff."""
        now = time.monotonic()
        if len(self.servers) > 1 and any(s.out_until <= now for s in self.servers):
            return 0.0
        return min(RETRY_BASE_S * 2 ** (retry_state.attempt_number - 1), 20.0)

    @contextmanager
    def _lease(self) -> Iterator[_Server]:
        with self._lock:
            now = time.monotonic()
            healthy = [s for s in self.servers if s.out_until <= now]
            if healthy:
                server = min(healthy, key=lambda s: (s.in_flight, s.sent))
            else:  # all resting: the one back soonest
                server = min(self.servers, key=lambda s: s.out_until)
            server.in_flight += 1
            server.sent += 1
        try:
            yield server
        finally:
            with self._lock:
                server.in_flight -= 1

    def _take_out(self, server: _Server, exc: Exception) -> None:
        if len(self.servers) == 1:
            return  # nowhere else to go: the backoff between attempts is the rest
        with self._lock:
            server.failures += 1
            rest = min(TAKEN_OUT_S[0] * 2 ** (server.failures - 1), TAKEN_OUT_S[1])
            server.out_until = time.monotonic() + rest
        log.warning("policy server %s taken out for %.0f s: %s", server.url, rest, exc)

    # ------------------------------------------------------------------ sampling

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop: Sequence[str] = ()
    ) -> list[Completion]:
        validate_prompts(prompts, len(self.tokenizer), self.max_context)
        version, checkpoint = self._version, self._checkpoint
        return list(
            self._pool.map(lambda p: self._one(list(p), sampling, stop, version, checkpoint), prompts)
        )

    def _one(
        self,
        prompt: list[int],
        sampling: SamplingConfig,
        stop: Sequence[str],
        version: int,
        checkpoint: PolicyVersion | None,
    ) -> Completion:
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": min(sampling.max_new_tokens, self.max_context - len(prompt)),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            # vLLM extensions, set so that a model's generation_config cannot change the sampling the
            # turn records (and the trainer reproduces)
            "top_k": -1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "logprobs": 1,  # the sampled token's log-prob (and the top one)
            "stop": list(stop),
            "stop_token_ids": self.end_ids,
            "include_stop_str_in_output": True,
            "skip_special_tokens": False,
            "return_tokens_as_token_ids": True,
        }
        if self.seed is not None:
            body["seed"] = self.seed

        def on(server: _Server) -> tuple[str, Any]:
            model = self._served_on(server, version, checkpoint)
            return server.url, self._once(server, "POST", "/completions", {"model": model, **body})

        url, answer = self._on_pool(on)
        try:
            choice = answer["choices"][0]
            tokens = [_token_id(t) for t in choice["logprobs"]["tokens"]]
            logprobs = [float(x) for x in choice["logprobs"]["token_logprobs"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PolicyError(
                f"{url}: a completion without token ids and log-probs ({exc!r}); "
                "the server must support return_tokens_as_token_ids (vLLM)"
            ) from None
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(
            token_ids=tokens,
            logprobs=logprobs,
            finish_reason=finish,
            policy_version=version,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
        )

    # ------------------------------------------------------------------ versions

    def load_version(self, version: PolicyVersion) -> None:
        """Serve `version` on every server that is up; a server that was down gets it before its
        next request. PolicyError (the policy stays on its version) when no server can serve it."""
        if is_base(version):  # the servers' own model, no adapter
            self._version, self._checkpoint = 0, None
            return
        errors = []
        for server in self.servers:
            try:
                self._served_on(server, version.version, version)
            except _Retryable as exc:  # down: it loads the version when it is back
                self._take_out(server, exc)
                errors.append(str(exc))
            except PolicyError as exc:
                raise PolicyError(f"policy version {version.version}: {exc}") from None
        if len(errors) == len(self.servers):
            raise PolicyError(
                f"policy version {version.version}: no server could load it: {'; '.join(errors)}"
            )
        self._version, self._checkpoint = version.version, version

    def _served_on(self, server: _Server, version: int, checkpoint: PolicyVersion | None) -> str:
        """The model name `server` serves `version` as, loading a LoRA adapter there first if needed."""
        if version in server.served_as:
            return server.served_as[version]
        assert checkpoint is not None and checkpoint.version == version  # version 0 is always known
        uri = checkpoint.checkpoint_uri
        models = list(self._once(server, "GET", "/models", None).get("data", []))
        if checkpoint_kind(uri) == "lora":
            name = f"agentsd-v{version}"
            if name not in {m["id"] for m in models}:
                self._once(server, "POST", "/load_lora_adapter", {"lora_name": name, "lora_path": uri})
            server.served_as[version] = name
            return name
        for served in models:
            if uri in (served.get("id"), served.get("root")):
                server.served_as[version] = served["id"]
                return served["id"]
        raise PolicyError(
            f"{server.url} does not serve {uri}; restart the server on that checkpoint (or publish LoRA "
            "adapters, which load into a running server)"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for server in self.servers:
            server.client.close()


def _token_id(token: str) -> int:
    match = _TOKEN_ID.match(token)
    if match is None:
        raise ValueError(f"token {token!r} is not 'token_id:N'")
    return int(match[1])
