"""Drives plans over redis-py clients: the only module that talks to a server.

``run``/``iterate`` take a sync client (``redis.Redis``, ``RedisCluster``, a Sentinel
master); ``arun``/``aiterate`` their asyncio twins. Both loops are the same: send the
previous reply into the plan, execute the step it yields. Script caching (NOSCRIPT) and
the mapping of redis-py errors to stateline errors live here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, Literal, TypeVar

from redis import exceptions as rx

from . import telemetry
from ._redis_compat import node_pipeline, refresh_slots
from .codec import FORMAT
from .connection import is_cluster
from .errors import (
    AuthenticationFailed,
    DurabilityError,
    InvalidInput,
    PermissionDenied,
    ServerError,
    ServerUnavailable,
    StoredDataError,
)
from .keys import dec, describe_field
from .plan import Batch, Call, Command, Emit, Plan, Scan, Script

__all__ = ["run", "arun", "iterate", "aiterate"]

T = TypeVar("T")

log = logging.getLogger("stateline")


_REJECTED = "invalid username-password pair"


def _error_for(exc: rx.RedisError | rx.RedisClusterException) -> Exception | None:
    """The stateline error for a redis-py one, or None to let it through as it is (errors of
    the client itself: WatchError, LockError, InvalidResponse...)."""
    if isinstance(exc, rx.AuthenticationError):
        return AuthenticationFailed(f"the server rejected the credentials: {exc}")
    if isinstance(exc, rx.NoPermissionError):
        return PermissionDenied(f"the server user lacks a permission stateline needs: {exc}")
    if isinstance(exc, (rx.ConnectionError, rx.TimeoutError)):
        if _REJECTED in str(exc):  # Sentinel wraps the sentinels' refusal in MasterNotFoundError
            return AuthenticationFailed(f"the sentinels rejected the credentials: {exc}")
        return ServerUnavailable(f"cannot reach the server: {exc}")
    if isinstance(exc, (rx.SlotNotCoveredError, rx.ClusterDownError)):
        return ServerUnavailable(f"the cluster cannot serve this thread's slot now: {exc}")
    if isinstance(exc, (rx.ClusterError, rx.RedisClusterException)):
        return ServerUnavailable(f"cannot reach the cluster: {exc}")
    if isinstance(exc, rx.DataError):
        return InvalidInput(f"a value cannot be sent to the server: {exc}")
    if isinstance(exc, rx.MovedError):  # (a subclass of AskError)
        return ServerError(
            f"the server is a Redis Cluster node and redirected the command (MOVED {exc}): "
            "use a redis+cluster:// URL or a RedisCluster client"
        )
    if isinstance(exc, rx.AskError):
        return ServerUnavailable(f"the thread's slot is being migrated and the move did not settle: {exc}")
    if not isinstance(exc, rx.ResponseError):
        return None
    text = str(exc)
    if text.startswith("STATELINE_PARTIAL"):
        key = text.split(" ")[1]
        thread = dec(key[key.find("{") + 1 : key.rfind("}")])
        return StoredDataError(
            f"thread {'' if thread == '%' else thread!r} lost part of its data on the server ({key} is "
            "missing): evicted under a maxmemory-policy that evicts keys? Use noeviction (README, "
            "'Server settings')"
        )
    if text.startswith("STATELINE_DAMAGED"):
        return _damaged(text)
    if "NOAUTH" in text or "WRONGPASS" in text:
        return AuthenticationFailed(f"the server rejected the credentials: {exc}")
    if "can't run this command" in text or "ACL failure" in text or "no permissions" in text:
        # an ACL denial inside a Lua script (Redis 7.0 / Valkey word it so, without NOPERM)
        return PermissionDenied(f"the server user lacks a permission stateline needs: {exc}")
    if "WAIT" in text.upper() and ("unknown command" in text or "appendonly" in text):
        return DurabilityError(
            f"the server cannot confirm the durability level asked for ({exc}); WAITAOF needs "
            "Redis 7.2+ or Valkey with appendonly yes"
        )
    return ServerError(f"the server refused the operation: {exc}")


class _Mapped:
    """``with MAPPED:`` raises the stateline error for a redis-py error inside (see
    _error_for; a plain class: a generator-based context manager costs microseconds on every
    step)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if isinstance(exc, (rx.RedisError, rx.RedisClusterException)):
            mapped = _error_for(exc)
            if mapped is not None:
                # The caller gets the error too; the log is for the operator (who may not see
                # what an application does with it). Bad input is the caller's business.
                level = logging.DEBUG if isinstance(mapped, InvalidInput) else logging.WARNING
                log.log(level, "%s: %s", type(mapped).__name__, mapped)
                raise mapped from exc
        return False


MAPPED = _Mapped()


def _damaged(text: str) -> StoredDataError:
    """A script found a record it cannot read: 'STATELINE_DAMAGED <key> <field> [format N]'."""
    parts = text.split(" ")
    key, field = parts[1], parts[2] if len(parts) > 2 else "?"
    thread = dec(key[key.find("{") + 1 : key.rfind("}")])
    what = describe_field(field.encode())
    if len(parts) > 4 and parts[3] == "format":
        return StoredDataError(
            f"thread {'' if thread == '%' else thread!r}, {what} is stored in format {parts[4]}, newer than this "
            f"version of stateline reads (format {FORMAT}): upgrade stateline"
        )
    return StoredDataError(f"thread {'' if thread == '%' else thread!r}, {what} is damaged: its record cannot be read")


def _queue(target: Any, step: Call | Command) -> Any:
    """``step`` sent through redis-py's ``execute_command`` (of a client: the reply, or an
    awaitable of it for an asyncio client; of a pipeline: queued)."""
    if isinstance(step, Call):  # execute_command: cluster pipelines refuse .evalsha()
        return target.execute_command(*_args(step))
    if step.route is not None and is_cluster(target):
        return target.execute_command(*step.args, target_nodes=target.get_node_from_key(step.route))
    return target.execute_command(*step.args)


def _routed(client: Any, batch: Batch) -> bool:
    """A batch with a key-less command for the thread's node (a durability wait): a cluster
    pipeline cannot aim it, so it goes through that node's own pipeline (_on_node)."""
    return is_cluster(client) and any(isinstance(s, Command) and s.route for s in batch.steps)


def _scan_args(client: Any, step: Scan) -> tuple[Any, dict[str, Any], Any]:
    """What to SCAN next: (node name or None, scan() arguments, the nodes left after it).
    On a cluster the cursor is the tuple of (node name, node cursor) still to scan."""
    kwargs: dict[str, Any] = {"match": step.match, "count": step.count}
    if not is_cluster(client):
        return None, {"cursor": step.cursor or 0, **kwargs}, ()
    todo = step.cursor or tuple((node.name, 0) for node in client.get_primaries())
    (name, cursor), rest = todo[0], todo[1:]
    return name, {"cursor": cursor, "target_nodes": client.get_node(node_name=name), **kwargs}, rest


def _scanned(name: Any, reply: Any, rest: Any) -> tuple[Any, list[Any]]:
    cursor, keys = reply
    if name is None:
        return (cursor or None), keys
    todo = ((name, cursor[name]), *rest) if cursor[name] else rest
    return (todo or None), keys


def _scan(client: Any, step: Scan) -> tuple[Any, list[Any]]:
    name, kwargs, rest = _scan_args(client, step)
    return _scanned(name, client.scan(**kwargs), rest)


async def _ascan(client: Any, step: Scan) -> tuple[Any, list[Any]]:
    name, kwargs, rest = _scan_args(client, step)
    return _scanned(name, await client.scan(**kwargs), rest)


def _log_reload(script: Script) -> None:
    log.debug("script %s is not loaded on the server (restarted, flushed or failed over): loading it", script.name)


def _log_retry(what: str, exc: BaseException) -> None:
    log.info("retrying: %s %s", what, exc)


def _scripts_of(steps: tuple[Call | Command, ...]) -> list[Script]:
    return list(dict.fromkeys(s.script for s in steps if isinstance(s, Call)))


def _failed(replies: list[Any]) -> list[int]:
    return [i for i, r in enumerate(replies) if isinstance(r, rx.NoScriptError)]


def _raise_first(replies: list[Any]) -> list[Any]:
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return replies


# -- sync ---------------------------------------------------------------------------------


def _pipeline(target: Any, steps: tuple[Call | Command, ...], reload: bool = True) -> list[Any]:
    pipe = target.pipeline(transaction=False)
    for s in steps:
        _queue(pipe, s)
    replies = pipe.execute(raise_on_error=False)
    failed = _failed(replies)
    if failed and reload:  # a script was not loaded: load it, then run that step and every
        first = failed[0]  # later one again (steps are idempotent), so a wait follows its write
        for script in _scripts_of(steps[first:]):
            _log_reload(script)
            target.script_load(script.body)
        replies[first:] = _pipeline(target, steps[first:], reload=False)
    return replies


def _on_node(client: Any, call: Call, wait: Command) -> list[Any]:
    """A write and its durability wait through one pipeline of the node that holds the
    thread: WAIT/WAITAOF count the writes of their own connection only. Follows ASK (a slot
    being migrated), MOVED and a node gone (fail-over) by learning the slots again."""
    node, asking, replies = client.get_node_from_key(call.keys[0]), False, []
    for attempt in range(4):
        pipe = client.get_redis_connection(node).pipeline(transaction=False)
        steps: tuple[Call | Command, ...] = (Command(("ASKING",)),) * asking + (call, wait)
        for s in steps:
            _queue(pipe, s)
        try:
            replies = pipe.execute(raise_on_error=False)[asking:]
        except (rx.ConnectionError, rx.TimeoutError) as exc:
            if attempt == 3:
                raise
            _log_retry("the thread's node cannot be reached", exc)
            refresh_slots(client)
            node, asking = client.get_node_from_key(call.keys[0]), False
            continue
        first = replies[0]
        if isinstance(first, (rx.NoScriptError, rx.AskError)) and attempt < 3:  # (MOVED is an AskError)
            _log_retry("the thread's node answered", first)
        if isinstance(first, rx.NoScriptError) and attempt < 3:
            client.get_redis_connection(node).script_load(call.script.body)
        elif isinstance(first, rx.MovedError) and attempt < 3:  # before AskError: a subclass
            refresh_slots(client)
            node, asking = client.get_node_from_key(call.keys[0]), False
        elif isinstance(first, rx.AskError) and attempt < 3:
            node, asking = client.get_node(host=first.host, port=first.port), True
            if node is None:
                refresh_slots(client)
                node = client.get_node(host=first.host, port=first.port) or client.get_node_from_key(call.keys[0])
        else:
            break
    return _raise_first(replies)


def _execute(client: Any, step: Call | Command | Batch) -> Any:
    if isinstance(step, Batch) and _routed(client, step):
        *before, call, wait = step.steps
        assert isinstance(call, Call) and isinstance(wait, Command)  # a routed batch ends so (_routed)
        head = [_execute(client, s) for s in before]
        return head + _on_node(client, call, wait)
    if isinstance(step, Batch):
        return _raise_first(_pipeline(client, step.steps))
    try:
        return _queue(client, step)
    except rx.NoScriptError:
        assert isinstance(step, Call)
        _log_reload(step.script)
        client.script_load(step.script.body)
        return _queue(client, step)


def iterate(client: Any, plan: Plan[T]) -> Iterator[Any]:
    """Runs ``plan``, yielding what it emits; its return value ends the iteration."""
    if telemetry.ENABLED and telemetry.active():
        return telemetry.traced_iterate(_iterate, client, plan)
    return _iterate(client, plan)


def _iterate(client: Any, plan: Plan[T]) -> Iterator[Any]:
    reply = None
    while True:
        try:
            step = plan.send(reply)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, Emit):
            yield from step.items
            reply = None
            continue
        with MAPPED:
            reply = _scan(client, step) if isinstance(step, Scan) else _execute(client, step)


def run(client: Any, plan: Plan[T]) -> T:
    """Runs ``plan`` to its end and returns its result (emitted items are dropped)."""
    if telemetry.ENABLED and telemetry.active():
        return telemetry.traced_run(_run, client, plan)
    return _run(client, plan)


def _run(client: Any, plan: Plan[T]) -> T:
    it = _iterate(client, plan)
    while True:
        try:
            next(it)
        except StopIteration as stop:
            return stop.value


# -- async --------------------------------------------------------------------------------


async def _apipeline(target: Any, steps: tuple[Call | Command, ...], reload: bool = True) -> list[Any]:
    pipe = target.pipeline(transaction=False)
    for s in steps:
        _queue(pipe, s)
    replies = await pipe.execute(raise_on_error=False)
    failed = _failed(replies)
    if failed and reload:  # as in _pipeline
        first = failed[0]
        for script in _scripts_of(steps[first:]):
            _log_reload(script)
            await target.script_load(script.body)
        replies[first:] = await _apipeline(target, steps[first:], reload=False)
    return replies


async def _aon_node(client: Any, call: Call, wait: Command) -> list[Any]:
    """``_on_node`` for the asyncio cluster client, through its nodes' own pipelines."""
    await client.initialize()  # the asyncio cluster client learns its slots lazily; idempotent
    node, asking, replies = client.get_node_from_key(call.keys[0]), False, []
    for attempt in range(4):
        steps: tuple[Call | Command, ...] = (Command(("ASKING",)),) * asking + (call, wait)
        try:
            replies = (await node_pipeline(node, [_args(s) for s in steps]))[asking:]
            if isinstance(replies[0], (rx.ConnectionError, rx.TimeoutError)):
                raise replies[0]
        except (rx.ConnectionError, rx.TimeoutError) as exc:
            if attempt == 3:
                raise
            _log_retry("the thread's node cannot be reached", exc)
            await refresh_slots(client)
            node, asking = client.get_node_from_key(call.keys[0]), False
            continue
        first = replies[0]
        if isinstance(first, (rx.NoScriptError, rx.AskError)) and attempt < 3:  # (MOVED is an AskError)
            _log_retry("the thread's node answered", first)
        if isinstance(first, rx.NoScriptError) and attempt < 3:
            await client.script_load(call.script.body)
        elif isinstance(first, rx.MovedError) and attempt < 3:  # before AskError: a subclass
            await refresh_slots(client)
            node, asking = client.get_node_from_key(call.keys[0]), False
        elif isinstance(first, rx.AskError) and attempt < 3:
            node, asking = client.get_node(host=first.host, port=first.port), True
            if node is None:
                await refresh_slots(client)
                node = client.get_node(host=first.host, port=first.port) or client.get_node_from_key(call.keys[0])
        else:
            break
    return _raise_first(replies)


def _args(step: Call | Command) -> tuple[Any, ...]:
    if isinstance(step, Call):
        return ("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)
    return step.args


async def _aexecute(client: Any, step: Call | Command | Batch) -> Any:
    if isinstance(step, Batch) and _routed(client, step):
        *before, call, wait = step.steps  # as in _execute
        assert isinstance(call, Call) and isinstance(wait, Command)
        head = [await _aexecute(client, s) for s in before]
        return head + await _aon_node(client, call, wait)
    if isinstance(step, Batch):
        return _raise_first(await _apipeline(client, step.steps))
    try:
        return await _queue(client, step)
    except rx.NoScriptError:
        assert isinstance(step, Call)
        _log_reload(step.script)
        await client.script_load(step.script.body)
        return await _queue(client, step)


def aiterate(client: Any, plan: Plan[Any]) -> AsyncIterator[Any]:
    """``iterate`` for an asyncio client."""
    if telemetry.ENABLED and telemetry.active():
        return telemetry.traced_aiterate(_aiterate, client, plan)
    return _aiterate(client, plan)


async def _aiterate(client: Any, plan: Plan[Any]) -> AsyncIterator[Any]:
    reply = None
    while True:
        try:
            step = plan.send(reply)
        except StopIteration:
            return
        if isinstance(step, Emit):
            for item in step.items:
                yield item
            reply = None
            continue
        with MAPPED:
            reply = await (_ascan(client, step) if isinstance(step, Scan) else _aexecute(client, step))


def arun(client: Any, plan: Plan[T]) -> Awaitable[T]:
    """``run`` for an asyncio client (an awaitable of the plan's result)."""
    if telemetry.ENABLED and telemetry.active():
        return telemetry.traced_arun(_arun, client, plan)
    return _arun(client, plan)


async def _arun(client: Any, plan: Plan[T]) -> T:
    reply = None
    while True:
        try:
            step = plan.send(reply)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, Emit):
            reply = None
            continue
        with MAPPED:
            reply = await (_ascan(client, step) if isinstance(step, Scan) else _aexecute(client, step))
