"""Configuration: pydantic models for every command, loaded from YAML files plus key=value overrides.

`load_config(Model, files, overrides)` merges the files in order (later wins, mappings merge
deeply), applies `a.b.c=value` overrides (values parsed as YAML), and validates the result once.
Any problem raises ConfigError naming the file or override, the field path, the value given and
what was expected. Nothing starts before a config validates.

Defaults are the embedded ones: local sandbox, SQLite store, CPU, the default model. The values of
the SDPO section are docs/objective.md's defaults.

The package holds `base` (the model every section derives from), `sections` (shared sections),
`collect`, `train` and `run` (the command configs) and `loading`; this module is its one face.
"""

from __future__ import annotations

from agentsd.config.base import DEFAULT_MODEL, DEFAULT_STORE_URL, ConfigModel
from agentsd.config.collect import TRAINED_TERMINATIONS, CollectConfig, EvalConfig, PacingConfig
from agentsd.config.loading import load_config, read_yaml_mapping
from agentsd.config.run import (
    CONFIG_KINDS,
    ArmConfig,
    ExperimentConfig,
    GapConfig,
    PeerConfig,
    PeerTrainer,
    RunConfig,
)
from agentsd.config.sections import (
    DockerSandboxConfig,
    HFPolicyConfig,
    JudgeConfig,
    LocalSandboxConfig,
    ModelConfig,
    OpenAIPolicyConfig,
    PolicyConfig,
    SamplingConfig,
    SandboxConfig,
    StoreConfig,
    TrackingConfig,
    VLLMPolicyConfig,
)
from agentsd.config.train import (
    DEEPSPEED_PRESETS,
    HindsightConfig,
    HindsightSource,
    LoraConfig,
    SDPOConfig,
    TeacherConfig,
    TrainConfig,
    deepspeed_config_path,
)

__all__ = [
    "CONFIG_KINDS",
    "DEEPSPEED_PRESETS",
    "DEFAULT_MODEL",
    "DEFAULT_STORE_URL",
    "TRAINED_TERMINATIONS",
    "ArmConfig",
    "CollectConfig",
    "ConfigModel",
    "DockerSandboxConfig",
    "EvalConfig",
    "ExperimentConfig",
    "GapConfig",
    "HFPolicyConfig",
    "HindsightConfig",
    "HindsightSource",
    "JudgeConfig",
    "LocalSandboxConfig",
    "LoraConfig",
    "ModelConfig",
    "OpenAIPolicyConfig",
    "PacingConfig",
    "PeerConfig",
    "PeerTrainer",
    "PolicyConfig",
    "RunConfig",
    "SDPOConfig",
    "SamplingConfig",
    "SandboxConfig",
    "StoreConfig",
    "TeacherConfig",
    "TrackingConfig",
    "TrainConfig",
    "VLLMPolicyConfig",
    "deepspeed_config_path",
    "load_config",
    "read_yaml_mapping",
]
