"""Where a store lives and how its transactions run: URLs, the SQLAlchemy engine, the write connection.

A store URL is a SQLite file or a PostgreSQL database. On SQLite every connection runs in driver
autocommit and begins its own transactions: a write transaction is BEGIN IMMEDIATE (it takes the
write lock up front), a read transaction a plain BEGIN, both under a 60 s busy timeout. `transaction`
is the one way the store's modules get a connection; `RawWriter` is the begin/append/finalize hot
path, the same transaction semantics on a bare DBAPI cursor. Database errors leave here as
StoreError naming the store.

Not guaranteed: an engine and its kept write connection must not cross a fork (each process opens its
own store); SQLite serialises writers, so many writers on one file share its write throughput.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from agentsd.errors import StoreError, StoreNotFoundError


def sqlite_url(path: str | Path) -> str:
    """The store URL of a SQLite file."""
    return f"sqlite:///{Path(path).expanduser().absolute()}"


def locate(url: str | Path, *, create: bool) -> tuple[str, str, Path | None]:
    """(URL, dialect, SQLite file or None) of the store at `url`; a bare path is a SQLite file.

    A SQLite file's folder is made when `create`; without it a missing file is StoreNotFoundError."""
    text = _normalise_url(url)
    parsed = make_url(text)
    dialect = parsed.get_backend_name()
    if dialect not in ("sqlite", "postgresql"):
        raise StoreError(f"store url {text!r}: expected a sqlite:/// or postgresql:// URL")
    if dialect != "sqlite":
        return text, dialect, None
    if not parsed.database or parsed.database == ":memory:":
        raise StoreError(f"store url {text!r}: an in-memory SQLite store cannot be shared; give a file")
    path = Path(parsed.database)
    if not path.exists():
        if not create:
            raise StoreNotFoundError(f"no replay store at {path} (create one by collecting)")
        path.parent.mkdir(parents=True, exist_ok=True)
    return text, dialect, path


def describe(url: str, sqlite_path: Path | None) -> str:
    """The store as error messages name it: its file, or its URL without the password."""
    return str(sqlite_path) if sqlite_path else make_url(url).render_as_string(True)


def make_engine(url: str, dialect: str) -> Engine:
    if dialect == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Driver-level autocommit: transactions are begun explicitly below, so that writers can
        # take the write lock up front (BEGIN IMMEDIATE) instead of failing on lock upgrade.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("agentsd_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def use_wal(engine: Engine) -> None:
    """Put a SQLite file in WAL mode (persistent; outside any transaction, as SQLite requires)."""
    raw = engine.raw_connection()
    try:
        raw.cursor().execute("PRAGMA journal_mode = WAL")
    finally:
        raw.close()


@contextmanager
def transaction(engine: Engine, write: bool, where: str) -> Iterator[Connection]:
    """One transaction on a pooled connection: committed when the block ends, rolled back on error."""
    try:
        with engine.connect() as conn:
            conn.execution_options(agentsd_write=write)
            with conn.begin():
                yield conn
    except DBAPIError as exc:
        raise StoreError(f"replay store {where}: {_db_message(exc)}") from exc


class RawWriter:
    """A write transaction on a bare DBAPI cursor, for the begin/append/finalize hot path.

    Same semantics as transaction(write=True) (BEGIN IMMEDIATE on SQLite, one transaction on
    PostgreSQL) without SQLAlchemy's per-statement and pool work, which cost more than the SQL
    itself (scripts/bench_store.py). One connection is kept for it, used under a lock.
    """

    def __init__(self, engine: Engine, dialect: str, where: str) -> None:
        self._engine = engine
        self._sqlite = dialect == "sqlite"
        self._where = where
        self.dbapi = engine.dialect.loaded_dbapi
        self._lock = threading.Lock()
        self._conn: Any = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._lock:
            if self._conn is None:
                self._conn = self._engine.raw_connection()
            raw = self._conn
            cursor = raw.cursor()
            try:
                if self._sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                if self._sqlite:
                    cursor.execute("COMMIT")
                else:
                    raw.commit()
            except BaseException as exc:
                try:
                    if self._sqlite:
                        cursor.execute("ROLLBACK")
                    else:
                        raw.rollback()
                except Exception:
                    raw.invalidate()
                    self._conn = None
                if isinstance(exc, self.dbapi.Error):
                    raise StoreError(f"replay store {self._where}: {str(exc).strip()}") from exc
                raise
            finally:
                cursor.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _normalise_url(url: str | Path) -> str:
    text = str(url)
    if "://" not in text:
        return sqlite_url(text)
    try:
        make_url(text)
    except ArgumentError as exc:
        raise StoreError(f"store url {text!r} is not a database URL: {exc}") from exc
    return text


def _db_message(exc: DBAPIError) -> str:
    message = str(exc.orig).strip() or type(exc.orig).__name__
    if "not a database" in message or "malformed" in message:
        return f"{message} (the file is corrupt or not a SQLite database)"
    return message
