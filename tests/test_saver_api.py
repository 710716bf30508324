"""The saver's surface beyond the conformance suite: clients, copies, loops, lifecycles."""

from __future__ import annotations

import asyncio
import copy

import pytest
import redis
import redis.asyncio as aredis
from langgraph.checkpoint.base import empty_checkpoint

from stateline import InvalidInput
from stateline.langgraph import AsyncRedisSaver, AsyncShallowRedisSaver, RedisSaver, ShallowRedisSaver


def cp(value: object, version: int = 1) -> dict:
    c = empty_checkpoint()
    c["channel_values"] = {"a": value}
    c["channel_versions"] = {"a": version}
    return c


def root(thread: str = "t") -> dict:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def test_one_saver_serves_sync_and_async_callers(url: str, prefix: str) -> None:
    with RedisSaver.from_url(url, prefix=prefix) as saver:
        saver.put(root(), cp("from sync"), {}, {"a": 1})

        async def read_then_write() -> object:
            got = await saver.aget_tuple(root())
            await saver.aput(root(), cp("from async", 2), {}, {"a": 2})
            await saver.aclose()
            return got.checkpoint["channel_values"]["a"]

        assert asyncio.run(read_then_write()) == "from sync"
        assert saver.get_tuple(root()).checkpoint["channel_values"]["a"] == "from async"


def test_an_async_saver_works_across_event_loops(url: str, prefix: str) -> None:
    saver = AsyncRedisSaver.from_url(url, prefix=prefix)

    async def step(i: int) -> object:
        await saver.aput(root(), cp(i, i + 1), {}, {"a": i + 1})
        return (await saver.aget_tuple(root())).checkpoint["channel_values"]["a"]

    assert [asyncio.run(step(i)) for i in range(3)] == [0, 1, 2]


async def test_clients_passed_in_are_used_and_left_open(url: str, prefix: str) -> None:
    sync_client, async_client = redis.Redis.from_url(url), aredis.Redis.from_url(url)
    async with AsyncRedisSaver(async_client, prefix=prefix) as saver:
        await saver.aput(root(), cp("x"), {}, {"a": 1})
        assert saver.get_tuple(root()).checkpoint["channel_values"] == {"a": "x"}  # a sync twin
    assert await async_client.ping()  # ours to close, not the saver's
    with RedisSaver(sync_client, prefix=prefix) as saver:
        assert saver.get_tuple(root()) is not None
    assert sync_client.ping()
    await async_client.aclose()
    sync_client.close()


def test_a_decoding_client_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="decode_responses"):
        RedisSaver(redis.Redis.from_url(url, decode_responses=True))


@pytest.mark.parametrize("bad", ["http://localhost", "localhost:6379", "redis+sentinel://127.0.0.1:1"])
def test_a_malformed_url_is_refused_at_construction(bad: str) -> None:
    with pytest.raises(InvalidInput):
        RedisSaver(bad)


def test_with_allowlist_copies_share_the_connection_and_keep_working(url: str, prefix: str) -> None:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    saver = RedisSaver(url, prefix=prefix, serde=JsonPlusSerializer(allowed_msgpack_modules=None))  # strict
    saver.put(root(), cp([1, 2, 3, 4, 5]), {}, {"a": 1})
    clone = saver.with_allowlist([("collections", "OrderedDict")])
    assert clone is not saver and clone.engine is not saver.engine
    assert clone.get_tuple(root()).checkpoint["channel_values"] == {"a": [1, 2, 3, 4, 5]}
    plain = copy.copy(saver)
    assert plain.get_tuple(root()) is not None


def test_shallow_savers_keep_one_checkpoint_and_keep_last_keeps_n(url: str, prefix: str) -> None:
    def fill(saver: RedisSaver, n: int) -> list[str]:
        cfg, ids = root(), []
        for i in range(n):
            c = cp([f"m{j}" for j in range(i + 4)], i + 1)
            cfg = saver.put(cfg, c, {"step": i}, {"a": i + 1})
            saver.put_writes(cfg, [("a", i)], "task")
            ids.append(c["id"])
        return ids

    for cls in (ShallowRedisSaver, AsyncShallowRedisSaver):
        shallow = cls(url, prefix=prefix + cls.__name__)
        ids = fill(shallow, 40)
        kept = list(shallow.list(root()))
        assert [t.checkpoint["id"] for t in kept] == [ids[-1]]
        assert kept[0].checkpoint["channel_values"]["a"] == [f"m{j}" for j in range(43)]
        assert kept[0].pending_writes == [("task", "a", 39)]
    last3 = RedisSaver(url, prefix=prefix + "k3", keep_last=3)
    ids = fill(last3, 10)
    assert [t.checkpoint["id"] for t in last3.list(root())] == ids[:-4:-1]


def test_prune_keep_last_n(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg, ids = root(), []
    for i in range(6):
        c = cp(i, i + 1)
        cfg = saver.put(cfg, c, {}, {"a": i + 1})
        ids.append(c["id"])
    saver.prune(["t"], keep_last=2)
    assert [t.checkpoint["id"] for t in saver.list(root())] == ids[:-3:-1]


def test_an_oversized_value_is_refused_and_nothing_is_stored(url: str, prefix: str) -> None:
    from stateline import SerializationError

    saver = RedisSaver(url, prefix=prefix, max_value_bytes=1000)
    saver.put(root(), cp("small"), {}, {"a": 1})
    with pytest.raises(SerializationError, match=r"channel 'a' is \d+ bytes serialized, over the limit of 1000"):
        saver.put(root(), cp("x" * 5000, 2), {}, {"a": 2})
    with pytest.raises(SerializationError, match="over the limit"):
        saver.put(root(), cp(["y" * 1500] * 5, 3), {}, {"a": 3})  # an item of a list
    assert saver.get_tuple(root()).checkpoint["channel_values"] == {"a": "small"}


def test_the_peer_s_constructor_names_work(url: str, prefix: str) -> None:
    with RedisSaver(redis_url=url, prefix=prefix, connection_args={"socket_timeout": 5}) as saver:
        saver.put(root(), cp(1), {}, {"a": 1})
    with RedisSaver(redis_client=redis.Redis.from_url(url), prefix=prefix) as saver:
        assert saver.get_tuple(root()).checkpoint["channel_values"] == {"a": 1}
    with RedisSaver.from_conn_string(url, prefix=prefix) as saver:
        saver.setup()
        assert saver.get_tuple(root()) is not None


async def test_the_async_saver_as_an_async_context_manager(url: str, prefix: str) -> None:
    async with AsyncRedisSaver.from_conn_string(url, prefix=prefix) as saver:
        await saver.asetup()
        await saver.aput(root(), cp(7), {}, {"a": 1})
        assert (await saver.aget_tuple(root())).checkpoint["channel_values"] == {"a": 7}


def test_a_list_of_ten_thousand_items_round_trips(url: str, prefix: str) -> None:
    """Past Lua's unpack() limit (about 8,000 values): the scripts read items in chunks."""
    saver = RedisSaver(url, prefix=prefix)
    big = [f"message {i}" for i in range(10_000)]
    cfg = saver.put(root(), cp(big), {}, {"a": 1})
    saver.put_writes(cfg, [("a", [f"write {i}" * 10 for i in range(9_000)])], "task")
    got = saver.get_tuple(root())
    assert got.checkpoint["channel_values"]["a"] == big
    assert got.pending_writes[0][2][-1] == "write 8999" * 10
    cfg = saver.put(cfg, cp([*big, "one more"], 2), {}, {"a": 2})
    saver.prune(["t"])
    assert saver.get_tuple(root()).checkpoint["channel_values"]["a"][-2:] == ["message 9999", "one more"]


def test_retention_settings_are_checked(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    with pytest.raises(InvalidInput, match="keep_last"):
        saver.prune(["t"], keep_last=-1)  # (None and 0 mean what they mean to the peer: test_peer_forms)
    with pytest.raises(InvalidInput, match="keep_last"):
        saver.prune(["t"], keep_last="2")  # type: ignore[arg-type]
    assert RedisSaver(url, prefix=prefix, ttl={"default_ttl": 0}).engine.ttl_ms == 0  # the peer: no TTL
    assert RedisSaver(url, prefix=prefix, ttl={"default_ttl": 2}).engine.ttl_ms == 120_000


def test_list_of_every_thread_pages_through_the_discovery_index(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    schema = saver.engine.schema
    # 600 threads of one shard (more than a page of 500 in one shard), 500 spread over others
    crowded = [t for t in (f"thread-{i:05d}" for i in range(100_000)) if schema.index_of(t).shard == 7][:600]
    threads = crowded + [f"other-{i:04d}" for i in range(500)]
    for i, t in enumerate(threads):
        saver.put(root(t), cp(i), {}, {"a": 1})
    saver.delete_thread(sorted(crowded)[499])  # a page boundary inside the shard, and a gap
    every = [t.config["configurable"]["thread_id"] for t in saver.list(None)]
    assert sorted(every) == sorted(set(threads) - {sorted(crowded)[499]})
    three = [t.checkpoint["channel_values"]["a"] for t in saver.list(None, limit=3)]
    assert len(set(three)) == 3
