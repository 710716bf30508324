"""Defaults that hold under load: a client stateline makes from a URL waits for a free
connection of a bounded pool (redis-py's default pool raises "Too many connections" once
100 calls are in flight); a client the user passes is used as it is; the client of the other
kind derived from it keeps its pool's class and limits."""

from __future__ import annotations

import asyncio
import operator
import uuid
from typing import Annotated, TypedDict

import pytest
import redis
import redis.asyncio as aredis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline import Checkpoint, RedisCheckpointer, ServerUnavailable
from stateline.connection import MAX_CONNECTIONS, POOL_TIMEOUT
from stateline.langgraph import AsyncRedisSaver, RedisSaver


def checkpoint(n: int) -> dict:
    c = empty_checkpoint()
    c["id"] = str(uuid6())
    c["channel_values"] = {"n": n}
    c["channel_versions"] = {"n": n + 1}
    return c


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


async def put_then_get(saver: AsyncRedisSaver, thread: str) -> int:
    await saver.aput(cfg(thread), checkpoint(1), {}, {"n": 2})
    got = await saver.aget_tuple(cfg(thread))
    assert got is not None
    return got.checkpoint["channel_values"]["n"]


async def test_300_concurrent_puts_and_reads_on_a_saver_made_from_a_url(url: str, prefix: str) -> None:
    saver = AsyncRedisSaver(url, prefix=prefix)
    got = await asyncio.gather(*(put_then_get(saver, f"t{i}") for i in range(300)))
    assert got == [1] * 300
    await saver.aclose()


async def test_200_concurrent_checkpointer_saves(url: str, prefix: str) -> None:
    cp = RedisCheckpointer(url, prefix=prefix)
    saved = [Checkpoint(session_id=f"s{i}", state={"i": i}) for i in range(200)]
    await asyncio.gather(*(cp.save(c) for c in saved))
    loaded = await asyncio.gather(*(cp.load(f"s{i}") for i in range(200)))
    assert [c.state for c in loaded if c is not None] == [{"i": i} for i in range(200)]
    await cp.close()


class Fan(TypedDict):
    log: Annotated[list[str], operator.add]


BRANCHES = ("b1", "b2", "b3", "b4")


def fan_graph(saver: AsyncRedisSaver):  # type: ignore[no-untyped-def]
    """a -> (b1 | b2 | b3 | b4) -> c: a checkpoint per step, and four branches' writes at once."""
    from langgraph.graph import END, START, StateGraph

    def node(name: str):  # type: ignore[no-untyped-def]
        def run(state: Fan) -> dict:
            return {"log": [name]}

        return run

    b = StateGraph(Fan)
    for name in ("a", *BRANCHES, "c"):
        b.add_node(name, node(name))
    b.add_edge(START, "a")
    for name in BRANCHES:
        b.add_edge("a", name)
    b.add_edge(list(BRANCHES), "c")
    b.add_edge("c", END)
    return b.compile(checkpointer=saver)


async def test_50_concurrent_graph_runs_on_one_saver_made_from_a_url(url: str, prefix: str) -> None:
    pytest.importorskip("langgraph.graph", reason="needs langgraph")
    saver = AsyncRedisSaver(url, prefix=prefix)
    graph = fan_graph(saver)
    threads = [{"configurable": {"thread_id": f"run-{uuid.uuid4().hex[:8]}"}} for _ in range(50)]
    outs = await asyncio.gather(*(graph.ainvoke({"log": ["in"]}, t, durability="sync") for t in threads))
    assert all(o["log"][:2] == ["in", "a"] and sorted(o["log"][2:6]) == list(BRANCHES) for o in outs)
    assert all(o["log"][6:] == ["c"] for o in outs)
    states = await asyncio.gather(*(graph.aget_state(t) for t in threads))
    assert [s.values for s in states] == outs
    await saver.aclose()


# -- the pools stateline makes, and the twins it derives ------------------------------------------


def limits(pool: object) -> tuple[str, int, float | None]:
    return type(pool).__name__, pool.max_connections, getattr(pool, "timeout", None)  # type: ignore[attr-defined]


async def test_clients_made_from_a_url_wait_on_a_bounded_pool(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    tuned = RedisSaver(url, prefix=prefix, max_connections=7, pool_timeout=1.5)
    assert limits(saver._conn.sync.connection_pool) == ("BlockingConnectionPool", MAX_CONNECTIONS, POOL_TIMEOUT)
    assert limits(saver._conn.aio.connection_pool) == ("BlockingConnectionPool", MAX_CONNECTIONS, POOL_TIMEOUT)
    assert limits(tuned._conn.sync.connection_pool) == ("BlockingConnectionPool", 7, 1.5)
    assert limits(tuned._conn.aio.connection_pool) == ("BlockingConnectionPool", 7, 1.5)
    await saver.aclose()
    await tuned.aclose()


async def test_a_small_pool_serves_many_calls_with_its_own_connections(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = AsyncRedisSaver(url, prefix=prefix, max_connections=4, client_name="small-pool")
    got = await asyncio.gather(*(put_then_get(saver, f"t{i}") for i in range(100)))
    assert got == [1] * 100
    mine = [c for c in client.client_list() if c["name"] == "small-pool"]
    assert 1 <= len(mine) <= 4
    await saver.aclose()


async def test_a_call_waits_pool_timeout_for_a_connection_then_fails_clearly(url: str, prefix: str) -> None:
    saver = AsyncRedisSaver(url, prefix=prefix, max_connections=1, pool_timeout=0.3)
    await saver.aput(cfg("t"), checkpoint(0), {}, {"n": 1})
    holder = aredis.Redis(connection_pool=saver._conn.aio.connection_pool, single_connection_client=True)
    await holder.ping()  # holds the pool's one connection
    with pytest.raises(ServerUnavailable, match="No connection available"):
        await saver.aget_tuple(cfg("t"))
    waiting = asyncio.create_task(saver.aget_tuple(cfg("t")))
    await holder.aclose()  # gives it back: the waiting call gets it
    assert (await waiting).checkpoint["channel_values"]["n"] == 0
    await saver.aclose()


def test_a_client_passed_in_is_used_as_given(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    saver = RedisSaver(client, prefix=prefix)
    assert saver._conn.sync is client
    assert limits(client.connection_pool)[0] == "ConnectionPool"
    client.close()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda url: redis.BlockingConnectionPool.from_url(url, max_connections=4, timeout=3),
            ("BlockingConnectionPool", 4, 3),
        ),
        (lambda url: redis.ConnectionPool.from_url(url, max_connections=9), ("ConnectionPool", 9, None)),
    ],
)
async def test_the_async_twin_of_a_sync_client_keeps_its_pool_class_and_limits(
    url: str, prefix: str, make: object, expected: tuple
) -> None:
    client = redis.Redis(connection_pool=make(url))  # type: ignore[operator]
    saver = AsyncRedisSaver(client, prefix=prefix)
    twin = saver._conn.aio
    assert isinstance(twin, aredis.Redis)
    assert limits(twin.connection_pool) == expected
    await saver.aput(cfg("t"), checkpoint(0), {}, {"n": 1})
    assert (await saver.aget_tuple(cfg("t"))) is not None
    await saver.aclose()
    client.close()


async def test_the_sync_twin_of_an_async_client_keeps_its_pool_class_and_limits(url: str, prefix: str) -> None:
    aclient = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(url, max_connections=5, timeout=2))
    saver = RedisSaver(aclient, prefix=prefix)
    twin = saver._conn.sync
    assert isinstance(twin, redis.Redis)
    assert limits(twin.connection_pool) == ("BlockingConnectionPool", 5, 2)
    saver.put(cfg("t"), checkpoint(0), {}, {"n": 1})
    assert saver.get_tuple(cfg("t")) is not None
    saver.close()
    await aclient.aclose()
