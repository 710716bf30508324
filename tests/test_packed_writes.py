"""Stored format 2 keeps a checkpoint's pending writes in one packed field (a write that
does not fit gets a field of its own), and indexes the root's checkpoints once: every
behaviour must stay that of InMemorySaver, and nothing may be left behind."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import ERROR, INTERRUPT, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from stateline import Encryption, StoredDataError
from stateline.langgraph import RedisSaver


def _cfg(thread: str, ns: str = "", cid: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if cid is not None:
        c["checkpoint_id"] = cid
    return {"configurable": c}


def _put(saver: Any, thread: str, ns: str = "", step: int = 0) -> dict[str, Any]:
    cp = empty_checkpoint()
    return saver.put(_cfg(thread, ns), cp, {"source": "loop", "step": step}, {})


def _fields(client: redis.Redis, saver: RedisSaver, thread: str) -> dict[bytes, bytes]:
    return client.hgetall(saver.engine.keys(thread).data)


def _members(client: redis.Redis, saver: RedisSaver, thread: str) -> list[bytes]:
    return client.zrange(saver.engine.keys(thread).index, 0, -1)


def _writes(saver: Any, config: dict[str, Any]) -> list[tuple[str, str, Any]]:
    got = saver.get_tuple(config)
    return sorted(got.pending_writes, key=repr) if got else []


def test_writes_of_a_checkpoint_are_one_field_and_read_like_inmemory(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver, ref = RedisSaver(url, prefix=prefix), InMemorySaver()
    for s in (saver, ref):
        cfg = _put(s, "t")
        s.put_writes(cfg, [("a", 1), ("b", {"x": [1, 2]})], "task-1")
        s.put_writes(cfg, [("a", 2)], "task-2")
        s.put_writes(cfg, [("a", "again")], "task-1")  # (task, idx) stored: the first stays
        s.put_writes(cfg, [(ERROR, "boom")], "task-1")
        s.put_writes(cfg, [(ERROR, "boom 2")], "task-1")  # special channels replace
    head = saver.get_tuple(_cfg("t")).config
    assert _writes(saver, head) == _writes(ref, ref.get_tuple(_cfg("t")).config)
    cid = head["configurable"]["checkpoint_id"]
    packed = [f for f in _fields(client, saver, "t") if f.startswith(b"w:")]
    assert packed == [f"w::{cid}".encode()]  # one field, no write of its own
    assert not [m for m in _members(client, saver, "t") if m[:2] in (b"w:", b"p:", b"o:")]
    assert saver.thread_stats(["t"])[0].writes == 4


def test_a_wide_step_spills_into_fields_of_their_own_and_all_of_it_goes(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver, ref = RedisSaver(url, prefix=prefix, compression=False), InMemorySaver()
    big = "x" * 700
    for s in (saver, ref):
        cfg = _put(s, "t")
        for task in range(40):  # 40 tasks of 700 bytes: more than one packed field holds
            s.put_writes(cfg, [("out", f"{task}:{big}")], f"task-{task}")
        s.put_writes(cfg, [("out", "not kept")], "task-39")
        s.put_writes(cfg, [(ERROR, "replaced")], "task-39")
        s.put_writes(cfg, [(ERROR, "replacing")], "task-39")
    head = saver.get_tuple(_cfg("t")).config
    assert _writes(saver, head) == _writes(ref, ref.get_tuple(_cfg("t")).config)
    own = [m for m in _members(client, saver, "t") if m.startswith(b"w:")]
    assert own and len(own) < 41  # the first ones are packed, the rest have fields of their own
    assert all(_fields(client, saver, "t")[m][:1] == b"+" for m in own)
    assert saver.thread_stats(["t"])[0].writes == 41
    _put(saver, "t", step=1)  # a newer checkpoint, then the old one and its writes go
    saver.prune(["t"], keep_last=1)
    assert not [f for f in _fields(client, saver, "t") if f.startswith(b"w:")]
    assert not [m for m in _members(client, saver, "t") if m[:2] in (b"w:", b"p:")]
    assert saver.thread_stats(["t"])[0].writes == 0


def test_writes_that_come_before_their_checkpoint_are_found_then_kept_with_it(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    first = _put(saver, "t")
    # (ids are made in time order: this one sorts below the head, where retention looks)
    never = _cfg("t", cid=empty_checkpoint()["id"])  # writes of a checkpoint that never comes
    cp = empty_checkpoint()
    early = _cfg("t", cid=cp["id"])
    saver.put_writes(early, [("a", 1)], "task-1")  # its checkpoint is not stored yet
    assert f"p::{cp['id']}".encode() in _members(client, saver, "t")
    saver.put(first, cp, {"source": "loop", "step": 1}, {})
    assert f"p::{cp['id']}".encode() not in _members(client, saver, "t")
    assert _writes(saver, early) == [("task-1", "a", 1)]
    saver.put_writes(never, [("a", 2)], "task-2")
    saver.prune(["t"], keep_last=1)
    assert _writes(saver, early) == [("task-1", "a", 1)]
    assert saver.thread_stats(["t"])[0].writes == 1
    assert not [m for m in _members(client, saver, "t") if m.startswith(b"p:")]
    saver.delete_thread("t")
    assert client.exists(saver.engine.keys("t").data) == 0


@pytest.mark.parametrize("encrypted", [False, True])
def test_copies_and_deletes_keep_packed_and_spilled_writes_whole(
    url: str, prefix: str, client: redis.Redis, encrypted: bool
) -> None:
    settings: dict[str, Any] = {"encryption": Encryption({"k1": b"k" * 32})} if encrypted else {}
    saver = RedisSaver(url, prefix=prefix, **settings)
    cfg = _put(saver, "src")
    for task in range(30):
        saver.put_writes(cfg, [("out", f"{task}:" + "y" * 900)], f"task-{task}")
    saver.put_writes(cfg, [("messages", [{"role": "user", "content": "z" * 300}])], "task-m")
    want = _writes(saver, cfg)
    saver.copy_thread("src", "dst")
    assert _writes(saver, _cfg("dst", cid=cfg["configurable"]["checkpoint_id"])) == want
    assert saver.thread_stats(["dst"])[0].writes == 31
    other = RedisSaver(url, prefix=prefix + "other:", **settings)
    saver.copy_thread_to("src", other, "elsewhere")
    assert _writes(other, _cfg("elsewhere", cid=cfg["configurable"]["checkpoint_id"])) == want
    saver.delete_thread("src")
    assert _writes(saver, _cfg("dst", cid=cfg["configurable"]["checkpoint_id"])) == want


def test_every_namespace_lists_newest_first_in_pages_like_inmemory(url: str, prefix: str) -> None:
    saver, ref = RedisSaver(url, prefix=prefix), InMemorySaver()
    for i in range(130):  # more than a page, the root and a subgraph interleaved
        cp, ns = empty_checkpoint(), "" if i % 3 else "sub:1"
        for s in (saver, ref):
            s.put(_cfg("t", ns), cp, {"source": "loop", "step": i}, {})

    def ids(s: Any, **kw: Any) -> list[tuple[str, str]]:
        return [
            (t.config["configurable"]["checkpoint_ns"], t.config["configurable"]["checkpoint_id"])
            for t in s.list({"configurable": {"thread_id": "t"}}, **kw)
        ]

    # (InMemorySaver lists namespace after namespace; stateline by id across them)
    def newest_first(got: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return sorted(got, key=lambda x: (x[1], x[0]), reverse=True)

    everything = ids(saver)
    assert everything == newest_first(ids(ref)) and len(everything) == 130
    ns, cid = everything[57]
    before = {"configurable": {"thread_id": "t", "checkpoint_ns": ns, "checkpoint_id": cid}}
    assert ids(saver, before=before) == everything[58:]
    assert ids(saver, limit=7) == everything[:7]


def test_a_format_1_thread_takes_format_2_writes_and_lists_once(url: str, prefix: str, client: redis.Redis) -> None:
    import json

    from .test_stored_formats import HERE, _read, _restore

    fixture = json.loads((HERE / "compressed.json").read_text())
    saver = RedisSaver(url, prefix=prefix)
    _restore(saver.engine, saver._run, fixture)
    thread = fixture["thread"]
    head = saver.get_tuple({"configurable": {"thread_id": thread}})
    before = sorted(head.pending_writes, key=repr)
    count = saver.thread_stats([thread])[0].writes
    saver.put_writes(head.config, [("note", 2)], "t1")  # format 1 holds (t1, 0): the first stays
    saver.put_writes(head.config, [(ERROR, "late")], "t1")
    after = sorted(saver.get_tuple(head.config).pending_writes, key=repr)
    assert after == sorted([*before, ("t1", ERROR, "late")], key=repr)
    listed = _read(saver, thread)  # every namespace: format 1 indexed the root twice
    assert listed[1:] == fixture["expected"][1:]
    assert {**listed[0], "writes": None} == {**fixture["expected"][0], "writes": None}
    assert saver.thread_stats([thread])[0].writes == count + 1


def test_a_write_that_came_first_and_did_not_fit_is_found_once_its_checkpoint_is_stored(url: str, prefix: str) -> None:
    saver, ref = RedisSaver(url, prefix=prefix, compression=False), InMemorySaver()
    first = _put(saver, "t")
    ref_first = ref.put(_cfg("t"), empty_checkpoint(), {"source": "loop", "step": 0}, {})
    cp = empty_checkpoint()
    for s, parent in ((saver, first), (ref, ref_first)):
        early = _cfg("t", cid=cp["id"])
        s.put_writes(early, [(INTERRUPT, "x" * 5000)], "task-1")  # (durability='async': before its checkpoint)
        s.put(parent, cp, {"source": "loop", "step": 1}, {})
        s.put_writes(early, [(INTERRUPT, "second interrupt")], "task-1")
        s.put_writes(early, [("a", 1), ("a", 2)], "task-2")
        s.put_writes(early, [("a", "not kept")], "task-2")
    assert _writes(saver, _cfg("t", cid=cp["id"])) == _writes(ref, _cfg("t", cid=cp["id"]))
    assert saver.thread_stats(["t"])[0].writes == 3


def test_a_format_1_checkpoint_saved_again_keeps_its_writes_once(url: str, prefix: str) -> None:
    import json

    from .test_stored_formats import HERE, _restore

    fixture = json.loads((HERE / "compressed.json").read_text())
    saver = RedisSaver(url, prefix=prefix)
    _restore(saver.engine, saver._run, fixture)
    head = saver.get_tuple({"configurable": {"thread_id": fixture["thread"]}})
    assert head is not None and head.parent_config is not None
    saver.put(head.parent_config, head.checkpoint, head.metadata, {})  # (a resumed migration does this)
    saver.put_writes(head.config, [("note", "not kept")], "t1")  # (t1, 0) is stored: the first stays
    assert sorted(saver.get_tuple(head.config).pending_writes, key=repr) == sorted(head.pending_writes, key=repr)


def test_prune_goes_past_the_writes_it_keeps_and_clears_a_namespace_without_checkpoints(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix, compression=False)
    _put(saver, "t")
    head = _put(saver, "t", step=1)
    for task in range(100):  # a wide step on the checkpoint prune keeps: fields of their own
        saver.put_writes(head, [("out", f"{task}:" + "z" * 600)], f"task-{task}")
    lost = _cfg("t", ns="sub:1", cid=empty_checkpoint()["id"])  # a subgraph checkpoint that never came
    saver.put_writes(lost, [("out", "q" * 5000)], "task-x")
    saver.prune(["t"], keep_last=1)
    assert len(_writes(saver, head)) == 100
    assert saver.thread_stats(["t"])[0].writes == 100
    assert not [m for m in _members(client, saver, "t") if m.startswith((b"w:sub", b"p:", b"s:sub"))]
    assert [t.config["configurable"]["checkpoint_ns"] for t in saver.list(_cfg("t"))] == [""]


def test_a_replacing_write_too_big_for_the_packed_field_moves_out(url: str, prefix: str, client: redis.Redis) -> None:
    saver, ref = RedisSaver(url, prefix=prefix, compression=False), InMemorySaver()
    for s in (saver, ref):
        cfg = _put(s, "t")
        s.put_writes(cfg, [(ERROR, "small"), ("a", 1)], "task-1")
        s.put_writes(cfg, [(ERROR, "e" * 20_000)], "task-1")
        s.put_writes(cfg, [(ERROR, "e" * 30_000), ("a", 2)], "task-1")
    head = saver.get_tuple(_cfg("t")).config
    assert _writes(saver, head) == _writes(ref, ref.get_tuple(_cfg("t")).config)
    cid = head["configurable"]["checkpoint_id"]
    assert len(_fields(client, saver, "t")[f"w::{cid}".encode()]) < 4096
    assert saver.thread_stats(["t"])[0].writes == 2


def test_a_damaged_packed_field_is_named_when_read_and_goes_with_its_checkpoint(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg = _put(saver, "t")
    saver.put_writes(cfg, [("a", 1)], "task-1")
    newer = _put(saver, "t", step=1)
    cid = cfg["configurable"]["checkpoint_id"]
    client.hset(saver.engine.keys("t").data, f"w::{cid}", b"12\ngarbage")
    with pytest.raises(StoredDataError, match="'t'"):
        saver.get_tuple(cfg)
    saver.prune(["t"], keep_last=1)
    assert not [f for f in _fields(client, saver, "t") if f.startswith(b"w:")]
    assert saver.get_tuple(_cfg("t")).config == newer
