"""The discovery index holds live threads and runs only, with nobody listing, in shards."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline.keys import SHARDS, Schema, enc
from stateline.langgraph import RedisSaver, ShallowRedisSaver

from . import servers
from .conftest import index_members
from .waiting import until


@pytest.fixture(scope="module", params=["valkey", "redis7"])
def server_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Valkey 9, and Redis 7.0 (the oldest server the index script must run on)."""
    if request.param == "valkey":
        yield request.getfixturevalue("valkey")
        return
    binary = servers.redis_binary()
    if binary is None:
        pytest.skip("needs Debian redis-server 7.0 (apt-get install redis-server)")
    server = servers.start(binary, Path(tmp_path_factory.mktemp("redis7")))
    yield server.url
    servers.stop_all([server])


@pytest.fixture
def db(server_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(server_url)
    yield c
    c.close()


def put(saver: RedisSaver, thread: str, run: str | None = None, cfg: dict | None = None) -> dict:
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"], cp["channel_versions"] = {"n": run}, {"n": cp["id"]}
    cfg = cfg or {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    return saver.put(cfg, cp, {"run_id": run} if run else {}, {"n": cp["id"]})


def leftovers(client: Any, prefix: str, threads: Sequence[str]) -> list[bytes]:
    """What is left of the threads under the prefix: their keys, and every member of any
    sorted set (the discovery index) that names one of them."""
    schema, names = Schema(prefix), {enc(t).encode() for t in threads}
    left = [k.encode() for t in threads for k in schema.thread(t).all if client.exists(k)]
    for key in client.scan_iter(match=prefix + "*", count=1000):
        if client.type(key) == b"zset":
            left += [m for m in client.zrange(key, 0, -1) if names & set(re.split(rb"[ :]", m))]
    return left


def one_per_shard(schema: Schema, name: str) -> list[str]:
    """A thread id for every discovery shard."""
    found: dict[int, str] = {}
    for i in range(100_000):
        found.setdefault(schema.index_of(f"{name}-{i}").shard, f"{name}-{i}")
        if len(found) == SHARDS:
            return list(found.values())
    raise AssertionError("ids do not reach every shard")


@pytest.mark.parametrize("kind", [ShallowRedisSaver, RedisSaver])
def test_delete_thread_leaves_nothing_of_a_thread_and_its_runs(
    server_url: str, prefix: str, db: redis.Redis, kind: Any
) -> None:
    saver = kind(server_url, prefix=prefix)
    cfg = put(saver, "many-runs", "run-0")
    for i in range(1, 600):  # more runs than one call of the index script removes
        cfg = put(saver, "many-runs", f"run-{i}", cfg)
    put(saver, "bystander", "run-7")
    assert len(leftovers(db, prefix, ["many-runs"])) > 600  # the index knows every run
    saver.delete_thread("many-runs")
    assert leftovers(db, prefix, ["many-runs"]) == []
    saver.delete_for_runs(["run-7"])  # the bystander's entry of the run was kept
    assert leftovers(db, prefix, ["bystander"]) == []


@pytest.mark.parametrize("kind", [ShallowRedisSaver, RedisSaver])
def test_delete_for_runs_of_every_run_leaves_nothing_of_the_thread(
    server_url: str, prefix: str, db: redis.Redis, kind: Any
) -> None:
    saver = kind(server_url, prefix=prefix)
    cfg = None
    for i in range(6):
        cfg = put(saver, "by-runs", f"run-{i % 3}", cfg)
        saver.put_writes(cfg, [("n", i)], f"task-{i}")
    put(saver, "other", "run-9")
    saver.delete_for_runs(["run-0", "run-1", "run-2"])
    assert saver.get_tuple({"configurable": {"thread_id": "by-runs"}}) is None
    assert leftovers(db, prefix, ["by-runs"]) == []
    assert [t.config["configurable"]["thread_id"] for t in saver.list(None)] == ["other"]


def test_expired_threads_go_from_the_index_with_nobody_writing_or_listing(
    server_url: str, prefix: str, db: redis.Redis
) -> None:
    saver = RedisSaver(server_url, prefix=prefix, ttl=0.5)
    threads = [f"short-{i}" for i in range(50)]
    for t in threads:
        put(saver, t, f"run-of-{t}")
    assert leftovers(db, prefix, threads)
    # The entries outlive their threads by a TTL or so: then the shard keys expire too.
    until(lambda: leftovers(db, prefix, threads) == [], what="the expired threads' entries did not go")
    assert list(db.scan_iter(match=prefix + "*", count=1000)) == []


def test_ttl_churn_with_nobody_listing_leaves_the_index_bounded(server_url: str, prefix: str, db: redis.Redis) -> None:
    schema = Schema(prefix)
    live = one_per_shard(schema, "live")
    writer = RedisSaver(server_url, prefix=prefix)
    for t in live:  # threads without TTL in every shard: no shard key expires on its own
        put(writer, t)
    churn = RedisSaver(server_url, prefix=prefix, ttl=1)
    churned = [f"churn-{i}" for i in range(2_000)]
    for t in churned:
        put(churn, t, f"run-of-{t}")
    assert leftovers(db, prefix, churned)  # (the first may be gone already: later writes trim)

    def expired() -> bool:  # every thread's keys, and every entry's life (Unix ms, as written)
        if any(
            db.exists(*(k for t in churned[i : i + 500] for k in schema.thread(t).all)) for i in range(0, 2_000, 500)
        ):
            return False
        now_ms = int(time.time() * 1000)
        return all(db.zcount(s.expiry, f"({now_ms}", "+inf") == 0 for s in schema.indexes)

    until(expired, what="the churned threads and their entries did not expire")
    for _ in range(3):  # a few writes to each shard, from processes that never listed
        writer = RedisSaver(server_url, prefix=prefix)
        for t in live:
            put(writer, t)
    assert len(index_members(db, schema)) - len(live) < 100
    assert leftovers(db, prefix, churned) == []
    listed = {c.config["configurable"]["thread_id"] for c in RedisSaver(server_url, prefix=prefix).list(None)}
    assert listed == set(live)
