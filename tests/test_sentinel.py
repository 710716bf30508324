"""Sentinel: a primary, its replica and 3 sentinels (quorum 2), all real Redis processes.

The primary is SIGKILLed while a stream of checkpoints is written with
``durability="replica"`` (WAIT: a replica has the write before ``put`` returns). Writes
during the failover may fail with ``ServerUnavailable`` or ``DurabilityError`` and are
retried (bounded); afterwards a graph interrupted before the crash resumes, and every
write that was acknowledged is on the new primary. Redis 7.0 has WAIT but not WAITAOF, so
the stronger level used here is "replica".

With a single replica, a write acknowledged by WAIT 1 is on the one node Sentinel can
promote. Once the new primary is up, the killed one is started again as its replica (as an
operator or an orchestrator would do), so that "replica" durability can be met again.
"""

from __future__ import annotations

import asyncio
import operator
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypedDict, TypeVar

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from redis.sentinel import Sentinel

from stateline import DurabilityError, ServerUnavailable
from stateline.langgraph import AsyncRedisSaver, RedisSaver

from . import servers
from .waiting import DEADLINE

REDIS = servers.redis_binary()
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="needs redis-server and redis-sentinel (apt-get install redis-server redis-sentinel)"
)

T = TypeVar("T")
RETRYABLE = (ServerUnavailable, DurabilityError)


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[servers.SentinelSet]:
    assert REDIS is not None
    with servers.sentinel(tmp_path, REDIS, "mymaster", down_after_ms=1000, failover_timeout_ms=2000) as top:
        yield top


# -- the graph ---------------------------------------------------------------------------------


class State(TypedDict):
    steps: Annotated[list[str], operator.add]
    approved: str


def build(saver: Any) -> Any:
    """draft -> ask (interrupts for an approval) -> finish."""

    def draft(state: State) -> dict:
        return {"steps": ["draft"]}

    def ask(state: State) -> dict:
        return {"steps": ["ask"], "approved": interrupt("approve the draft?")}

    def finish(state: State) -> dict:
        return {"steps": ["finish"]}

    g = StateGraph(State)
    g.add_node("draft", draft)
    g.add_node("ask", ask)
    g.add_node("finish", finish)
    g.add_edge(START, "draft")
    g.add_edge("draft", "ask")
    g.add_edge("ask", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=saver)


# -- failover helpers --------------------------------------------------------------------------


def failover(top: servers.SentinelSet, timeout: float = 2 * DEADLINE) -> int:
    """SIGKILLs the primary; returns the new primary's port once every sentinel names it,
    it answers ROLE as master, and the old primary (restarted as its replica) is in sync."""
    old = top.primary
    old.kill()  # SIGKILL: no shutdown, no last words to the replica
    new_port = top.replica.port  # the only replica is the only candidate
    servers.until(lambda: top.master_port() == new_port and all(
        int(top.master(s)["port"]) == new_port for s in top.sentinels), timeout, "sentinels did not fail over")  # fmt: skip
    with redis.Redis(port=new_port, socket_timeout=2) as c:
        servers.until(lambda: c.execute_command("ROLE")[0] == b"master", timeout, "the replica was not promoted")
    old.restart("--replicaof", "127.0.0.1", str(new_port))
    with redis.Redis(port=new_port, socket_timeout=2) as c:

        def in_sync() -> bool:
            role = c.execute_command("ROLE")  # [b"master", offset, [[ip, port, acked offset], ...]]
            if role[0] != b"master" or len(role[2]) != 1:
                return False
            # and it acknowledges a write when asked (WAIT), as durability="replica" needs
            c.incr("failover-probe")
            return c.execute_command("WAIT", 1, 200) == 1

        servers.until(in_sync, timeout, "the old primary did not resync as a replica")
    top.primary, top.replica = top.replica, old
    return new_port


class Log:
    """What the writer got acknowledged, and the errors it saw (shared with the test thread)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.puts: list[tuple[str, int]] = []  # (checkpoint id, n), acknowledged
        self.writes: set[str] = set()  # checkpoint ids whose put_writes was acknowledged
        self.attempted: list[tuple[str, int]] = []
        self.errors: list[Exception] = []
        self.fatal: BaseException | None = None

    def wait_for(self, n: int, timeout: float = 2 * DEADLINE) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.puts) >= n or self.fatal is not None, timeout)
        if self.fatal is not None:
            raise AssertionError("the writer failed") from self.fatal
        assert ok, f"the writer got only {len(self.puts)} of {n} puts acknowledged in {timeout} s"


def retrying(fn: Callable[[], T], log: Log, stop: threading.Event, deadline: float) -> T:
    """Retries ``fn`` on the errors a failover causes, until the deadline. The short wait
    between attempts is client backoff, not synchronization: readiness is the server's."""
    while True:
        try:
            return fn()
        except RETRYABLE as exc:
            log.errors.append(exc)
            if time.monotonic() > deadline:
                raise
            stop.wait(0.02)


def stream(saver: RedisSaver, thread: str, log: Log, stop: threading.Event, budget: float = 4 * DEADLINE) -> None:
    """Writes checkpoint after checkpoint (each with two pending writes) until ``stop``."""
    deadline = time.monotonic() + budget
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    try:
        n = 0
        while not stop.is_set():
            cp = empty_checkpoint()
            cp["id"] = str(uuid6())
            cp["channel_values"] = {"n": n, "payload": f"payload {n} " + "x" * 200}
            cp["channel_versions"] = {"n": n + 1, "payload": n + 1}
            log.attempted.append((cp["id"], n))
            put = partial(saver.put, cfg, cp, {"step": n, "source": "loop"}, dict(cp["channel_versions"]))
            stored = retrying(put, log, stop, deadline)
            with log.cond:
                log.puts.append((cp["id"], n))
                log.cond.notify_all()
            put_writes = partial(saver.put_writes, stored, [("n", n + 1), ("note", f"w{n}")], f"task-{n}")
            retrying(put_writes, log, stop, deadline)
            log.writes.add(cp["id"])
            cfg = stored
            n += 1
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which raises it
        with log.cond:
            log.fatal = exc
            log.cond.notify_all()


def check_acknowledged(saver: RedisSaver, thread: str, log: Log) -> None:
    """Every acknowledged put (and put_writes) is there, whole; an unacknowledged one is
    either absent or whole."""
    acked = {cid for cid, _ in log.puts}
    for cid, n in log.attempted:
        got = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": cid}})
        if got is None:
            assert cid not in acked, f"acknowledged checkpoint {n} ({cid}) is missing on the new primary"
            continue
        assert got.checkpoint["channel_values"] == {"n": n, "payload": f"payload {n} " + "x" * 200}
        assert got.metadata["step"] == n
        if cid in log.writes:
            assert sorted(got.pending_writes) == [(f"task-{n}", "n", n + 1), (f"task-{n}", "note", f"w{n}")]
        else:
            assert got.pending_writes in ([], [(f"task-{n}", "n", n + 1), (f"task-{n}", "note", f"w{n}")])


# -- tests -------------------------------------------------------------------------------------


def test_primary_killed_mid_stream_every_acknowledged_write_survives_and_the_graph_resumes(
    topology: servers.SentinelSet,
) -> None:
    prefix = f"s{uuid.uuid4().hex[:6]}:"
    url = topology.url
    assert url.startswith("redis+sentinel://127.0.0.1:") and url.endswith("/mymaster")
    saver = RedisSaver.from_url(url, prefix=prefix, durability="replica", durability_timeout_ms=500)
    writer_saver = RedisSaver.from_url(url, prefix=prefix, durability="replica", durability_timeout_ms=500)

    graph = build(saver)
    cfg = {"configurable": {"thread_id": "approval"}}
    out = graph.invoke({"steps": [], "approved": ""}, cfg)
    assert [i.value for i in out["__interrupt__"]] == ["approve the draft?"]
    assert graph.get_state(cfg).next == ("ask",)

    log, stop = Log(), threading.Event()
    writer = threading.Thread(target=stream, args=(writer_saver, "stream", log, stop), daemon=True)
    writer.start()
    try:
        log.wait_for(50)
        old_port = topology.primary.port
        at_kill = len(log.puts)
        new_port = failover(topology)
        assert new_port != old_port
        log.wait_for(at_kill + 50)  # the stream goes on against the new primary
    finally:
        stop.set()
        writer.join(DEADLINE)
    assert not writer.is_alive()
    if log.fatal is not None:
        raise AssertionError("the writer failed with a non-retryable error") from log.fatal
    assert log.errors, "the kill did not interrupt the stream: nothing was tested"
    assert {type(e) for e in log.errors} <= set(RETRYABLE)

    # The graph resumes through the same sentinel URL, now on the new primary.
    out = graph.invoke(Command(resume="yes"), cfg)
    assert out == {"steps": ["draft", "ask", "finish"], "approved": "yes"}

    # Everything acknowledged is on the new primary itself (read without Sentinel).
    direct = RedisSaver.from_url(f"redis://127.0.0.1:{new_port}", prefix=prefix)
    assert direct._conn.sync.execute_command("ROLE")[0] == b"master"
    check_acknowledged(direct, "stream", log)
    assert len(list(direct.list({"configurable": {"thread_id": "stream"}}))) >= len(log.puts)
    history = list(direct.list({"configurable": {"thread_id": "approval"}}))
    assert history[0].checkpoint["channel_values"]["steps"] == ["draft", "ask", "finish"]
    assert {t.config["configurable"]["thread_id"] for t in direct.list(None)} == {"approval", "stream"}
    for s in (saver, writer_saver, direct):
        s.close()


async def test_async_saver_through_sentinel_follows_a_failover(topology: servers.SentinelSet) -> None:
    prefix = f"a{uuid.uuid4().hex[:6]}:"
    saver = AsyncRedisSaver.from_url(topology.url, prefix=prefix, durability="replica", durability_timeout_ms=500)
    graph = build(saver)
    cfg = {"configurable": {"thread_id": "approval"}}
    out = await graph.ainvoke({"steps": [], "approved": ""}, cfg)
    assert [i.value for i in out["__interrupt__"]] == ["approve the draft?"]

    # A sync saver on the same URL sees it; its async twin is made from the same URL.
    twin = RedisSaver.from_url(topology.url, prefix=prefix)
    assert twin.get_tuple(cfg).checkpoint["channel_values"]["steps"] == ["draft"]
    assert (await twin.aget_tuple(cfg)).checkpoint["id"] == twin.get_tuple(cfg).checkpoint["id"]

    # A Sentinel-made client passed in: the saver derives the async twin from its pool.
    hosts = [("127.0.0.1", s.port) for s in topology.sentinels]
    made = Sentinel(hosts).master_for("mymaster")
    passed = RedisSaver(made, prefix=prefix)
    assert (await passed.aget_tuple(cfg)).checkpoint["channel_values"]["steps"] == ["draft"]

    new_port = await asyncio.to_thread(failover, topology)

    # The async client's pooled connections died with the old primary: it finds the new
    # one through the sentinels, with no help from the test.
    out = await graph.ainvoke(Command(resume="yes"), cfg)
    assert out == {"steps": ["draft", "ask", "finish"], "approved": "yes"}

    direct = RedisSaver.from_url(f"redis://127.0.0.1:{new_port}", prefix=prefix)
    assert direct.get_tuple(cfg).checkpoint["channel_values"]["steps"] == ["draft", "ask", "finish"]
    assert (await passed.aget_tuple(cfg)).checkpoint["channel_values"]["approved"] == "yes"
    assert (await twin.aget_tuple(cfg)).checkpoint["channel_values"]["approved"] == "yes"
    assert [t async for t in saver.alist(cfg, limit=1)][0].checkpoint["channel_values"]["approved"] == "yes"
    await saver.aclose()
    await twin.aclose()
    await passed.aclose()
    direct.close()
    made.close()
