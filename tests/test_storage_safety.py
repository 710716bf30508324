"""Retention, sweeps, copies and caches never lose or corrupt what is still in use."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from stateline import Checkpoint, InvalidInput, SyncRedisCheckpointer
from stateline.langgraph import RedisSaver, ShallowRedisSaver

from .test_round_trips import Commands


class TwoLists(TypedDict):
    messages: Annotated[list, add_messages]
    notes: Annotated[list, operator.add]


def chat(saver: RedisSaver, turns: int) -> tuple[object, dict]:
    def bot(s: TwoLists) -> dict:
        n = len(s["messages"])
        return {"messages": [AIMessage(content=f"reply {n}")], "notes": [f"note {n}", f"more {n}"]}

    app = (
        StateGraph(TwoLists)
        .add_node("bot", bot)
        .add_edge(START, "bot")
        .add_edge("bot", END)
        .compile(checkpointer=saver)
    )
    cfg = {"configurable": {"thread_id": "two-lists"}}
    for i in range(turns):
        app.invoke({"messages": [HumanMessage(content=f"turn {i}")], "notes": [f"user {i}"]}, cfg)
    return app, cfg


@pytest.mark.parametrize("shallow", [True, False])
def test_sweeps_keep_every_list_of_a_checkpoint_with_several(url: str, prefix: str, shallow: bool) -> None:
    saver = (ShallowRedisSaver if shallow else RedisSaver)(url, prefix=prefix)
    app, cfg = chat(saver, 25)  # the shallow saver sweeps every 16 trimmed checkpoints
    if not shallow:
        saver.prune(["two-lists"])
    state = app.get_state(cfg).values
    assert len(state["messages"]) == 50 and len(state["notes"]) == 75
    fresh = RedisSaver(url, prefix=prefix).get_tuple(cfg)
    assert fresh.checkpoint["channel_values"]["notes"][-3:] == ["user 24", "note 49", "more 49"]


def test_a_rewritten_list_after_a_deleted_checkpoint_never_overwrites_an_older_one(url: str, prefix: str) -> None:
    with SyncRedisCheckpointer(url, prefix=prefix) as cp:
        c1 = Checkpoint(session_id="s", state={"msgs": ["a", "b", "c", "d"]})
        cp.save(c1)
        c2 = c1.child({"msgs": ["x", "y", "z", "w"]})
        cp.save(c2)
        cp.delete("s", c2.checkpoint_id)  # undo the turn: its log goes, the log counter stays
        cp.save(c1.child({"msgs": ["p", "q", "r", "s"]}))
        assert cp.load("s", c1.checkpoint_id).state == {"msgs": ["a", "b", "c", "d"]}


def _put(saver: RedisSaver, thread: str, values: dict, cid: str | None = None, parent: str | None = None) -> dict:
    cp = empty_checkpoint()
    if cid:
        cp["id"] = cid
    cp["channel_values"] = values
    cp["channel_versions"] = {k: 1 for k in values}
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    if parent:
        cfg["configurable"]["checkpoint_id"] = parent
    return saver.put(cfg, cp, {}, dict(cp["channel_versions"]))


def test_a_copy_into_an_existing_thread_is_refused_and_changes_nothing(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    _put(saver, "src", {"a": [f"s{i}" for i in range(5)]})
    _put(saver, "dst", {"a": [f"t{i}" for i in range(5)]})
    with pytest.raises(InvalidInput, match="exists already"):
        saver.copy_thread("src", "dst")
    with pytest.raises(InvalidInput, match="exists already"):
        saver.copy_thread("src", "src")
    assert saver.get_tuple({"configurable": {"thread_id": "dst"}}).checkpoint["channel_values"]["a"][0] == "t0"
    assert [s.thread_id for s in saver.thread_stats()] == ["dst", "src"]  # no entry made by the refusal
    assert saver.get_tuple({"configurable": {"thread_id": "src"}}).checkpoint["channel_values"]["a"][0] == "s0"


def test_delta_history_replays_writes_in_writes_sort_key_order(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    first = _put(saver, "d", {"ch": "seed"}, cid="cp 1")  # an id that is not URL-safe
    saver.put_writes(first, [("ch", f"z{i}") for i in range(12)], "z-task", "~a")
    saver.put_writes(first, [("ch", "a0")], "a-task", "~b")
    second = _put(saver, "d", {}, cid="cp 2", parent="cp 1")
    mine = saver.get_delta_channel_history(config=second, channels=["ch"])
    reference = BaseCheckpointSaver.get_delta_channel_history(saver, config=second, channels=["ch"])
    assert mine == reference
    assert [w[2] for w in mine["ch"]["writes"]] == [f"z{i}" for i in range(12)] + ["a0"]
    assert mine["ch"]["seed"] == "seed"
    assert saver.get_tuple(second).parent_config["configurable"]["checkpoint_id"] == "cp 1"


def test_a_durable_write_is_still_waited_for_after_the_scripts_were_flushed(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix, durability="aof")
    cfg = _put(saver, "w", {"a": 1})
    client.script_flush()
    seen = Commands(client)
    seen.since_last()
    _put(saver, "w", {"a": 2}, parent=cfg["configurable"]["checkpoint_id"])
    sent = seen.since_last()
    assert sent[-2:] == ["EVALSHA", "WAITAOF"] and "SCRIPT" in sent  # reloaded, then write + wait


@pytest.mark.parametrize("kind", [RedisSaver, ShallowRedisSaver, lambda url, **kw: RedisSaver(url, keep_last=2, **kw)])
def test_a_thread_deleted_by_another_process_is_indexed_again_by_the_next_put(url: str, prefix: str, kind: Any) -> None:
    """(With retention the put learns that the thread was empty from its trim's listing.)"""
    writer, other = kind(url, prefix=prefix), RedisSaver(url, prefix=prefix)
    cfg = _put(writer, "t", {"a": 1})
    cfg = _put(writer, "t", {"a": 2}, parent=cfg["configurable"]["checkpoint_id"])
    other.delete_thread("t")
    _put(writer, "t", {"a": 3}, parent=cfg["configurable"]["checkpoint_id"])
    assert [s.thread_id for s in other.thread_stats()] == ["t"]
    assert [t.checkpoint["channel_values"] for t in other.list(None)] == [{"a": 3}]
    _put(writer, "u", {"a": 1}, cid="only")
    other.delete_thread("u")
    _put(writer, "u", {"a": 2}, cid="only")  # the same checkpoint again, into a thread gone meanwhile
    assert sorted(s.thread_id for s in other.thread_stats()) == ["t", "u"]


def test_a_put_into_a_new_namespace_of_a_living_thread_is_not_a_new_thread(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = ShallowRedisSaver(url, prefix=prefix)
    _put(saver, "t", {"a": 1})
    client.delete(*saver.engine.schema.index_of("t").all)  # its discovery entry lost: only a new thread re-adds it
    sub = {"configurable": {"thread_id": "t", "checkpoint_ns": "child"}}
    cp = empty_checkpoint()
    cp["channel_values"], cp["channel_versions"] = {"a": 1}, {"a": 1}
    saver.put(sub, cp, {}, {"a": 1})
    assert saver.thread_stats() == []  # the thread had a checkpoint: not new, not re-indexed


def test_writes_arriving_after_their_checkpoint_was_trimmed_are_removed(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = ShallowRedisSaver(url, prefix=prefix)
    old = _put(saver, "late", {"a": 1}, cid="0001")
    new = _put(saver, "late", {"a": 2}, cid="0002", parent="0001")  # trims 0001
    saver.put_writes(old, [("a", [f"late item {i}" * 20 for i in range(3)])], "late-task")  # too late
    saver.put_writes(new, [("a", 5)], "on-time")
    _put(saver, "late", {"a": 3}, cid="0003", parent="0002")  # trims 0002 and the orphan
    fields = client.hkeys(saver.engine.keys("late").data)
    assert not [f for f in fields if f.startswith(b"w:")]
    saver.prune(["late"])  # items are swept with the next sweep (retention sweeps every 16 trims)
    assert not [f for f in client.hkeys(saver.engine.keys("late").data) if f.startswith(b"e:")]
    assert saver.get_tuple({"configurable": {"thread_id": "late"}}).checkpoint["channel_values"] == {"a": 3}


@pytest.mark.parametrize("ids", [("5", "50", "500"), ("step-1", "step-1.1", "step-1.1.1")])
def test_trimmed_checkpoints_lose_their_writes_even_when_an_id_begins_the_next(
    url: str, prefix: str, client: redis.Redis, ids: tuple[str, ...]
) -> None:
    """'w::5:t:0' sorts after 'w::50' (':' is above '0'): the writes of a dropped checkpoint whose
    id begins the kept one's are found by their own prefix."""
    saver = ShallowRedisSaver(url, prefix=prefix)
    parent = None
    for n, cid in enumerate(ids):
        cfg = _put(saver, "prefixed", {"a": n}, cid=cid, parent=parent)
        saver.put_writes(cfg, [("a", n)], "task")
        parent = cid
    writes = [f for f in client.hkeys(saver.engine.keys("prefixed").data) if f.startswith(b"w:")]
    assert [w.split(b":")[2].decode() for w in writes] == [ids[-1]]


def test_prune_removes_late_writes_up_to_the_head(url: str, prefix: str, client: redis.Redis) -> None:
    """A write for a checkpoint never stored, newer than the oldest checkpoint a prune keeps
    but older than the head, goes too (a put's trim leaves it for a later put)."""
    saver = RedisSaver(url, prefix=prefix)
    parent = None
    for n in range(1, 6):
        cfg = _put(saver, "late", {"a": n}, cid=f"000{n}", parent=parent)
        saver.put_writes(cfg, [("a", n)], "task")
        parent = cfg["configurable"]["checkpoint_id"]
    late = {"configurable": {"thread_id": "late", "checkpoint_ns": "", "checkpoint_id": "0004a"}}  # never stored
    saver.put_writes(late, [("a", 0)], "late-task")
    saver.prune(["late"], keep_last=2)
    writes = sorted(
        f.split(b":")[2].decode() for f in client.hkeys(saver.engine.keys("late").data) if f.startswith(b"w:")
    )
    assert writes == ["0004", "0005"]


def _stored_ids(client: redis.Redis, index: str) -> set[str]:
    return {m.decode().rsplit(":", 1)[1] for m in client.zrangebylex(index, "[c:", "[c:\xff")}


def test_retention_leaves_no_alias_of_a_dropped_checkpoint_after_its_sweep(
    url: str, prefix: str, client: redis.Redis
) -> None:
    """A trim drops records without reading them: the aliases only a record names go with the
    next sweep (every 16 dropped); those of the checkpoints kept stay."""
    with SyncRedisCheckpointer(url, prefix=prefix, keep_last=2) as cp:
        last = Checkpoint(session_id="s", state={"n": 0}, checkpoint_id="named-0")
        cp.save(last)
        for n in range(1, 34):  # 32 dropped: the second sweep comes with the last save
            last = last.child({"n": n}, checkpoint_id=f"named-{n}")
            cp.save(last)
        keys = cp._engine.keys("s")
        assert [c.checkpoint_id for c in cp.list("s")] == ["named-33", "named-32"]
    assert sorted(f.decode() for f in client.hkeys(keys.data) if f.startswith(b"a:")) == ["a::named-32", "a::named-33"]
    assert len(_stored_ids(client, keys.index)) == 2


def test_retention_leaves_no_run_entry_of_a_dropped_checkpoint_after_its_sweep(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix, keep_last=2)
    cfg = {"configurable": {"thread_id": "runs", "checkpoint_ns": ""}}
    for n in range(34):
        cp = empty_checkpoint()
        cp["channel_values"], cp["channel_versions"] = {"n": n}, {"n": n + 1}
        cfg = saver.put(cfg, cp, {"run_id": f"run-{n % 3}"}, {"n": n + 1})
    keys = saver.engine.keys("runs")
    stored = _stored_ids(client, keys.index)
    runs = [m.decode() for m in client.zrangebylex(keys.index, "[r:", "[r:\xff")]
    assert len(stored) == 2 and sorted(m.rsplit(":", 1)[1] for m in runs) == sorted(stored)
    saver.delete_for_runs(["run-0", "run-1", "run-2"])
    assert saver.get_tuple({"configurable": {"thread_id": "runs"}}) is None


def test_an_alias_of_a_dropped_checkpoint_stands_for_nothing_before_its_sweep(url: str, prefix: str) -> None:
    """list(before=) a trimmed id answers as MemoryCheckpointer does, at every put (the alias
    a trim leaves until the next sweep must not point list at the dropped checkpoint)."""
    from stateline import MemoryCheckpointer

    with SyncRedisCheckpointer(url, prefix=prefix, keep_last=2) as cp:
        memory = MemoryCheckpointer(keep_last=2)
        last = Checkpoint(session_id="s", state={"n": 0}, checkpoint_id="id-0")
        for n in range(20):
            if n:
                last = last.child({"n": n}, checkpoint_id=f"id-{n}")
            cp.save(last)
            asyncio.run(memory.save(last))
            for before in ("id-0", f"id-{n}"):
                expected = [c.checkpoint_id for c in asyncio.run(memory.list("s", before=before))]
                assert [c.checkpoint_id for c in cp.list("s", before=before)] == expected, (n, before)


def test_a_copy_takes_no_run_entry_or_alias_of_a_dropped_checkpoint(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix, keep_last=2)
    cfg = {"configurable": {"thread_id": "src", "checkpoint_ns": ""}}
    for n in range(5):  # 3 dropped, no sweep yet
        cp = empty_checkpoint()
        cp["channel_values"], cp["channel_versions"] = {"n": n}, {"n": n + 1}
        cfg = saver.put(cfg, cp, {"run_id": f"run-{n}"}, {"n": n + 1})
    saver.copy_thread("src", "dst")
    keys = saver.engine.keys("dst")
    runs = sorted(m.decode().split(":")[1] for m in client.zrangebylex(keys.index, "[r:", "[r:\xff"))
    assert runs == ["run-3", "run-4"]
    shard = saver.engine.schema.index_of("dst")
    registered = sorted(m.decode() for m in client.zrangebylex(shard.entries, "[r:", "[r:\xff") if m.endswith(b" dst"))
    assert registered == ["r:run-3 dst", "r:run-4 dst"]
