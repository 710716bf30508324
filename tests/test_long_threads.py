"""Long threads: storage that never leaks or loses silently, and reads and writes whose
cost does not depend on what the thread held before (reference counts, chunked logs).

Each test uses a real server; the longest-command and bytes-per-turn figures at 1,000
turns and 10,000 checkpoints are the benchmark's (``stateline bench --workloads long``)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline import StoredDataError
from stateline.engine import _packed_writes, _write_digests
from stateline.langgraph import RedisSaver, ShallowRedisSaver

from . import servers
from .conftest import keys_of


def _message(i: int) -> HumanMessage | AIMessage:
    cls = HumanMessage if i % 2 == 0 else AIMessage
    return cls(content=f"message {i} " + "x" * 200, id=f"m-{i}")


class Chat:
    """A thread built the way LangGraph writes one: each checkpoint carries the whole,
    growing messages list, and names only the channels that changed."""

    def __init__(self, saver: RedisSaver, thread_id: str = "chat", ns: str = "") -> None:
        self.saver, self.messages, self.step = saver, [], 0
        self.config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
        self.versions: dict[str, str] = {}

    def put(
        self, new_messages: int = 4, run_id: str = "run-1", changed: tuple[str, ...] = ("messages", "step")
    ) -> None:
        self.messages = self.messages + [_message(len(self.messages) + k) for k in range(new_messages)]
        self.step += 1
        for ch in changed:
            self.versions[ch] = self.saver.get_next_version(self.versions.get(ch), None)
        cp = empty_checkpoint()
        cp["id"] = str(uuid6())
        cp["channel_values"] = {"messages": self.messages, "step": self.step}
        cp["channel_versions"] = dict(self.versions)
        if "configurable" in self.config and self.config["configurable"].get("checkpoint_id"):
            self.saver.put_writes(self.config, [("messages", self.messages[-new_messages:])], f"task-{self.step}")
        new = {ch: self.versions[ch] for ch in changed}
        self.config = self.saver.put(self.config, cp, {"step": self.step, "run_id": run_id}, new)

    def read(self) -> list:
        return self.saver.get_tuple(self.config).checkpoint["channel_values"]["messages"]


def test_a_put_whose_unchanged_values_were_deleted_meanwhile_sends_them(url: str, prefix: str) -> None:
    saver, other = RedisSaver(url, prefix=prefix), RedisSaver(url, prefix=prefix)
    chat = Chat(saver)
    chat.put()
    chat.put()
    other.delete_thread("chat")  # another process, between this one's read and its put
    chat.put(new_messages=0, changed=("step",))  # messages unchanged: not in new_versions
    got = RedisSaver(url, prefix=prefix).get_tuple({"configurable": {"thread_id": "chat"}})
    assert got.checkpoint["channel_values"]["messages"] == chat.messages  # never without them
    assert got.checkpoint["channel_values"]["step"] == 3


def test_a_version_named_without_a_value_refers_to_nothing_stored(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver)
    chat.put()
    saver.delete_thread("chat")
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = {"step": 9}
    cp["channel_versions"] = {"step": "9", "messages": chat.versions["messages"]}
    # channel_values lacks "messages" though its version is named: a value the checkpoint
    # does not carry is not stored either, so nothing refers to what is gone
    config = saver.put(chat.config, cp, {}, {"step": "9"})
    assert saver.get_tuple(config).checkpoint["channel_values"] == {"step": 9}


@pytest.mark.parametrize("lost", ["d", "i"])
def test_a_thread_that_lost_one_key_is_stored_data_error_not_empty(url: str, prefix: str, lost: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="evicted thread")
    chat.put()
    redis.Redis.from_url(url).delete(saver.engine.keys("evicted thread").data[:-1] + lost)  # as an eviction does
    config = {"configurable": {"thread_id": "evicted thread"}}
    for read in (lambda: saver.get_tuple(config), lambda: list(saver.list(config)), chat.put):
        with pytest.raises(StoredDataError, match="thread 'evicted thread' lost part of its data"):
            read()


@pytest.fixture(scope="module")
def evicting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    server = servers.start(
        servers.valkey_binary(), tmp_path_factory.mktemp("evicting"), "--maxmemory", "64mb",
        "--maxmemory-policy", "allkeys-lru",
    )  # fmt: skip
    yield server
    servers.stop_all([server])


def test_a_server_that_may_evict_keys_is_warned_about_once(evicting_server: servers.Server, prefix: str) -> None:
    from stateline import engine

    engine._POLICY_SEEN.discard("allkeys-lru")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(2):
            Chat(RedisSaver(evicting_server.url, prefix=prefix), thread_id=str(uuid.uuid4())).put()
    said = [w for w in seen if "maxmemory-policy is allkeys-lru" in str(w.message)]
    assert len(said) == 1 and "noeviction" in str(said[0].message)


def test_delete_for_runs_of_every_run_leaves_nothing_of_the_thread(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="runs")
    for i in range(70):  # more than one call's worth of checkpoints per run
        chat.put(run_id=f"run-{i // 35}")
    sub = Chat(saver, thread_id="runs", ns="child:1")
    sub.put(run_id="run-1")
    client = redis.Redis.from_url(url)
    assert keys_of(client, f"{prefix}{{runs}}*")
    saver.delete_for_runs(["run-0", "run-1"])
    assert keys_of(client, f"{prefix}{{runs}}*") == []
    assert saver.get_tuple({"configurable": {"thread_id": "runs"}}) is None


def _fields(client: redis.Redis, key: str) -> dict[bytes, bytes]:
    return client.hgetall(key)


def _check_counts(fields: dict[bytes, bytes]) -> None:
    """Recounts every reference from scratch (records -> values -> logs -> items, writes ->
    items, forks -> logs) and compares with the stored counts: nothing unreferenced is kept,
    nothing referenced is missing, every count is right."""
    import ormsgpack

    refs: dict[bytes, int] = {}
    forks: dict[bytes, int] = {}

    def ref(f: bytes) -> None:
        refs[f] = refs.get(f, 0) + 1

    for f, v in fields.items():
        if f.startswith(b"c:"):
            head = int.from_bytes(v[:4], "big")
            for value_field in ormsgpack.unpackb(v[4 : 4 + head])[2]:
                ref(value_field.encode())
        elif f.startswith(b"b:") and v.startswith(b"L"):
            ref(v[1:].split(b":", 1)[1].split(b"|")[0])
        elif f.startswith(b"w:"):  # packed writes, or one in a field of its own
            writes = [w for _, _, w in _packed_writes(v, "")[0]] if f.count(b":") == 2 else [v]
            for digests in map(_write_digests, writes):
                for k in range(0, len(digests), 16):
                    ref(b"e:" + digests[k : k + 16])
        elif f.startswith(b"l:") and b"#" in f:
            for k in range(0, len(v), 16):
                ref(b"e:" + v[k : k + 16])
        elif f.startswith(b"l:") and v.count(b" ") == 2:
            base = v.split(b" ")[1]
            forks[base] = forks.get(base, 0) + 1
    stored = {f for f in fields if f[:2] in (b"b:", b"e:") or (f.startswith(b"l:") and b"#" not in f)}
    assert set(refs) | set(forks) == stored  # every stored value, log and item is referenced
    for f, n in refs.items():
        default = 0 if f.startswith(b"l:") else 1  # a value's or an item's first is implicit
        assert int(fields.get(b"n:" + f, default)) == n, f
    for f, n in forks.items():
        assert int(fields[b"k:" + f].split(b" ")[0]) == n, f
    assert all(f[2:] in refs for f in fields if f.startswith(b"n:"))


def test_prune_leaves_exactly_what_the_kept_checkpoints_refer_to(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="pruned")
    for _ in range(120):
        chat.put()
    sub = Chat(saver, thread_id="pruned", ns="tool:1")
    sub.config["configurable"]["checkpoint_id"] = "never-saved"  # writes whose checkpoint never came
    saver.put_writes(sub.config, [("x", 1)], "task")
    saver.prune(["pruned"], keep_last=1)
    client = redis.Redis.from_url(url)
    fields = _fields(client, saver.engine.keys("pruned").data)
    kinds = sorted(f[:2].decode() for f in fields)
    assert kinds.count("c:") == 1 and kinds.count("w:") == 0  # the head (its writes went with its parent)
    items = [f for f in fields if f.startswith(b"e:")]
    assert len(items) == len(chat.messages)  # the log holds every message, once
    assert not [f for f in fields if f.startswith((b"t:tool", b"w:tool"))]  # the namespace went whole
    members = client.zrange(saver.engine.keys("pruned").index, 0, -1)
    assert b"s:tool%3A1" not in members and not [m for m in members if m.startswith(b"g:")]
    _check_counts(fields)
    assert [m.content for m in chat.read()] == [m.content for m in chat.messages]


def test_a_rewritten_list_frees_the_old_log_and_its_items_a_bounded_amount_per_call(url: str, prefix: str) -> None:
    saver = ShallowRedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="rewritten")
    for _ in range(200):
        chat.put()  # 800 messages in one log
    chat.messages = chat.messages[-2:]  # a summary replaced the history: a new log
    chat.put(new_messages=2)
    client = redis.Redis.from_url(url)
    keys = saver.engine.keys("rewritten")
    assert client.zrangebylex(keys.index, "[g:", "[g:\xff")  # the old log waits to be released
    for _ in range(4):  # each put releases a bounded number of its items
        chat.put()
    assert not client.zrangebylex(keys.index, "[g:", "[g:\xff")
    fields = _fields(client, keys.data)
    assert len([f for f in fields if f.startswith(b"e:")]) == len(chat.messages)
    _check_counts(fields)
    assert [m.content for m in chat.read()] == [m.content for m in chat.messages]


def test_a_warm_put_sends_only_what_is_new_and_a_cold_one_no_item_the_thread_holds(
    url: str, prefix: str, valkey: str
) -> None:
    client = redis.Redis.from_url(url)
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="bytes")
    sizes = []
    for i in range(160):
        before = client.info("stats")["total_net_input_bytes"]
        chat.put()
        if i in (40, 159):
            sizes.append(client.info("stats")["total_net_input_bytes"] - before)
    assert sizes[1] < 1.2 * sizes[0]  # 640 messages cost what 160 did
    cold = RedisSaver(url, prefix=prefix)  # another process, that never saw the thread
    chat.saver = cold
    before = client.info("stats")["total_net_input_bytes"]
    chat.put()
    sent = client.info("stats")["total_net_input_bytes"] - before
    assert sent < 16 * len(chat.messages) + 8 * sizes[1]  # the digests, not the 640 items again
    assert [m.content for m in chat.read()] == [m.content for m in chat.messages]


def test_a_long_list_is_read_in_bounded_chunks_and_whole(url: str, prefix: str, tmp_path: Path) -> None:
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="read")
    for _ in range(300):
        chat.put()
    fresh = RedisSaver(url, prefix=prefix)
    from stateline import elements

    elements.ITEMS.drop(lambda _k: True)  # a process that has none of the items
    got = fresh.get_tuple({"configurable": {"thread_id": "read"}})
    assert [m.content for m in got.checkpoint["channel_values"]["messages"]] == [m.content for m in chat.messages]
    history = list(fresh.list({"configurable": {"thread_id": "read"}}, limit=3))
    assert [len(t.checkpoint["channel_values"]["messages"]) for t in history] == [1200, 1196, 1192]


def test_the_caches_of_a_process_share_one_budget(url: str, prefix: str) -> None:
    import stateline

    assert stateline.cache_usage()["budget"] <= 64 * 1024 * 1024
    try:
        stateline.configure_caches(256 * 1024)  # a quarter MB for everything
        savers = [RedisSaver(url, prefix=prefix) for _ in range(3)]  # e.g. graphs compiled apart
        for i, saver in enumerate(savers):
            chat = Chat(saver, thread_id=f"budget-{i}")
            for _ in range(60):
                chat.put()
            saver.get_tuple(chat.config)
        used = stateline.cache_usage()
        assert used["total"] <= used["budget"] * 1.1 and used["budget"] <= 256 * 1024
        assert [m.content for m in chat.read()] == [m.content for m in chat.messages]  # still right
    finally:
        stateline.configure_caches(64 * 1024 * 1024)


async def test_checkpointers_sharing_the_cache_each_serialize_with_their_own_types(url: str, prefix: str) -> None:
    from dataclasses import dataclass

    from stateline import Checkpoint, RedisCheckpointer

    @dataclass
    class Spot:
        x: int

    plain = RedisCheckpointer(redis_url=url, prefix=prefix + "a:")
    typed = RedisCheckpointer(redis_url=url, prefix=prefix + "b:", types=[Spot])
    await plain.save(Checkpoint(session_id="s", state={"items": ["a", "b", "c", "d", "e"]}))
    await typed.save(Checkpoint(session_id="s", state={"items": [Spot(i) for i in range(5)]}))
    assert (await typed.load("s")).state["items"] == [Spot(i) for i in range(5)]
    await plain.close()
    await typed.close()


def test_a_fork_of_a_long_list_shares_its_prefix_and_frees_only_its_own_items(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="fork")
    configs = []
    for _ in range(100):
        chat.put()
        configs.append(chat.config)
    original = list(chat.messages)
    # time travel: go on from the 50th checkpoint (200 messages) with a message of its own
    fork = Chat(saver, thread_id="fork")
    fork.config, fork.versions = configs[49], dict(chat.versions)
    fork.messages, fork.step = original[:199] + [HumanMessage(content="another way", id="fork")], 50
    fork.put(new_messages=3)
    client = redis.Redis.from_url(url)
    keys = saver.engine.keys("fork")
    heads = [v for f, v in _fields(client, keys.data).items() if f.startswith(b"l:") and b"#" not in f]
    assert sorted(h.count(b" ") for h in heads) == [0, 2]  # the fork's log: 4 own digests on a base of 199
    assert [m.content for m in fork.read()] == [m.content for m in fork.messages]
    assert [m.content for m in chat.read()] == [m.content for m in original]
    saver.prune(["fork"], keep_last=1)  # keeps the fork alone: the original's own items go
    for _ in range(3):
        fork.put()  # each write releases a bounded number of them
    fields = _fields(client, keys.data)
    assert len([f for f in fields if f.startswith(b"e:")]) == len(fork.messages)
    _check_counts(fields)
    assert [m.content for m in fork.read()] == [m.content for m in fork.messages]


def test_a_filter_reads_whole_only_what_it_keeps_and_each_right(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="filtered")
    lengths = []
    for i in range(150):
        chat.put(run_id=f"run-{i % 3}")
        lengths.append(len(chat.messages))
    config = {"configurable": {"thread_id": "filtered"}}
    got = list(saver.list(config, filter={"run_id": "run-1"}))  # 50 matches, read together per page
    assert [len(t.checkpoint["channel_values"]["messages"]) for t in got] == lengths[1::3][::-1]
    assert [m.content for m in got[0].checkpoint["channel_values"]["messages"]] == [
        m.content for m in chat.messages[: lengths[-2]]
    ]
    assert [t.metadata["step"] for t in saver.list(config, filter={"step": 7}, limit=1)] == [7]


def test_a_warm_read_is_sent_only_what_follows_the_log_it_knows(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    saver = RedisSaver(url, prefix=prefix)
    chat = Chat(saver, thread_id="warm read")
    for _ in range(300):
        chat.put()
    assert [m.content for m in chat.read()] == [m.content for m in chat.messages]  # (caches the items)
    chat.put()

    def sent_for_a_read() -> int:  # (of the newest checkpoint, as LangGraph reads on every invoke)
        before = client.info("stats")["total_net_output_bytes"]
        got = chat.saver.get_tuple({"configurable": {"thread_id": "warm read"}})
        assert [m.content for m in got.checkpoint["channel_values"]["messages"]] == [m.content for m in chat.messages]
        return client.info("stats")["total_net_output_bytes"] - before

    warm = sent_for_a_read()
    cold = RedisSaver(url, prefix=prefix)
    chat.saver = cold
    from stateline import elements

    elements.HINTS.forget()
    cold_read = sent_for_a_read()  # (items cached; no log known: every digest comes)
    assert warm < 16 * len(chat.messages) < cold_read
    assert sent_for_a_read() < 16 * len(chat.messages)  # the read taught it the log
