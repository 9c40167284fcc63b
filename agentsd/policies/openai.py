"""The `openai` policy backend: an OpenAI-compatible completions server, `vllm serve` at scale.

Prompts go out as token ids and completions come back as token ids with their log-probs (vLLM's
`return_tokens_as_token_ids`), so nothing is re-tokenized on either side. Each prompt is one request,
sent concurrently (the server batches them continuously). The server must sample and report in the
same distribution: start it with `--logprobs-mode processed_logprobs` so the log-probs are those of
the distribution after temperature and top-p, i.e. behaviour log-probs.

Retries (tenacity): connection errors, timeouts and 5xx answers, with exponential backoff; a 4xx
answer is a bad request and fails at once with the server's message.

Versions: a LoRA version is loaded into the running server (`/v1/load_lora_adapter`, which needs
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True on the server) and requested by its name `agentsd-vN`. A
full-weight version is served only when the server already serves that checkpoint (a model whose
id or root is the checkpoint directory, i.e. the operator restarted it there); otherwise
load_version fails and the policy stays on its version.

Not guaranteed: that the server's weights are what its model name says; version bookkeeping is as
honest as the deployment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentsd.config import ModelConfig, OpenAIPolicyConfig, SamplingConfig
from agentsd.modelcache import resolve_model
from agentsd.policies.base import PolicyError, checkpoint_kind, end_of_turn_ids, is_base, validate_prompts
from agentsd.types import Completion, PolicyVersion

_TOKEN_ID = re.compile(r"^token_id:(-?\d+)$")
MAX_ATTEMPTS = 6
RETRY_BASE_S = 0.5  # first backoff; doubles per attempt up to 20 s


class _Retryable(Exception):
    """A connection failure or a 5xx answer: worth another try."""


class OpenAIPolicy:
    """Completions from an OpenAI-compatible server, token ids in and out."""

    def __init__(self, model: ModelConfig, config: OpenAIPolicyConfig, *, seed: int | None = None) -> None:
        import httpx
        from transformers import AutoTokenizer

        self.config = config
        self.model_name = model.name
        self.max_context = model.max_context
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(model.name))
        self.end_ids = sorted(end_of_turn_ids(self.tokenizer))
        self.seed = seed
        self.client = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {config.api_key}"},
            timeout=config.timeout_s,
        )
        served = self._models()
        if not served:
            raise PolicyError(f"policy.base_url {config.base_url}: the server lists no models")
        self.served = config.served_model or served[0]["id"]
        if self.served not in {m["id"] for m in served}:
            raise PolicyError(
                f"policy.served_model {self.served!r}: {config.base_url} serves {[m['id'] for m in served]}"
            )
        self.base_served = self.served  # what version 0 is
        self._version = 0
        self._pool = ThreadPoolExecutor(max_workers=config.max_concurrent_requests)

    @property
    def version(self) -> int:
        return self._version

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx
        from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

        @retry(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(MAX_ATTEMPTS),
            wait=wait_exponential(multiplier=RETRY_BASE_S, max=20),
            reraise=True,
        )
        def once() -> Any:
            try:
                response = self.client.request(method, path, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                raise _Retryable(f"{method} {path}: {exc!r}") from exc
            if response.status_code >= 500:
                raise _Retryable(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
            if response.status_code >= 400:
                raise PolicyError(f"{method} {path}: HTTP {response.status_code}: {response.text[:1000]}")
            return response.json() if response.content else None

        try:
            return once()
        except _Retryable as exc:
            raise PolicyError(
                f"{self.config.base_url}: gave up after {MAX_ATTEMPTS} attempts: {exc}"
            ) from None

    def _models(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/models").get("data", []))

    # ------------------------------------------------------------------ sampling

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop: Sequence[str] = ()
    ) -> list[Completion]:
        validate_prompts(prompts, len(self.tokenizer), self.max_context)
        version, model = self._version, self.served
        return list(self._pool.map(lambda p: self._one(list(p), sampling, stop, model, version), prompts))

    def _one(
        self, prompt: list[int], sampling: SamplingConfig, stop: Sequence[str], model: str, version: int
    ) -> Completion:
        body: dict[str, Any] = {
            "model": model,
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
        answer = self._request("POST", "/completions", body)
        try:
            choice = answer["choices"][0]
            tokens = [_token_id(t) for t in choice["logprobs"]["tokens"]]
            logprobs = [float(x) for x in choice["logprobs"]["token_logprobs"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PolicyError(
                f"{self.config.base_url}: a completion without token ids and log-probs ({exc!r}); "
                "the server must support return_tokens_as_token_ids (vLLM)"
            ) from None
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(
            token_ids=tokens, logprobs=logprobs, finish_reason=finish, policy_version=version,
            temperature=sampling.temperature, top_p=sampling.top_p,
        )  # fmt: skip

    # ------------------------------------------------------------------ versions

    def load_version(self, version: PolicyVersion) -> None:
        uri = version.checkpoint_uri
        if is_base(version):  # the server's own model, no adapter
            self.served, self._version = self.base_served, 0
            return
        if checkpoint_kind(uri) == "lora":
            name = f"agentsd-v{version.version}"
            if name not in {m["id"] for m in self._models()}:
                self._request("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": uri})
            self.served, self._version = name, version.version
            return
        for served in self._models():
            if uri in (served.get("id"), served.get("root")):
                self.served, self._version = served["id"], version.version
                return
        raise PolicyError(
            f"policy version {version.version}: {self.config.base_url} does not serve {uri}; restart the "
            "server on that checkpoint (or publish LoRA adapters, which load into a running server)"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.client.close()


def _token_id(token: str) -> int:
    match = _TOKEN_ID.match(token)
    if match is None:
        raise ValueError(f"token {token!r} is not 'token_id:N'")
    return int(match[1])
