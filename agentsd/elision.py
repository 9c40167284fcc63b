"""Cutting text or token ids to a length by eliding the middle, head and tail kept.

Terminals, verifiers and hindsight signals print what matters at their start (the command, the
first error) and at their end (the summary, the exit): where something must be shortened, agentsd
keeps both ends and puts a marker in the middle that says how much was left out. One function
serves strings (observations, verifier output, replay listings) and token-id lists (hindsight
signals under a token budget). It guarantees the length bound and a true count in the marker; it
does not guarantee that a cut falls on a line, word or token boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Seq = TypeVar("Seq", str, list[int])


def elide_middle(items: Seq, limit: int, marker: Callable[[int], Seq]) -> Seq:
    """items cut to at most `limit` elements by replacing their middle with marker(n elided).

    When even the marker does not fit, the head alone is kept."""
    if len(items) <= limit:
        return items
    keep = limit - len(marker(len(items) - limit))
    mark = marker(len(items) - keep)
    while keep > 0 and keep + len(mark) > limit:  # a longer count can lengthen the marker
        keep = limit - len(mark)
        mark = marker(len(items) - keep)
    if keep <= 0:
        return items[:limit]
    head = keep // 2
    return items[:head] + mark + items[len(items) - (keep - head) :]


def elide_text(text: str, limit: int) -> str:
    """text cut to at most `limit` characters, its middle replaced by a line saying how many went."""
    return elide_middle(text, limit, lambda n: f"\n[... {n} characters elided ...]\n")
