"""Content hashes of published weights: what makes a version number name one set of weights.

A version's hash is sha256 over its weight files (`*.safetensors`, `*.bin`), each as its path
relative to the version directory, its size and its bytes, in path order. The trainer records it
when it publishes; a collector recomputes it before loading and refuses files that differ.

Not guaranteed: that two hashes differ only when the tensors differ (the files' headers count too);
configuration and tokenizer files are not covered (they do not change between versions).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")
_BLOCK = 1 << 20


def weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def weights_hash(directory: str | Path) -> str:
    """The content hash of the weight files under `directory`; OSError when there are none."""
    root = Path(directory)
    files = weight_files(root)
    if not files:
        raise OSError(f"no weight files (*.safetensors, *.bin) in {root}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()
