"""Grouped-query attention for the hf backend without copying keys and values per query head.

transformers' SDPA path repeats every key and value head `num_key_value_groups` times whenever an
attention mask is given (a batch with padding always has one), so each decode step copies the whole
cache again: on CPU, with a few thousand tokens of context, that copy is most of a decode step. Here
the query heads that share a key/value head are folded into the query length instead
((batch, kv heads, groups x queries, head dim)), the mask is tiled to match, and one SDPA call reads
each key/value head once. The result is the same attention (a test compares log-probs with the
default path).

Registered with transformers as `agentsd_gqa` (attention and mask functions); models without grouped
heads, or calls without a mask, go to the stock SDPA function unchanged.

Not guaranteed: use with attention variants beyond plain causal attention (sliding windows, sinks,
position biases): those calls go to the stock function.
"""

from __future__ import annotations

from typing import Any

NAME = "agentsd_gqa"


def grouped_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1))
    plain = kwargs.get("position_bias") is None and kwargs.get("sliding_window") is None
    if groups == 1 or attention_mask is None or not plain or dropout:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    # head h reads key/value head h // groups (what repeat_kv's expansion means): fold the groups
    folded = query.reshape(batch, kv_heads, groups * length, dim)
    mask = attention_mask.repeat(1, 1, groups, 1) if attention_mask.shape[2] == length else attention_mask
    out = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, length, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the attention (and the SDPA mask it reads) with transformers; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, grouped_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
