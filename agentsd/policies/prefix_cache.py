"""Key/value caches of finished sequences, kept so the next turn of an episode prefills only what is new.

An agent's turn t+1 prompt is its turn-t prompt, its completion and the observation after it, token
for token (agentsd's token-exact turns). After a generate call the hf backend keeps each sequence's
attention keys and values (prompt and completion, up to the last sampled token, which was never fed
to the model); the next prompt that extends those tokens, under the same policy version, takes the
entry and prefills only its new tokens. Entries are evicted least recently used beyond a byte budget
and are taken (removed) when used: an episode holds one entry, its newest.

Not guaranteed: a hit for a prompt that does not extend a kept sequence exactly (a compacted context,
another version's weights, an evicted entry): those prefill in full, as without the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CachedPrefix:
    """One kept sequence: its token ids, the version whose weights computed it, and per layer its
    keys and values, each (kv heads, len(tokens), head dim)."""

    tokens: tuple[int, ...]
    version: int
    layers: list[tuple[Any, Any]]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


@dataclass
class PrefixStats:
    """Prompts that found a kept prefix (hits) or did not, entries evicted, and what is kept now."""

    hits: int = 0
    misses: int = 0
    evicted: int = 0
    entries: int = 0
    nbytes: int = 0


@dataclass
class PrefixCache:
    """Kept sequences within `budget_bytes`, least recently used evicted first."""

    budget_bytes: int
    _entries: OrderedDict[int, CachedPrefix] = field(default_factory=OrderedDict)
    _next_key: int = 0
    stats: PrefixStats = field(default_factory=PrefixStats)

    def take(self, prompt: Sequence[int], version: int) -> CachedPrefix | None:
        """The longest kept sequence of `version` that `prompt` extends by at least one token, removed
        from the cache (the caller keeps the extension instead); None when there is none."""
        best_key, best_len = None, 0
        for key, entry in self._entries.items():
            n = len(entry.tokens)
            if entry.version == version and best_len < n < len(prompt) and tuple(prompt[:n]) == entry.tokens:
                best_key, best_len = key, n
        if best_key is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        entry = self._entries.pop(best_key)
        self._account(-entry.nbytes)
        return entry

    def put(self, entry: CachedPrefix) -> None:
        """Keep `entry`, evicting the least recently used beyond the budget (`entry` too, if alone it
        is larger than the budget)."""
        self._entries[self._next_key] = entry
        self._next_key += 1
        self._account(entry.nbytes)
        while self._entries and self.stats.nbytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._account(-evicted.nbytes)
            self.stats.evicted += 1

    def _account(self, nbytes: int) -> None:
        """After an entry came in (nbytes > 0) or went out (nbytes < 0)."""
        self.stats.entries = len(self._entries)
        self.stats.nbytes += nbytes
