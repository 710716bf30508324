"""The savers ``stateline migrate`` and ``stateline export --from`` read, opened from a spec.

Each is used through LangGraph's public saver API only (``list``, ``get_tuple``); opening one
is all that differs between them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import CheckpointTuple

from .errors import InvalidInput, ServerError, ServerUnavailable
from .langgraph import RedisSaver
from .urls import redact

__all__ = ["SOURCES", "Source", "open_source", "source_kind"]

# langgraph-checkpoint-redis' list() returns 10,000 checkpoints unless given a limit.
LCR_LIST_LIMIT = 1_000_000

SOURCES = """\
  sqlite:///path/to/file.db (or the path of an existing file)   langgraph-checkpoint-sqlite
  postgresql://user:password@host:5432/db                       langgraph-checkpoint-postgres
  lcr+redis://host:6379/0 (lcr+rediss:// for TLS)               langgraph-checkpoint-redis
  redis://host:6379/0 (any stateline URL) with --from-prefix    another stateline prefix or server"""


@dataclass
class Source:
    """An open saver to read from: ``kind`` (sqlite, postgres, lcr, stateline) and ``name``
    (the spec with its secrets hidden, and the prefix of a stateline source)."""

    saver: Any
    kind: str
    name: str

    def get(self, thread: str, ns: str, checkpoint_id: str) -> CheckpointTuple | None:
        config = _config(thread, ns, checkpoint_id)
        if self.kind == "lcr":  # its get_tuple loses the pending writes of some checkpoints; its list does not
            return next(iter(self.saver.list(config, limit=1)), None)
        return self.saver.get_tuple(config)

    @property
    def list_limit(self) -> int | None:
        return LCR_LIST_LIMIT if self.kind == "lcr" else None


def source_kind(spec: str) -> str:
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    if scheme in ("lcr+redis", "lcr+rediss"):
        return "lcr"
    if scheme == "sqlite" or spec.lower().startswith("sqlite:"):
        return "sqlite"
    if not scheme and (spec.endswith((".db", ".sqlite", ".sqlite3")) or os.path.isfile(spec)):
        return "sqlite"
    if scheme.startswith(("redis", "rediss", "unix", "valkey")):
        return "stateline"
    raise InvalidInput(f"cannot tell what kind of saver {redact(spec)!r} is; a source is one of:\n{SOURCES}")


def _needs(package: str, extra: str) -> InvalidInput:
    return InvalidInput(f"reading this source needs {package}: pip install 'stateline[{extra}]'")


def _sqlite_path(spec: str) -> str:
    """sqlite:///abs/path, sqlite://rel/path, sqlite:path or a bare path."""
    for lead in ("sqlite://", "sqlite:"):
        if spec.lower().startswith(lead):
            return spec[len(lead) :]
    return spec


@contextmanager
def _sqlite(spec: Any, prefix: str, data_dir: str | None) -> Iterator[Any]:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        raise _needs("langgraph-checkpoint-sqlite", "migrate") from None
    path = _sqlite_path(spec)
    if not os.path.isfile(path):  # sqlite3 would create an empty database
        raise InvalidInput(f"no SQLite file at {path!r}")
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


@contextmanager
def _postgres(spec: Any, prefix: str, data_dir: str | None) -> Iterator[Any]:
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise _needs("langgraph-checkpoint-postgres and psycopg", "migrate") from None
    try:
        with PostgresSaver.from_conn_string(spec) as saver:
            yield saver
    except psycopg.Error as exc:  # libpq's messages name host and user, never a password
        kind = ServerUnavailable if isinstance(exc, psycopg.OperationalError) else ServerError
        raise kind(f"PostgreSQL at {redact(spec)!r}: {str(exc).strip()}") from exc


@contextmanager
def _lcr(spec: Any, prefix: str, data_dir: str | None) -> Iterator[Any]:
    try:
        from langgraph.checkpoint.redis import RedisSaver as LcrSaver
        from redis.exceptions import RedisError
    except ImportError:
        raise _needs("langgraph-checkpoint-redis", "migrate") from None
    try:
        with LcrSaver.from_conn_string(spec[len("lcr+") :]) as saver:
            saver.setup()  # its search indexes: they exist already where it was used
            yield saver
    except RedisError as exc:
        raise ServerError(
            f"langgraph-checkpoint-redis at {redact(spec)!r} (it needs RedisJSON and RediSearch): {exc}"
        ) from exc


@contextmanager
def _stateline(spec: Any, prefix: str, data_dir: str | None) -> Iterator[Any]:
    with RedisSaver(spec, prefix=prefix, data_dir=data_dir) as saver:
        yield saver


_OPENERS = {"sqlite": _sqlite, "postgres": _postgres, "lcr": _lcr, "stateline": _stateline}


@contextmanager
def open_source(spec: str | None, *, prefix: str = "stateline:", data_dir: str | None = None) -> Iterator[Source]:
    """The saver ``spec`` names (see ``SOURCES``; None: stateline's embedded server), closed
    on exit."""
    kind = "stateline" if spec is None else source_kind(spec)
    where = f"the embedded server in {data_dir or '.stateline'}" if spec is None else redact(spec)
    name = where + (f" prefix {prefix}" if kind == "stateline" else "")
    with _OPENERS[kind](spec, prefix, data_dir) as saver:
        yield Source(saver, kind, name)


def _config(thread: str, ns: str, checkpoint_id: str | None) -> Any:
    conf = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}
