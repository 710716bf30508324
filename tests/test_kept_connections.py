"""Script calls reuse a kept connection (held.py): no reply ever reaches the wrong call,
whatever happens to the connection, and only plain clients take that path."""

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

from stateline import AuthenticationFailed, ServerUnavailable
from stateline.held import held
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


def kept_connection(saver: RedisSaver, thread: str) -> Any:
    """The one connection kept after two puts on ``thread`` (a thread's first put is a
    pipeline, which indexes the thread; the second is a script call)."""
    put(saver, thread, 0)
    put(saver, thread, 1)
    (conn,) = held(saver._conn.sync).idle
    return conn


class Interrupted(Exception):
    pass


def test_a_connection_killed_by_the_server_is_replaced_and_the_put_lands(
    url: str, prefix: str, client: redis.Redis
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    kept_connection(saver, "killed")
    killed = client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    put(saver, "killed", 2)  # checked before reuse, as the pool checks: reconnected, then sent
    assert latest_n(saver, "killed") == 2


async def closed(conn: Any) -> None:
    """Returns once the event loop has seen the server close ``conn`` (asyncio learns of it
    only when the loop reads the socket)."""
    while True:
        try:
            if await conn.can_read():
                return
        except (redis.ConnectionError, OSError):
            return
        await asyncio.sleep(0)  # one turn of the loop: it reads what arrived


async def test_an_async_connection_killed_by_the_server_is_replaced(url: str, prefix: str, client: redis.Redis) -> None:
    saver = AsyncRedisSaver(url, prefix=prefix)
    for n in range(2):
        await saver.aput(
            {"configurable": {"thread_id": "killed", "checkpoint_ns": ""}},
            checkpoint(n),
            {},
            {"n": n + 1, "log": n + 1},
        )
    (conn,) = held(saver._conn.aio).idle
    assert client.client_kill_filter(_type="normal", skipme=True) >= 1
    await asyncio.wait_for(closed(conn), 5)
    await saver.aput(
        {"configurable": {"thread_id": "killed", "checkpoint_ns": ""}}, checkpoint(2), {}, {"n": 3, "log": 3}
    )
    got = await saver.aget_tuple({"configurable": {"thread_id": "killed"}})
    assert got is not None and got.checkpoint["channel_values"]["n"] == 2


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
    """Parent and child write at once with the saver made before the fork: sharing the kept
    socket would hand each one the other's replies."""
    saver = RedisSaver(url, prefix=prefix)
    kept_connection(saver, "parent")  # a connection the child inherits
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


def test_threads_each_get_a_connection_and_at_most_eight_are_kept(url: str, prefix: str) -> None:
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
    kept = held(saver._conn.sync)
    assert 1 <= len(kept.idle) <= 8


class CustomPool(redis.ConnectionPool):
    pass


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


def test_only_plain_clients_keep_connections(url: str, prefix: str) -> None:
    assert held(redis.Redis.from_url(url)) is not None
    assert held(aredis.Redis.from_url(url)) is not None
    assert held(redis.Redis.from_url(url, protocol=3)) is not None  # (redis-py 8's default)
    assert held(redis.Redis.from_url(url, max_connections=3)) is None  # too few to keep any
    assert held(redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url))) is not None
    instance_patched = redis.Redis.from_url(url)
    instance_patched.execute_command = lambda *a, **k: None  # type: ignore[method-assign]
    not_plain = [
        redis.Redis(connection_pool=CustomPool.from_url(url)),
        redis.Redis.from_url(url, single_connection_client=True),
        aredis.Redis.from_url(url, single_connection_client=True),
        Traced.from_url(url),
        instance_patched,
    ]
    assert [held(c) for c in not_plain] == [None] * len(not_plain)
    traced = Traced.from_url(url)
    traced_saver = RedisSaver(traced, prefix=prefix)
    put(traced_saver, "traced", 0)
    put(traced_saver, "traced", 1)
    assert "EVALSHA" in traced.seen  # a client that wraps execute_command still sees every call


def test_a_client_class_instrumented_after_import_is_left_to_redis_py(
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


def test_clients_sharing_a_small_blocking_pool_never_exhaust_it(url: str, prefix: str) -> None:
    """Kept connections belong to the pool: a client (and saver) per request over one
    shared pool of 8 keeps at most 2 of them, and the pool stays usable by everyone."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=8, timeout=2)
    for i in range(40):
        saver = RedisSaver(redis.Redis(connection_pool=pool), prefix=prefix)
        put(saver, f"r{i}", 0)
        put(saver, f"r{i}", 1)
    held_now = held(redis.Redis(connection_pool=pool))
    assert len(held_now.idle) <= 2
    others = [pool.get_connection() for _ in range(6)]  # the rest of the pool is free
    for conn in others:
        pool.release(conn)


def test_threads_meeting_a_new_client_share_one_set_of_kept_connections(url: str) -> None:
    client = redis.Redis.from_url(url)
    start = threading.Barrier(16)

    def first_look(_i: int) -> Any:
        start.wait()
        return held(client)

    with ThreadPoolExecutor(16) as pool:
        found = list(pool.map(first_look, range(16)))
    assert all(f is found[0] for f in found) and found[0] is not None


def test_a_connection_marked_for_reconnect_is_reconnected_after_its_call(url: str, prefix: str) -> None:
    """What pool.release does for a maintenance notification (MOVING) is done on keeping."""
    saver = RedisSaver(url, prefix=prefix)
    conn = kept_connection(saver, "moved")
    before = conn._sock
    conn.mark_for_reconnect()
    put(saver, "moved", 2)
    assert not conn.should_reconnect() and conn._sock is not before
    assert latest_n(saver, "moved") == 2


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
        assert held(saver._conn.sync).idle
        proxy.armed = SCRIPTS.restore.sha.encode()
        with pytest.raises(ServerUnavailable):
            saver.copy_thread("src", "dst")
        assert latest_n(saver, "dst") == 2  # the server did copy it, once
    finally:
        proxy.close()


class Token:
    """What a renewing credential provider hands redis-py's pool (its re-auth callback sets
    it on every connection checked out, which a kept connection always is)."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def try_get(self, key: str) -> str:
        assert key == "oid"
        return self.user

    def get_value(self) -> str:
        return self.password


@pytest.fixture
def renewed_user(client: redis.Redis) -> Any:
    client.acl_setuser("renewed", enabled=True, passwords=["+renewed-pw"], keys=["*"], commands=["+@all"], reset=True)
    yield "renewed"
    client.acl_deluser("renewed")


def users_connected(client: redis.Redis) -> list[str]:
    return [c["user"] for c in client.client_list()]


def test_renewed_credentials_reach_a_kept_connection(
    url: str, prefix: str, client: redis.Redis, renewed_user: str
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    conn = kept_connection(saver, "t")
    conn.set_re_auth_token(Token(renewed_user, "renewed-pw"))
    put(saver, "t", 2)  # after its call, the connection authenticates again, as on release
    assert renewed_user in users_connected(client)
    assert latest_n(saver, "t") == 2


def test_a_failed_reauthentication_gives_the_connection_back(
    url: str, prefix: str, client: redis.Redis, renewed_user: str
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    conn = kept_connection(saver, "t")
    kept = held(saver._conn.sync)
    conn.set_re_auth_token(Token(renewed_user, "wrong-pw"))
    with pytest.raises(AuthenticationFailed):
        put(saver, "t", 2)  # stored; the re-authentication after it failed
    assert conn not in kept.idle and not conn.is_connected
    assert conn not in saver._conn.sync.connection_pool._in_use_connections  # given back, not leaked
    assert latest_n(RedisSaver(url, prefix=prefix), "t") == 2
