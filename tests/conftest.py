"""Shared fixtures: store URLs for SQLite and a real PostgreSQL server started for the session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pg_server import PostgresUnavailable, create_database, local_postgres

pytest_plugins = ["sandbox_fixtures"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on loopback for this test session; yields its base URL (no database)."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(local_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's server."""
    return create_database(postgres_server)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a SQLite file and a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'replay.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small Llama with the default model's tokenizer, layout and grouped heads (2 layers, width 64,
    seeded random weights): the trainer's machinery (publishing, resuming, lineage, ranks, ZeRO
    stages, LoRA) runs on it in a fraction of the default model's time and checkpoint bytes; `agentsd
    run` here, and the experiment runner's tests, train the default model; the peer arms' tests give
    it to TRL."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from agentsd.modelcache import resolve_model

    source, target = resolve_model("default"), tmp_path_factory.mktemp("tiny-model")
    config = AutoConfig.from_pretrained(source)
    config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128})
    config.update({"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return str(target)
