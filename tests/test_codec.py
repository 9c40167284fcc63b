"""The binary token codec against numpy's own little-endian encoding."""

from __future__ import annotations

import random

import numpy as np
import pytest

from agentsd.errors import CorruptRowError
from agentsd.store import codec


def test_ids_encode_as_little_endian_int32_from_lists_and_arrays() -> None:
    rng = random.Random(0)
    ids = [rng.randrange(2**31) for _ in range(1000)] + [0, 2**31 - 1]
    expected = np.asarray(ids, dtype="<i4").tobytes()
    assert codec.encode_ids(ids, "f") == expected
    assert codec.encode_ids(np.asarray(ids, dtype=np.int64), "f") == expected
    assert codec.decode_ids(expected, len(ids), "w").tolist() == ids
    assert codec.encode_ids([], "f") == b""


@pytest.mark.parametrize("bad", [[2**31], [2**32], [-1], [1.5], ["7"], np.array([-3]), np.array([[1, 2]])])
def test_ids_out_of_range_or_not_integers_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"prompt_ids: token ids must"):
        codec.encode_ids(bad, "prompt_ids")  # pyright: ignore[reportArgumentType]


def test_masks_and_floats_round_trip_and_lengths_are_checked() -> None:
    mask = [True, False, True, True, False, False, True, True, True]
    blob = codec.encode_mask(mask)
    assert blob is not None and len(blob) == 2
    decoded = codec.decode_mask(blob, len(mask), "w")
    assert decoded is not None and decoded.tolist() == mask
    values = [-0.5, -(2.0**-20), -20.25]  # exactly representable in float32
    assert codec.decode_f32(codec.encode_f32(values), 3, "w").tolist() == values
    with pytest.raises(CorruptRowError, match=r"t 3 logprobs: 8 bytes stored, expected 12"):
        codec.decode_f32(codec.encode_f32(values)[:8], 3, "t 3 logprobs")
    with pytest.raises(CorruptRowError, match="loss mask has 2 bytes, expected 1"):
        codec.decode_mask(blob, 5, "w")
