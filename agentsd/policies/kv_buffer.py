"""A key/value cache for the hf backend's decoding loop that writes into reserved space instead of
growing by concatenation.

transformers' DynamicCache appends each decode step's keys and values with `torch.cat`, which
allocates and copies the whole cache of every layer at every step: with a few thousand tokens of
context that copy costs as much as the step's matrix products, and a long episode's decode time
grows with the square of its length. A generate call knows its longest possible sequence (padded
prompt plus the largest token budget), so `reserved_cache` allocates each layer's buffer once at
that size and every step writes its one position in place; attention reads a view of the filled
part.

Not guaranteed: anything beyond what the hf backend's loop uses (full attention layers, in-order
appends, `batch_select_indices`); cropping, beam reordering and offloading are the stock
DynamicLayer's and see only the filled view. A call that outgrows its reservation still works: the
buffer is reallocated at twice the size (one copy).
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicCache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values, (batch, kv heads, positions, head dim), in buffers with room for
    `capacity` positions; `keys` and `values` are views of the filled part."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._key_buffer: Any = None
        self._value_buffer: Any = None

    def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
        import torch

        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads, _, dim = key_states.shape
        shape = (batch, heads, max(self.capacity, key_states.shape[-2]), dim)
        self._key_buffer = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
        self._value_buffer = torch.empty(shape, dtype=value_states.dtype, device=value_states.device)
        self.length = 0
        self.is_initialized = True

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._reserve(max(end, 2 * self._key_buffer.shape[-2]))
        self._key_buffer[:, :, self.length : end] = key_states
        self._value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: Any) -> None:
        if self.is_initialized:
            self._key_buffer = self._key_buffer[indices]
            self._value_buffer = self._value_buffer[indices]
            self._expose()

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self.length = 0
        super().reset()

    def _reserve(self, capacity: int) -> None:
        import torch

        grown = []
        for buffer in (self._key_buffer, self._value_buffer):
            bigger = torch.empty(
                (*buffer.shape[:2], capacity, buffer.shape[-1]), dtype=buffer.dtype, device=buffer.device
            )
            bigger[:, :, : self.length] = buffer[:, :, : self.length]
            grown.append(bigger)
        self._key_buffer, self._value_buffer = grown
        self.capacity = capacity

    def _expose(self) -> None:
        self.keys = self._key_buffer[:, :, : self.length]
        self.values = self._value_buffer[:, :, : self.length]


def reserved_cache(num_layers: int, capacity: int) -> DynamicCache:
    """A DynamicCache whose `num_layers` layers each reserve `capacity` positions on first write."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = None  # the layers are all here; none is appended lazily
    cache.layers.extend(ReservedLayer(capacity) for _ in range(num_layers))
    return cache
