"""The checkpointers a run compares, behind one small interface.

Every Redis client used here goes through a connection class that counts the packets of
commands it sends (one per round trip: a pipeline is one), so the run reports how many
round trips each operation takes. Nothing else is changed in the clients.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import redis
import redis.asyncio as aredis
from redis import connection as sync_conn
from redis.asyncio import connection as async_conn

__all__ = ["Backend", "BACKENDS", "Env", "TimedSaver", "round_trips", "FLOOR_SCRIPT", "SAVER_CLIENT", "resp_bytes"]

_SENT = [0]


def round_trips() -> int:
    """Command packets sent so far by every benchmark client (sync and async)."""
    return _SENT[0]


class _CountingConnection(sync_conn.Connection):
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _SENT[0] += 1
        super().send_packed_command(command, check_health)


class _AsyncCountingConnection(async_conn.Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _SENT[0] += 1
        await super().send_packed_command(command, check_health)


# The client name of stateline's savers' connections: the server's per-connection byte
# counters (CLIENT LIST tot-net-in / tot-net-out) tell what one of their calls sends and gets.
SAVER_CLIENT = "stateline-bench-saver"


def sync_client(url: str, name: str | None = None) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, connection_class=_CountingConnection, client_name=name)
    return redis.Redis(connection_pool=pool)


# Async clients share one bounded, blocking pool (200 connections): 1,000 concurrent
# threads queue for a connection, as in a service, instead of opening one each.
ASYNC_POOL_SIZE = 200


def async_client(url: str, name: str | None = None) -> aredis.Redis:
    pool = aredis.BlockingConnectionPool.from_url(
        url,
        connection_class=_AsyncCountingConnection,
        max_connections=ASYNC_POOL_SIZE,
        timeout=None,
        client_name=name,
    )
    return aredis.Redis(connection_pool=pool)


# The floor: the least an atomic checkpoint write can cost on this server, a bare EVALSHA
# doing three writes (the record, one value, one index entry), and a bare GET for reads.
FLOOR_SCRIPT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""


def resp_bytes(args: tuple[Any, ...]) -> int:
    """Bytes of ``args`` sent as one command (RESP: ``*n``, then ``$len`` and each argument)."""
    total = len(f"*{len(args)}\r\n")
    for a in args:
        n = len(a) if isinstance(a, bytes) else len(str(a).encode())
        total += len(f"${n}\r\n") + n + 2
    return total


@dataclass
class Env:
    """Where backends live in this run: server URLs and a scratch directory."""

    plain_url: str
    modules_url: str | None
    tmp: str


class Floor:
    """Not a saver: the floor operations, with the same interface the workloads use."""

    def __init__(self, client: Any, is_async: bool, tag: str) -> None:
        self.client = client
        self.is_async = is_async
        self.keys = (f"floor:{{{tag}}}:d", f"floor:{{{tag}}}:i")
        self.get_key = f"floor:{{{tag}}}:s"
        self.sha = ""

    def prepare(self, payload: bytes, value: bytes) -> Any:
        self.payload, self.value = payload, value
        if self.is_async:
            return self._aprepare()
        self.sha = self.client.script_load(FLOOR_SCRIPT)
        self.client.set(self.get_key, payload)
        return None

    async def _aprepare(self) -> None:
        self.sha = await self.client.script_load(FLOOR_SCRIPT)
        await self.client.set(self.get_key, self.payload)

    def write(self, i: int) -> Any:
        return self.client.evalsha(self.sha, 2, *self.keys, f"c:{i}", self.payload, f"b:{i}", self.value)

    def read(self, _i: int = 0) -> Any:
        return self.client.get(self.get_key)

    def size_to(self, request: int, reply: int) -> Any:
        """Makes ``write_sized`` send ``request`` bytes (its last value padded) and
        ``read_sized`` receive ``reply`` bytes (a GET of a value that long), to the byte but
        for the digits of the counter in the field names; returns what to await, if async."""
        bare = resp_bytes(("EVALSHA", self.sha, 2, *self.keys, "c:0", self.payload, "b:0", b""))
        self.sized_value = b"v" * max(0, request - bare - len(str(request)))
        self.sized_key = f"{self.get_key}:{reply}"
        value = b"r" * max(0, reply - 4 - len(str(reply)))  # the reply: $<len>\r\n<value>\r\n
        return self.client.set(self.sized_key, value)

    def write_sized(self, i: int) -> Any:
        return self.client.evalsha(self.sha, 2, *self.keys, f"c:{i}", self.payload, f"b:{i}", self.sized_value)

    def read_sized(self, _i: int = 0) -> Any:
        return self.client.get(self.sized_key)

    def close(self) -> Any:
        return self.client.aclose() if self.is_async else self.client.close()


@dataclass(frozen=True)
class Backend:
    key: str
    label: str
    family: str  # stateline | peer | local | floor
    is_async: bool = False
    shallow: bool = False
    server: str | None = None  # plain | modules | None

    # -- opening and closing ---------------------------------------------------------------

    def open(self, env: Env, tag: str) -> Any:
        """The saver (or Floor), for sync backends."""
        k = self.key
        if k in ("stateline", "stateline-shallow"):
            from stateline.langgraph import RedisSaver, ShallowRedisSaver

            cls = ShallowRedisSaver if self.shallow else RedisSaver
            return cls(client=sync_client(env.plain_url, SAVER_CLIENT), prefix=_sl_prefix(tag))
        if k in ("stateline-plain", "stateline-encrypted"):
            from stateline import Encryption
            from stateline.langgraph import RedisSaver

            # (the cost of each setting: compression is the default; a fixed key, it is a benchmark)
            settings: dict[str, Any] = (
                {"compression": False} if k == "stateline-plain" else {"encryption": Encryption({"bench": b"k" * 32})}
            )
            return RedisSaver(client=sync_client(env.plain_url, SAVER_CLIENT), prefix=_sl_prefix(tag), **settings)
        if k in ("lcr", "lcr-shallow"):
            from langgraph.checkpoint.redis import RedisSaver as PeerSaver
            from langgraph.checkpoint.redis import ShallowRedisSaver as PeerShallowSaver

            peer_cls = PeerShallowSaver if self.shallow else PeerSaver
            assert env.modules_url is not None
            peer = peer_cls(redis_client=sync_client(env.modules_url), **_lcr_prefixes(tag))
            peer.setup()
            return peer
        if k == "inmemory":
            from langgraph.checkpoint.memory import InMemorySaver

            return InMemorySaver()
        if k == "sqlite":
            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(os.path.join(env.tmp, f"{tag}.sqlite"), check_same_thread=False)
            local = SqliteSaver(conn)
            local.setup()
            return local
        if k == "floor":
            return Floor(sync_client(env.plain_url), False, tag)
        raise ValueError(f"{k} is not a sync backend")

    async def aopen(self, env: Env, tag: str) -> Any:
        k = self.key
        if k in ("stateline-async", "stateline-shallow-async"):
            from stateline.langgraph import AsyncRedisSaver, AsyncShallowRedisSaver

            cls = AsyncShallowRedisSaver if self.shallow else AsyncRedisSaver
            return cls(aclient=async_client(env.plain_url, SAVER_CLIENT), prefix=_sl_prefix(tag))
        if k in ("lcr-async", "lcr-shallow-async"):
            from langgraph.checkpoint.redis.aio import AsyncRedisSaver as AsyncPeerSaver
            from langgraph.checkpoint.redis.ashallow import AsyncShallowRedisSaver as AsyncPeerShallowSaver

            peer_cls = AsyncPeerShallowSaver if self.shallow else AsyncPeerSaver
            assert env.modules_url is not None
            peer = peer_cls(redis_client=async_client(env.modules_url), **_lcr_prefixes(tag))
            await peer.asetup()
            return peer
        if k == "inmemory-async":
            from langgraph.checkpoint.memory import InMemorySaver

            return InMemorySaver()
        if k == "sqlite-async":
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            conn = await aiosqlite.connect(os.path.join(env.tmp, f"{tag}.sqlite"))
            local = AsyncSqliteSaver(conn)
            await local.setup()
            return local
        if k == "floor-async":
            return Floor(async_client(env.plain_url), True, tag)
        raise ValueError(f"{k} is not an async backend")

    def close(self, saver: Any) -> None:
        if isinstance(saver, Floor):
            saver.close()
        elif self.family == "stateline":
            saver._conn.sync.close()
        elif self.family == "peer":
            saver._redis.close()
        elif self.key == "sqlite":
            saver.conn.close()

    async def aclose(self, saver: Any) -> None:
        if isinstance(saver, Floor):
            await saver.close()
        elif self.family == "stateline":
            await saver._conn.aio.aclose()
        elif self.family == "peer":
            await saver._redis.aclose()
        elif self.key == "sqlite-async":
            await saver.conn.close()

    # -- what a workload needs to know -----------------------------------------------------

    @property
    def url_kind(self) -> str | None:
        return self.server

    def redis_keys(self, client: redis.Redis, tag: str, thread_id: str) -> list[str | bytes]:
        """The keys holding ``thread_id`` for this backend (for MEMORY USAGE), and no other
        thread's: not those of a thread whose id starts with it (the warm-up thread)."""
        if self.family == "stateline":
            # Its thread's two keys, named as the saver names them (the discovery index
            # shards, shared with other threads, are left out).
            from stateline.keys import Schema

            return list(Schema(_sl_prefix(tag)).thread(thread_id).all)
        if self.family == "peer":
            # The thread id is a whole ':'-separated component of every key of the thread.
            escaped = "".join("\\" + c if c in "*?[]\\" else c for c in thread_id)
            return list(client.scan_iter(match=f"*:{escaped}:*", count=1000))
        return []


def _sl_prefix(tag: str) -> str:
    return f"sl-{tag}:"


class _PeerPrefixes(TypedDict):
    checkpoint_prefix: str
    checkpoint_write_prefix: str


def _lcr_prefixes(tag: str) -> _PeerPrefixes:
    t = tag.replace("-", "_")
    return {"checkpoint_prefix": f"checkpoint_{t}", "checkpoint_write_prefix": f"checkpoint_write_{t}"}


BACKENDS: dict[str, Backend] = {
    b.key: b
    for b in (
        Backend("stateline", "stateline RedisSaver", "stateline", server="plain"),
        Backend("stateline-plain", "stateline RedisSaver, compression off", "stateline", server="plain"),
        Backend("stateline-encrypted", "stateline RedisSaver, compressed and encrypted", "stateline", server="plain"),
        Backend("stateline-shallow", "stateline ShallowRedisSaver", "stateline", shallow=True, server="plain"),
        Backend("stateline-async", "stateline AsyncRedisSaver", "stateline", is_async=True, server="plain"),
        Backend(
            "stateline-shallow-async",
            "stateline AsyncShallowRedisSaver",
            "stateline",
            is_async=True,
            shallow=True,
            server="plain",
        ),
        Backend("lcr", "langgraph-checkpoint-redis RedisSaver", "peer", server="modules"),
        Backend("lcr-shallow", "langgraph-checkpoint-redis ShallowRedisSaver", "peer", shallow=True, server="modules"),
        Backend("lcr-async", "langgraph-checkpoint-redis AsyncRedisSaver", "peer", is_async=True, server="modules"),
        Backend(
            "lcr-shallow-async",
            "langgraph-checkpoint-redis AsyncShallowRedisSaver",
            "peer",
            is_async=True,
            shallow=True,
            server="modules",
        ),
        Backend("inmemory", "LangGraph InMemorySaver", "local"),
        Backend("inmemory-async", "LangGraph InMemorySaver (async API)", "local", is_async=True),
        Backend("sqlite", "LangGraph SqliteSaver", "local"),
        Backend("sqlite-async", "LangGraph AsyncSqliteSaver", "local", is_async=True),
        Backend("floor", "floor: bare EVALSHA (3 writes) / GET", "floor", server="plain"),
        Backend("floor-async", "floor, asyncio client", "floor", is_async=True, server="plain"),
    )
}


# -- timing a saver inside a real graph ------------------------------------------------------

from langgraph.checkpoint.base import BaseCheckpointSaver  # noqa: E402


class TimedSaver(BaseCheckpointSaver):
    """Delegates every checkpointer call LangGraph makes to ``inner`` and records, per call,
    ``(name, wall seconds, CPU seconds of the calling thread, start)`` (perf_counter).
    LangGraph makes these calls from its background threads, sometimes overlapping."""

    def __init__(self, inner: BaseCheckpointSaver, calls: list[tuple[str, float, float, float]] | None = None) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner
        self.calls: list[tuple[str, float, float, float]] = [] if calls is None else calls

    def with_allowlist(self, extra_allowlist: Any) -> TimedSaver:
        inner = self.inner.with_allowlist(extra_allowlist)
        return self if inner is self.inner else TimedSaver(inner, self.calls)

    def _timed(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.calls.append((name, time.perf_counter() - t0, time.thread_time() - c0, t0))

    async def _atimed(self, name: str, coro: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return await coro
        finally:
            self.calls.append((name, time.perf_counter() - t0, time.thread_time() - c0, t0))

    @property
    def config_specs(self) -> list:
        return self.inner.config_specs

    def get_next_version(self, current: Any, channel: Any) -> Any:
        return self.inner.get_next_version(current, channel)

    def get_tuple(self, config: Any) -> Any:
        return self._timed("get_tuple", self.inner.get_tuple, config)

    def list(self, config: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(self._timed("list", lambda: list(self.inner.list(config, **kwargs))))

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return self._timed("put", self.inner.put, config, checkpoint, metadata, new_versions)

    def put_writes(self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        return self._timed("put_writes", self.inner.put_writes, config, writes, task_id, task_path)

    def get_delta_channel_history(self, *, config: Any, channels: Any) -> Any:
        return self._timed("delta", self.inner.get_delta_channel_history, config=config, channels=channels)

    async def aget_tuple(self, config: Any) -> Any:
        return await self._atimed("get_tuple", self.inner.aget_tuple(config))

    async def alist(self, config: Any, **kwargs: Any) -> Any:
        async def collect() -> list:
            return [x async for x in self.inner.alist(config, **kwargs)]

        for item in await self._atimed("list", collect()):
            yield item

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await self._atimed("put", self.inner.aput(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        return await self._atimed("put_writes", self.inner.aput_writes(config, writes, task_id, task_path))

    async def aget_delta_channel_history(self, *, config: Any, channels: Any) -> Any:
        return await self._atimed("delta", self.inner.aget_delta_channel_history(config=config, channels=channels))
