"""The redis-py internals stateline cannot do without, one function each.

Everything else stateline does with redis-py goes through its public API. What is here has
no public equivalent in the versions stateline supports (redis-py 5.2 to 8.x), and
tests/test_redis_compat.py fails loudly, naming the function, when redis-py changes it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["retry_settings", "sentinel_settings", "node_pipeline", "refresh_slots"]


def retry_settings(retry: Any) -> tuple[Any, int, tuple[type[BaseException], ...]]:
    """``(backoff, retries, supported errors)`` of a sync or asyncio ``Retry``, to build the
    same policy for the other kind of client (a Retry of one kind cannot drive the other's
    connections). redis-py has getters for none of the three in 5.2, for the count only
    (``get_retries``) later."""
    return retry._backoff, retry._retries, tuple(retry._supported_errors)


def sentinel_settings(pool: Any) -> tuple[list[tuple[str, int]], dict[str, Any], str]:
    """``(sentinel hosts, sentinel_kwargs, service name)`` behind a Sentinel master's
    connection pool (sync or asyncio), to reach the same primary with the other kind of
    client. The pool keeps its ``Sentinel`` as ``sentinel_manager``, which has no getter."""
    sentinel = pool.sentinel_manager
    hosts = [(s.get_connection_kwargs()["host"], s.get_connection_kwargs()["port"]) for s in sentinel.sentinels]
    return hosts, dict(sentinel.sentinel_kwargs or {}), pool.service_name


async def node_pipeline(node: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """The replies (an error reply as its exception) of ``commands`` sent together on one
    connection of an asyncio cluster node (``redis.asyncio.cluster.ClusterNode``): a write
    and the WAIT/WAITAOF that must follow it on the same connection. The asyncio cluster
    client has no public way to aim a pipeline at a node (the sync one does:
    ``RedisCluster.get_redis_connection(node).pipeline()``)."""
    from redis.asyncio.cluster import PipelineCommand  # the asyncio cluster pipeline's own unit

    queued = [PipelineCommand(i, *args) for i, args in enumerate(commands)]
    await node.execute_pipeline(queued)
    return [c.result for c in queued]


def refresh_slots(client: Any) -> Any:
    """Learns the cluster's slots and nodes again (after MOVED or a node gone), for a sync
    or an asyncio ``RedisCluster`` (an initialized one): an awaitable for the asyncio one.
    redis-py does this inside its own command paths only; its ``NodesManager`` is not public."""
    return client.nodes_manager.initialize()
