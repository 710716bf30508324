"""Server URLs: every form reaches its servers, and no secret is ever shown.

The password used throughout holds ``/ # ? @ %``; it is written percent-encoded (the
standard form) and raw (as users type it). Real servers require it: a Valkey with an ACL
user, a TLS Redis, an IPv6 cluster (on ``::1``) and a TLS Sentinel whose sentinel asks for
the credentials too. An error is checked whole: its text, its repr and every exception it
chains to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from stateline import AuthenticationFailed, InvalidInput, ServerError
from stateline.langgraph import AsyncRedisSaver, RedisSaver
from stateline.urls import parse, redact

from . import servers

SECRET = "Quux/Zorb#Flim?Wazz@Gnat%Blip"
WRONG = "Quux/Zorb#Flim?Wazz@Gnat%Blip%Nope"
PIECES = ("Quux", "Zorb", "Flim", "Wazz", "Gnat", "Blip", "Nope")  # no part of either may show
FORMS = {"encoded": quote(SECRET, safe=""), "raw": SECRET}
REDIS = servers.redis_binary()
needs_redis = pytest.mark.skipif(REDIS is None, reason="needs Debian's redis-server (TLS, sentinel)")


def texts(exc: BaseException) -> str:
    """Everything an error can show: str, repr and args, along its whole chain."""
    out, seen, todo = [], set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out += [str(e), repr(e), *map(repr, e.args)]
        todo += [e.__cause__, e.__context__]
    return "\n".join(out)


def assert_hidden(text: str) -> None:
    shown = [p for p in PIECES if p in text]
    assert not shown, f"secret pieces {shown} in: {text}"


def root(thread: str = "t") -> dict:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def round_trip(saver: RedisSaver) -> None:
    cp = empty_checkpoint()
    cp["channel_values"], cp["channel_versions"] = {"a": 1}, {"a": 1}
    cfg = saver.put(root(), cp, {}, {"a": 1})
    assert saver.get_tuple(cfg).checkpoint["channel_values"] == {"a": 1}


async def around_trip(saver: Any) -> None:
    assert (await saver.aget_tuple(root())).checkpoint["channel_values"] == {"a": 1}


def fails_hidden(saver: RedisSaver, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        saver.get_tuple(root())
    assert_hidden(texts(info.value))


async def afails_hidden(saver: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        await saver.aget_tuple(root())
    assert_hidden(texts(info.value))


# -- parsing, no server ----------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "template",
    [
        "redis://app:{pw}@127.0.0.1:6390/2",
        "rediss://app:{pw}@127.0.0.1:6390",
        "unix://app:{pw}@/tmp/s.sock",
        "redis+cluster://app:{pw}@127.0.0.1:7000,[::1]:7001",
        "rediss+sentinel://:{pw}@[::1]:5000,127.0.0.1/mymaster/3",
    ],
)
def test_a_password_reads_the_same_encoded_or_raw_and_is_never_shown(form: str, template: str) -> None:
    url = template.format(pw=FORMS[form])
    assert parse(url).settings["password"] == SECRET
    assert_hidden(redact(url))
    assert redact(url).endswith(template.split("{pw}")[1])  # where it goes is still shown


@pytest.mark.parametrize(
    "url",
    [
        f"redis://app:{SECRET}@127.0.0.1:x/0",  # a bad port after a raw password
        f"redis://app:{SECRET}@127.0.0.1:6379/zero",
        f"redis+cluster://app:{SECRET}@127.0.0.1:7000,127.0.0.1:nope",
        f"rediss+sentinel://:{SECRET}@127.0.0.1:26379",  # no service
        f"redis://127.0.0.1:6379/0?password={SECRET}",  # raw # and & cut the query
        f"redis://127.0.0.1:6379/0?password={quote(SECRET)}&socket_timeout=soon",
        f"redis://127.0.0.1:6379/0?ssl_password={quote(SECRET, safe='')}&what=ever",
        f"redis://127.0.0.1:6379/0?token={SECRET.replace('#', '&')}",
        f"http://app:{SECRET}@127.0.0.1:6379",
        f"app:{SECRET}@127.0.0.1:6379",
        f"redis+cluster://app:{SECRET}@[::1:7000",
    ],
)
def test_a_malformed_url_is_refused_without_its_secret(url: str) -> None:
    with pytest.raises(InvalidInput, match="URL") as info:
        RedisSaver(url)
    assert_hidden(texts(info.value))


def test_a_secret_in_the_query_is_read_and_hidden() -> None:
    url = f"redis://127.0.0.1:6390/0?username=app&password={quote(SECRET, safe='')}&client_name=me"
    assert parse(url).settings == {"username": "app", "password": SECRET, "client_name": "me", "db": 0, "ssl": False}
    assert redact(url) == "redis://127.0.0.1:6390/0?username=app&password=***&client_name=me"


@pytest.mark.parametrize(
    "url,hosts",
    [
        ("redis+cluster://[::1]", [("::1", 6379)]),
        ("redis+cluster://[::1]:7000", [("::1", 7000)]),
        ("redis+cluster://[::1]:7000,[::1]:7001,127.0.0.1", [("::1", 7000), ("::1", 7001), ("127.0.0.1", 6379)]),
        ("redis+cluster://u:p@[fe80::1%25eth0]:7000", [("fe80::1%eth0", 7000)]),
        ("redis+sentinel://[::1]/mymaster", [("::1", 26379)]),
        ("rediss+sentinel://[::1]:5000,[::1]:5001/mymaster", [("::1", 5000), ("::1", 5001)]),
        ("redis://[::1]:6390/0", [("::1", 6390)]),
    ],
)
def test_ipv6_hosts(url: str, hosts: list[tuple[str, int]]) -> None:
    assert list(parse(url).hosts) == hosts


@pytest.mark.parametrize(
    "url,says",
    [
        ("redis+cluster://::1:7000", "brackets"),
        ("redis+cluster://[::1]x", "IPv6"),
        ("redis+cluster://[nope]:7000", "not an IPv6 address"),
        ("redis+sentinel://[::1:26379/mymaster", "IPv6"),
    ],
)
def test_a_bad_ipv6_host_is_invalid_input(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        RedisSaver(url)


@pytest.mark.parametrize(
    "url,options,says",
    [
        ("rediss+cluster://127.0.0.1:7000", {"ssl": False}, "ssl is given both"),
        ("redis+cluster://127.0.0.1:7000", {"ssl": True}, "ssl is given both"),
        ("unix:///tmp/s.sock", {"ssl": True}, "ssl is given both"),
        (f"redis://app:{quote(SECRET, safe='')}@127.0.0.1", {"password": WRONG}, "password is given both"),
        (f"redis://app:{SECRET}@127.0.0.1/0?db=1", {}, "db is given in the URL twice"),
        ("redis+sentinel://127.0.0.1/mymaster/1", {"db": 2}, "db is given both"),
        (f"redis://u:{FORMS['encoded']}@127.0.0.1/0?password=other", {}, "password is given in the URL twice"),
        # a raw password next to a secret in the query: which @ ends the credentials?
        (f"redis://u:{SECRET}@127.0.0.1/0?password=other", {}, "write # in a password as %23"),
    ],
)
def test_a_setting_given_twice_with_different_values_is_refused_by_name(url: str, options: dict, says: str) -> None:
    with pytest.raises(InvalidInput, match=says) as info:
        RedisSaver(url, **options)
    assert_hidden(texts(info.value))


def test_a_setting_given_twice_with_the_same_value_is_fine() -> None:
    spec = parse(f"rediss+cluster://app:{SECRET}@127.0.0.1:7000", {"ssl": True, "password": SECRET})
    assert spec.settings["ssl"] is True and spec.settings["password"] == SECRET
    assert parse("redis://127.0.0.1/3?db=3", {"db": 3}).settings["db"] == 3


@pytest.mark.parametrize(
    "url,says",
    [
        ("redis+cluster://127.0.0.1:7000/1", "database 0 only"),
        ("redis+cluster://127.0.0.1:7000?db=2", "database 0 only"),
        ("redis+cluster://127.0.0.1:7000?socket_timout=2", "unknown option 'socket_timout'"),
        ("redis+cluster://127.0.0.1:7000?health_check_interval=2", "cannot take the option 'health_check_interval'"),
        ("redis://127.0.0.1:6390/0?colour=blue", "unknown option 'colour'"),
        ("redis://127.0.0.1:6390/0?socket_timeout=soon", "invalid value 'soon' for 'socket_timeout'"),
    ],
)
def test_what_a_url_cannot_do_is_refused_not_ignored(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        RedisSaver(url)


def test_a_cluster_url_takes_db_0_and_its_query_options() -> None:
    spec = parse("redis+cluster://127.0.0.1:7000/0?socket_timeout=2.5&client_name=me")
    assert spec.settings == {"ssl": False, "socket_timeout": 2.5, "client_name": "me"}
    assert parse("redis://127.0.0.1:7000/0", {"cluster": True}).kind == "cluster"
    with pytest.raises(InvalidInput, match="database 0 only"):
        RedisSaver("redis://127.0.0.1:7000/4", cluster=True)


# -- a standalone server that needs the password --------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """A Valkey open only to user ``app`` (and the default user) with password SECRET."""
    server = servers.start(servers.valkey_binary(), tmp_path_factory.mktemp("locked"), "--requirepass", SECRET)
    server.client_kwargs["password"] = SECRET
    with server.client() as c:
        c.execute_command("ACL", "SETUSER", "app", "on", ">" + SECRET, "~*", "+@all")
    yield server
    server.kill()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("user", ["app:", ":"])
async def test_the_password_connects_in_either_form(locked: servers.Server, form: str, user: str) -> None:
    saver = RedisSaver(f"redis://{user}{FORMS[form]}@127.0.0.1:{locked.port}/0", prefix=f"{uuid.uuid4().hex}:")
    round_trip(saver)
    await around_trip(saver)
    await saver.aclose()


@pytest.mark.parametrize("form", FORMS)
async def test_a_wrong_password_fails_without_showing_it(locked: servers.Server, form: str) -> None:
    wrong = WRONG if form == "raw" else quote(WRONG, safe="")
    for url in (f"redis://app:{wrong}@127.0.0.1:{locked.port}/0", f"redis://:{wrong}@127.0.0.1:{locked.port}/0"):
        saver = RedisSaver(url, prefix="x:")
        fails_hidden(saver, AuthenticationFailed)
        await afails_hidden(saver, AuthenticationFailed)
        await saver.aclose()
    saver = RedisSaver(f"redis://127.0.0.1:{locked.port}/0", prefix="x:", username="app", password=WRONG)
    fails_hidden(saver, AuthenticationFailed)


async def test_an_unreachable_server_fails_without_showing_the_password() -> None:
    port = servers.free_port()
    for url in (
        f"redis://app:{SECRET}@127.0.0.1:{port}/0",
        f"rediss://app:{quote(SECRET, safe='')}@127.0.0.1:{port}/0",
        f"redis+cluster://app:{SECRET}@127.0.0.1:{port}",
        f"redis+sentinel://app:{SECRET}@127.0.0.1:{port}/mymaster",
        f"unix://app:{SECRET}@/tmp/{uuid.uuid4().hex}.sock",
    ):
        saver = RedisSaver(url, prefix="x:", socket_connect_timeout=2)
        fails_hidden(saver, ServerError)
        await afails_hidden(saver, ServerError)
        await saver.aclose()


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> servers.TlsFiles:
    return servers.tls_files(tmp_path_factory.mktemp("urls-tls"))


@needs_redis
@pytest.mark.parametrize("form", FORMS)
async def test_rediss_with_the_password(tmp_path: Path, tls: servers.TlsFiles, form: str) -> None:
    assert REDIS is not None
    server = servers.start_tls(REDIS, tmp_path, tls, "--requirepass", SECRET)
    try:
        ok = RedisSaver(f"rediss://:{FORMS[form]}@127.0.0.1:{server.port}/0", prefix="x:", ssl_ca_certs=str(tls.ca))
        round_trip(ok)
        await around_trip(ok)
        await ok.aclose()
        bad = RedisSaver(f"rediss://:{WRONG}@127.0.0.1:{server.port}/0", prefix="x:", ssl_ca_certs=str(tls.ca))
        fails_hidden(bad, AuthenticationFailed)
        await afails_hidden(bad, AuthenticationFailed)
        await bad.aclose()
    finally:
        server.kill()


@needs_redis
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
async def test_rediss_sentinel_talks_tls_and_credentials_to_the_sentinels(
    tmp_path: Path, tls: servers.TlsFiles, host: str
) -> None:
    """The sentinel accepts only TLS and only user ``app``: a client that reached it
    without either could not learn where the primary is."""
    assert REDIS is not None
    with servers.tls_sentinel(tmp_path, REDIS, tls, "app", SECRET) as (primary, sentinel):
        where = f"{host}:{sentinel.port}/mymaster"
        for form in FORMS.values():
            for saver in (
                RedisSaver(f"rediss+sentinel://app:{form}@{where}", prefix="s:", ssl_ca_certs=str(tls.ca)),
                AsyncRedisSaver(f"rediss+sentinel://app:{form}@{where}", prefix="s:", ssl_ca_certs=str(tls.ca)),
                # the same settings given twice are fine
                RedisSaver(f"rediss+sentinel://app:{form}@{where}", prefix="s:", ssl_ca_certs=str(tls.ca), ssl=True),
            ):
                round_trip(saver)
                await around_trip(saver)
                await saver.aclose()
        with primary.client() as c:
            assert c.exists(RedisSaver(client=c, prefix="s:").engine.keys("t").data)
        bad = RedisSaver(f"rediss+sentinel://app:{WRONG}@{where}", prefix="s:", ssl_ca_certs=str(tls.ca))
        fails_hidden(bad, AuthenticationFailed)
        await afails_hidden(bad, AuthenticationFailed)
        await bad.aclose()
        plain = RedisSaver(f"redis+sentinel://app:{SECRET}@{where}", prefix="s:", socket_timeout=2)
        fails_hidden(plain, ServerError)  # no TLS: the sentinel does not answer


# -- an IPv6 cluster that needs the password -------------------------------------------------


def ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[servers.Server]]:
    """3 masters on ::1 only, open to user ``app`` with password SECRET only."""
    if not ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    with servers.cluster(tmp_path_factory.mktemp("cluster6"), servers.valkey_binary(), 3, 0, host="::1") as nodes:
        for node in nodes:
            with node.client() as c:
                c.execute_command("ACL", "SETUSER", "app", "on", ">" + SECRET, "~*", "&*", "+@all")
                c.execute_command("ACL", "SETUSER", "default", "off")
            node.client_kwargs.update(username="app", password=SECRET)
        yield nodes


@pytest.mark.parametrize("form", FORMS)
async def test_an_ipv6_cluster_url_with_the_password(cluster6: list[servers.Server], form: str) -> None:
    url = f"redis+cluster://app:{FORMS[form]}@" + ",".join(f"[::1]:{n.port}" for n in cluster6)
    saver = RedisSaver(url, prefix=f"{uuid.uuid4().hex[:6]}:")
    round_trip(saver)
    await around_trip(saver)
    assert {n.host for n in saver._conn.sync.get_nodes()} == {"::1"}  # the cluster's own view: IPv6
    await saver.aclose()
    one = f"redis+cluster://app:{FORMS[form]}@[::1]:{cluster6[1].port}"  # one startup node is enough
    saver = RedisSaver(one, prefix=f"{uuid.uuid4().hex[:6]}:", password=SECRET)  # the same password twice
    round_trip(saver)
    await saver.aclose()


async def test_an_ipv6_cluster_with_a_wrong_password(cluster6: list[servers.Server]) -> None:
    saver = RedisSaver(f"redis+cluster://app:{WRONG}@[::1]:{cluster6[0].port}", prefix="x:")
    fails_hidden(saver, AuthenticationFailed)
    await afails_hidden(saver, ServerError)
    await saver.aclose()


async def test_a_cluster_url_s_query_options_are_applied(cluster6: list[servers.Server]) -> None:
    name = f"sl{uuid.uuid4().hex[:8]}"
    url = f"redis+cluster://app:{quote(SECRET, safe='')}@[::1]:{cluster6[0].port}/0?client_name={name}"
    saver = RedisSaver(url, prefix="q:")
    round_trip(saver)
    await around_trip(saver)
    named = 0
    for node in cluster6:
        with node.client() as c:
            named += sum(1 for info in c.client_list() if info["name"] == name)
    assert named >= 2  # the sync and the asyncio clients' connections
    await saver.aclose()


# -- the command line --------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    import stateline

    env = {**os.environ, "PYTHONPATH": str(Path(stateline.__file__).parents[1])}  # this stateline
    return subprocess.run(
        [sys.executable, "-m", "stateline", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_cli_never_prints_the_password(locked: servers.Server) -> None:
    port = servers.free_port()
    for url, status in (
        (f"redis://app:{WRONG}@127.0.0.1:{locked.port}/0", 1),  # refused credentials
        (f"redis://app:{SECRET}@127.0.0.1:{port}/0", 1),  # nothing listens
        (f"redis://app:{SECRET}@127.0.0.1:{port}/zero", 2),  # malformed: bad usage
    ):
        done = cli("threads", "--url", url)
        assert done.returncode == status and done.stderr.startswith("error: "), done.stderr
        assert_hidden(done.stdout + done.stderr)
    ok = cli("threads", "--url", f"redis://app:{SECRET}@127.0.0.1:{locked.port}/0", "--prefix", "nothing:")
    assert ok.returncode == 0, ok.stderr
    assert_hidden(ok.stdout + ok.stderr)


def test_the_demo_hands_its_url_to_the_second_process_out_of_sight(
    locked: servers.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command line is visible to every user of the machine (``ps``): the URL goes in
    the environment."""
    from stateline import demo

    seen: list[tuple[list[str], dict]] = []
    real = subprocess.run
    monkeypatch.setattr(demo.subprocess, "run", lambda cmd, **kw: seen.append((cmd, kw)) or real(cmd, **kw))
    url = f"redis://app:{SECRET}@127.0.0.1:{locked.port}/0"
    demo.run(url)
    [(cmd, kw)] = seen
    assert_hidden(" ".join(cmd))
    assert kw["env"]["STATELINE_URL"] == url
