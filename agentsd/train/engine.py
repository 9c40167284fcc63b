"""The DeepSpeed engine a trainer steps: the process it runs in, the model and the engine around it.

`build_engine` prepares the process (glibc's mmap threshold, DeepSpeed's CPU accelerator, a
one-process torch.distributed environment unless a launcher made one), loads the tokenizer and
the causal LM (wrapped in a LoRA adapter when configured), reads the DeepSpeed preset and sets the
trainer's clipping, learning rate and batch shape in it, attaches the chunked head ZeRO-3 needs,
and initializes the engine over the trainable parameters. It owns nothing after that: the trainer
steps, checkpoints and closes the engine it returns.

Not guaranteed: accelerators other than the CPU one (DS_ACCELERATOR is only defaulted); ZeRO-3
with a teacher that keeps its own weights or with LoRA (refused with a ConfigError); releasing the
engine's memory when the caller fails after this returns (Trainer.close does that).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from agentsd.config import TrainConfig, deepspeed_config_path
from agentsd.errors import ConfigError
from agentsd.modelcache import resolve_model
from agentsd.sdpo.step import decoder_and_head, head_module

if TYPE_CHECKING:  # deepspeed is imported once DS_ACCELERATOR is set (build_engine), peft for LoRA
    from deepspeed.runtime.engine import DeepSpeedEngine
    from peft import PeftModel


@dataclass
class Engine:
    """What build_engine made: the engine, the model it wraps, and this process's place."""

    engine: DeepSpeedEngine
    model: PreTrainedModel | PeftModel  # engine.module: the causal LM, or its LoRA adapter's wrapper
    tokenizer: Any  # whichever tokenizer class AutoTokenizer picks for the model
    model_path: str
    zero3: bool  # the weights are partitioned over ranks (gather them to read them whole)
    rank: int
    world: int


def single_process_env() -> None:
    """torch.distributed's environment for one process, unless a launcher set up several.

    A single process needs no agreed port, so it always takes a free one: a port inherited from a
    parent that trains too (a test process, `agentsd run`) would still be bound there."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        return  # the deepspeed launcher (or torchrun) set everything for its ranks
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def set_mmap_threshold(size: int) -> bool:
    """glibc's M_MMAP_THRESHOLD, fixed at `size` bytes (mallopt); False where there is no glibc.

    With glibc's dynamic threshold, freed tensors raise it up to 32 MB, after which activations just
    below that size come from the heap and fragment it: the trainer's peak RSS doubled at 8k tokens."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-3, int(size)))  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def deepspeed_config(config: TrainConfig) -> tuple[dict[str, Any], bool]:
    """The DeepSpeed config of the trainer's preset with its clipping, learning rate and batch shape,
    and whether it partitions the weights (ZeRO-3)."""
    path = deepspeed_config_path(config.deepspeed)
    try:
        ds = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"deepspeed config {path}: cannot be read as JSON ({exc})") from None
    zero3 = int(ds.get("zero_optimization", {}).get("stage", 0)) >= 3
    if zero3 and (config.teacher.mode != "live" or config.lora is not None):
        raise ConfigError(
            f"deepspeed config {path}: ZeRO-3 partitions the weights, which the teacher copies of "
            f"teacher.mode={config.teacher.mode} and LoRA adapters do not support yet; use "
            "teacher.mode=live without lora, or ZeRO-1/2"
        )
    ds["gradient_clipping"] = config.grad_clip
    ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
    ds["optimizer"].setdefault("params", {})["lr"] = config.effective_lr
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["gradient_accumulation_steps"] = 1
    return ds, zero3


def load_model(config: TrainConfig, model_path: str) -> PreTrainedModel | PeftModel:
    """The causal LM in `config.model.dtype`, wrapped in a LoRA adapter when configured, with
    gradient checkpointing on and no KV cache (a training forward never reuses one)."""
    causal_lm = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, config.model.dtype))
    model: PreTrainedModel | PeftModel = causal_lm
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model  # only LoRA runs need peft

        lora = config.lora
        model = get_peft_model(
            causal_lm,
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    # enabled after wrapping: peft treats a model that already checkpoints differently when it wraps it
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model


def build_engine(config: TrainConfig) -> Engine:
    """This process prepared for training, and the engine over the configured model (module doc)."""
    if config.mmap_threshold_bytes is not None:
        set_mmap_threshold(config.mmap_threshold_bytes)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    single_process_env()
    import deepspeed  # here, not at the top: it picks its accelerator from DS_ACCELERATOR on import

    model_path = resolve_model(config.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = load_model(config, model_path)
    ds_config, zero3 = deepspeed_config(config)
    if zero3:  # the chunked head runs in a module that gathers the partitioned projection
        model.sdpo_head = head_module(decoder_and_head(model)[1], zero3=True)
    # deepspeed annotates model_parameters as a Module; it takes the parameters themselves
    params: Any = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return Engine(engine, model, tokenizer, model_path, zero3, rank, world)
