"""Gymnasium Text spaces that admit real text, and fitting arbitrary output into them.

Gymnasium's Text space defaults to an alphanumeric charset; observations of terminals, repositories
and desktops are arbitrary Unicode. TEXT_CHARSET is every character of the Basic Multilingual Plane
except control characters and surrogates, plus tab, newline and carriage return. `fit_text` maps
anything else to U+FFFD and elides the middle of text longer than the space allows, keeping the head
and the tail (where commands print what matters).
"""

from __future__ import annotations

from gymnasium.spaces import Text

from agentsd.elision import elide_text

TEXT_CHARSET = "\t\n\r" + "".join(
    chr(c) for c in (*range(0x20, 0x7F), *range(0xA0, 0xD800), *range(0xE000, 0xFFFE))
)
_ALLOWED = frozenset(TEXT_CHARSET)
_REPLACEMENT = "\ufffd"


def text_space(max_length: int) -> Text:
    return Text(max_length=max_length, min_length=0, charset=TEXT_CHARSET)


def fit_text(text: str, max_length: int) -> str:
    """text with every character in TEXT_CHARSET and at most max_length characters long."""
    if not _ALLOWED.issuperset(text):
        text = "".join(ch if ch in _ALLOWED else _REPLACEMENT for ch in text)
    return elide_text(text, max_length)
