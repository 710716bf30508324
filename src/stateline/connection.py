"""URL or client -> the sync and async redis-py clients stateline drives.

A saver or checkpointer may be given a URL, a sync client or an async client; it gets
the other kind lazily from the same settings, so both its sync and its async methods talk
to the server directly (no event-loop thread bridging one to the other).

URLs: ``redis://``, ``rediss://`` (TLS), ``unix://``; ``redis+cluster://h:p[,h:p]`` (or
``cluster=True``) for Redis Cluster; ``redis+sentinel://h:p[,h:p]/service[/db]`` for
Sentinel (``rediss+`` forms use TLS). Credentials may be in the URL or in the options.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any
from urllib.parse import unquote, urlsplit

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

from .embedded import EmbeddedServer
from .errors import AuthenticationFailed, InvalidInput, PermissionDenied, ServerError, ServerUnavailable

__all__ = ["Connection", "is_cluster"]

_PLAIN = ("redis://", "rediss://", "unix://")
_CLUSTER = ("redis+cluster", "rediss+cluster")
_SENTINEL = ("redis+sentinel", "rediss+sentinel")
_UNSUPPORTED = (
    "use redis://host:port/db, rediss:// (TLS), unix:///path, "
    "redis+cluster://host:port[,host:port] or redis+sentinel://host:port[,host:port]/service[/db]"
)
# Connection settings that mean the same to the sync and the async cluster clients.
_PORTABLE = {
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


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    out = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            number = int(port or default_port)
        except ValueError:
            raise ValueError(f"port {port!r} of {part!r} is not a number") from None
        if not 0 < number < 65536:
            raise ValueError(f"port {number} of {part!r} is out of range")
        out.append((host or "127.0.0.1", number))
    return out


def _redacted(url: str) -> str:
    """``url`` with its password (if any) replaced, for error messages."""
    head, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" not in netloc:
        return url
    userinfo, _, hosts = netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{head}{sep}{user}{':***' if colon else ''}@{hosts}{slash}{tail}"


def _check_url(url: Any) -> None:
    """Raises InvalidInput unless ``url`` is a server URL stateline can use.

    Parsing only: no client is built here, because a cluster client connects to the
    cluster as soon as it is constructed (and an unreachable one fails there)."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInput(f"unsupported server URL {url!r}: expected e.g. redis://host:6379/0")
    scheme = url.split("://", 1)[0]
    if not url.startswith(_PLAIN) and scheme not in _CLUSTER + _SENTINEL:
        raise InvalidInput(f"unsupported server URL {_redacted(url)!r}: {_UNSUPPORTED}")
    try:
        if scheme in _CLUSTER:
            _hosts(urlsplit(url).netloc, 6379)
        elif scheme in _SENTINEL:
            parts = urlsplit(url)
            _hosts(parts.netloc, 26379)
            path = [p for p in parts.path.split("/") if p]
            if not path:
                raise InvalidInput(
                    f"sentinel URL {_redacted(url)!r} needs a service name: redis+sentinel://host:port/service[/db]"
                )
            if len(path) > 1:
                try:
                    int(path[1])
                except ValueError:
                    raise ValueError(f"database {path[1]!r} is not a number") from None
        else:
            sync_conn.parse_url(url)  # redis-py's own parser: port, query options
    except InvalidInput:
        raise
    except ValueError as exc:
        raise InvalidInput(f"malformed server URL {_redacted(url)!r}: {exc}") from None


def _construction_error(url: str, exc: Exception) -> Exception:
    """The stateline error for a client that failed while being constructed: a sync
    cluster client connects to a startup node then (redis-py wraps the reason)."""
    cause = exc.__cause__ if isinstance(exc, rx.RedisClusterException) and exc.__cause__ else exc
    where = _redacted(url)
    if isinstance(cause, rx.AuthenticationError) or any(w in str(cause) for w in ("NOAUTH", "WRONGPASS")):
        return AuthenticationFailed(f"the server at {where} rejected the credentials: {cause}")
    if isinstance(cause, rx.NoPermissionError):
        return PermissionDenied(f"the server user at {where} lacks a permission stateline needs: {cause}")
    if isinstance(cause, (rx.ConnectionError, rx.TimeoutError, OSError)):
        return ServerUnavailable(f"cannot reach the server at {where}: {exc}")
    return ServerError(f"cannot use the server at {where}: {exc}")


def _credentials(netloc: str) -> dict[str, str]:
    if "@" not in netloc:
        return {}
    user, _, password = netloc.rsplit("@", 1)[0].partition(":")
    creds = {"password": unquote(password)} if password else {}
    if user:
        creds["username"] = unquote(user)
    return creds


def _make(url: str, kind: str, options: dict[str, Any]) -> Any:
    """A client of ``kind`` ('sync' or 'async') for ``url``."""
    sync = kind == "sync"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    tls = scheme.startswith("rediss")
    opts = dict(options)
    cluster = opts.pop("cluster", False)
    if scheme in ("redis+cluster", "rediss+cluster"):
        parts = urlsplit(url)
        nodes = [(scluster if sync else acluster).ClusterNode(h, p) for h, p in _hosts(parts.netloc, 6379)]
        cls = scluster.RedisCluster if sync else acluster.RedisCluster
        return cls(startup_nodes=nodes, ssl=tls, **_credentials(parts.netloc), **opts)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        parts = urlsplit(url)
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise InvalidInput(f"sentinel URL {url!r} needs a service name: redis+sentinel://host:port/service[/db]")
        sentinel_kwargs = opts.pop("sentinel_kwargs", None)
        module = ssentinel if sync else asentinel
        sentinel = module.Sentinel(_hosts(parts.netloc, 26379), sentinel_kwargs=sentinel_kwargs, ssl=tls, **opts)
        db = int(path[1]) if len(path) > 1 else 0
        return sentinel.master_for(path[0], db=db, ssl=tls, **_credentials(parts.netloc), **opts)
    if not url.startswith(_PLAIN):
        raise InvalidInput(f"unsupported server URL {_redacted(url)!r}: {_UNSUPPORTED}")
    if cluster:
        return (scluster if sync else acluster).RedisCluster.from_url(url, **opts)
    return (redis.Redis if sync else aredis.Redis).from_url(url, **opts)


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
        given = client.nodes_manager.connection_kwargs
        kwargs = {k: v for k, v in given.items() if k in _PORTABLE or k.startswith("ssl_")}
        if "SSL" in getattr(given.get("connection_class"), "__name__", "") or given.get("ssl"):
            kwargs["ssl"] = True
        node = client.get_default_node()
        cls = scluster.RedisCluster if sync else acluster.RedisCluster
        return cls(host=node.host, port=node.port, **kwargs)
    pool = client.connection_pool
    if isinstance(pool, (ssentinel.SentinelConnectionPool, asentinel.SentinelConnectionPool)):
        hosts = [
            (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in pool.sentinel_manager.sentinels
        ]
        kwargs = {k: v for k, v in _of_kind(pool.connection_kwargs, sync).items() if k not in ("host", "port")}
        if "SSL" in pool.connection_class.__name__:
            kwargs["ssl"] = True
        sentinel = (ssentinel if sync else asentinel).Sentinel(
            hosts, sentinel_kwargs=pool.sentinel_manager.sentinel_kwargs
        )
        return sentinel.master_for(pool.service_name, **kwargs)
    module = _conn_module(sync)
    cls = getattr(module, pool.connection_class.__name__, None)
    if cls is None:
        raise InvalidInput(
            f"cannot derive a client of the other kind from a {pool.connection_class.__name__} "
            "connection: pass both client= and aclient="
        )
    kwargs = {k: v for k, v in _of_kind(pool.connection_kwargs, sync).items() if k in _accepted(cls)}
    return (redis.Redis if sync else aredis.Redis)(
        connection_pool=module.ConnectionPool(connection_class=cls, **kwargs)
    )


def _of_kind(kwargs: dict[str, Any], sync: bool) -> dict[str, Any]:
    """``kwargs`` without the settings bound to the other kind; a Retry is rebuilt for this
    kind with the same backoff, retries and errors."""
    out = {k: v for k, v in kwargs.items() if k not in _KIND_BOUND}
    retry = kwargs.get("retry")
    if retry is not None and hasattr(retry, "_backoff"):
        out["retry"] = (sretry if sync else aretry).Retry(
            retry._backoff, retry._retries, tuple(retry._supported_errors)
        )
    return out


def _conn_module(sync: bool) -> Any:
    return sync_conn if sync else async_conn


def _binary_safe(client: Any) -> Any:
    if is_cluster(client):
        kwargs = client.nodes_manager.connection_kwargs
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
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
            _check_url(url)  # fail now on a malformed URL, not at the first write; no connection
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
