"""Crash proof: a real Valkey with an append-only file is SIGKILLed during a stream of
checkpoints written with ``durability="aof"`` (WAITAOF: fsynced before ``put`` returns),
then started again from the same directory and port.

Every checkpoint (and batch of pending writes) that was acknowledged reads back intact;
one in flight at the kill is either whole or absent, never half there. A torn tail of the
append-only file (a write cut short by the crash) loses the torn operation whole.
And a server that cannot confirm the durability asked for says so: DurabilityError.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline import DurabilityError, ServerUnavailable
from stateline.langgraph import AsyncRedisSaver, RedisSaver

from . import servers
from .waiting import DEADLINE

WRITERS = 3
# Acknowledged puts (over all writers) before the kill. With appendfsync everysec each
# WAITAOF waits for the next fsync (about 0.1 s here), hence fewer.
KILL_AFTER = {"always": 150, "everysec": 30}


@pytest.fixture(params=["always", "everysec"])
def aof(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[servers.Server, str]]:
    """Valkey 9 (WAITAOF) persisting to an append-only file: with ``everysec`` it is WAITAOF,
    not the fsync policy, that makes an acknowledged write durable."""
    server = servers.start(servers.valkey_binary(), tmp_path, "--appendonly", "yes", "--appendfsync", request.param)
    yield server, request.param
    server.kill()


def values_of(n: int) -> dict:
    return {
        "n": n,
        "log": [f"entry {n}.{i}" for i in range(4 + n % 5)],  # stored element by element
        "blob": f"{n}:" + "x" * (50 + 37 * (n % 11)),
    }


def writes_of(n: int) -> list[tuple[str, int | str]]:
    return [("n", n + 1), ("note", f"note {n}"), ("log", f"more {n}")]


@dataclass
class Stream:
    """One writer's record of what it attempted and what was acknowledged."""

    thread: str
    attempted: list[tuple[str, int]] = field(default_factory=list)  # (checkpoint id, n)
    puts: set[str] = field(default_factory=set)  # acknowledged
    writes: set[str] = field(default_factory=set)  # put_writes acknowledged
    error: BaseException | None = None


def write_until_failure(saver: RedisSaver, stream: Stream, acked: threading.Semaphore) -> None:
    """Checkpoints (each followed by its pending writes) until the first error."""
    cfg = {"configurable": {"thread_id": stream.thread, "checkpoint_ns": ""}}
    n = 0
    try:
        while True:
            cp = empty_checkpoint()
            cp["id"] = str(uuid6())
            cp["channel_values"] = values_of(n)
            cp["channel_versions"] = {ch: n + 1 for ch in cp["channel_values"]}
            stream.attempted.append((cp["id"], n))
            cfg = saver.put(cfg, cp, {"step": n, "source": "loop"}, dict(cp["channel_versions"]))
            stream.puts.add(cp["id"])
            acked.release()
            saver.put_writes(cfg, writes_of(n), f"task-{n}")
            stream.writes.add(cp["id"])
            n += 1
    except BaseException as exc:  # noqa: BLE001 - the test thread looks at it
        stream.error = exc


def check(saver: RedisSaver, stream: Stream) -> int:
    """Acknowledged: present and intact. Unacknowledged: absent or whole. Returns how many are present."""
    present = 0
    for cid, n in stream.attempted:
        cfg = {"configurable": {"thread_id": stream.thread, "checkpoint_ns": "", "checkpoint_id": cid}}
        got = saver.get_tuple(cfg)
        if got is None:
            assert cid not in stream.puts, f"{stream.thread}: acknowledged checkpoint {n} was lost in the crash"
            continue
        present += 1
        assert got.checkpoint["id"] == cid
        assert got.checkpoint["channel_values"] == values_of(n), f"{stream.thread}: checkpoint {n} is not whole"
        assert got.metadata["step"] == n
        if n > 0:
            assert got.parent_config["configurable"]["checkpoint_id"] == stream.attempted[n - 1][0]
        expected = sorted((f"task-{n}", ch, v) for ch, v in writes_of(n))
        if cid in stream.writes:
            assert sorted(got.pending_writes) == expected, f"{stream.thread}: acknowledged writes of {n} lost"
        else:
            assert sorted(got.pending_writes) in ([], expected), f"{stream.thread}: writes of {n} half there"
    listed = list(saver.list({"configurable": {"thread_id": stream.thread}}))
    assert len(listed) == present  # the index and the records agree: nothing dangling
    return present


def test_sigkill_mid_stream_every_acknowledged_checkpoint_reads_back_intact(aof: tuple[servers.Server, str]) -> None:
    aof_server, fsync = aof
    prefix = f"k{uuid.uuid4().hex[:6]}:"
    streams = [Stream(f"stream-{i}") for i in range(WRITERS)]
    # Generous limits: on a loaded machine a slow fsync must not end a writer before the kill.
    limits = {"durability_timeout_ms": int(DEADLINE * 1000), "socket_timeout": DEADLINE}
    savers = [RedisSaver(aof_server.url, prefix=prefix, durability="aof", **limits) for _ in streams]
    acked = threading.Semaphore(0)
    threads = [
        threading.Thread(target=write_until_failure, args=(s, st, acked), daemon=True)
        for s, st in zip(savers, streams, strict=True)
    ]
    for t in threads:
        t.start()
    try:
        for _ in range(KILL_AFTER[fsync]):
            assert acked.acquire(timeout=DEADLINE), "the writers stopped before the kill"
        aof_server.kill()  # SIGKILL, while every writer is mid-stream
    finally:
        for t in threads:
            t.join(DEADLINE)
    assert not any(t.is_alive() for t in threads)
    for st in streams:
        assert isinstance(st.error, ServerUnavailable), st.error
        assert st.puts, f"{st.thread} wrote nothing before the kill"
        assert len(st.attempted) > len(st.puts) or len(st.writes) < len(st.puts), "nothing was in flight"

    aof_server.restart()  # same dir, same port: loads the append-only file
    reader = RedisSaver(aof_server.url, prefix=prefix)
    for st in streams:
        assert check(reader, st) >= len(st.puts)
    assert {t.config["configurable"]["thread_id"] for t in reader.list(None)} == {st.thread for st in streams}

    # The stream resumes on the restarted server, on top of what survived.
    st = streams[0]
    head = reader.get_tuple({"configurable": {"thread_id": st.thread}})
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = {"n": -1}
    cp["channel_versions"] = {"n": 10_000}
    durable = RedisSaver(aof_server.url, prefix=prefix, durability="aof")
    cfg = durable.put(head.config, cp, {"step": -1}, {"n": 10_000})
    assert durable.get_tuple(cfg).parent_config["configurable"]["checkpoint_id"] == head.checkpoint["id"]
    for s in (*savers, reader, durable):
        s.close()


def _aof_tail(dir: Path) -> Path:
    (incr,) = [f for f in (dir / "appendonlydir").iterdir() if f.name.endswith(".incr.aof")]
    return incr


@pytest.mark.parametrize("cut", ["before EXEC", "inside a command"])
def test_a_torn_append_only_file_tail_loses_the_torn_put_whole(tmp_path: Path, cut: str) -> None:
    # A script's effects are logged as MULTI ... EXEC; a crash can leave that block cut short
    # (what fsync had not covered yet). Loading must drop the block whole.
    server = servers.start(servers.valkey_binary(), tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    try:
        prefix = f"t{uuid.uuid4().hex[:6]}:"
        saver = RedisSaver(server.url, prefix=prefix, durability="aof")
        stream = Stream("torn")
        cfg = {"configurable": {"thread_id": "torn", "checkpoint_ns": ""}}
        for n in range(6):
            cp = empty_checkpoint()
            cp["id"] = str(uuid6())
            cp["channel_values"] = values_of(n)
            cp["channel_versions"] = {ch: n + 1 for ch in cp["channel_values"]}
            if n == 5:  # the state of the thread's keys before the put that will be torn
                with server.client() as c:
                    keys = saver.engine.keys("torn")
                    before = (c.hgetall(keys.data), c.zrange(keys.index, 0, -1))
            stream.attempted.append((cp["id"], n))
            cfg = saver.put(cfg, cp, {"step": n}, dict(cp["channel_versions"]))
            stream.puts.add(cp["id"])
            if n < 5:
                saver.put_writes(cfg, writes_of(n), f"task-{n}")
                stream.writes.add(cp["id"])
        saver.close()
        server.kill()

        tail = _aof_tail(tmp_path)
        data = tail.read_bytes()
        multi = data.rindex(b"*1\r\n$5\r\nMULTI\r\n")
        exec_ = data.rindex(b"*1\r\n$4\r\nEXEC\r\n")
        assert multi < exec_ == len(data) - len(b"*1\r\n$4\r\nEXEC\r\n")  # the last put is the last block
        record = data.rindex(b"\r\nHSET\r\n", multi)  # the checkpoint record, late in the block
        end = exec_ if cut == "before EXEC" else record + 20
        tail.write_bytes(data[:end])

        server.restart()
        stream.puts.discard(stream.attempted[-1][0])  # torn: its acknowledgement was a lie of the simulated disk
        reader = RedisSaver(server.url, prefix=prefix)
        assert check(reader, stream) == 5
        assert reader.get_tuple({"configurable": {"thread_id": "torn"}}).checkpoint["id"] == stream.attempted[4][0]
        with server.client() as c:
            keys = reader.engine.keys("torn")
            assert (c.hgetall(keys.data), c.zrange(keys.index, 0, -1)) == before  # not one field of the torn put
        reader.close()
    finally:
        server.kill()


# -- servers that cannot confirm "aof" -----------------------------------------------------------


@pytest.mark.skipif(
    servers.redis_binary() is None, reason="needs Debian redis-server 7.0 (apt-get install redis-server)"
)
async def test_durability_aof_on_redis_7_0_raises_durability_error(tmp_path: Path) -> None:
    redis_server = servers.redis_binary()
    assert redis_server is not None
    server = servers.start(redis_server, tmp_path, "--appendonly", "yes")
    try:
        with server.client() as c:
            assert c.info("server")["redis_version"].startswith("7.0")
        cp = empty_checkpoint()
        cp["channel_values"], cp["channel_versions"] = {"a": 1}, {"a": 1}
        cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        saver = RedisSaver(server.url, prefix="d:", durability="aof")
        with pytest.raises(DurabilityError, match="WAITAOF.*(7.2|Valkey)"):
            saver.put(cfg, cp, {}, {"a": 1})
        asaver = AsyncRedisSaver(server.url, prefix="d:", durability="aof+replica")
        with pytest.raises(DurabilityError, match="WAITAOF"):
            await asaver.aput(cfg, cp, {}, {"a": 1})
        await asaver.aclose()
        # What Redis 7.0 can confirm (WAIT) still works there; with no replica it says so.
        replica = RedisSaver(server.url, prefix="d:", durability="replica", durability_timeout_ms=50)
        with pytest.raises(DurabilityError, match="not confirmed 'replica'.*0 replica"):
            replica.put(cfg, cp, {}, {"a": 1})
        assert RedisSaver(server.url, prefix="d:").get_tuple(cfg) is not None
        saver.close()
        replica.close()
    finally:
        server.kill()


def test_durability_aof_without_appendonly_raises_durability_error(tmp_path: Path) -> None:
    server = servers.start(servers.valkey_binary(), tmp_path, "--appendonly", "no")
    try:
        cp = empty_checkpoint()
        cp["channel_values"], cp["channel_versions"] = {"a": 1}, {"a": 1}
        saver = RedisSaver(server.url, prefix="d:", durability="aof")
        with pytest.raises(DurabilityError, match="appendonly"):
            saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, {}, {"a": 1})
        saver.close()
    finally:
        server.kill()


def test_the_raw_client_agrees_waitaof_needs_the_append_only_file(tmp_path: Path) -> None:
    # What the errors above rest on, asked of the server directly.
    server = servers.start(servers.valkey_binary(), tmp_path, "--appendonly", "no")
    try:
        with server.client() as c:
            with pytest.raises(redis.ResponseError, match="appendonly"):
                c.execute_command("WAITAOF", 1, 0, 10)
            c.config_set("appendonly", "yes")
            servers.until(lambda: c.info("persistence")["aof_rewrite_in_progress"] == 0)
            c.set("k", 1)
            assert c.execute_command("WAITAOF", 1, 0, int(DEADLINE * 1000)) == [1, 0]
    finally:
        server.kill()
