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
