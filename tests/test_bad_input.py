"""Bad input gets a stateline error naming it, never a raw TypeError/AttributeError or a
silently wrong result; URLs are checked without connecting; closing works across loops."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint

from stateline import InvalidInput, ServerUnavailable
from stateline.keys import enc
from stateline.langgraph import RedisSaver


def cp(value: object = 1) -> dict:
    c = empty_checkpoint()
    c["channel_values"] = {"a": value}
    c["channel_versions"] = {"a": 1}
    return c


def root(thread: str = "t") -> dict:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def saved(saver: RedisSaver, thread: str) -> dict:
    return saver.put(root(thread), cp(), {}, {"a": 1})


# -- 2. URLs are parsed, not connected to ------------------------------------------------


def test_a_cluster_url_is_not_connected_to_until_used() -> None:
    saver = RedisSaver("redis+cluster://127.0.0.1:1", prefix="x:", socket_connect_timeout=2)  # nothing listens
    with pytest.raises(ServerUnavailable, match="127.0.0.1:1"):
        saver.get_tuple(root())
    with pytest.raises(ServerUnavailable):
        asyncio.run(saver.aget_tuple(root()))
    asyncio.run(saver.aclose())


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:abc",
        "redis+cluster://127.0.0.1:6379,127.0.0.1:x",
        "redis+cluster://127.0.0.1:70000",
        "redis://127.0.0.1:port/0",
        "redis://127.0.0.1:6379/0?socket_timeout=soon",
        "redis+sentinel://127.0.0.1:26379/mymaster/notadb",
        "rediss+sentinel://127.0.0.1:nope/mymaster",
    ],
)
def test_a_malformed_url_is_invalid_input_naming_it(url: str) -> None:
    with pytest.raises(InvalidInput, match="URL") as info:
        RedisSaver(url)
    assert url.split("://")[1][:9] in str(info.value)


def test_a_url_error_does_not_show_the_password() -> None:
    with pytest.raises(InvalidInput, match=r"redis://app:\*\*\*@127.0.0.1:x/0") as info:
        RedisSaver("redis://app:s3cret@127.0.0.1:x/0")
    assert "s3cret" not in str(info.value)


# -- 3. aclose after the loop that used the async client is gone -------------------------


def test_aclose_after_the_loop_of_the_async_client_closed(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    saved(saver, "t")
    assert asyncio.run(saver.aget_tuple(root())) is not None  # this loop closes afterwards
    asyncio.run(saver.aclose())  # was: RuntimeError("Event loop is closed"), sync client left open
    pool = saver._conn.sync.connection_pool
    assert not any(c.is_connected for c in pool._get_free_connections())
    # the saver still works, in a new loop and in sync code
    assert asyncio.run(saver.aget_tuple(root())) is not None
    assert saver.get_tuple(root()) is not None
    asyncio.run(saver.aclose())


def test_async_with_on_a_second_loop_closes_both_clients(url: str, prefix: str) -> None:
    # The same situation through the async context manager of a second loop.
    saver = RedisSaver(url, prefix=prefix)
    saved(saver, "t")
    asyncio.run(saver.aget_tuple(root()))

    async def second_loop() -> None:
        async with saver:
            pass

    asyncio.run(second_loop())
    assert not any(c.is_connected for c in saver._conn.sync.connection_pool._get_free_connections())


# -- 4. a str where a sequence of ids is expected ---------------------------------------


def test_prune_of_a_bare_string_is_refused_and_deletes_nothing(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix)
    for thread in ("t", "h", "r", "thread-1"):
        saved(saver, thread)
    with pytest.raises(InvalidInput, match="'thread-1'.*list"):
        saver.prune("thread-1", strategy="delete")
    with pytest.raises(InvalidInput, match="sequence of ids"):
        asyncio.run(saver.aprune(b"thread-1", strategy="delete"))
    with pytest.raises(InvalidInput, match=r"one id.*\['nested'\]"):
        saver.prune(["t", ["nested"]], strategy="delete")  # all checked before "t" is deleted
    with pytest.raises(InvalidInput, match="sequence of ids"):
        saver.delete_for_runs("run-1")
    with pytest.raises(InvalidInput, match="sequence of ids"):
        asyncio.run(saver.adelete_for_runs("run-1"))
    with pytest.raises(InvalidInput, match="one id"):
        saver.delete_thread(["t", "h"])
    with pytest.raises(InvalidInput, match="one id"):
        saver.copy_thread(("t",), "copy")
    for thread in ("t", "h", "r", "thread-1"):
        assert saver.get_tuple(root(thread)) is not None
    saver.prune(["thread-1"], strategy="delete")
    assert saver.get_tuple(root("thread-1")) is None
    assert saver.get_tuple(root("t")) is not None
    saver.delete_thread(7)  # an int id is still an id (LangGraph stringifies ids)
    asyncio.run(saver.aclose())


# -- 5. put / put_writes / list inputs --------------------------------------------------


def test_put_refuses_a_checkpoint_or_metadata_that_is_not_a_mapping(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    for bad in (None, ["id"], "checkpoint"):
        with pytest.raises(InvalidInput, match="checkpoint must be a mapping"):
            saver.put(root(), bad, {}, {"a": 1})
    with pytest.raises(InvalidInput, match="metadata must be a mapping"):
        saver.put(root(), cp(), [("source", "input")], {"a": 1})
    broken = cp()
    broken["channel_values"] = ["a"]
    with pytest.raises(InvalidInput, match="channel_values"):
        saver.put(root(), broken, {}, {"a": 1})
    with pytest.raises(InvalidInput, match="new_versions"):
        saver.put(root(), cp(), {}, ["a"])
    with pytest.raises(InvalidInput, match="checkpoint must be a mapping"):
        asyncio.run(saver.aput(root(), None, {}, {"a": 1}))
    assert saver.get_tuple(root()) is None  # nothing was written
    config = saver.put(root(), cp("kept"), None, {"a": 1})  # None metadata = no metadata
    assert saver.get_tuple(config).checkpoint["channel_values"] == {"a": "kept"}
    asyncio.run(saver.aclose())


def test_put_writes_refuses_malformed_writes_and_ids(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    config = saved(saver, "t")
    for writes in ([("a",)], [("a", 1, 2)], ["ab"], [1], "ab", [(1, "value")], 5):
        with pytest.raises(InvalidInput, match="writes"):
            saver.put_writes(config, writes, "task")
    with pytest.raises(InvalidInput, match="task_id must be str"):
        saver.put_writes(config, [("a", 1)], 5)
    with pytest.raises(InvalidInput, match="task_id must be str"):
        saver.put_writes(config, [("a", 1)], ["task"])
    with pytest.raises(InvalidInput, match="task_path must be str"):
        saver.put_writes(config, [("a", 1)], "task", 3)
    with pytest.raises(InvalidInput, match="task_path must be str"):
        asyncio.run(saver.aput_writes(config, [("a", 1)], "task", None))
    # nothing was stored: reads still work and see no pending writes
    assert saver.get_tuple(config).pending_writes == []
    saver.put_writes(config, [("a", 2)], "task", "path")
    assert saver.get_tuple(config).pending_writes == [("task", "a", 2)]
    asyncio.run(saver.aclose())


def test_list_refuses_a_filter_or_before_of_the_wrong_shape(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    config = saved(saver, "t")
    cid = config["configurable"]["checkpoint_id"]
    with pytest.raises(InvalidInput, match="filter must be a mapping"):
        list(saver.list(root(), filter=[("source", "input")]))
    with pytest.raises(InvalidInput, match="filter must be a mapping"):
        list(saver.list(None, filter="source"))
    with pytest.raises(InvalidInput, match="before must be a config"):
        list(saver.list(root(), before=cid))  # a bare id, not a config
    with pytest.raises(InvalidInput, match="before must be a config"):
        list(saver.list(root(), before={"configurable": cid}))

    async def alist_before() -> list:
        return [t async for t in saver.alist(root(), before=cid)]

    with pytest.raises(InvalidInput, match="before must be a config"):
        asyncio.run(alist_before())
    assert len(list(saver.list(root(), filter={}, before={}))) == 1
    assert list(saver.list(root(), before=config)) == []
    asyncio.run(saver.aclose())


# -- 6. ids that cannot be encoded ------------------------------------------------------


def test_enc_refuses_unhashable_and_unencodable_values() -> None:
    with pytest.raises(InvalidInput, match=r"\['x'\]"):
        enc(["x"])
    with pytest.raises(InvalidInput, match=r"\\ud800"):
        enc("\ud800")
    with pytest.raises(InvalidInput, match="5"):
        enc(5)
    assert enc("a b/ü") == "a%20b%2F%C3%BC"


def test_an_id_with_a_lone_surrogate_is_invalid_input(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    bad = f"t-{uuid.uuid4().hex[:4]}-\ud800"
    with pytest.raises(InvalidInput, match="Unicode"):
        saver.get_tuple(root(bad))
    with pytest.raises(InvalidInput, match="Unicode"):
        saver.put(root(bad), cp(), {}, {"a": 1})
    channel = cp()
    channel["channel_values"], channel["channel_versions"] = {"a\udfff": 1}, {"a\udfff": 1}
    with pytest.raises(InvalidInput, match="Unicode"):
        asyncio.run(saver.aput(root(), channel, {}, {"a\udfff": 1}))
    asyncio.run(saver.aclose())
