"""Server URLs: parsed once into a ``UrlSpec``, shown only through ``redact``.

Forms: ``redis://``, ``rediss://`` (TLS), ``unix://``; ``redis+cluster://h:p[,h:p]`` and
``redis+sentinel://h:p[,h:p]/service[/db]`` (the ``rediss+`` forms use TLS, to the
sentinels too). A host may be IPv6 in brackets: ``[::1]``, ``[::1]:7000``.

A password may be percent-encoded (``%2F`` for ``/``) or typed as it is: when the standard
reading of a URL fails and the URL has an ``@`` after its authority, the credentials are
read up to the last ``@``, so ``/ # ? @ %`` in a password work either way.

A setting may come from the URL (its scheme, credentials, path or query) and from the
options; the same value twice is fine, two different values are refused by name. No
password, token or other secret ever appears in a message built here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from redis.cluster import REDIS_ALLOWED_KEYS
from redis.connection import URL_QUERY_ARGUMENT_PARSERS

from .errors import InvalidInput

__all__ = ["UrlSpec", "parse", "redact"]

# scheme -> (kind, TLS)
_FORMS = {
    "redis": ("plain", False),
    "rediss": ("plain", True),
    "unix": ("unix", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_DEFAULT_PORT = {"plain": 6379, "cluster": 6379, "sentinel": 26379}
_USAGE = (
    "use redis://host:port/db, rediss:// (TLS), unix:///path, "
    "redis+cluster://host:port[,host:port] or redis+sentinel://host:port[,host:port]/service[/db]"
)
# Query options taken as text (redis-py's URL parser types the others).
_TEXT_OPTIONS = {
    "username",
    "password",
    "client_name",
    "lib_name",
    "lib_version",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_password",
    "ssl_ciphers",
}
# A query key whose value is never shown: anything that sounds like a credential.
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)
_HOST = re.compile(r"[A-Za-z0-9._-]*")
# Settings that reach the sentinels as well as the primary.
_TO_SENTINELS = ("username", "password", "credential_provider", "socket_", "ssl")


@dataclass(frozen=True)
class UrlSpec:
    """A parsed server URL with the options given next to it.

    ``settings`` are the client's keyword arguments: the URL's (credentials, ``ssl``,
    ``db``, query options) merged with the options."""

    kind: str  # "plain", "unix", "cluster" or "sentinel"
    tls: bool
    hosts: tuple[tuple[str, int], ...]
    service: str = ""  # sentinel: the primary's service name
    path: str = ""  # unix: the socket
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A plain or unix URL without credentials or options (they are in ``settings``),
        for redis-py's ``from_url``."""
        if self.kind == "unix":
            return "unix://" + quote(self.path, safe="/")
        host = "".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        return ("rediss://" if self.tls else "redis://") + host

    def sentinel_settings(self) -> dict[str, Any]:
        """What the sentinels are connected with: the URL's TLS and credentials and the
        socket and TLS options, overridden by the ``sentinel_kwargs`` option."""
        mine = {k: v for k, v in self.settings.items() if k.startswith(_TO_SENTINELS)}
        return {**mine, **(self.settings.get("sentinel_kwargs") or {})}


def parse(url: Any, options: dict[str, Any] | None = None) -> UrlSpec:
    """The spec of ``url`` with ``options`` merged in; raises InvalidInput, showing the
    URL redacted, when it is not a server URL stateline can use.

    Parsing only: nothing connects here."""
    options = dict(options or {})
    if not isinstance(url, str) or "://" not in url:
        shown = redact(url) if isinstance(url, str) else type(url).__name__
        raise InvalidInput(f"unsupported server URL {shown!r}: expected e.g. redis://host:6379/0")
    scheme, rest = url.split("://", 1)
    form = _FORMS.get(scheme.lower())
    if form is None:
        raise InvalidInput(f"unsupported server URL {redact(url)!r}: {_USAGE}")
    kind, tls = form
    if options.pop("cluster", False):
        if kind == "unix":
            raise InvalidInput(f"cluster=True needs a host, not a unix socket: {redact(url)!r}")
        kind = "cluster"
    try:
        spec, _ = _read(kind, tls, rest)
    except ValueError as exc:
        raise InvalidInput(f"malformed server URL {redact(url)!r}: {exc}") from None
    return UrlSpec(spec.kind, spec.tls, spec.hosts, spec.service, spec.path, _merged(spec.settings, options))


def _read(kind: str, tls: bool, rest: str) -> tuple[UrlSpec, int]:
    """The standard reading of ``rest`` (what follows ``://``), or, when it fails and the
    URL has an ``@`` after its authority, the reading whose credentials end at the last
    ``@``; with where the credentials end. The standard reading's error is then never
    shown: it may quote a part of a password (``redis://u:pa/ss@h`` reads as host ``u``,
    port ``pa``). Not when the query has a secret: its ``@`` is then in the secret, and
    what follows it no host."""
    standard, last = _authority_at(rest), rest.rfind("@")
    if standard == last or _secret_in_query(rest):
        return _spec(kind, tls, rest, standard), standard
    try:
        return _spec(kind, tls, rest, standard), standard
    except ValueError:
        return _spec(kind, tls, rest, last), last


def _secret_in_query(rest: str) -> bool:
    query = rest.partition("?")[2]
    return any(eq and _SECRET_KEY.search(key) for key, eq, _ in (i.partition("=") for i in query.split("&")))


def _authority_at(rest: str) -> int:
    """Where the credentials end in the standard reading (-1: none); -2 when the
    authority holds more than one ``@`` (never standard)."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    return -2 if authority.count("@") > 1 else authority.rfind("@")


def _spec(kind: str, tls: bool, rest: str, at: int) -> UrlSpec:
    if at == -2:
        raise ValueError("the credentials hold an @: write it %40")
    userinfo, tail = (rest[:at], rest[at + 1 :]) if at >= 0 else (None, rest)
    tail, hashed, _ = tail.partition("#")
    if hashed:
        raise ValueError("a server URL has no #fragment (write # in a password as %23)")
    tail, _, query = tail.partition("?")
    netloc, _, path = tail.partition("/")
    if "@" in path:
        raise ValueError("an @ in the path: write it %40")
    settings = _combined(_credentials(userinfo), _query(query, kind))
    settings["ssl"] = tls  # the scheme says it: ssl= as an option must agree
    if kind == "unix":
        if netloc:
            raise ValueError("a unix URL has no host: unix:///path/to/socket or unix://user:password@/path")
        return UrlSpec(kind, False, (), path=unquote("/" + path), settings=settings)
    hosts = _hosts(netloc, _DEFAULT_PORT[kind])
    if kind == "plain":
        if len(hosts) > 1:
            raise ValueError("a redis:// URL has one host: use redis+cluster:// or redis+sentinel:// for more")
        settings = _combined(settings, _db(path))
        return UrlSpec(kind, tls, tuple(hosts), settings=settings)
    if kind == "cluster":
        return UrlSpec(kind, tls, tuple(hosts or [("127.0.0.1", 6379)]), settings=_cluster(settings, path))
    service, _, db = path.partition("/")
    if not service:
        raise ValueError("a sentinel URL needs a service name: redis+sentinel://host:port/service[/db]")
    settings = _combined(settings, _db(db))
    return UrlSpec(kind, tls, tuple(hosts or [("127.0.0.1", 26379)]), service=unquote(service), settings=settings)


def _credentials(userinfo: str | None) -> dict[str, str]:
    if not userinfo:
        return {}
    user, colon, password = userinfo.partition(":")
    creds = {"username": unquote(user)} if user else {}
    if colon and password:
        creds["password"] = unquote(password)
    return creds


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``host[:port]`` parts, comma-separated; an IPv6 host in brackets."""
    if not netloc:
        return []
    out = []
    for part in netloc.split(","):
        if part.startswith("["):
            host, closed, after = part[1:].partition("]")
            if not closed or (after and not after.startswith(":")):
                raise ValueError(f"host {part!r} is not [IPv6 address]:port")
            try:
                ipaddress.IPv6Address(host.split("%")[0])
            except ValueError:
                raise ValueError(f"{host!r} in {part!r} is not an IPv6 address") from None
            port = after[1:]
        elif part.count(":") > 1:
            raise ValueError(f"IPv6 host {part!r} must be in brackets: [{part}] or [address]:port")
        else:
            host, _, port = part.partition(":")
            if not _HOST.fullmatch(host):
                raise ValueError(f"{host!r} in {part!r} is not a host name")
        out.append((unquote(host) or "127.0.0.1", _port(port, part, default_port)))
    return out


def _port(port: str, part: str, default: int) -> int:
    if not port:
        return default
    if not port.isascii() or not port.isdigit():
        raise ValueError(f"port {port!r} of {part!r} is not a number")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {int(port)} of {part!r} is out of range")
    return int(port)


def _db(path: str) -> dict[str, int]:
    path = unquote(path).strip("/")
    if not path:
        return {}
    if not path.isascii() or not path.isdigit():
        raise ValueError(f"database {path!r} is not a number")
    return {"db": int(path)}


def _cluster(settings: dict[str, Any], path: str) -> dict[str, Any]:
    """A cluster has database 0 only, and takes only some connection options (redis-py
    silently drops the others)."""
    settings = _combined(settings, _db(path))
    if settings.pop("db", 0) != 0:
        raise ValueError("a cluster has database 0 only: drop the /db path or db= option")
    for name in settings:
        if name not in REDIS_ALLOWED_KEYS:
            raise ValueError(f"a cluster URL cannot take the option {name!r}")
    return settings


def _query(query: str, kind: str) -> dict[str, Any]:
    """The query's options, typed as redis-py types them. A value is shown in an error
    only when its key sounds harmless; an unknown key is named only when the query holds
    no secret (a raw ``&`` in a secret would make the secret's tail a key)."""
    if not query:
        return {}
    items = parse_qs(query, keep_blank_values=True)
    secretive = any(_SECRET_KEY.search(name) for name in items)
    out: dict[str, Any] = {}
    for name, values in items.items():
        if len(set(values)) > 1:
            raise ValueError(f"the option {name!r} is given twice in the query, with different values")
        value = values[0]
        parser: Callable[[str], Any] | None = URL_QUERY_ARGUMENT_PARSERS.get(name)  # type: ignore[assignment]
        if parser is not None:
            try:
                out[name] = parser(value)
            except (TypeError, ValueError):
                shown = "" if _SECRET_KEY.search(name) else f" {value!r}"
                raise ValueError(f"invalid value{shown} for {name!r} in the query") from None
        elif name in _TEXT_OPTIONS:
            out[name] = value
        elif secretive:
            raise ValueError("an unknown option in the query (write & and # in a query value as %26 and %23)")
        else:
            raise ValueError(f"unknown option {name!r} in the query")
    return out


def _combined(first: dict[str, Any], second: dict[str, Any], where: str = "in the URL twice") -> dict[str, Any]:
    for name in first.keys() & second.keys():
        if first[name] != second[name]:
            raise ValueError(f"{name} is given {where}, with different values: give it once")
    return {**first, **second}


def _merged(url_settings: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    try:
        return _combined(url_settings, options, "both in the URL and as an option")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


# -- showing a URL ------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with every secret replaced by ``***``: the password, and every query value
    whose key sounds like a credential. A URL stateline cannot read is masked more widely
    (all that precedes its last ``@``, bare query items, any fragment): this may hide more
    than the secret, never less."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    hidden = [False] * len(rest)
    at = _credentials_end(head, rest) if sep else None
    if at is not None:  # the URL reads: hide exactly the password and the query's secrets
        colon = rest.find(":", 0, at)
        if colon >= 0:
            _hide(hidden, colon + 1, at)
        _hide_query(rest, hidden, rest.find("?", at + 1))
        return head + sep + _masked(rest, hidden)
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        colon = userinfo.find(":")
        start = 0 if any(c in userinfo for c in "/?#&=") else colon + 1 if colon >= 0 else at
        _hide(hidden, start, at)
    _hide_query(rest, hidden, rest.find("?", at + 1) if rest.find("?", at + 1) >= 0 else rest.find("?"))
    hashed = rest.find("#", at + 1)
    if hashed >= 0:
        _hide(hidden, hashed + 1, len(rest))
    return head + sep + _masked(rest, hidden)


def _credentials_end(scheme: str, rest: str) -> int | None:
    """Where the credentials of a URL stateline can read end (-1: none); None when it
    cannot read it."""
    form = _FORMS.get(scheme.lower())
    if form is None:
        return None
    try:
        return _read(*form, rest)[1]
    except ValueError:
        return None


def _hide_query(rest: str, hidden: list[bool], start: int) -> None:
    if start < 0:
        return
    pos = start + 1
    for item in rest[pos:].split("&"):
        key, eq, _ = item.partition("=")
        if not eq:
            _hide(hidden, pos, pos + len(item))
        elif _SECRET_KEY.search(unquote(key)):
            _hide(hidden, pos + len(key) + 1, pos + len(item))
        pos += len(item) + 1


def _hide(hidden: list[bool], start: int, end: int) -> None:
    for i in range(start, end):
        hidden[i] = True


def _masked(text: str, hidden: list[bool]) -> str:
    out, i = [], 0
    while i < len(text):
        if hidden[i]:
            while i < len(text) and hidden[i]:
                i += 1
            out.append("***")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
