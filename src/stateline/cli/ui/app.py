"""The inspector: one small ASGI app (Starlette) over a saver's public API.

A JSON API under /api and a page of plain HTML, CSS and JavaScript (``static/``), nothing
to build. Reads are always on; prune, delete and copy only with ``allow_writes``, and
each needs the page's CSRF value in a header (a page of another site cannot read it).

Access: bound to a loopback address, any local client may read, and requests naming
another Host are refused (a DNS-rebinding page cannot reach it). Otherwise a token is
required: the page asks for it once and keeps it in an HttpOnly cookie; an API client
may send ``Authorization: Bearer <token>``. The token is never logged or shown.
"""

from __future__ import annotations

import inspect
import secrets
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import InvalidInput, StatelineError
from ...langgraph import RedisSaver
from .. import _render as r

__all__ = ["create_app", "LOOPBACK_HOSTS"]

COOKIE = "stateline_ui"
CSRF_HEADER = "x-stateline-csrf"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
PAGE = 25  # threads per page
MAX_CHECKPOINTS = 500  # the tree shows the newest this many checkpoints of a thread
STATIC = files("stateline.cli.ui") / "static"


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _arg(request: Request, name: str, default: str | None = None) -> str:
    value = request.query_params.get(name, default)
    if value is None:
        raise _Refused(400, f"missing query parameter {name!r}")
    return value


def _cfg(thread: str, ns: str | None, checkpoint: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread}
    if ns is not None:
        conf["checkpoint_ns"] = ns
    if checkpoint:
        conf["checkpoint_id"] = checkpoint
    return {"configurable": conf}


class _Api:
    """The endpoints: each a few calls of the saver's public methods."""

    def __init__(self, saver: RedisSaver, allow_writes: bool, about: dict[str, Any]) -> None:
        self.saver = saver
        self.allow_writes = allow_writes
        self.csrf = secrets.token_urlsafe(24)
        self.about = about

    def info(self, request: Request) -> Response:
        return JSONResponse({**self.about, "allow_writes": self.allow_writes, "csrf": self.csrf})

    def threads(self, request: Request) -> Response:
        limit = min(int(_arg(request, "limit", str(PAGE))), 200)
        ids, cursor = self.saver.thread_page(
            request.query_params.get("cursor") or None, limit=limit, match=request.query_params.get("q") or None
        )
        rows = []
        for s, head in zip(self.saver.thread_stats(ids), self.saver.thread_heads(ids), strict=True):
            rows.append(
                {"thread_id": s.thread_id, "checkpoints": s.checkpoints, "writes": s.writes, "memory_bytes": s.memory,
                 "size": r.size(s.memory), "ttl_ms": s.ttl_ms, "step": head.metadata.get("step") if head else None,
                 "updated": head.checkpoint.get("ts") if head else None}
            )  # fmt: skip
        return JSONResponse({"threads": rows, "next": cursor})

    def checkpoints(self, request: Request) -> Response:
        thread = _arg(request, "thread")
        found = list(self.saver.list_records(_cfg(thread, None), limit=MAX_CHECKPOINTS + 1))
        if not found:
            raise _Refused(404, f"no thread {thread!r}")
        rows = [r.tuple_json(t, values=False) for t in found[:MAX_CHECKPOINTS]]
        [stats] = self.saver.thread_stats([thread])
        return JSONResponse(
            {"thread_id": thread, "checkpoints": rows, "truncated": len(found) > MAX_CHECKPOINTS,
             "total": stats.checkpoints, "writes": stats.writes, "size": r.size(stats.memory), "ttl_ms": stats.ttl_ms}
        )  # fmt: skip

    def _tuple(self, request: Request, which: str = "id", ns_key: str = "ns") -> Any:
        thread, cid = _arg(request, "thread"), _arg(request, which)
        t = self.saver.get_tuple(_cfg(thread, _arg(request, ns_key, ""), cid))
        if t is None:
            raise _Refused(404, f"no checkpoint {cid!r} in thread {thread!r}")
        return t

    def checkpoint(self, request: Request) -> Response:
        return JSONResponse(r.tuple_json(self._tuple(request)))

    def diff(self, request: Request) -> Response:
        before = self._tuple(request, "from", "from_ns")
        after = self._tuple(request, "to", "to_ns")
        a, b = r.plain(before.checkpoint["channel_values"]), r.plain(after.checkpoint["channel_values"])
        return JSONResponse(
            {
                "from": r.tuple_json(before, values=False),
                "to": r.tuple_json(after, values=False),
                "changes": r.diff(a, b),
            }
        )

    def prune_preview(self, request: Request) -> Response:
        thread, keep = _arg(request, "thread"), int(_arg(request, "keep", "1"))
        [counts] = self.saver.checkpoint_counts([thread])
        going = {ns: max(0, n - keep) for ns, n in counts.items()}
        return JSONResponse({"thread_id": thread, "keep": keep, "namespaces": counts, "would_go": sum(going.values())})

    async def _write_body(self, request: Request) -> dict[str, Any]:
        if not self.allow_writes:
            raise _Refused(403, "this inspector was started without --allow-writes")
        if not secrets.compare_digest(request.headers.get(CSRF_HEADER, ""), self.csrf):
            raise _Refused(403, "missing or wrong CSRF header")
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("thread"), str):
            raise _Refused(400, "a JSON object with a 'thread' is expected")
        return body

    async def prune(self, request: Request) -> Response:
        body = await self._write_body(request)
        keep = body.get("keep", 1)
        await _threaded(self.saver.prune, [body["thread"]], keep_last=keep)
        return JSONResponse({"pruned": body["thread"], "keep": keep})

    async def delete(self, request: Request) -> Response:
        body = await self._write_body(request)
        [stats] = await _threaded(self.saver.thread_stats, [body["thread"]], memory=False)
        if not stats.exists:
            raise _Refused(404, f"no thread {body['thread']!r}")
        await _threaded(self.saver.delete_thread, body["thread"])
        return JSONResponse({"deleted": body["thread"]})

    async def copy(self, request: Request) -> Response:
        body = await self._write_body(request)
        target = body.get("target")
        if not isinstance(target, str) or not target:
            raise _Refused(400, "a 'target' thread id is expected")
        n = await _threaded(self.saver.copy_thread_to, body["thread"], self.saver, target)
        return JSONResponse({"copied": body["thread"], "target": target, "fields": n})


async def _threaded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await run_in_threadpool(fn, *args, **kwargs)


def _errors(endpoint: Any) -> Any:
    """An endpoint whose errors are JSON with a status: bad input 400, missing 404, a
    server's failure 502. Plain functions run in the thread pool (the saver is sync)."""
    is_async = inspect.iscoroutinefunction(endpoint)

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request) if is_async else await run_in_threadpool(endpoint, request)
        except _Refused as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except (InvalidInput, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except StatelineError as exc:
            return JSONResponse({"error": str(exc)}, status_code=502)

    return wrapped


def _host(header: str) -> str:
    """The host of a Host header, without its port ('[::1]:8000' -> '::1')."""
    if header.startswith("["):
        return header[1 : header.find("]")]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class _LoopbackOnly:
    """Refuses requests whose Host is not a loopback name: a page on another site that
    rebinds its DNS name to 127.0.0.1 still sends its own name."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _host(Request(scope).headers.get("host", "")) not in LOOPBACK_HOSTS:
            await PlainTextResponse("this inspector answers to localhost only", status_code=421)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _TokenGate:
    """Every request carries the token (cookie or bearer header), except the page that asks
    for it and its static files."""

    OPEN = ("/login", "/static/")

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.OPEN):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.cookies.get(COOKIE) or request.headers.get("authorization", "").removeprefix("Bearer ")
        if secrets.compare_digest(given.encode(), self.token.encode()):
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/api/"):
            response: Response = JSONResponse({"error": "a token is needed"}, status_code=401)
        else:
            response = RedirectResponse("/login", status_code=303)
        await response(scope, receive, send)


def _login_routes(token: str | None) -> list[Route]:
    async def login_page(request: Request) -> Response:
        return FileResponse(str(STATIC / "login.html"))

    async def login(request: Request) -> Response:
        # (a urlencoded form read by hand: starlette's form parser needs another package)
        given = parse_qs((await request.body()).decode(errors="replace")).get("token", [""])[0]
        if token is None or not secrets.compare_digest(given.encode(), token.encode()):
            return RedirectResponse("/login?failed=1", status_code=303)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    return [Route("/login", login_page, methods=["GET"]), Route("/login", login, methods=["POST"])]


def create_app(
    saver: RedisSaver,
    *,
    allow_writes: bool = False,
    token: str | None = None,
    loopback: bool = True,
    about: dict[str, Any] | None = None,
) -> Starlette:
    """The inspector over ``saver``. ``loopback``: bound to a loopback address, so Host
    headers other than localhost are refused; ``token``: required of every request (a
    non-loopback inspector must have one)."""
    if not loopback and not token:
        raise InvalidInput("an inspector reachable from other machines needs a token")
    api = _Api(saver, allow_writes, about or {})

    async def index(request: Request) -> Response:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/info", _errors(api.info)),
        Route("/api/threads", _errors(api.threads)),
        Route("/api/checkpoints", _errors(api.checkpoints)),
        Route("/api/checkpoint", _errors(api.checkpoint)),
        Route("/api/diff", _errors(api.diff)),
        Route("/api/prune-preview", _errors(api.prune_preview)),
        Route("/api/prune", _errors(api.prune), methods=["POST"]),
        Route("/api/delete", _errors(api.delete), methods=["POST"]),
        Route("/api/copy", _errors(api.copy), methods=["POST"]),
        *(_login_routes(token) if token else []),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = []
    if loopback:
        middleware.append(Middleware(_LoopbackOnly))
    if token:
        middleware.append(Middleware(_TokenGate, token=token))
    return Starlette(routes=routes, middleware=middleware)
