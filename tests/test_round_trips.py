"""The server sees one command per put, put_writes and get_tuple (INFO commandstats deltas)."""

from __future__ import annotations

import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline.langgraph import AsyncRedisSaver, RedisSaver


class Commands:
    """What clients send to the server, seen through MONITOR; a script's own calls are
    tagged [lua] there and left out. An ECHO marks the end, so nothing waits on time."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.monitor = client.monitor().__enter__()
        self.marker = 0

    def since_last(self) -> list[str]:
        self.marker += 1
        mark = f"end-{self.marker}"
        self.client.echo(mark)
        seen = []
        while True:
            cmd = self.monitor.next_command()
            if cmd["command"] == f"ECHO {mark}":
                return seen
            if cmd.get("client_type") != "lua" and not cmd["command"].startswith("ECHO end-"):
                seen.append(cmd["command"].split(" ", 1)[0].upper())


def cp(i: int) -> dict:
    c = empty_checkpoint()
    c["id"] = str(uuid6())
    c["channel_values"] = {"n": i, "messages": [f"message {j}" for j in range(i + 5)]}
    c["channel_versions"] = {"n": i + 1, "messages": i + 1}
    return c


def test_put_put_writes_and_get_tuple_are_one_command_each(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg = {"configurable": {"thread_id": "rt", "checkpoint_ns": ""}}
    cfg = saver.put(cfg, cp(0), {}, {"n": 1, "messages": 1})  # registers the thread, loads scripts
    saver.put_writes(cfg, [("n", 1)], "warm")
    saver.get_tuple(cfg)

    seen = Commands(client)
    seen.since_last()
    nxt = cp(1)
    cfg = saver.put(cfg, nxt, {"step": 1}, {"n": 2, "messages": 2})
    assert seen.since_last() == ["EVALSHA"]

    saver.put_writes(cfg, [("n", 5), ("messages", ["x"]), ("__interrupt__", "why")], "task-1", "~path")
    assert seen.since_last() == ["EVALSHA"]

    for config in (cfg, {"configurable": {"thread_id": "rt"}}):  # by id, and latest
        got = saver.get_tuple(config)
        assert seen.since_last() == ["EVALSHA"]
        assert got.checkpoint["channel_values"] == nxt["channel_values"]
        assert len(got.pending_writes) == 3


def test_first_put_of_a_thread_is_one_pipelined_round_trip(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix)
    saver.put({"configurable": {"thread_id": "warm", "checkpoint_ns": ""}}, cp(0), {}, {"n": 1, "messages": 1})
    seen = Commands(client)
    seen.since_last()
    saver.put(
        {"configurable": {"thread_id": "new", "checkpoint_ns": ""}}, cp(0), {"run_id": "r1"}, {"n": 1, "messages": 1}
    )
    # the discovery entry (thread and run, one script on its shard) and the put: one pipeline
    assert seen.since_last() == ["EVALSHA", "EVALSHA"]


def test_with_a_ttl_a_warm_put_writes_no_discovery_key(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix, ttl=60)
    cfg = saver.put(
        {"configurable": {"thread_id": "ttl", "checkpoint_ns": ""}}, cp(0), {"run_id": "r"}, {"n": 1, "messages": 1}
    )
    seen = Commands(client)
    seen.since_last()
    for i in range(1, 4):  # the thread's entry lives on until half the TTL has passed
        cfg = saver.put(cfg, cp(i), {"run_id": "r"}, {"n": i + 1, "messages": i + 1})
        saver.put_writes(cfg, [("n", i)], f"task-{i}")
        assert seen.since_last() == ["EVALSHA", "EVALSHA"]  # the put, the writes: no index


async def test_async_saver_is_one_command_too(url: str, prefix: str, client: redis.Redis) -> None:
    saver = AsyncRedisSaver(url, prefix=prefix)
    cfg = await saver.aput(
        {"configurable": {"thread_id": "art", "checkpoint_ns": ""}}, cp(0), {}, {"n": 1, "messages": 1}
    )
    await saver.aget_tuple(cfg)
    seen = Commands(client)
    seen.since_last()
    cfg = await saver.aput(cfg, cp(1), {}, {"n": 2, "messages": 2})
    await saver.aput_writes(cfg, [("n", 3)], "task")
    assert (await saver.aget_tuple(cfg)).pending_writes == [("task", "n", 3)]
    assert seen.since_last() == ["EVALSHA"] * 3
    await saver.aclose()


def test_list_limit_is_one_command_whatever_the_thread_length(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg = {"configurable": {"thread_id": "long", "checkpoint_ns": ""}}
    for i in range(300):
        cfg = saver.put(cfg, cp(i % 3), {"step": i}, {"n": i + 1})
    list(saver.list(cfg, limit=1))  # loads the script
    seen = Commands(client)
    seen.since_last()
    got = list(saver.list({"configurable": {"thread_id": "long", "checkpoint_ns": ""}}, limit=10))
    assert len(got) == 10 and [t.metadata["step"] for t in got] == list(range(299, 289, -1))
    assert seen.since_last() == ["EVALSHA"]


def test_delta_channel_history_is_one_command_for_a_long_chain(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg = {"configurable": {"thread_id": "delta", "checkpoint_ns": ""}}
    seed = cp(0)
    cfg = saver.put(cfg, seed, {}, {"n": 1, "messages": 1})
    for i in range(1, 30):  # 29 checkpoints whose 'd' value lives only in their writes
        c = empty_checkpoint()
        c["id"] = str(uuid6())
        c["channel_versions"] = {"d": i}
        c["channel_values"] = {}
        saver.put_writes(cfg, [("d", f"write {i}")], f"task-{i}")
        cfg = saver.put(cfg, c, {}, {"d": i})
    saver.get_delta_channel_history(config=cfg, channels=["d"])  # loads the script
    seen = Commands(client)
    seen.since_last()
    history = saver.get_delta_channel_history(config=cfg, channels=["d", "messages"])
    assert seen.since_last() == ["EVALSHA"]
    assert [w[2] for w in history["d"]["writes"]] == [f"write {i}" for i in range(1, 30)]
    assert history["messages"]["seed"] == seed["channel_values"]["messages"]
