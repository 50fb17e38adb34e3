"""SQLAlchemy 2.0 engine and a session scope that commits, rolls back on error and closes.

How many PostgreSQL connections a process keeps depends on its role (:func:`set_pool`, one
of :data:`POOLS`): a fleet of a thousand training processes must not ask one PostgreSQL for
ten thousand connections. docs/fleet.md has the arithmetic.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

_lock = threading.Lock()
_engines: dict[str, Engine] = {}

# Connections each role keeps (pool_size, max_overflow); None: none kept, every transaction
# opens its own and closes it (NullPool).
# - service: the API's gunicorn workers and the migrations (requests on several threads).
# - training: a training process (the Celery prefork child) writes from three threads (the
#   run, its reporter, its heartbeat) but one at a time most of the time: one connection kept,
#   one more while two overlap.
# - per-write: the Celery parent (it writes its presence once a minute and must hand no socket
#   to a forked child), and a fleet larger than PostgreSQL's max_connections without a pooler
#   (a training writes once every few seconds: a connection kept idle between writes is a slot
#   another training could use).
POOLS: dict[str, tuple[int, int] | None] = {
    "service": (5, 5),
    "training": (1, 1),
    "per-write": None,
}
_pool = "service"


def set_pool(role: str) -> None:
    """Choose the connections this process keeps (one of :data:`POOLS`); drops the engines
    made so far, so the next session uses the new pool.

    Raises:
        ValueError: ``role`` is not a key of :data:`POOLS`.
    """
    global _pool
    if role not in POOLS:
        raise ValueError(f"database pool {role!r} is not one of {sorted(POOLS)}: set "
                         f"KERASYARD_DB_POOL to one of them, or leave it empty for the role's "
                         f"default")
    dispose_engines()
    _pool = role


def pool_role() -> str:
    """The role :func:`set_pool` chose last ("service" unless told)."""
    return _pool


def pool_kwargs(url: str) -> dict:
    """create_engine's pool arguments for this process's role (SQLite: none)."""
    if url.startswith("sqlite"):
        return {}
    sizes = POOLS[_pool]
    if sizes is None:
        return {"poolclass": NullPool}
    return {"pool_pre_ping": True, "pool_size": sizes[0], "max_overflow": sizes[1]}


def connect_args(url: str) -> dict:
    """Driver arguments for a PostgreSQL URL.

    connect_timeout: a database host that drops packets (a network cut, not a refusal) fails a
    connect in seconds, so the worker's retries (worker/recording/dbretry.py) go on instead of
    hanging in the kernel's SYN retries for minutes. prepare_threshold None: psycopg prepares
    no server-side statements, which a pooler in transaction mode (PgBouncer, docs/fleet.md)
    would hand to another client's server connection.
    """
    if not url.startswith("postgresql"):
        return {}
    args: dict = {"connect_timeout": 10}
    if url.startswith("postgresql+psycopg:"):
        args["prepare_threshold"] = None
    return args


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the API read while the worker writes progress; busy_timeout waits for the
    # writer instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            from pathlib import Path

            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, connect_args=connect_args(url), **pool_kwargs(url))


def get_engine(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Drop pooled connections; a forked worker child must not share its parent's sockets."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()


@contextlib.contextmanager
def session_scope(url: str) -> Iterator[Session]:
    session = sessionmaker(bind=get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
