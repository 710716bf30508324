"""URL or client -> the sync and async redis-py clients stateline drives.

A saver or checkpointer may be given a URL, a sync client or an async client; it gets
the other kind lazily from the same connection settings, so both its sync and its async
methods talk to the server directly (no event-loop thread bridging one to the other).
"""

from __future__ import annotations

import inspect
from typing import Any

import redis
import redis.asyncio as aredis
from redis import connection as sync_conn
from redis.asyncio import connection as async_conn

from .embedded import EmbeddedServer
from .errors import InvalidInput

__all__ = ["Connection"]

_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        raise InvalidInput(
            f"unsupported server URL {url!r}: use redis://host:port/db, rediss:// (TLS) or unix:///path"
        )
    return url


def _twin_pool(pool: Any, target: Any) -> Any:
    """A connection pool of the other kind (sync <-> async) with the same settings."""
    cls = getattr(target, pool.connection_class.__name__, None)
    if cls is None:
        raise InvalidInput(
            f"cannot derive a client of the other kind from a {pool.connection_class.__name__} "
            "connection: pass both a sync and an async client"
        )
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            accepted |= set(inspect.signature(klass.__init__).parameters)
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in accepted}
    return target.ConnectionPool(connection_class=cls, **kwargs)


def _binary_safe(client: Any) -> Any:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("decode_responses"):
        raise InvalidInput("the client decodes responses (decode_responses=True); stateline stores bytes")
    return client


class Connection:
    """Holds the clients of one server; creates each kind on first use."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        aclient: Any = None,
        data_dir: str | None = None,
        **options: Any,
    ) -> None:
        if url is not None and (client is not None or aclient is not None):
            raise InvalidInput("pass either a URL or a client, not both")
        self._url = None if url is None else _check_url(url)
        self._sync = None if client is None else _binary_safe(client)
        self._async = None if aclient is None else _binary_safe(aclient)
        self._created: list[Any] = []
        self._options = options
        self._data_dir = data_dir

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = EmbeddedServer(self._data_dir or ".stateline").url
        return self._url

    @property
    def sync(self) -> Any:
        if self._sync is None:
            if self._async is not None:
                pool = _twin_pool(self._async.connection_pool, sync_conn)
                self._sync = redis.Redis(connection_pool=pool)
            else:
                self._sync = redis.Redis.from_url(self.url, **self._options)
            self._created.append(self._sync)
        return self._sync

    @property
    def aio(self) -> Any:
        if self._async is None:
            if self._sync is not None and not self._created:
                pool = _twin_pool(self._sync.connection_pool, async_conn)
                self._async = aredis.Redis(connection_pool=pool)
            else:
                self._async = aredis.Redis.from_url(self.url, **self._options)
            self._created.append(self._async)
        return self._async

    def close(self) -> None:
        """Closes the sync client stateline created (a client the caller passed stays open)."""
        if self._sync in self._created:
            self._sync.close()

    async def aclose(self) -> None:
        """Closes every client stateline created."""
        if self._async in self._created:
            await self._async.aclose()
        self.close()
