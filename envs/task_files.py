"""Reading the files of a task directory on the host, for the importers (envs/dockerfile.py,
envs/harbor.py): text, text-or-bytes, whole trees, and the numbers and sizes of a task's config.

Every failure is a TaskFormatError naming the file (and the field, for numbers and sizes). Files
that are not UTF-8 are ordinary task content (images, archives, compiled fixtures): a tree keeps
them as base64 beside the texts.

Not guaranteed: bounds on what is read; a task directory is trusted input the user chose to import.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from agentsd.envs.common import TaskFormatError


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: missing (required)") from None
    except UnicodeDecodeError:
        raise TaskFormatError(f"{path}: not UTF-8 text") from None


def read_content(path: Path) -> str | bytes:
    """A task file's content: text when it is UTF-8, else its bytes (binary files are ordinary task
    content: images, archives, compiled fixtures)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: missing (required)") from None
    except OSError as exc:
        raise TaskFormatError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def read_tree(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Every file under root as (relative path -> text, relative path -> base64 of binary bytes)."""
    if not root.is_dir():
        raise TaskFormatError(f"{root}: missing directory (required)")
    texts: dict[str, str] = {}
    blobs: dict[str, str] = {}
    inside = root.resolve()
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise TaskFormatError(f"{path}: a symbolic link out of {root} (to {path.resolve()})")
        if path.is_file():
            put_content(texts, blobs, str(path.relative_to(root)), read_content(path))
    return texts, blobs


def put_content(texts: dict[str, str], blobs: dict[str, str], key: str, content: str | bytes) -> None:
    """Text into `texts`, bytes base64-encoded into `blobs`."""
    if isinstance(content, str):
        texts[key] = content
    else:
        blobs[key] = base64.b64encode(content).decode()


def positive_number(data: dict[str, Any], key: str, where: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TaskFormatError(f"{where}: {key} = {value!r}, expected a positive number")
    return float(value)


def size_mb(data: dict[str, Any], key_mb: str, key_text: str, where: str, default: int) -> int:
    """A size in MB from `key_mb` (a number) or `key_text` (text like '4G', '512M' or bytes)."""
    if key_mb in data:
        return int(positive_number(data, key_mb, where, default))
    text = data.get(key_text)
    if text is None:
        return default
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    raw = str(text).strip().upper().removesuffix("B")
    try:
        return max(1, int(float(raw[:-1]) * units[raw[-1]]) if raw[-1] in units else int(float(raw) / 2**20))
    except (ValueError, IndexError):
        raise TaskFormatError(
            f"{where}: {key_text} = {text!r}, expected a size like '4G' or '512M'"
        ) from None
