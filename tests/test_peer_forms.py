"""Code written for langgraph-checkpoint-redis runs with the import line changed: every
constructor and class-method form of its AsyncShallowRedisSaver (and its siblings), and the
extra methods that source shows, against a real server."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
import redis
import redis.asyncio as aredis
from langgraph.graph import END, START, StateGraph

from stateline import InvalidInput
from stateline.langgraph import AsyncRedisSaver, AsyncShallowRedisSaver, RedisSaver, ShallowRedisSaver

from .conftest import keys_of


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("a", lambda s: {"log": ["a"]})
    builder.add_node("b", lambda s: {"log": ["b"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder.compile(checkpointer=saver)


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


async def a_turn(saver: Any, thread: str = "t") -> None:
    g = graph(saver)
    assert await g.ainvoke({"log": []}, cfg(thread)) == {"log": ["a", "b"]}
    assert (await g.aget_state(cfg(thread))).values == {"log": ["a", "b"]}


# Each form as seed 002 writes it; `url`, `aclient` and `ns` (a prefix of this test) filled in.
ASYNC_FORMS: dict[str, Callable[[str, Any, str], Any]] = {
    "positional url": lambda url, aclient, ns: AsyncShallowRedisSaver(url, checkpoint_prefix=ns),
    "redis_url=": lambda url, aclient, ns: AsyncShallowRedisSaver(redis_url=url, checkpoint_prefix=ns),
    "redis_client=": lambda url, aclient, ns: AsyncShallowRedisSaver(redis_client=aclient, checkpoint_prefix=ns),
    "connection_args=": lambda url, aclient, ns: AsyncShallowRedisSaver(
        redis_url=url, connection_args={"socket_timeout": 5, "health_check_interval": 30}, checkpoint_prefix=ns
    ),
    "ttl= dict": lambda url, aclient, ns: AsyncShallowRedisSaver(
        redis_url=url, ttl={"default_ttl": 60, "refresh_on_read": True}, checkpoint_prefix=ns
    ),
    "every keyword": lambda url, aclient, ns: AsyncShallowRedisSaver(
        redis_url=None,
        redis_client=aclient,
        connection_args=None,
        ttl=None,
        checkpoint_prefix=ns,
        checkpoint_write_prefix=ns + "_write",
    ),
}


@pytest.mark.parametrize("form", list(ASYNC_FORMS))
async def test_every_constructor_form_of_the_async_shallow_saver(form: str, url: str, prefix: str) -> None:
    ns = prefix.rstrip(":")
    aclient = aredis.Redis.from_url(url)
    saver = ASYNC_FORMS[form](url, aclient, ns)
    async with saver:
        await saver.setup()  # a coroutine in langgraph-checkpoint-redis: awaited
        await saver.asetup()
        saver.create_indexes()
        await saver.aset_client_info()
        await a_turn(saver)
        assert (await saver.aget_channel_values("t", "", None)) == {"log": ["a", "b"]}
    await aclient.aclose()
    client = redis.Redis.from_url(url)
    assert keys_of(client, f"{ns}:*"), "the data lives under checkpoint_prefix"
    client.close()


async def test_from_conn_string_with_every_keyword(url: str, prefix: str) -> None:
    ns = prefix.rstrip(":")
    async with AsyncShallowRedisSaver.from_conn_string(
        redis_url=url,
        connection_args={"socket_timeout": 5},
        ttl={"default_ttl": 1.5, "refresh_on_read": False},
        checkpoint_prefix=ns,
        checkpoint_write_prefix="checkpoint_write",
    ) as saver:
        await a_turn(saver)
        client = redis.Redis.from_url(url)
        ttls = [client.pttl(k) for k in keys_of(client, f"{ns}:{{t}}:*")]  # the thread's keys
        client.close()
        assert ttls and all(0 < t <= 90_000 for t in ttls)  # 1.5 minutes, as the peer's unit
    aclient = aredis.Redis.from_url(url)
    async with AsyncShallowRedisSaver.from_conn_string(redis_client=aclient, checkpoint_prefix=ns) as saver:
        assert (await graph(saver).aget_state(cfg("t"))).values == {"log": ["a", "b"]}
    assert await aclient.ping()  # a client passed in is left open
    await aclient.aclose()


@pytest.mark.parametrize("cls", [RedisSaver, ShallowRedisSaver])
def test_the_sync_savers_forms(cls: type[RedisSaver], url: str, prefix: str) -> None:
    ns = prefix.rstrip(":")
    client = redis.Redis.from_url(url)
    with cls.from_conn_string(url, checkpoint_prefix=ns, checkpoint_write_prefix=ns + "w") as saver:
        saver.setup()
        g = graph(saver)
        assert g.invoke({"log": []}, cfg("s")) == {"log": ["a", "b"]}
        assert saver.get_channel_values("s") == {"log": ["a", "b"]}
    with cls(redis_client=client, checkpoint_prefix=ns) as saver:
        assert graph(saver).get_state(cfg("s")).values == {"log": ["a", "b"]}
        saver.prune(["s"], keep_last=0)
        assert saver.get_tuple(cfg("s")) is None
    client.close()


async def test_savers_with_other_checkpoint_prefixes_never_see_each_other(url: str, prefix: str) -> None:
    ns = prefix.rstrip(":")
    async with (
        AsyncRedisSaver(url, checkpoint_prefix=ns + "_one") as one,
        AsyncRedisSaver(url, checkpoint_prefix=ns + "_two") as two,
    ):
        await a_turn(one, "shared-id")
        assert await two.aget_tuple(cfg("shared-id")) is None
        assert [c async for c in two.alist(None)] == []


async def test_aprune_as_the_peer_documents_it(url: str, prefix: str) -> None:
    async with AsyncShallowRedisSaver(url, prefix=prefix) as saver:
        await a_turn(saver, "p")
        await saver.aprune(["p"])  # keep_latest: the shallow saver has only the newest anyway
        await saver.aprune(["p"], keep_last=3)
        assert await saver.aget_tuple(cfg("p")) is not None
        await saver.aprune(["p"], keep_last=0)
        assert await saver.aget_tuple(cfg("p")) is None
        await a_turn(saver, "q")
        await saver.aprune(["q"], strategy="delete", keep_last=None)
        assert await saver.aget_tuple(cfg("q")) is None
        with pytest.raises(InvalidInput, match="keep_last"):
            await saver.aprune(["q"], keep_last=-1)


def test_prefix_forms_that_cannot_work_say_what_to_use(url: str) -> None:
    with pytest.raises(InvalidInput, match="checkpoint_prefix='app' is prefix='app:'"):
        RedisSaver(url, prefix="x:", checkpoint_prefix="app")
    with pytest.raises(InvalidInput, match="checkpoint_prefix must be a non-empty str"):
        RedisSaver(url, checkpoint_prefix="")
    with pytest.raises(InvalidInput, match="checkpoint_write_prefix must be a non-empty str"):
        RedisSaver(url, checkpoint_write_prefix=3)  # type: ignore[arg-type]
