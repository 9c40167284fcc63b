"""The default model cache: name resolution, and the real GGUF -> safetensors conversion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentsd.errors import ModelError
from agentsd.modelcache import default_model_dir, fetch_default_gguf, installed_info, resolve_model


def test_resolution_of_directories_ids_and_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSD_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    with pytest.raises(ModelError, match=r"has no config\.json"):
        resolve_model(str(model_dir))
    (model_dir / "config.json").write_text("{}")
    assert resolve_model(str(model_dir)) == str(model_dir)
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    with pytest.raises(ModelError, match="no such directory, and not a Hugging Face id"):
        resolve_model("./nowhere")
    with pytest.raises(ModelError, match="no such directory, and not a Hugging Face id"):
        resolve_model("not an id")
    with pytest.raises(ModelError, match="run `agentsd model install`"):
        resolve_model("default", install=False)
    assert installed_info(default_model_dir()) is None


@pytest.mark.slow
def test_install_converts_the_gguf_faithfully_and_the_model_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    env = {**os.environ, "AGENTSD_CACHE": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "agentsd.cli.main", "model", "install"]
    # Two installers at once (collectors starting together): one converts, both get the same model.
    procs = [
        subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    paths = {out.strip() for out, _ in outputs}
    assert paths == {str(tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct")}
    model_dir = Path(paths.pop())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model_dir.iterdir()}

    # Reference: dequantize tensors straight from the GGUF with the gguf package (no transformers).
    gguf_path = fetch_default_gguf(tmp_path / "ref")
    reference = {t.name: t for t in GGUFReader(gguf_path).tensors}
    weights = load_file(model_dir / "model.safetensors")
    for gguf_name, hf_name in [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
        ("blk.29.attn_output.weight", "model.layers.29.self_attn.o_proj.weight"),
    ]:
        tensor = reference[gguf_name]
        expected = dequantize(tensor.data, tensor.tensor_type).reshape(weights[hf_name].shape)
        np.testing.assert_allclose(weights[hf_name].numpy(), expected, rtol=0, atol=1e-6)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Any, as in agentsd/policies/hf.py: transformers types generate()'s self as its
    # GenerativePreTrainedModel protocol, which its own PreTrainedModel does not satisfy
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
    monkeypatch.setenv("AGENTSD_CACHE", str(tmp_path / "cache"))
    assert resolve_model("default", install=False) == str(model_dir)
