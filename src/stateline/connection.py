"""URL or client -> the sync and async redis-py clients stateline drives.

A saver or checkpointer may be given a URL, a sync client or an async client; it gets
the other kind lazily from the same settings, so both its sync and its async methods talk
to the server directly (no event-loop thread bridging one to the other).

URLs (parsed in ``urls.py``): ``redis://``, ``rediss://`` (TLS), ``unix://``;
``redis+cluster://h:p[,h:p]`` (or ``cluster=True``) for Redis Cluster;
``redis+sentinel://h:p[,h:p]/service[/db]`` for Sentinel (``rediss+`` forms use TLS).
Credentials may be in the URL or in the options.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
import redis.asyncio.retry as aretry
import redis.asyncio.sentinel as asentinel
import redis.cluster as scluster
import redis.retry as sretry
import redis.sentinel as ssentinel
from redis import connection as sync_conn
from redis import exceptions as rx
from redis.asyncio import connection as async_conn

from . import urls
from ._redis_compat import retry_settings, sentinel_settings
from .embedded import EmbeddedServer
from .errors import AuthenticationFailed, InvalidInput, PermissionDenied, ServerError, ServerUnavailable

__all__ = ["Connection", "is_cluster"]

# A client stateline makes from a URL holds at most MAX_CONNECTIONS connections, and a call
# finding them all busy waits up to POOL_TIMEOUT seconds for one (redis-py's default pool
# raises "Too many connections" at once). Options: max_connections=, pool_timeout=.
MAX_CONNECTIONS = 100
POOL_TIMEOUT = 20.0
# redis-py's sync cluster client takes a pool class for its nodes (6.x on; not 5.2).
_CLUSTER_POOLS = {"connection_pool_class", "timeout"} <= set(scluster.REDIS_ALLOWED_KEYS)

# Connection settings that mean the same to the sync and the async cluster clients.
_PORTABLE = {
    "max_connections",
    "username",
    "password",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "client_name",
    "protocol",
    "health_check_interval",
}
# Connection settings that are objects of one kind (an asyncio Retry cannot drive a sync
# connection, and the reverse silently never retries): never copied to the twin as they are.
_KIND_BOUND = {"retry", "maint_notifications_pool_handler", "redis_connect_func", "connection_class"}


def is_cluster(client: Any) -> bool:
    return isinstance(client, (scluster.RedisCluster, acluster.RedisCluster))


def _construction_error(url: str, exc: Exception) -> Exception:
    """The stateline error for a client that failed while being constructed: a sync
    cluster client connects to a startup node then (redis-py wraps the reason). redis-py's
    text carries no secret: it never sees a URL with credentials (see urls.UrlSpec.url)."""
    cause = exc.__cause__ if isinstance(exc, rx.RedisClusterException) and exc.__cause__ else exc
    where = urls.redact(url)
    if isinstance(cause, rx.AuthenticationError) or any(w in str(cause) for w in ("NOAUTH", "WRONGPASS")):
        return AuthenticationFailed(f"the server at {where} rejected the credentials: {cause}")
    if isinstance(cause, rx.NoPermissionError):
        return PermissionDenied(f"the server user at {where} lacks a permission stateline needs: {cause}")
    if isinstance(cause, (rx.ConnectionError, rx.TimeoutError, OSError)):
        return ServerUnavailable(f"cannot reach the server at {where}: {exc}")
    return ServerError(f"cannot use the server at {where}: {exc}")


def _make(url: str, kind: str, options: dict[str, Any]) -> Any:
    """A client of ``kind`` ('sync' or 'async') for ``url``, with a pool that waits for a
    connection where redis-py has one (see MAX_CONNECTIONS)."""
    sync = kind == "sync"
    spec = urls.parse(url, options)
    settings = dict(spec.settings)
    wait = settings.pop("pool_timeout", POOL_TIMEOUT)
    if spec.kind == "cluster":
        module = scluster if sync else acluster
        nodes = [module.ClusterNode(h, p) for h, p in spec.hosts]
        if sync and _CLUSTER_POOLS:  # per node; the asyncio client opens connections as needed
            settings.setdefault("max_connections", MAX_CONNECTIONS)
            settings.update(connection_pool_class=sync_conn.BlockingConnectionPool, timeout=wait)
        return module.RedisCluster(startup_nodes=nodes, **settings)
    if spec.kind == "sentinel":  # redis-py's Sentinel pool cannot wait: its own limit holds
        settings.pop("sentinel_kwargs", None)
        sentinel = (ssentinel if sync else asentinel).Sentinel(
            spec.hosts, sentinel_kwargs=spec.sentinel_settings(), **settings
        )
        return sentinel.master_for(spec.service)
    settings.pop("ssl")  # the URL's scheme says it to from_url
    if settings.get("single_connection_client"):  # one connection: no pool to wait on
        return (redis.Redis if sync else aredis.Redis).from_url(spec.url, **settings)
    settings.setdefault("max_connections", MAX_CONNECTIONS)
    pool = _conn_module(sync).BlockingConnectionPool.from_url(spec.url, timeout=wait, **settings)
    return (redis.Redis if sync else aredis.Redis).from_pool(pool)


def _accepted(cls: Any) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            names |= set(inspect.signature(klass.__init__).parameters)
    return names


def _twin(client: Any, kind: str) -> Any:
    """A client of the other kind (sync <-> async) with the same settings as ``client``."""
    sync = kind == "sync"
    if is_cluster(client):
        return _cluster_twin(client, sync)
    pool = client.connection_pool
    given = _of_kind(client.get_connection_kwargs(), sync)
    if isinstance(pool, (ssentinel.SentinelConnectionPool, asentinel.SentinelConnectionPool)):
        hosts, sentinel_kwargs, service = sentinel_settings(pool)
        kwargs = {k: v for k, v in given.items() if k not in ("host", "port")}
        if "SSL" in pool.connection_class.__name__:
            kwargs["ssl"] = True
        sentinel = (ssentinel if sync else asentinel).Sentinel(hosts, sentinel_kwargs=_of_kind(sentinel_kwargs, sync))
        return sentinel.master_for(service, max_connections=pool.max_connections, **kwargs)
    module = _conn_module(sync)
    cls = getattr(module, pool.connection_class.__name__, None)
    if cls is None:
        raise InvalidInput(
            f"cannot derive a client of the other kind from a {pool.connection_class.__name__} "
            "connection: pass both client= and aclient="
        )
    kwargs = {k: v for k, v in given.items() if k in _accepted(cls)}
    return (redis.Redis if sync else aredis.Redis).from_pool(_pool_like(pool, module, cls, kwargs))


def _cluster_twin(client: Any, sync: bool) -> Any:
    given = client.get_connection_kwargs()
    kwargs = {k: v for k, v in given.items() if k in _PORTABLE or k.startswith("ssl_")}
    if "SSL" in getattr(given.get("connection_class"), "__name__", "") or given.get("ssl"):
        kwargs["ssl"] = True
    node = client.get_default_node()
    if not sync and isinstance(client.get_redis_connection(node).connection_pool, sync_conn.BlockingConnectionPool):
        # The asyncio cluster client cannot wait for a connection: no limit, rather than
        # failing where the sync client waits.
        kwargs.pop("max_connections", None)
    cls = scluster.RedisCluster if sync else acluster.RedisCluster
    return cls(host=node.host, port=node.port, **kwargs)


def _pool_like(pool: Any, module: Any, connection_class: Any, kwargs: dict[str, Any]) -> Any:
    """A pool of ``module``'s kind with the class (waiting or not) and the limits of ``pool``."""
    limit = pool.max_connections
    if isinstance(pool, (sync_conn.BlockingConnectionPool, async_conn.BlockingConnectionPool)):
        return module.BlockingConnectionPool(
            connection_class=connection_class, max_connections=limit, timeout=pool.timeout, **kwargs
        )
    return module.ConnectionPool(connection_class=connection_class, max_connections=limit, **kwargs)


def _of_kind(kwargs: dict[str, Any], sync: bool) -> dict[str, Any]:
    """``kwargs`` without the settings bound to the other kind; a Retry is rebuilt for this
    kind with the same backoff, retries and errors."""
    out = {k: v for k, v in kwargs.items() if k not in _KIND_BOUND}
    retry = kwargs.get("retry")
    if isinstance(retry, (sretry.Retry, aretry.Retry)):
        out["retry"] = (sretry if sync else aretry).Retry(*retry_settings(retry))
    return out


def _conn_module(sync: bool) -> Any:
    return sync_conn if sync else async_conn


def _binary_safe(client: Any) -> Any:
    get_kwargs = getattr(client, "get_connection_kwargs", None)
    kwargs = get_kwargs() if callable(get_kwargs) else {}
    if kwargs.get("decode_responses"):
        raise InvalidInput("the client decodes responses (decode_responses=True); stateline stores bytes")
    return client


class Connection:
    """Holds the clients of one server; creates each kind on first use."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        aclient: Any = None,
        data_dir: str | None = None,
        **options: Any,
    ) -> None:
        if url is not None and (client is not None or aclient is not None):
            raise InvalidInput("pass either a URL or a client, not both")
        if url is not None:
            urls.parse(url, options)  # fail now on a malformed URL, not at the first write; no connection
        self._url = url
        self._sync = None if client is None else _binary_safe(client)
        self._async = None if aclient is None else _binary_safe(aclient)
        self._created: list[Any] = []
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._options = options
        self._data_dir = data_dir

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = EmbeddedServer(self._data_dir or ".stateline").url
        return self._url

    def _client(self, kind: str) -> Any:
        mine, other = (self._sync, self._async) if kind == "sync" else (self._async, self._sync)
        if mine is not None:
            return mine
        try:
            if other is not None and self._url is None:
                made = _twin(other, kind)
            else:
                made = _make(self.url, kind, self._options)
        except (rx.RedisClusterException, rx.ConnectionError, rx.TimeoutError) as exc:
            # Only a sync cluster client connects while constructed (to discover the slots).
            raise _construction_error(self._url or "the cluster", exc) from exc
        self._created.append(made)
        if kind == "sync":
            self._sync = made
        else:
            self._async = made
        return made

    @property
    def sync(self) -> Any:
        return self._client("sync")

    @property
    def aio(self) -> Any:
        # An asyncio client belongs to the event loop it first ran in; a saver used from a
        # new loop (a second asyncio.run, another thread's loop) gets a client of its own.
        loop = asyncio.get_running_loop()
        if self._async is not None and self._made(self._async) and self._async_loop is not loop:
            self._forget_made(self._async)
            self._async = None
        if self._async is None:
            self._async_loop = loop
        return self._client("async")

    def _made(self, client: Any) -> bool:
        return any(c is client for c in self._created)

    def _forget_made(self, client: Any) -> None:
        self._created = [c for c in self._created if c is not client]

    def close(self) -> None:
        """Closes the sync client stateline created (a client the caller passed stays open)."""
        if self._sync is not None and self._made(self._sync):
            self._sync.close()

    async def aclose(self) -> None:
        """Closes every client stateline created."""
        try:
            client, owner = self._async, self._async_loop
            if client is not None and self._made(client):
                if owner is None or owner is asyncio.get_running_loop():
                    await client.aclose()
                else:
                    # The client's connections belong to another event loop (an earlier
                    # asyncio.run, another thread's loop): awaiting their close here fails
                    # ("Event loop is closed", or attached to a different loop). A loop
                    # still running closes them itself; the sockets of a closed loop cannot
                    # be closed without it (redis-py has no synchronous close for them) and
                    # are released when the dropped client is garbage collected.
                    self._forget_made(client)
                    self._async, self._async_loop = None, None
                    if not owner.is_closed() and owner.is_running():
                        asyncio.run_coroutine_threadsafe(client.aclose(), owner)
        finally:
            self.close()
