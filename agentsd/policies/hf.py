"""The `hf` policy backend: a transformers causal LM sampling with a KV cache, on CPU or GPU.

One `generate` call samples a batch of prompts together (left-padded, explicit position ids), with
its own decoding loop rather than `model.generate`: the loop computes each step's sampling
distribution once (logits / temperature, top-p cut, log-softmax), samples from it and keeps the
sampled token's log-prob, which is exactly the behaviour log-prob training needs; and it drops
finished sequences from the batch and the cache, so a short reply does not pay for a long one.

Versions: `load_version` loads a full checkpoint's weights into the live model, or merges a LoRA
adapter into a fresh copy of the base weights, and reports the new version from then on. The weights
of the last `loaded_versions` versions stay in memory (the base model's included, once the policy
has moved off it), so switching between the versions of running episodes reads no disk.

Prefix reuse (`prefix_cache_mb`, agentsd/policies/prefix_cache.py): each finished sequence's keys
and values are kept, and a later prompt that extends one (an episode's next turn) prefills only its
new tokens; rows with and without a kept prefix batch together, each right-aligned with its own
padding and positions. An episode's prefill work is then linear in its length instead of quadratic.
Attention (`attention: grouped`, agentsd/policies/attention.py) reads each key/value head once where
transformers' SDPA path copies the cache per query head under a padding mask, and decode steps
write into a cache reserved at the call's longest sequence (agentsd/policies/kv_buffer.py) where
transformers' DynamicCache copies every layer's cache at every step.

Not guaranteed: bit-identical samples across batch compositions or between reused and recomputed
prefixes (padding and cache layout change float rounding by ~1e-6); continuous batching (the vllm
backend's job).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentsd.config import HFPolicyConfig, ModelConfig, SamplingConfig
from agentsd.modelcache import resolve_model
from agentsd.policies.attention import register as register_grouped_attention
from agentsd.policies.base import PolicyError, checkpoint_kind, end_of_turn_ids, is_base, validate_prompts
from agentsd.policies.prefix_cache import CachedPrefix, PrefixCache
from agentsd.types import Completion, PolicyVersion

STOP_TAIL_TOKENS = 16  # how many trailing tokens are decoded to look for a stop string


@dataclass
class GenerationStats:
    """Where generate's time went since the policy started: prompt tokens run through the model
    (prefill) and taken from kept prefixes instead (reused), sampled tokens (decode), and seconds."""

    prefill_tokens: int = 0
    reused_tokens: int = 0
    decode_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


class HFPolicy:
    """A transformers model sampling batches of token-id prompts."""

    def __init__(
        self, model: ModelConfig, config: HFPolicyConfig | None = None, *, seed: int | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config or HFPolicyConfig()
        self.model_config = model
        self.model_name = model.name
        self.path = resolve_model(model.name)
        self.dtype = getattr(torch, model.dtype)
        self.device = torch.device(self.config.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        attention = register_grouped_attention() if self.config.attention == "grouped" else "sdpa"
        self.model: Any = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=self.dtype, attn_implementation=attention
        )
        self.model.to(self.device).eval()
        self.max_context = min(
            model.max_context, int(getattr(self.model.config, "max_position_embeddings", 1 << 30))
        )
        self.end_ids = sorted(end_of_turn_ids(self.tokenizer))
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_ids[0]
        )
        self.rng = torch.Generator(self.device)
        # no seed: a fresh one, without re-seeding torch's global generator as torch.seed() would
        self.rng.manual_seed(seed if seed is not None else random.getrandbits(63))
        self._version = 0
        self._loaded: OrderedDict[int, dict[str, Any]] = OrderedDict()  # version -> weights, LRU
        budget = int(self.config.prefix_cache_mb * 2**20)
        self.prefix_cache = PrefixCache(budget) if budget > 0 else None
        self.stats = GenerationStats()

    @property
    def version(self) -> int:
        return self._version

    # ------------------------------------------------------------------ sampling

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop: Sequence[str] = ()
    ) -> list[Completion]:
        import torch

        if not prompts:
            return []
        validate_prompts(prompts, int(self.model.config.vocab_size), self.max_context)
        n = len(prompts)
        kept = [self.prefix_cache.take(p, self._version) if self.prefix_cache else None for p in prompts]
        past = [len(k.tokens) if k is not None else 0 for k in kept]
        suffixes = [list(p[m:]) for p, m in zip(prompts, past, strict=True)]
        self.stats.prefill_tokens += sum(map(len, suffixes))
        self.stats.reused_tokens += sum(past)
        started = time.perf_counter()
        # one row per prompt: [left padding | its kept prefix | left padding | its new tokens]; the
        # masks keep padding out of attention and explicit positions keep each row's own numbering
        width, kept_width = max(len(x) for x in suffixes), max(past)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, kept_width + width), dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            ids[row, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            mask[row, kept_width - past[row] : kept_width] = 1
            mask[row, kept_width + width - len(suffix) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, kept_width:]
        budget = [min(sampling.max_new_tokens, self.max_context - len(p)) for p in prompts]
        # the last sampled token is never fed back, so no row ever holds more than this
        cache = self._cache_from(kept, kept_width, kept_width + width + max(budget) - 1)
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        finish: list[str | None] = [None] * n
        end_ids = torch.tensor(self.end_ids, device=self.device)
        active = list(range(n))  # batch row -> prompt index
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :]
            next_position = positions[:, -1] + 1
            prefilled = time.perf_counter()
            self.stats.prefill_s += prefilled - started
            while active:
                logp = sampling_logprobs(logits, sampling.temperature, sampling.top_p)
                sampled = torch.multinomial(logp.exp(), 1, generator=self.rng).squeeze(1)
                chosen = logp.gather(1, sampled[:, None]).squeeze(1)
                is_end = torch.isin(sampled, end_ids)
                keep: list[int] = []
                for row, seq in enumerate(active):
                    token = int(sampled[row])
                    tokens[seq].append(token)
                    logprobs[seq].append(float(chosen[row]))
                    if bool(is_end[row]) or (stop and self._hit_stop(tokens[seq], stop)):
                        finish[seq] = "stop"
                    elif len(tokens[seq]) >= budget[seq]:
                        finish[seq] = "length"
                    else:
                        keep.append(row)
                finished = sorted(set(range(len(active))) - set(keep))
                for row in finished:  # kept for the turn that extends it, before it leaves the cache
                    self._keep(cache, mask, row, [*prompts[active[row]], *tokens[active[row]][:-1]])
                if not keep:
                    break
                if finished:  # finished rows leave the batch and the cache
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    sampled, mask, next_position = sampled[index], mask[index], next_position[index]
                    active = [active[row] for row in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                out = self.model(
                    input_ids=sampled[:, None],
                    attention_mask=mask,
                    position_ids=next_position[:, None],
                    past_key_values=cache,
                    use_cache=True,
                )
                logits = out.logits[:, -1, :]
                next_position = next_position + 1
        self.stats.decode_s += time.perf_counter() - prefilled
        self.stats.decode_tokens += sum(map(len, tokens))
        return [
            Completion(
                token_ids=tokens[i],
                logprobs=logprobs[i],
                finish_reason=finish[i] or "length",
                policy_version=self._version,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
            )
            for i in range(n)
        ]

    def _cache_from(self, kept: list[CachedPrefix | None], width: int, capacity: int) -> Any:
        """A cache with room for `capacity` positions per row (decode steps write in place), holding
        each row's kept keys and values right-aligned in the first `width` positions (zeros where the
        mask says padding); empty when no row has any."""
        import torch
        from transformers import DynamicCache

        from agentsd.policies.kv_buffer import reserved_cache  # imports transformers

        layers = self.model.config.get_text_config().num_hidden_layers
        cache = reserved_cache(layers, capacity) if self.config.decode_cache == "reserved" else DynamicCache()
        first = next((k for k in kept if k is not None), None)
        if first is None or width == 0:
            return cache
        for layer, (key, value) in enumerate(first.layers):
            shape = (len(kept), key.shape[0], width, key.shape[2])
            keys = torch.zeros(shape, dtype=key.dtype, device=self.device)
            values = torch.zeros(shape, dtype=value.dtype, device=self.device)
            for row, entry in enumerate(kept):
                if entry is not None:
                    n = len(entry.tokens)
                    keys[row, :, width - n :] = entry.layers[layer][0]
                    values[row, :, width - n :] = entry.layers[layer][1]
            cache.update(keys, values, layer)
        return cache

    def _keep(self, cache: Any, mask: Any, row: int, covered: list[int]) -> None:
        """Keep a finished row's keys and values (the positions its mask marks) for the turn that
        extends it; nothing when reuse is off."""
        if self.prefix_cache is None:
            return
        valid = mask[row].bool()
        if int(valid.sum()) != len(covered):
            return
        # boolean indexing copies: the entry owns its tensors, not views of the batch's cache
        layers = [(layer.keys[row][:, valid], layer.values[row][:, valid]) for layer in cache.layers]
        self.prefix_cache.put(CachedPrefix(tuple(covered), self._version, layers))

    def _hit_stop(self, tokens: list[int], stop: Sequence[str]) -> bool:
        tail = self.tokenizer.decode(tokens[-STOP_TAIL_TOKENS:], skip_special_tokens=False)
        return any(s in tail for s in stop)

    # ------------------------------------------------------------------ versions

    def load_version(self, version: PolicyVersion) -> None:
        """Load `version`'s weights (from memory when it is among the last `loaded_versions`); on any
        error the model keeps its current weights and version (every key and shape is checked before
        the first tensor is copied)."""
        if version.version == self._version:
            return
        if self._version not in self._loaded:  # keep what is sampling now: episodes may switch back
            self._remember(self._version, {k: v.detach().clone() for k, v in self.model.state_dict().items()})
        state = self._loaded.get(version.version)
        if state is None:
            state = self._read(version)
            self._check_fits(state, version)
            self._remember(version.version, state)
        else:
            self._loaded.move_to_end(version.version)
        self._assign(state)
        self._version = version.version

    def _remember(self, version: int, state: dict[str, Any]) -> None:
        self._loaded[version] = state
        self._loaded.move_to_end(version)
        while len(self._loaded) > self.config.loaded_versions:
            self._loaded.popitem(last=False)

    def _read(self, version: PolicyVersion) -> dict[str, Any]:
        where = f"policy version {version.version} ({version.checkpoint_uri or 'the base model'})"
        try:
            if is_base(version):
                return _read_weights(str(self.path))
            if checkpoint_kind(version.checkpoint_uri) == "full":
                return _read_weights(version.checkpoint_uri)
            return self._merged_adapter(version.checkpoint_uri)
        except (OSError, RuntimeError, ValueError) as exc:
            raise PolicyError(f"{where}: {exc}") from exc

    def _check_fits(self, state: dict[str, Any], version: PolicyVersion) -> None:
        where = f"policy version {version.version} ({version.checkpoint_uri or 'the base model'})"
        current = self.model.state_dict()
        tie = getattr(self.model.config, "tie_word_embeddings", False)
        tied = {k for k in current if k not in state and "lm_head" in k and tie}
        absent = sorted(set(current) - set(state) - tied)
        unexpected = sorted(set(state) - set(current))
        reshaped = sorted(
            k for k in set(state) & set(current) if tuple(state[k].shape) != tuple(current[k].shape)
        )
        if absent or unexpected or reshaped:
            raise PolicyError(
                f"{where} does not fit {self.model_name}: missing {absent[:5]}, unexpected {unexpected[:5]}, "
                f"other shapes {reshaped[:5]}"
            )

    def _assign(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict({k: v.to(self.dtype) for k, v in state.items()}, strict=False)
        if getattr(self.model.config, "tie_word_embeddings", False):
            self.model.tie_weights()

    def _merged_adapter(self, uri: str) -> dict[str, Any]:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        # the adapter applies to the configured base model (version 0), not to the live weights
        base = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype)
        merged = PeftModel.from_pretrained(base, uri).merge_and_unload()
        return merged.state_dict()

    def close(self) -> None:
        self.model = None


def sampling_logprobs(logits: Any, temperature: float, top_p: float) -> Any:
    """Log-probs of the distribution a token is sampled from: logits / T, then the top-p nucleus."""
    import torch

    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_logp, order = logp.sort(dim=-1, descending=True)
        mass_before = sorted_logp.exp().cumsum(dim=-1) - sorted_logp.exp()
        cut = mass_before >= top_p  # the token that crosses top_p stays in
        sorted_logp = sorted_logp.masked_fill(cut, float("-inf"))
        logp = torch.full_like(logp, float("-inf")).scatter(-1, order, sorted_logp)
        logp = torch.log_softmax(logp, dim=-1)
    return logp


def _read_weights(directory: str) -> dict[str, Any]:
    from pathlib import Path

    from safetensors.torch import load_file

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise OSError(f"no *.safetensors files in {directory}")
    state: dict[str, Any] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state
