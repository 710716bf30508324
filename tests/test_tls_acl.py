"""TLS with ACL users limited to stateline's key prefix, on a real Redis 7.0 (Debian build).

The server accepts TLS only (its plain TCP port is off), with a throw-away CA and a server
certificate for 127.0.0.1; the default user needs a password. Users:

- ``app``: what an operator typically writes: categories, limited to ``~app:*``;
- ``minimal``: exactly the commands stateline's savers send (and those its Lua scripts
  call), limited to ``~app:*``: the whole conformance suite passes with nothing more;
- ``reader``: read-only commands on ``~app:*``.

The same server also listens on a unix socket, for the ``unix://`` URL form.
"""

from __future__ import annotations

import operator
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.conformance import checkpointer_test
from langgraph.graph import END, START, StateGraph

from stateline import AuthenticationFailed, InvalidInput, PermissionDenied, ServerUnavailable
from stateline.langgraph import AsyncRedisSaver, RedisSaver

from . import servers
from .test_conformance import assert_full_conformance

REDIS = servers.redis_binary()
pytestmark = pytest.mark.skipif(REDIS is None, reason="needs a TLS-enabled redis-server (apt-get install redis-server)")

ADMIN_PASSWORD = "admin-pw"
APP_ACL = "on >secret ~app:* resetchannels -@all +@read +@write +@scripting +ping +info +echo"
# Every command stateline's savers send (EVALSHA, SCRIPT LOAD and the discovery-index
# commands) or call from their scripts; each one is needed by some operation (measured by
# dropping it: conformance, list(None) or TTL refresh fails). The stronger durability
# levels also need +wait (durability="replica") or +waitaof ("aof", "aof+replica").
MINIMAL_COMMANDS = (
    "+evalsha +script|load +zadd +zrange +zrem +zrangebylex +exists +unlink +hmget "  # sent directly
    "+hget +hset +hsetnx +hdel +hexists +hscan +hincrby +pexpire +zrevrangebylex "  # in scripts
    "+zrangebyscore +persist +pttl "  # in the discovery index's script
    "+info"  # the first put's question whether the server may evict keys
)
MINIMAL_ACL = f"on >minimal-pw ~app:* resetchannels -@all {MINIMAL_COMMANDS}"
READER_ACL = "on >reader-pw ~app:* resetchannels -@all +@read +evalsha +script|load"
# Everything but the hash writes the put script makes: denied inside the script.
NO_HASH_WRITES_ACL = MINIMAL_ACL.replace(">minimal-pw", ">nohw-pw").replace("+hset +hsetnx +hdel ", "")


@dataclass
class TlsServer:
    server: servers.Server
    tls: servers.TlsFiles
    socket: Path

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, user: str = "app", password: str = "secret") -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{self.port}/0"

    @property
    def ca(self) -> str:
        return str(self.tls.ca)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    assert REDIS is not None
    base = tmp_path_factory.mktemp("tls")
    short = Path(tempfile.mkdtemp(prefix="sl", dir="/tmp"))  # a unix socket path must stay under 108 bytes
    tls = servers.tls_files(base / "tls")
    sock = short / "r.sock"
    extra = ("--requirepass", ADMIN_PASSWORD, "--unixsocket", str(sock), "--unixsocketperm", "700")
    server = servers.start_tls(REDIS, base / "data", tls, *extra)
    try:
        server.client_kwargs["password"] = ADMIN_PASSWORD
        with server.client() as admin:
            users = ("app", APP_ACL), ("minimal", MINIMAL_ACL), ("reader", READER_ACL), ("nohw", NO_HASH_WRITES_ACL)
            for user, acl in users:
                admin.execute_command("ACL", "SETUSER", user, "reset", *acl.split())
        yield TlsServer(server, tls, sock)
    finally:
        server.kill()
        shutil.rmtree(short, ignore_errors=True)


def admin(t: TlsServer) -> redis.Redis:
    return t.server.client()


@pytest.fixture
def acl_log(tls_server: TlsServer) -> Iterator[Callable[[], list]]:
    """The server's ACL denials (failed AUTHs, NOPERMs) since the test began."""
    with admin(tls_server) as c:
        c.execute_command("ACL", "LOG", "RESET")
        yield lambda: c.execute_command("ACL", "LOG")
        c.execute_command("ACL", "LOG", "RESET")


def put(saver: RedisSaver, thread: str, values: dict, run_id: str | None = None) -> dict:
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = values
    cp["channel_versions"] = {k: 1 for k in values}
    meta = {"source": "loop", "step": 0, **({"run_id": run_id} if run_id else {})}
    return saver.put(
        {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, cp, meta, dict(cp["channel_versions"])
    )


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def graph(saver: RedisSaver):
    g = StateGraph(State)
    g.add_node("a", lambda s: {"steps": ["a"]})
    g.add_node("b", lambda s: {"steps": ["b"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", END)
    return g.compile(checkpointer=saver)


# -- it works ----------------------------------------------------------------------------------


@pytest.mark.parametrize("user,password", [("app", "secret"), ("minimal", "minimal-pw")])
async def test_full_conformance_over_tls_as_a_prefix_limited_user(
    tls_server: TlsServer, acl_log: Callable[[], list], user: str, password: str
) -> None:
    url = tls_server.url(user, password)

    @checkpointer_test(name=f"tls-{user}")
    async def saver():
        s = AsyncRedisSaver.from_url(url, prefix=f"app:{uuid.uuid4().hex[:6]}:", ssl_ca_certs=tls_server.ca)
        yield s
        await s.aclose()

    await assert_full_conformance(saver)
    assert acl_log() == [], "the server denied stateline something"


@pytest.mark.parametrize("user,password", [("app", "secret"), ("minimal", "minimal-pw")])
async def test_graph_and_every_saver_operation_over_tls(
    tls_server: TlsServer, acl_log: Callable[[], list], user: str, password: str
) -> None:
    prefix = f"app:{uuid.uuid4().hex[:6]}:"
    saver = RedisSaver.from_url(tls_server.url(user, password), prefix=prefix, ssl_ca_certs=tls_server.ca, ttl=600)
    app = graph(saver)
    cfg = {"configurable": {"thread_id": "g"}}
    assert app.invoke({"steps": []}, cfg) == {"steps": ["a", "b"]}
    assert app.invoke({"steps": []}, cfg) == {"steps": ["a", "b", "a", "b"]}
    assert len(list(app.get_state_history(cfg))) == 8
    assert (await app.aget_state(cfg)).values == {"steps": ["a", "b", "a", "b"]}  # async twin, same URL and CA

    stored = put(saver, "t1", {"x": [1, 2, 3, 4, 5], "y": "why"}, run_id="run-1")
    saver.put_writes(stored, [("x", 6), ("__error__", "boom")], "task-1")
    got = saver.get_tuple({"configurable": {"thread_id": "t1"}})
    assert got.checkpoint["channel_values"] == {"x": [1, 2, 3, 4, 5], "y": "why"}
    assert sorted(got.pending_writes) == [("task-1", "__error__", "boom"), ("task-1", "x", 6)]
    put(saver, "t1", {"y": "again"})
    assert len(list(saver.list({"configurable": {"thread_id": "t1"}}))) == 2
    assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == {"g", "t1"}
    saver.prune(["t1"], keep_last=1)
    assert len(list(saver.list({"configurable": {"thread_id": "t1"}}))) == 1
    saver.copy_thread("g", "g-copy")
    assert saver.get_tuple({"configurable": {"thread_id": "g-copy"}}).checkpoint["channel_values"]["steps"] == [
        "a",
        "b",
        "a",
        "b",
    ]
    put(saver, "t2", {"z": 1}, run_id="run-2")
    saver.delete_for_runs(["run-2"])
    assert saver.get_tuple({"configurable": {"thread_id": "t2"}}) is None
    saver.delete_thread("g")
    assert saver.get_tuple(cfg) is None
    with admin(tls_server) as c:
        ttl = c.pttl(saver.engine.keys("t1").data)
        assert 0 < ttl <= 600_000  # the TTL refresh (PEXPIRE inside the script) was allowed
    assert acl_log() == []
    await saver.aclose()


async def test_clients_passed_in_over_tls_derive_their_twin(tls_server: TlsServer) -> None:
    prefix = f"app:{uuid.uuid4().hex[:6]}:"
    sync = redis.Redis(port=tls_server.port, ssl=True, ssl_ca_certs=tls_server.ca, username="app", password="secret")
    saver = RedisSaver(sync, prefix=prefix)
    cfg = put(saver, "t", {"a": 1})
    assert (await saver.aget_tuple(cfg)).checkpoint["channel_values"] == {
        "a": 1
    }  # an asyncio TLS client, same settings

    aclient = redis.asyncio.Redis(
        port=tls_server.port, ssl=True, ssl_ca_certs=tls_server.ca, username="app", password="secret"
    )
    asaver = AsyncRedisSaver(aclient, prefix=prefix)
    assert (await asaver.aget_tuple(cfg)).checkpoint["channel_values"] == {"a": 1}
    assert asaver.get_tuple(cfg).checkpoint["channel_values"] == {"a": 1}  # a sync TLS client, same settings
    await saver.aclose()
    await asaver.aclose()
    sync.close()
    await aclient.aclose()


async def test_unix_socket_urls(tls_server: TlsServer) -> None:
    prefix = f"app:{uuid.uuid4().hex[:6]}:"
    assert len(str(tls_server.socket)) < 100
    for url in (
        f"unix://app:secret@{tls_server.socket}",
        f"unix://{tls_server.socket}?username=app&password=secret&db=0",
    ):
        saver = RedisSaver.from_url(url, prefix=prefix)
        app = graph(saver)
        thread = {"configurable": {"thread_id": url}}
        assert app.invoke({"steps": []}, thread) == {"steps": ["a", "b"]}
        assert (await app.aget_state(thread)).values == {"steps": ["a", "b"]}
        cfg = put(saver, "u", {"v": url})
        assert saver.get_tuple(cfg).checkpoint["channel_values"] == {"v": url}
        await saver.aclose()
    with admin(tls_server) as c:
        assert c.exists(RedisSaver(client=c, prefix=prefix).engine.keys("u").data) == 1  # the same server, via TLS


# -- clear errors ------------------------------------------------------------------------------


def test_a_wrong_password_is_an_authentication_error_that_says_so(tls_server: TlsServer) -> None:
    saver = RedisSaver.from_url(tls_server.url("app", "not-the-password"), prefix="app:", ssl_ca_certs=tls_server.ca)
    with pytest.raises(AuthenticationFailed, match="rejected the credentials.*(WRONGPASS|invalid username-password)"):
        saver.get_tuple({"configurable": {"thread_id": "t"}})
    with pytest.raises(AuthenticationFailed):
        put(saver, "t", {"a": 1})
    unknown = RedisSaver.from_url(tls_server.url("nobody", "secret"), prefix="app:", ssl_ca_certs=tls_server.ca)
    with pytest.raises(AuthenticationFailed):
        unknown.get_tuple({"configurable": {"thread_id": "t"}})
    anonymous = RedisSaver.from_url(
        f"rediss://127.0.0.1:{tls_server.port}/0", prefix="app:", ssl_ca_certs=tls_server.ca
    )
    with pytest.raises(AuthenticationFailed, match="rejected the credentials.*authenticated"):  # NOAUTH
        anonymous.get_tuple({"configurable": {"thread_id": "t"}})


async def test_a_wrong_password_fails_the_same_way_async(tls_server: TlsServer) -> None:
    saver = AsyncRedisSaver.from_url(tls_server.url("app", "nope"), prefix="app:", ssl_ca_certs=tls_server.ca)
    with pytest.raises(AuthenticationFailed, match="rejected the credentials"):
        await saver.aget_tuple({"configurable": {"thread_id": "t"}})
    await saver.aclose()


@pytest.mark.parametrize("user,password", [("app", "secret"), ("minimal", "minimal-pw")])
async def test_a_prefix_the_user_has_no_rights_on_is_permission_denied(
    tls_server: TlsServer, user: str, password: str, acl_log: Callable[[], list]
) -> None:
    saver = RedisSaver.from_url(tls_server.url(user, password), prefix="other:", ssl_ca_certs=tls_server.ca)
    cfg = {"configurable": {"thread_id": "t"}}
    with pytest.raises(PermissionDenied, match="lacks a permission.*no permissions to access one of the keys"):
        put(saver, "t", {"a": 1})
    with pytest.raises(PermissionDenied):
        saver.get_tuple(cfg)
    with pytest.raises(PermissionDenied):
        list(saver.list(None))
    with pytest.raises(PermissionDenied):
        saver.delete_thread("t")
    with pytest.raises(PermissionDenied):
        await saver.aget_tuple(cfg)
    with admin(tls_server) as c:
        assert not list(c.scan_iter(match="other:*"))  # nothing was written
    reasons = {e.get("reason", e.get(b"reason")) for e in acl_log()}  # RESP2 or RESP3 replies
    assert reasons in ({"key"}, {b"key"}), reasons  # the server says why: the keys
    await saver.aclose()


def test_a_read_only_user_can_read_but_a_write_is_permission_denied(tls_server: TlsServer) -> None:
    prefix = f"app:{uuid.uuid4().hex[:6]}:"
    writer = RedisSaver.from_url(tls_server.url(), prefix=prefix, ssl_ca_certs=tls_server.ca)
    cfg = put(writer, "t", {"a": [1, 2, 3, 4, 5]})
    reader = RedisSaver.from_url(tls_server.url("reader", "reader-pw"), prefix=prefix, ssl_ca_certs=tls_server.ca)
    assert reader.get_tuple(cfg).checkpoint["channel_values"] == {"a": [1, 2, 3, 4, 5]}
    assert len(list(reader.list({"configurable": {"thread_id": "t"}}))) == 1
    # (a first write of the thread by this process indexes it first: denied inside that script)
    denied = "lacks a permission.*(no permissions to run the '(evalsha|hset)'|can't run this command)"
    with pytest.raises(PermissionDenied, match=denied):
        put(reader, "t", {"a": 2})
    with pytest.raises(PermissionDenied):
        reader.delete_thread("t")
    assert writer.get_tuple(cfg).checkpoint["channel_values"] == {"a": [1, 2, 3, 4, 5]}  # untouched


async def test_a_command_denied_inside_a_script_is_permission_denied(tls_server: TlsServer) -> None:
    # Redis 7.0 reports an ACL denial inside Lua as a plain script error (no NOPERM code).
    saver = RedisSaver.from_url(
        tls_server.url("nohw", "nohw-pw"), prefix=f"app:{uuid.uuid4().hex[:6]}:", ssl_ca_certs=tls_server.ca
    )
    with pytest.raises(PermissionDenied, match="lacks a permission.*can't run this command"):
        put(saver, "t", {"a": 1})
    cp = empty_checkpoint()
    cp["channel_values"], cp["channel_versions"] = {"a": 1}, {"a": 1}
    with pytest.raises(PermissionDenied):
        await saver.aput({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, {}, {"a": 1})
    await saver.aclose()


def test_a_wrong_url_scheme_is_invalid_input() -> None:
    for url in ("http://127.0.0.1:6390", "127.0.0.1:6390", "redis+foo://127.0.0.1:6390", "valkey+unix:///tmp/x.sock"):
        with pytest.raises(InvalidInput, match="URL"):
            RedisSaver.from_url(url)
    with pytest.raises(InvalidInput, match="service name"):
        RedisSaver.from_url("redis+sentinel://127.0.0.1:26390")


async def test_an_unreachable_server_is_server_unavailable(tls_server: TlsServer) -> None:
    port = servers.free_port()  # nothing listens there
    for url in (
        f"redis://127.0.0.1:{port}/0",
        f"rediss://app:secret@127.0.0.1:{port}/0",
        f"unix://{tls_server.socket}.gone",
    ):
        saver = RedisSaver.from_url(url, prefix="app:", socket_connect_timeout=2)
        with pytest.raises(ServerUnavailable, match="cannot reach the server"):
            saver.get_tuple({"configurable": {"thread_id": "t"}})
        with pytest.raises(ServerUnavailable):
            await saver.aget_tuple({"configurable": {"thread_id": "t"}})
        await saver.aclose()


def test_tls_is_really_verified(tls_server: TlsServer) -> None:
    # Without the CA the server's certificate is not trusted; plain RESP to a TLS port fails.
    untrusted = RedisSaver.from_url(tls_server.url(), prefix="app:")
    with pytest.raises(ServerUnavailable, match="certificate"):
        untrusted.get_tuple({"configurable": {"thread_id": "t"}})
    plain = RedisSaver.from_url(f"redis://app:secret@127.0.0.1:{tls_server.port}/0", prefix="app:", socket_timeout=2)
    with pytest.raises(ServerUnavailable):
        plain.get_tuple({"configurable": {"thread_id": "t"}})
