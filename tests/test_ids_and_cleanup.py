"""Awkward ids never collide or escape their hash tag; delete, prune and TTL leave no key behind."""

from __future__ import annotations

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline import InvalidInput
from stateline.keys import Schema
from stateline.langgraph import RedisSaver

from .conftest import index_members, keys_of
from .waiting import until

AWKWARD = ["a", "a:b", "a{b}", "{a}", "}{", "a|b", "a b", "", "日本語", "a%3Ab", "a:b:c", "c:a", "%"]
NAMESPACES = ["", "child:1", "a|b:c", "{x}", "日本"]


def checkpoint(values: dict, versions: dict | None = None) -> dict:
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = values
    cp["channel_versions"] = versions or {k: 1 for k in values}
    return cp


def put(saver: RedisSaver, thread: str, ns: str, values: dict, parent: str | None = None) -> dict:
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    if parent:
        cfg["configurable"]["checkpoint_id"] = parent
    cp = checkpoint(values)
    return saver.put(cfg, cp, {"source": "loop", "step": 0}, dict(cp["channel_versions"]))


def test_awkward_thread_ids_namespaces_and_channels_never_collide(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    for t in AWKWARD:
        for ns in NAMESPACES:
            stored = put(saver, t, ns, {f"ch:{t}|{ns}": [t, ns] * 3, "{x}": f"{t}/{ns}"})
            saver.put_writes(stored, [(f"w {t}", f"{t}/{ns}")], task_id=f"task:{t}")
    for t in AWKWARD:
        for ns in NAMESPACES:
            got = saver.get_tuple({"configurable": {"thread_id": t, "checkpoint_ns": ns}})
            assert got is not None
            assert got.checkpoint["channel_values"] == {f"ch:{t}|{ns}": [t, ns] * 3, "{x}": f"{t}/{ns}"}
            assert got.pending_writes == [(f"task:{t}", f"w {t}", f"{t}/{ns}")]
            assert got.config["configurable"] == {**got.config["configurable"], "thread_id": t, "checkpoint_ns": ns}
        assert len(list(saver.list({"configurable": {"thread_id": t}}))) == len(NAMESPACES)
        assert len(list(saver.list({"configurable": {"thread_id": t, "checkpoint_ns": ""}}))) == 1
    assert {c.config["configurable"]["thread_id"] for c in saver.list(None)} == set(AWKWARD)


def test_every_key_of_a_thread_carries_one_hash_tag(prefix: str) -> None:
    schema = Schema(prefix)
    for t in AWKWARD:
        keys = schema.thread(t)
        tags = {k[k.index("{") + 1 : k.index("}")] for k in keys.all}
        assert len(tags) == 1 and "" not in tags  # an empty tag would hash the whole key
        assert schema.thread_id_of(keys.data) == t
    assert len({schema.thread(t).data for t in AWKWARD}) == len(AWKWARD)


@pytest.mark.parametrize("bad", ["a{b", "x}", "{"])
def test_a_prefix_with_braces_is_refused(url: str, bad: str) -> None:
    with pytest.raises(InvalidInput, match="hash tag"):
        RedisSaver(url, prefix=bad)


def test_malformed_configs_get_clear_errors(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    with pytest.raises(InvalidInput, match="thread_id"):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(InvalidInput, match="checkpoint_id"):
        saver.put_writes({"configurable": {"thread_id": "t"}}, [("a", 1)], "task")
    with pytest.raises(InvalidInput, match="limit"):
        list(saver.list({"configurable": {"thread_id": "t"}}, limit=-1))
    with pytest.raises(InvalidInput, match="strategy"):
        saver.prune(["t"], strategy="everything")


def test_unserializable_value_is_refused_and_nothing_is_lost(url: str, prefix: str) -> None:
    from stateline import SerializationError

    saver = RedisSaver(url, prefix=prefix)
    first = put(saver, "t", "", {"a": 1})
    with pytest.raises(SerializationError, match="channel 'bad'"):
        put(saver, "t", "", {"bad": object()}, parent=first["configurable"]["checkpoint_id"])
    latest = saver.get_tuple({"configurable": {"thread_id": "t"}})
    assert latest.checkpoint["channel_values"] == {"a": 1}


def _fill(saver: RedisSaver, thread: str) -> None:
    parent = None
    for i in range(5):
        for ns in ("", "sub:1"):
            stored = put(
                saver, thread, ns, {"n": i, "msgs": [f"m{j}" for j in range(i + 4)]}, parent if ns == "" else None
            )
            saver.put_writes(stored, [("n", i), ("__interrupt__", "x")], task_id=f"t{i}")
            if ns == "":
                parent = stored["configurable"]["checkpoint_id"]


def test_delete_thread_leaves_no_key(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix)
    _fill(saver, "gone")
    _fill(saver, "kept")
    saver.delete_thread("gone")
    assert keys_of(client, f"{prefix}{{gone}}*") == []
    assert len(keys_of(client, f"{prefix}{{kept}}*")) == 2
    assert [t.config["configurable"]["thread_id"] for t in saver.list(None, limit=1)] == ["kept"]


def test_prune_delete_leaves_no_key_and_keep_latest_leaves_no_orphan(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    _fill(saver, "a")
    _fill(saver, "b")
    saver.prune(["a"], strategy="delete")
    assert keys_of(client, f"{prefix}{{a}}*") == []
    saver.prune(["b"])
    left = list(saver.list({"configurable": {"thread_id": "b"}}))
    assert sorted(t.config["configurable"]["checkpoint_ns"] for t in left) == ["", "sub:1"]
    assert all(t.checkpoint["channel_values"]["msgs"] == [f"m{j}" for j in range(8)] for t in left)
    # Only what the kept checkpoints reference remains: 2 checkpoints x (2 values + their 2
    # writes, packed in one field), one digest log per namespace (a header and one chunk)
    # with its 8 elements, shared by both namespaces' lists.
    fields = client.hkeys(f"{prefix}{{b}}:d")
    kinds = sorted(f[:2].decode() for f in fields)
    assert kinds.count("c:") == 2 and kinds.count("w:") == 2 and kinds.count("b:") == 4
    assert kinds.count("e:") == 8 and kinds.count("l:") == 4


def test_ttl_expires_the_whole_thread(url: str, prefix: str, client: redis.Redis) -> None:
    # Both keys of a thread carry the TTL (a long one here, so reading it races nothing)...
    _fill(RedisSaver(url, prefix=f"{prefix}long:", ttl=60), "long")
    keys = keys_of(client, f"{prefix}long:{{long}}*")
    assert len(keys) == 2 and all(0 < client.pttl(k) <= 60_000 for k in keys)
    # ...so a short one expires the thread whole, and readers drop what pointed to it.
    saver = RedisSaver(url, prefix=prefix, ttl=0.3)
    _fill(saver, "short")
    until(lambda: not keys_of(client, f"{prefix}{{short}}*"), what="the thread did not expire")
    assert saver.get_tuple({"configurable": {"thread_id": "short"}}) is None
    assert list(saver.list(None)) == []  # the stale discovery entry is dropped on sight
    assert index_members(client, saver.engine.schema) == []


def test_refresh_on_read_slides_the_ttl(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix, ttl={"default_ttl": 1, "refresh_on_read": True})
    put(saver, "t", "", {"a": 1})
    client.pexpire(f"{prefix}{{t}}:d", 5000)
    client.pexpire(f"{prefix}{{t}}:i", 5000)
    saver.get_tuple({"configurable": {"thread_id": "t"}})
    assert client.pttl(f"{prefix}{{t}}:d") > 50_000 and client.pttl(f"{prefix}{{t}}:i") > 50_000


def test_copy_thread_keeps_ids_and_source(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    _fill(saver, "src")
    saver.copy_thread("src", "dst:{copy}")
    src = [
        (t.config["configurable"]["checkpoint_id"], t.checkpoint["channel_values"], t.pending_writes)
        for t in saver.list({"configurable": {"thread_id": "src"}})
    ]
    dst = [
        (t.config["configurable"]["checkpoint_id"], t.checkpoint["channel_values"], t.pending_writes)
        for t in saver.list({"configurable": {"thread_id": "dst:{copy}"}})
    ]
    assert src == dst and len(src) == 10
