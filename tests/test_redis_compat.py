"""The redis-py internals stateline relies on (stateline/_redis_compat.py), one test each:
when redis-py changes one, the failure names the function to update."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio.cluster as acluster
import redis.asyncio.retry as aretry
import redis.asyncio.sentinel as asentinel
import redis.cluster as scluster
import redis.retry as sretry
import redis.sentinel as ssentinel
from redis.backoff import ExponentialBackoff

from stateline import _redis_compat as compat
from stateline.urls import parse


@contextlib.contextmanager
def internals_of(function: str) -> Iterator[None]:
    try:
        yield
    except (AttributeError, TypeError, KeyError, ImportError) as exc:
        pytest.fail(
            f"redis-py {redis.__version__} changed what stateline._redis_compat.{function} relies on: {exc!r}",
            pytrace=True,
        )


@pytest.mark.parametrize("module", [sretry, aretry], ids=["sync", "asyncio"])
def test_retry_settings_reads_back_what_a_retry_was_made_with(module: object) -> None:
    backoff = ExponentialBackoff(cap=2, base=0.1)
    retry = module.Retry(backoff, 5, (redis.ConnectionError,))  # type: ignore[attr-defined]
    with internals_of("retry_settings"):
        got = compat.retry_settings(retry)
    assert got[0] is backoff and got[1] == 5
    assert redis.ConnectionError in got[2]
    other = (aretry if module is sretry else sretry).Retry(*got)  # the same policy, the other kind
    with internals_of("retry_settings"):
        assert compat.retry_settings(other)[1:] == got[1:]


@pytest.mark.parametrize("module", [ssentinel, asentinel], ids=["sync", "asyncio"])
def test_sentinel_settings_reads_the_sentinels_behind_a_master_pool(module: object) -> None:
    hosts = [("127.0.0.1", 26379), ("10.0.0.2", 26380)]
    sentinel = module.Sentinel(hosts, sentinel_kwargs={"socket_timeout": 1.5})  # type: ignore[attr-defined]
    master = sentinel.master_for("mymaster")  # (nothing connects until a command)
    with internals_of("sentinel_settings"):
        got_hosts, kwargs, service = compat.sentinel_settings(master.connection_pool)
    assert got_hosts == hosts
    assert kwargs["socket_timeout"] == 1.5
    assert service == "mymaster"


@pytest.mark.slow
async def test_node_pipeline_sends_commands_on_one_connection_of_a_node(cluster_url: str) -> None:
    spec = parse(cluster_url)
    client = acluster.RedisCluster(startup_nodes=[acluster.ClusterNode(h, p) for h, p in spec.hosts])
    await client.initialize()
    key = "{compat}k"
    node = client.get_node_from_key(key)
    with internals_of("node_pipeline"):
        replies = await compat.node_pipeline(
            node, [("SET", key, "v"), ("GET", key), ("HGET", key, "f"), ("CLIENT", "ID"), ("CLIENT", "ID")]
        )
    assert replies[:2] == [True, b"v"]
    assert isinstance(replies[2], redis.ResponseError)  # an error reply is its exception, in place
    assert replies[3] == replies[4]  # one connection for all
    await client.aclose()


@pytest.mark.slow
async def test_refresh_slots_learns_the_cluster_again(cluster_url: str) -> None:
    spec = parse(cluster_url)
    sync = scluster.RedisCluster(startup_nodes=[scluster.ClusterNode(h, p) for h, p in spec.hosts])
    with internals_of("refresh_slots"):
        assert compat.refresh_slots(sync) is None
    assert len(sync.get_primaries()) == 3 and sync.set("{compat}s", 1)
    sync.close()
    aclient = acluster.RedisCluster(startup_nodes=[acluster.ClusterNode(h, p) for h, p in spec.hosts])
    await aclient.initialize()  # (as the runner does first: the asyncio client starts lazily)
    with internals_of("refresh_slots"):
        await compat.refresh_slots(aclient)
    assert len(aclient.get_primaries()) == 3 and await aclient.set("{compat}a", 1)
    await aclient.aclose()
