"""Connections kept checked out between stateline's script calls, for plain clients.

For every command, redis-py checks a connection out of its pool (a lock, metrics, events)
and back in, around a retry wrapper and more metrics: about 15 µs of a 80 µs round trip on
a VM, a third of what a ``put`` adds to the round trip itself. stateline's single script
calls instead reuse a connection kept between calls:

- it is kept only after a whole request and reply (a reply may be an error), so it holds
  no stray data; redis-py disconnects a connection on any failure in
  ``send_packed_command`` and ``read_response``, and so do we between the two;
- a failure is retried as redis-py would, with the connection's own ``Retry``; a kept
  connection the server closed while it was idle (a restart, an idle timeout) is not
  polled for first, as the pool does: the call is sent once more, on a new connection.
  That is safe because stateline's scripts may run twice (a put run again finds itself
  stored and changes nothing); only a copy run twice reports its target as existing;
- at most ``_KEPT`` connections (and a quarter of the pool's limit) are kept; the others
  go back to the pool as usual.

Only plain clients qualify: a ``Redis`` with a redis-py ``ConnectionPool`` or
``BlockingConnectionPool`` (not Sentinel's, not a subclass), RESP2, no client
cache, no single shared connection and its own ``execute_command``; pipelines, clusters
and Sentinel masters always go through redis-py. redis-py's metrics do not count the
calls made here.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import redis
import redis.asyncio as aredis
from redis import connection as sync_conn
from redis import exceptions as rx
from redis.asyncio import connection as async_conn

__all__ = ["held"]

_KEPT = 8

# client -> its _Held / _AsyncHeld, or None when it does not qualify
_BY_CLIENT: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
# A forked child must not talk over its parent's sockets (its pools start over as well).
os.register_at_fork(after_in_child=_BY_CLIENT.clear)


def held(client: Any) -> Any:
    """The kept connections of ``client``, or None if it does not qualify."""
    try:
        return _BY_CLIENT[client]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: not a redis-py client
        return None
    _BY_CLIENT[client] = found = _for(client)
    return found


def _for(client: Any) -> Any:
    sync = isinstance(client, redis.Redis)
    if not sync and not isinstance(client, aredis.Redis):
        return None
    base, module = (redis.Redis, sync_conn) if sync else (aredis.Redis, async_conn)
    pool = client.connection_pool
    if (
        type(client).execute_command is not base.execute_command  # a subclass that wraps it
        or type(pool) not in (module.ConnectionPool, module.BlockingConnectionPool)  # Sentinel's, custom ones
        or getattr(client, "connection", None) is not None  # single_connection_client
        or getattr(pool, "cache", None) is not None
        or str(pool.connection_kwargs.get("protocol") or 2) != "2"  # RESP3 may push data unasked
    ):
        return None
    keep = min(_KEPT, pool.max_connections // 4)
    if keep < 1:
        return None
    return (_Held if sync else _AsyncHeld)(pool, keep)


class _Held:
    __slots__ = ("pool", "keep", "idle")

    def __init__(self, pool: Any, keep: int) -> None:
        self.pool, self.keep, self.idle = pool, keep, []

    def call(self, args: tuple[Any, ...]) -> Any:
        """``args`` sent and its reply read, as ``execute_command`` does for a command
        without a response callback (EVALSHA)."""
        try:
            conn, kept = self.idle.pop(), True
        except IndexError:
            conn, kept = self.pool.get_connection(), False
        try:
            try:
                reply = _sent(conn, args)
            except rx.ConnectionError:
                if not kept:
                    raise
                conn.disconnect()  # closed while kept: sending reconnects it
                reply = _sent(conn, args)
        except rx.ResponseError:  # a whole reply: the connection is in order
            self._keep(conn)
            raise
        except BaseException:
            conn.disconnect()  # maybe sent and not read (an interrupt between the two)
            self.pool.release(conn)
            raise
        self._keep(conn)
        return reply

    def _keep(self, conn: Any) -> None:
        if len(self.idle) < self.keep:
            self.idle.append(conn)
        else:
            self.pool.release(conn)


def _sent(conn: Any, args: tuple[Any, ...]) -> Any:
    """The reply to ``args``, retried by the connection's ``Retry`` as redis-py does."""

    def round_trip() -> Any:
        conn.send_packed_command(conn.pack_command(*args))
        return conn.read_response()

    return conn.retry.call_with_retry(round_trip, lambda _error: conn.disconnect())


class _AsyncHeld(_Held):
    """_Held for asyncio clients (whose pool, retry and connections are awaited)."""

    __slots__ = ()

    async def call(self, args: tuple[Any, ...]) -> Any:  # type: ignore[override]
        try:
            conn, kept = self.idle.pop(), True
        except IndexError:
            conn, kept = await self.pool.get_connection(), False
        try:
            try:
                reply = await _asent(conn, args)
            except rx.ConnectionError:
                if not kept:
                    raise
                await conn.disconnect()
                reply = await _asent(conn, args)
        except rx.ResponseError:
            await self._akeep(conn)
            raise
        except BaseException:  # a cancellation included: the reply may still be on its way
            await conn.disconnect(nowait=True)
            await self.pool.release(conn)
            raise
        await self._akeep(conn)
        return reply

    async def _akeep(self, conn: Any) -> None:
        if len(self.idle) < self.keep:
            self.idle.append(conn)
        else:
            await self.pool.release(conn)


async def _asent(conn: Any, args: tuple[Any, ...]) -> Any:
    async def round_trip() -> Any:
        await conn.send_packed_command(conn.pack_command(*args))
        return await conn.read_response()

    return await conn.retry.call_with_retry(round_trip, lambda _error: conn.disconnect())
