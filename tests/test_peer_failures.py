"""The peers' known failures (shared/notes/peer-*.md), reproduced as tests that pass here.

- TTL expiring part of a thread: a channel value written once and never changed expired
  while the thread was still active (plainredis), old checkpoints expired under a TTL that
  did not slide (llmfy), write keys had no TTL at all (langgraph-redis #137).
- Writes lost across concurrent ``put_writes``: a GET-then-SET of the whole write list lets
  parallel tasks overwrite each other, and a retry duplicates entries (AWS ValkeySaver).
- Prefix collisions: ``clear_all`` with prefix ``"app"`` also deleted ``"app2…"`` keys
  (llmfy), a "latest" pointer ignored the prefix (langgraph-redis #187).

Cluster CROSSSLOT is covered in test_cluster.py (one thread = one hash slot).
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline import SyncRedisCheckpointer
from stateline.checkpointer import Checkpoint
from stateline.keys import Schema
from stateline.langgraph import AsyncRedisSaver, RedisSaver

from .conftest import keys_of
from .waiting import until


def checkpoint(values: dict, versions: dict) -> dict:
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return cp


def thread_keys(client: redis.Redis, prefix: str, thread: str) -> list[bytes]:
    return keys_of(client, Schema(prefix).thread(thread).data[: -len(":d")] + "*")


# -- (a) TTL expiring part of a thread ---------------------------------------------------------


def test_a_thread_written_for_longer_than_its_ttl_keeps_every_checkpoint_then_expires_whole(
    url: str, prefix: str, client: redis.Redis
) -> None:
    ttl = 2.0  # seconds; the thread stays active past its first checkpoint's deadline
    saver = RedisSaver(url, prefix=prefix, ttl=ttl)
    thread = "long-running"
    # The first checkpoint stores "system" (version 1) and "turn"; every later one changes
    # only "turn", so "system" is written once, at the start, and only referenced after.
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    first = checkpoint(
        {"system": "you are helpful", "turn": 0, "tools": ["a", "b", "c", "d"]}, {"system": 1, "turn": 1, "tools": 1}
    )
    cfg = saver.put(cfg, first, {"step": 0}, {"system": 1, "turn": 1, "tools": 1})
    saver.put_writes(cfg, [("turn", 1)], "task-0")
    # A key given the same TTL now expires, on the server's clock, no earlier than the first
    # checkpoint would have without the puts that follow: its absence says that time passed.
    first_deadline = f"{prefix}first-deadline"
    client.set(first_deadline, 1, px=int(ttl * 1000))
    first_cfg = cfg
    ids = [first["id"]]
    n, past = 0, False
    while not past:  # each put slides the whole thread's expiry
        past = not client.exists(first_deadline)  # then this round's reads come after it
        n += 1
        values = {"system": "you are helpful", "turn": n, "tools": ["a", "b", "c", "d"]}
        cp = checkpoint(values, {"system": 1, "turn": n + 1, "tools": 1})
        cfg = saver.put(cfg, cp, {"step": n}, {"turn": n + 1})
        saver.put_writes(cfg, [("turn", n + 1)], f"task-{n}")
        ids.append(cp["id"])
        # the oldest checkpoint, and the value written only at the start, are still there
        oldest = saver.get_tuple(first_cfg)
        assert oldest is not None, f"the first checkpoint expired after {n} puts"
        assert oldest.checkpoint["channel_values"]["system"] == "you are helpful"
        assert oldest.pending_writes == [("task-0", "turn", 1)]
        assert saver.get_tuple({"configurable": {"thread_id": thread}}).checkpoint["channel_values"] == values
        for key in thread_keys(client, prefix, thread):
            assert 0 < client.pttl(key) <= ttl * 1000  # every key of the thread carries the TTL
    assert n > 1

    listed = list(saver.list({"configurable": {"thread_id": thread}}))
    assert [t.checkpoint["id"] for t in listed] == ids[::-1]
    for i, t in enumerate(reversed(listed)):
        assert t.checkpoint["channel_values"] == {"system": "you are helpful", "turn": i, "tools": ["a", "b", "c", "d"]}
        assert t.pending_writes == [(f"task-{i}", "turn", i + 1)]

    # Idle: the whole thread expires at once, nothing is left behind.
    until(lambda: not thread_keys(client, prefix, thread), what="the idle thread did not expire")
    assert saver.get_tuple({"configurable": {"thread_id": thread}}) is None
    assert list(saver.list(None)) == []  # and discovery drops it (its index entry goes too)
    assert keys_of(client, prefix + "*") == []
    saver.close()


# -- (b) writes lost across concurrent put_writes -----------------------------------------------


async def test_fifty_concurrent_put_writes_before_their_checkpoint_all_arrive(url: str, prefix: str) -> None:
    saver = AsyncRedisSaver(url, prefix=prefix)
    cp = checkpoint({"x": 0}, {"x": 1})
    cfg = {"configurable": {"thread_id": "fan-out", "checkpoint_ns": "", "checkpoint_id": cp["id"]}}

    async def task(i: int) -> None:
        await saver.aput_writes(cfg, [("results", f"result {i}"), ("log", [i] * 5)], f"task-{i:02d}", f"path-{i}")

    await asyncio.gather(*(task(i) for i in range(50)))  # all issued BEFORE the checkpoint exists
    await asyncio.gather(*(task(i) for i in range(0, 50, 5)))  # retries of some: no duplicates
    parent = {"configurable": {"thread_id": "fan-out", "checkpoint_ns": ""}}
    await saver.aput(parent, cp, {"step": 1}, {"x": 1})

    expected = sorted(
        [(f"task-{i:02d}", "results", f"result {i}") for i in range(50)]
        + [(f"task-{i:02d}", "log", [i] * 5) for i in range(50)]
    )
    got = await saver.aget_tuple(cfg)
    assert sorted(got.pending_writes) == expected
    listed = [t async for t in saver.alist({"configurable": {"thread_id": "fan-out"}})]
    assert sorted(listed[0].pending_writes) == expected
    await saver.aclose()


def test_concurrent_put_writes_from_threads_all_arrive(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cp = checkpoint({"x": 0}, {"x": 1})
    cfg = {"configurable": {"thread_id": "threads", "checkpoint_ns": "", "checkpoint_id": cp["id"]}}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: saver.put_writes(cfg, [("results", i)], f"task-{i:02d}"), range(50)))
    saver.put({"configurable": {"thread_id": "threads", "checkpoint_ns": ""}}, cp, {}, {"x": 1})
    assert sorted(saver.get_tuple(cfg).pending_writes) == [(f"task-{i:02d}", "results", i) for i in range(50)]
    saver.close()


# -- (c) prefix collisions --------------------------------------------------------------------


@pytest.mark.parametrize("suffixes", [("", "2"), (":", ":x")], ids=["app-vs-app2", "app:-vs-app:x"])
def test_savers_with_overlapping_prefixes_never_see_or_touch_each_other(
    url: str, client: redis.Redis, suffixes: tuple[str, str]
) -> None:
    base = f"app{uuid.uuid4().hex[:6]}"  # a fresh "app" for this test, on the shared server
    one, two = (base + s for s in suffixes)  # "app" / "app2", or "app:" / "app:x"
    a, b = RedisSaver(url, prefix=one), RedisSaver(url, prefix=two)
    for saver, name in ((a, "A"), (b, "B")):
        for t in ("t1", "t2", "shared-name"):
            for step in range(3):
                cfg = {"configurable": {"thread_id": t, "checkpoint_ns": ""}}
                head = saver.get_tuple(cfg)
                cp = checkpoint(
                    {"owner": name, "step": step, "msgs": [name] * 5}, {"owner": 1, "step": step + 1, "msgs": 1}
                )
                stored = saver.put(
                    head.config if head else cfg,
                    cp,
                    {"run_id": f"run-{t}", "step": step},
                    {"owner": 1, "step": step + 1, "msgs": 1},
                )
                saver.put_writes(stored, [("step", step)], "task")

    def owners(saver: RedisSaver) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for t in saver.list(None):
            out.setdefault(t.config["configurable"]["thread_id"], set()).add(t.checkpoint["channel_values"]["owner"])
        return out

    assert owners(a) == {"t1": {"A"}, "t2": {"A"}, "shared-name": {"A"}}
    assert owners(b) == {"t1": {"B"}, "t2": {"B"}, "shared-name": {"B"}}
    b_keys = keys_of(client, two + "*")

    a.delete_thread("shared-name")
    a.prune(["t1"], keep_last=1)
    a.delete_for_runs(["run-t2"])
    assert owners(a) == {"t1": {"A"}}
    assert len(list(a.list({"configurable": {"thread_id": "t1"}}))) == 1
    assert owners(b) == {"t1": {"B"}, "t2": {"B"}, "shared-name": {"B"}}
    for t in ("t1", "t2", "shared-name"):
        assert len(list(b.list({"configurable": {"thread_id": t}}))) == 3
        assert b.get_tuple({"configurable": {"thread_id": t}}).pending_writes == [("task", "step", 2)]
    assert keys_of(client, two + "*") == b_keys  # not one key of B changed hands

    # The seed API's clear_all on prefix "app" deletes every key of "app" (here saver A's
    # too: the same prefix) and not one of "app2" (llmfy's deleted "app2..." as well).
    ca = SyncRedisCheckpointer(url, prefix=one)
    ca.save(Checkpoint(session_id="s", state={"who": "A"}), new_session=True)
    ca.clear_all()
    assert ca.list_sessions() == [] and ca.load("s") is None
    assert keys_of(client, one + "*") == b_keys  # all that is left under "app*" is B's
    assert owners(a) == {}
    assert owners(b) == {"t1": {"B"}, "t2": {"B"}, "shared-name": {"B"}}
    assert keys_of(client, two + "*") == b_keys
    b.delete_thread("t1")
    assert owners(b) == {"t2": {"B"}, "shared-name": {"B"}}
    for c in (a, b, ca):
        c.close()
