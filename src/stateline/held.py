"""Connections kept checked out between stateline's script calls, for plain clients.

For every command, redis-py checks a connection out of its pool (a lock, metrics, events)
and back in, around a retry wrapper and more metrics: about 15 µs of a 80 µs round trip on
a VM, a third of what a ``put`` adds to the round trip itself. stateline's single script
calls instead reuse a connection kept between calls, doing what the pool would do:

- before reuse the socket is checked as the pool checks it (``can_read``): a connection the
  server closed meanwhile (a restart, an idle timeout) is reconnected before anything is
  sent on it;
- a connection is kept only after a whole request and reply (a reply may be an error), so
  it holds no stray data; redis-py disconnects a connection on any failure in
  ``send_packed_command`` and ``read_response``, and so do we between the two;
- a failure is retried by the connection's own ``Retry``, as redis-py retries it;
- after each call, what ``pool.release`` does: reconnect if a maintenance notification
  asked for it, re-authenticate if the credentials were renewed meanwhile;
- the kept connections belong to the pool (clients sharing a pool share them): at most
  ``_KEPT``, and at most a quarter of the pool's limit; the others go back to the pool.

Only plain clients qualify: a ``Redis`` with a redis-py ``ConnectionPool`` or
``BlockingConnectionPool`` (not Sentinel's, not a subclass), no client-side cache, no
single shared connection, and redis-py's own ``execute_command`` (a client that wraps it,
as tracing integrations do, is left to it). Pipelines, clusters and Sentinel masters always
go through redis-py. redis-py's own metrics do not count the calls made here.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import redis
import redis.asyncio as aredis
from redis import connection as sync_conn
from redis import exceptions as rx
from redis.asyncio import connection as async_conn

__all__ = ["held"]

_KEPT = 8

# client -> the kept connections of its pool, or None when the client does not qualify
_BY_CLIENT: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_BY_POOL: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()  # two threads meeting a client first must share one _Held


def _forget_all() -> None:
    # A forked child must not talk over its parent's sockets (its pools start over too).
    _BY_CLIENT.clear()
    _BY_POOL.clear()


os.register_at_fork(after_in_child=_forget_all)


def held(client: Any) -> Any:
    """The kept connections of ``client``'s pool, or None if it does not qualify."""
    try:
        return _BY_CLIENT[client]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: not a redis-py client
        return None
    with _LOCK:
        if client not in _BY_CLIENT:
            _BY_CLIENT[client] = _for(client)
        return _BY_CLIENT[client]


def _plain(client: Any, base: type) -> bool:
    method = type(client).execute_command
    return (
        "execute_command" not in vars(client)
        and method is base.execute_command
        and not hasattr(method, "__wrapped__")  # wrapt / functools.wraps: an instrumented client
        and getattr(method, "__module__", None) == base.__module__
    )


def _for(client: Any) -> Any:
    sync = isinstance(client, redis.Redis)
    if not sync and not isinstance(client, aredis.Redis):
        return None
    base, module = (redis.Redis, sync_conn) if sync else (aredis.Redis, async_conn)
    pool = client.connection_pool
    if (
        not _plain(client, base)
        or type(pool) not in (module.ConnectionPool, module.BlockingConnectionPool)  # Sentinel's, custom ones
        or getattr(client, "_single_connection_client", False)  # (the sync client's name)
        or getattr(client, "single_connection_client", False)  # (the asyncio client's)
        or getattr(pool, "cache", None) is not None
    ):
        return None
    found = _BY_POOL.get(pool)
    if found is None:
        keep = min(_KEPT, pool.max_connections // 4)
        if keep < 1:
            return None
        found = _BY_POOL[pool] = (_Held if sync else _AsyncHeld)(pool, keep)
    return found


class _Held:
    # The pool is held weakly: it is the key of _BY_POOL, which this is the value of.
    __slots__ = ("pool_ref", "keep", "idle", "pushes")

    def __init__(self, pool: Any, keep: int) -> None:
        self.pool_ref, self.keep, self.idle = weakref.ref(pool), keep, []
        # With maintenance notifications on, data waiting on an idle sync connection is a push
        # the next read handles, not stray data (the pool decides the same way).
        self.pushes = bool(pool.maint_notifications_enabled())

    def _pool(self) -> Any:
        pool = self.pool_ref()
        if pool is None:  # (only while the pool's last client is being collected)
            raise rx.ConnectionError("the connection pool was closed")
        return pool

    def call(self, args: tuple[Any, ...]) -> Any:
        """``args`` sent and its reply read, as ``execute_command`` does for a command
        without a response callback (EVALSHA)."""
        try:
            conn = self.idle.pop()
        except IndexError:
            conn = self._pool().get_connection()  # checked by the pool
        else:
            try:
                if conn.can_read() and not self.pushes:
                    conn.disconnect()  # stray data: start over (sending reconnects)
            except (rx.ConnectionError, rx.TimeoutError, OSError):
                conn.disconnect()  # closed by the server while kept
        try:
            reply = conn.retry.call_with_retry(lambda: _round_trip(conn, args), lambda _error: conn.disconnect())
        except rx.ResponseError:  # a whole reply: the connection is in order
            self._keep(conn)
            raise
        except BaseException:
            conn.disconnect()  # maybe sent and not read (an interrupt between the two)
            self._pool().release(conn)
            raise
        self._keep(conn)
        return reply

    def _keep(self, conn: Any) -> None:
        try:
            if conn.should_reconnect():  # as pool.release
                conn.disconnect()
            conn.re_auth()  # as the pool's release event: a no-op unless credentials were renewed
        except BaseException:
            conn.disconnect()
            self._pool().release(conn)
            raise
        if len(self.idle) < self.keep:
            self.idle.append(conn)
        else:
            self._pool().release(conn)


def _round_trip(conn: Any, args: tuple[Any, ...]) -> Any:
    conn.send_packed_command(conn.pack_command(*args))
    return conn.read_response()


class _AsyncHeld(_Held):
    """_Held for asyncio clients (whose pool, retry and connections are awaited)."""

    __slots__ = ()

    async def call(self, args: tuple[Any, ...]) -> Any:  # type: ignore[override]
        try:
            conn = self.idle.pop()
        except IndexError:
            conn = await self._pool().get_connection()
        else:
            try:
                # asyncio's can_read() cannot tell a waiting push from the server's close:
                # either way the connection starts over (sending reconnects)
                if await conn.can_read():
                    await conn.disconnect()
            except (rx.ConnectionError, rx.TimeoutError, OSError):
                await conn.disconnect()
        try:
            reply = await conn.retry.call_with_retry(lambda: _around_trip(conn, args), lambda _error: conn.disconnect())
        except rx.ResponseError:
            await self._akeep(conn)
            raise
        except BaseException:  # a cancellation included: the reply may still be on its way
            await conn.disconnect(nowait=True)
            await self._pool().release(conn)
            raise
        await self._akeep(conn)
        return reply

    async def _akeep(self, conn: Any) -> None:
        try:
            if conn.should_reconnect():
                await conn.disconnect()
            await conn.re_auth()
        except BaseException:
            await conn.disconnect(nowait=True)
            await self._pool().release(conn)
            raise
        if len(self.idle) < self.keep:
            self.idle.append(conn)
        else:
            await self._pool().release(conn)


async def _around_trip(conn: Any, args: tuple[Any, ...]) -> Any:
    await conn.send_packed_command(conn.pack_command(*args))
    return await conn.read_response()
