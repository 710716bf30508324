"""stateline's calls go through redis-py's own connection pool: whatever happens to a
connection (closed by the server, an interrupt or a cancellation mid-call, a fork, threads),
no reply reaches the wrong call, the pool stays whole, and instrumented clients see every call."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline import ServerUnavailable
from stateline.langgraph import AsyncRedisSaver, RedisSaver
from stateline.plan import SCRIPTS


def checkpoint(n: int) -> dict:
    c = empty_checkpoint()
    c["id"] = str(uuid6())
    c["channel_values"] = {"n": n, "log": [f"entry {n}.{i}" for i in range(3)]}
    c["channel_versions"] = {"n": n + 1, "log": n + 1}
    return c


def put(saver: RedisSaver, thread: str, n: int) -> dict:
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    return saver.put(cfg, checkpoint(n), {"step": n}, {"n": n + 1, "log": n + 1})


def latest_n(saver: RedisSaver, thread: str) -> int:
    got = saver.get_tuple({"configurable": {"thread_id": thread}})
    assert got is not None
    return got.checkpoint["channel_values"]["n"]


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


async def aput(saver: AsyncRedisSaver, thread: str, n: int) -> dict:
    return await saver.aput(cfg(thread), checkpoint(n), {"step": n}, {"n": n + 1, "log": n + 1})


async def alatest_n(saver: AsyncRedisSaver, thread: str) -> int:
    got = await saver.aget_tuple({"configurable": {"thread_id": thread}})
    assert got is not None
    return got.checkpoint["channel_values"]["n"]


class Interrupted(Exception):
    pass


def test_a_connection_killed_by_the_server_is_replaced_and_the_put_lands(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    put(saver, "killed", 0)
    put(saver, "killed", 1)  # the pool now holds an idle connection
    killed = client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    put(saver, "killed", 2)  # the pool checks the idle connection before lending it: reconnected
    assert latest_n(saver, "killed") == 2


class Seen(aredis.Connection):
    """An asyncio connection that lists itself, so a test can wait for it to see a close."""

    made: list[Any] = []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.made.append(self)


async def closed(conn: Any) -> None:
    """Returns once the event loop has seen the server close ``conn`` (asyncio learns of it
    only when the loop reads the socket)."""
    can_read = getattr(conn, "can_read", None) or conn.can_read_destructive  # (redis-py < 8's name)
    while True:
        try:
            if await can_read():
                return
        except (redis.ConnectionError, OSError):
            return
        await asyncio.sleep(0)  # one turn of the loop: it reads what arrived


async def test_an_async_connection_killed_by_the_server_is_replaced(url: str, prefix: str, client: redis.Redis) -> None:
    saver = AsyncRedisSaver(url, prefix=prefix, connection_class=Seen)
    for n in range(2):
        await aput(saver, "killed", n)
    assert client.client_kill_filter(_type="normal", skipme=True) >= 1
    (conn,) = Seen.made
    await asyncio.wait_for(closed(conn), 5)
    await aput(saver, "killed", 2)  # the pool checks the idle connection before lending it: reconnected
    assert await alatest_n(saver, "killed") == 2


def test_an_interrupt_during_a_call_leaves_no_reply_for_the_next_one(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    put(saver, "other", 7)
    put(saver, "paused", 0)

    def interrupt(_signum: int, _frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    client.client_pause(60_000, all=False)  # writes wait: the put is sent and its reply never comes
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            put(saver, "paused", 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        client.client_unpause()
    # The interrupted put's reply (if the server ran it) must not be read as these replies.
    assert latest_n(saver, "other") == 7
    assert saver.get_tuple({"configurable": {"thread_id": "nowhere"}}) is None
    put(saver, "paused", 2)
    assert latest_n(saver, "paused") == 2


async def test_a_cancelled_async_call_leaves_no_reply_for_the_next_one(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = AsyncRedisSaver(url, prefix=prefix)
    cfg = {"configurable": {"thread_id": "other", "checkpoint_ns": ""}}
    await saver.aput(cfg, checkpoint(7), {}, {"n": 8, "log": 8})
    client.client_pause(60_000, all=False)
    try:
        with pytest.raises(asyncio.TimeoutError):
            target = {"configurable": {"thread_id": "paused", "checkpoint_ns": ""}}
            await asyncio.wait_for(saver.aput(target, checkpoint(1), {}, {"n": 2, "log": 2}), 0.2)
    finally:
        client.client_unpause()
    got = await saver.aget_tuple({"configurable": {"thread_id": "other"}})
    assert got is not None and got.checkpoint["channel_values"]["n"] == 7
    assert await saver.aget_tuple({"configurable": {"thread_id": "nowhere"}}) is None
    target = {"configurable": {"thread_id": "paused", "checkpoint_ns": ""}}
    await saver.aput(target, checkpoint(3), {}, {"n": 4, "log": 4})
    got = await saver.aget_tuple({"configurable": {"thread_id": "paused"}})
    assert got is not None and got.checkpoint["channel_values"]["n"] == 3


def test_a_forked_child_talks_over_connections_of_its_own(url: str, prefix: str) -> None:
    """Parent and child write at once with the saver made before the fork: sharing a pooled
    socket would hand each one the other's replies."""
    saver = RedisSaver(url, prefix=prefix)
    put(saver, "parent", 0)  # a pooled connection the child inherits
    rounds = 150
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            for n in range(rounds):
                put(saver, "child", n)
                if latest_n(saver, "child") != n:
                    break
            else:
                code = 0
        finally:
            os._exit(code)
    for n in range(rounds):
        put(saver, "parent", n)
        assert latest_n(saver, "parent") == n
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert latest_n(saver, "child") == rounds - 1


def test_sixteen_threads_share_one_saver(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    start = threading.Barrier(16)

    def work(i: int) -> None:
        start.wait()
        for n in range(30):
            put(saver, f"t{i}", n)
            assert latest_n(saver, f"t{i}") == n

    with ThreadPoolExecutor(16) as pool:
        for done in [pool.submit(work, i) for i in range(16)]:
            done.result()  # raises a thread's error here


class Traced(redis.Redis):
    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.seen = [*getattr(self, "seen", []), args[0]]
        return super().execute_command(*args, **options)


def traced_method(method: Any, seen: list[str]) -> Any:
    @functools.wraps(method)
    def traced(self: Any, *args: Any, **options: Any) -> Any:
        seen.append(args[0])
        return method(self, *args, **options)

    return traced


def test_a_client_class_instrumented_after_import_sees_every_call(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracing integrations (OpenTelemetry, ddtrace, Sentry) wrap Redis.execute_command on
    the class itself: such clients must keep seeing stateline's calls."""
    seen: list[str] = []
    monkeypatch.setattr(redis.Redis, "execute_command", traced_method(redis.Redis.execute_command, seen))
    saver = RedisSaver(redis.Redis.from_url(url), prefix=prefix)
    put(saver, "traced", 0)
    put(saver, "traced", 1)
    assert seen.count("EVALSHA") == 1  # the second put (the first is a pipeline)


def test_a_client_that_wraps_execute_command_sees_every_call(url: str, prefix: str) -> None:
    traced = Traced.from_url(url)
    saver = RedisSaver(traced, prefix=prefix)
    put(saver, "traced", 0)
    put(saver, "traced", 1)
    saver.get_tuple(cfg("traced"))
    assert traced.seen.count("EVALSHA") == 2  # the second put and the read


def lend_all(pool: redis.BlockingConnectionPool, n: int) -> None:
    """Every one of the pool's ``n`` connections can be checked out at once (the pool waits
    up to its timeout, then raises "No connection available")."""
    holders = [redis.Redis(connection_pool=pool, single_connection_client=True) for _ in range(n)]
    for h in holders:  # each holds one connection from its creation
        h.close()


def test_clients_sharing_a_small_blocking_pool_never_exhaust_it(url: str, prefix: str) -> None:
    """A client (and saver) per request over one shared pool of 8: every connection goes
    back to the pool, which stays usable by everyone."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=8, timeout=2)
    for i in range(40):
        saver = RedisSaver(redis.Redis(connection_pool=pool), prefix=prefix)
        put(saver, f"r{i}", 0)
        put(saver, f"r{i}", 1)
    lend_all(pool, 8)


class ReplyDropper:
    """A TCP proxy in front of the server that, once armed with some bytes, lets the request
    holding them reach the server and cuts the client's connection instead of passing the
    reply back: a reply lost after the server ran the command."""

    def __init__(self, port: int) -> None:
        self.upstream, self.armed = ("127.0.0.1", port), b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            server = socket.create_connection(self.upstream)
            cut = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client, cut), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        with client, server, contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.armed and self.armed in data:
                    self.armed = b""
                    cut.set()
                server.sendall(data)

    def _replies(self, server: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if cut.is_set():
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(data)

    def close(self) -> None:
        self.listener.close()


def test_a_call_whose_reply_is_lost_is_not_sent_again(url: str, prefix: str) -> None:
    """The server ran the copy but its reply never came: the caller hears that the server is
    unreachable, and the copy is not run a second time (which would report its target as
    existing)."""
    proxy = ReplyDropper(int(url.rsplit(":", 1)[1].split("/")[0]))
    try:
        saver = RedisSaver(proxy.url, prefix=prefix)
        for n in range(3):
            put(saver, "src", n)
        saver._conn.sync.script_load(SCRIPTS.restore.body)  # so the armed request is the copy itself
        proxy.armed = SCRIPTS.restore.sha.encode()
        with pytest.raises(ServerUnavailable):
            saver.copy_thread("src", "dst")
        assert latest_n(saver, "dst") == 2  # the server did copy it, once
    finally:
        proxy.close()


async def alend_all(pool: aredis.BlockingConnectionPool, n: int) -> None:
    """Every one of the pool's ``n`` connections can be checked out at once (the pool waits
    up to its timeout, then raises "No connection available")."""
    holders = [aredis.Redis(connection_pool=pool, single_connection_client=True) for _ in range(n)]
    assert await asyncio.gather(*(h.ping() for h in holders)) == [True] * n  # each holds one
    for h in holders:
        await h.aclose()


async def test_a_storm_of_cancellations_leaves_a_small_pool_whole(url: str, prefix: str) -> None:
    """Tasks cancelled at every point of their calls (before, while and after they hold a
    connection) give every connection back: a pool of 8 still lends all 8."""
    pool = aredis.BlockingConnectionPool.from_url(url, max_connections=8, timeout=5)
    saver = AsyncRedisSaver(aredis.Redis(connection_pool=pool), prefix=prefix)
    for n in range(2):
        await aput(saver, "storm", n)  # (a thread's first put also indexes it: a pipeline)
    for turns in range(12):
        for _ in range(3):
            tasks = [asyncio.create_task(aput(saver, "storm", 2 + turns)) for _ in range(4)]
            tasks += [asyncio.create_task(saver.aget_tuple(cfg("storm"))) for _ in range(4)]
            for _ in range(turns):
                await asyncio.sleep(0)  # one turn of the loop: each task is that far into its call
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    await alend_all(pool, 8)
    await aput(saver, "storm", 99)
    assert await alatest_n(saver, "storm") == 99
    await pool.aclose()


def test_interrupts_while_calls_wait_leave_a_small_pool_whole(url: str, prefix: str, client: redis.Redis) -> None:
    """A KeyboardInterrupt-like exception raised in a call waiting for its reply, again and
    again (more times than the pool has connections): the pool of 8 still lends all 8."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=8, timeout=5)
    saver = RedisSaver(redis.Redis(connection_pool=pool), prefix=prefix)
    put(saver, "waits", 0)

    def interrupt(_signum: int, _frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    client.client_pause(60_000, all=False)  # writes wait: each put is sent and its reply never comes
    try:
        for n in range(12):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(Interrupted):
                put(saver, "waits", 1 + n)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        client.client_unpause()
    lend_all(pool, 8)
    put(saver, "waits", 99)
    assert latest_n(saver, "waits") == 99
    pool.disconnect()
