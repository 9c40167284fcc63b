"""Config loading: merging, overrides, and messages that name the file, the field and the expectation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentsd.config import (
    CONFIG_KINDS,
    CollectConfig,
    DockerSandboxConfig,
    RunConfig,
    TrainConfig,
    deepspeed_config_path,
    load_config,
)
from agentsd.errors import ConfigError

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(CONFIG_KINDS[path.parent.name], [path])
    assert cfg.model_dump()  # validated with its kind's model


def test_files_merge_deeply_and_overrides_win(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("sdpo: {top_k: 50, is_cap: 3}\nteacher: {mode: ema, ema: 0.005}\n")
    extra = tmp_path / "extra.yaml"
    extra.write_text("sdpo: {top_k: 20}\nlora: {rank: 8}\n")
    cfg = load_config(TrainConfig, [base, extra], ["sdpo.alpha=0.5", "lr=2e-5", "model.name=./my-model"])
    assert (cfg.sdpo.top_k, cfg.sdpo.is_cap, cfg.sdpo.alpha) == (20, 3.0, 0.5)
    assert (cfg.teacher.mode, cfg.teacher.ema) == ("ema", 0.005)
    assert cfg.lora is not None and cfg.lora.rank == 8 and cfg.effective_lr == 2e-5
    assert cfg.model.name == "./my-model"
    assert load_config(TrainConfig, [], ["lora.rank=4"]).effective_lr == 1e-5  # LoRA default
    assert load_config(TrainConfig).effective_lr == 1e-6  # full fine-tune default


def test_backend_unions_select_by_name() -> None:
    cfg = load_config(
        CollectConfig, [], ["sandbox.backend=docker", "sandbox.engines=[unix:///a.sock, ssh://b]"]
    )
    assert isinstance(cfg.sandbox, DockerSandboxConfig) and cfg.sandbox.engines == [
        "unix:///a.sock",
        "ssh://b",
    ]
    with pytest.raises(
        ConfigError, match=r"sandbox .*does not match any of the expected tags: 'local', 'docker'"
    ):
        load_config(CollectConfig, [], ["sandbox.backend=k8s"])
    with pytest.raises(ConfigError, match=r"policy.base_url: required but not given"):
        load_config(CollectConfig, [], ["policy.backend=openai"])


def test_errors_name_the_source_the_field_the_value_and_the_expectation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sdpo:\n  is_cap: -1\n  bogus: 3\nteacher:\n  mode: emma\n")
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, [bad], ["sdpo.top_k=many"])
    message = str(info.value)
    assert f"sdpo.is_cap = -1 (from {bad}): expected greater than 0" in message
    assert f"sdpo.bogus: unknown field (from {bad})" in message
    assert f"teacher.mode = 'emma' (from {bad}): expected 'live', 'sync_every', 'ema'" in message
    assert "sdpo.top_k = 'many' (from override 'sdpo.top_k=many'): expected a valid integer" in message
    assert message.startswith("invalid TrainConfig (4 problems)")


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError, match=r"rho_low \(10.0\) must be below rho_high \(5.0\)"):
        load_config(TrainConfig, [], ["sdpo.rho_low=10", "sdpo.rho_high=5"])
    with pytest.raises(ConfigError, match="a run needs one store"):
        load_config(RunConfig, [], ["collect.store.url=sqlite:///a.db"])


def test_unreadable_files_and_malformed_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*missing.yaml: cannot be read"):
        load_config(TrainConfig, [tmp_path / "missing.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("sdpo:\n  top_k: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML at line 3"):
        load_config(TrainConfig, [broken])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections at the top, got list"):
        load_config(TrainConfig, [listing])
    for override in ("sdpo.top_k", "=3", "sdpo..top_k=3"):
        with pytest.raises(ConfigError, match=r"expected key\.path=value"):
            load_config(TrainConfig, [], [override])


def test_deepspeed_presets_ship_with_the_package_and_resolve_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the default used to be configs/deepspeed/zero2.json: `agentsd train` failed outside the checkout
    monkeypatch.chdir(tmp_path)
    for preset in ("zero1", "zero2", "zero3"):
        path = deepspeed_config_path(TrainConfig(deepspeed=preset).deepspeed)
        assert path.is_absolute() and "zero_optimization" in json.loads(path.read_text())
    assert deepspeed_config_path(TrainConfig().deepspeed).name == "zero2.json"
    own = tmp_path / "mine.json"
    own.write_text("{}")
    assert deepspeed_config_path(TrainConfig(deepspeed=str(own)).deepspeed) == own
    with pytest.raises(ValidationError, match=r"'zero9' is neither a preset \(zero1, zero2, zero3\)"):
        TrainConfig(deepspeed="zero9")
