"""OpenTelemetry spans and metrics for every operation, when ``opentelemetry-api`` is installed.

One span and one ``db.client.operation.duration`` measurement per operation (a put, a
``get_tuple``, a ``list`` iteration, a prune...), following OpenTelemetry's database client
conventions: ``db.system.name`` "redis", ``db.operation.name`` the operation (``put``,
``put_writes``, ``get_tuple``, ``list``...), ``error.type`` when it failed, ``server.address``,
``server.port`` and ``db.namespace`` when the client has them. Sizes are stateline's own:
``stateline.request.size`` and ``stateline.response.size`` (bytes of the strings sent and
received; numbers are not counted), ``stateline.round_trips`` and, for a listing,
``db.response.returned_rows``; the two sizes are histograms too.

Never an id's or a checkpoint's content: attributes hold names, counts and sizes only, and a
failed operation's span carries the error's class, not its message (which may quote a value).

The runner wraps its four entry points here only when the API imports (``ENABLED``) and a
provider is configured (``active()``); otherwise nothing more of this module runs. A provider
configured after stateline's first operation is seen within a second, or at once after
``stateline.telemetry.refresh()``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from .plan import Batch, Call, Command, Emit, Plan, Scan

try:  # an optional dependency: no import of it anywhere else
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:  # pragma: no cover - exercised by installs without it
    ENABLED = False
else:
    ENABLED = True

__all__ = ["ENABLED", "active", "refresh", "traced_run", "traced_arun", "traced_iterate", "traced_aiterate"]

T = TypeVar("T")

SYSTEM = "redis"
# The bucket boundaries OpenTelemetry advises for db.client.operation.duration (seconds).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
SIZE_BUCKETS = (128, 512, 2048, 8192, 32768, 131072, 524288, 2097152, 8388608)


# OpenTelemetry's providers until an application configures one: they drop everything.
_IDLE = frozenset({"ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider"})
# Asking OpenTelemetry for its providers reads os.environ (~5 µs): the answer is kept this long.
RECHECK_S = 1.0


class _Checked:
    at = float("-inf")
    active = False


_checked = _Checked()


def refresh() -> bool:
    """Asks OpenTelemetry now whether a tracer or meter provider is configured (an SDK, most
    often). Until one is, operations skip telemetry altogether."""
    _checked.active = (
        type(trace.get_tracer_provider()).__name__ not in _IDLE
        or type(metrics.get_meter_provider()).__name__ not in _IDLE
    )
    _checked.at = time.monotonic()
    return _checked.active


def active() -> bool:
    """``refresh()``'s answer, asked again at most once a second: a provider configured after
    the first operations is seen within a second (or at once after ``refresh()``)."""
    if time.monotonic() - _checked.at > RECHECK_S:
        return refresh()
    return _checked.active


class _Instruments:
    """The tracer and instruments, made on first use: OpenTelemetry's proxies then follow a
    provider configured later, so an application may set up its SDK after importing us."""

    def __init__(self) -> None:
        from . import __version__

        self.tracer = trace.get_tracer("stateline", __version__)
        meter = metrics.get_meter("stateline", __version__)
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.request_size = meter.create_histogram(
            "stateline.client.request.size",
            unit="By",
            description="Bytes of the arguments an operation sent (strings and bytes).",
            explicit_bucket_boundaries_advisory=list(SIZE_BUCKETS),
        )
        self.response_size = meter.create_histogram(
            "stateline.client.response.size",
            unit="By",
            description="Bytes of the replies an operation received (strings and bytes).",
            explicit_bucket_boundaries_advisory=list(SIZE_BUCKETS),
        )


_instruments: _Instruments | None = None


def _get() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def operation_name(plan: Any) -> str:
    """A plan's operation: the name of the generator function that made it, without its
    leading underscores (the savers name their plans after their public methods)."""
    return getattr(plan, "__name__", "operation").lstrip("_") or "operation"


def _server(client: Any) -> dict[str, Any]:
    """server.address, server.port and db.namespace from a standalone client's pool settings
    (a cluster client has no single server: none)."""
    pool = getattr(client, "connection_pool", None)
    settings = getattr(pool, "connection_kwargs", None)
    if not isinstance(settings, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(settings.get("host"), str):
        out["server.address"] = settings["host"]
        if isinstance(settings.get("port"), int):
            out["server.port"] = settings["port"]
    elif isinstance(settings.get("path"), str):  # a unix socket
        out["server.address"] = settings["path"]
    if isinstance(settings.get("db"), int):
        out["db.namespace"] = str(settings["db"])
    return out


def _size(value: Any) -> int:
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value)
    if isinstance(value, dict):
        return sum(_size(k) + _size(v) for k, v in value.items())
    return 0


def _step_size(step: Any) -> int:
    if isinstance(step, Call):
        return _size(step.keys) + _size(step.args)
    if isinstance(step, Command):
        return _size(step.args)
    if isinstance(step, Batch):
        return sum(_step_size(s) for s in step.steps)
    return 0  # Scan, Emit


def _error_type(exc: BaseException) -> str:
    return type(exc).__qualname__


def _status_code(exc: BaseException) -> str | None:
    """The Redis error prefix (ERR, NOSCRIPT, WRONGTYPE...) of a server's error reply."""
    cause = exc.__cause__
    if cause is None or type(cause).__module__.split(".")[0] != "redis":
        return None
    from redis.exceptions import ResponseError

    if not isinstance(cause, ResponseError):
        return None
    words = str(cause).split(" ", 1)
    return words[0] if words and words[0].isupper() else None


class _Operation:
    """One operation in flight: its span, start time and what it sent and received."""

    __slots__ = ("name", "span", "start", "sent", "received", "trips", "rows")

    def __init__(self, plan: Any, client: Any) -> None:
        self.name = operation_name(plan)
        attributes = {"db.system.name": SYSTEM, "db.operation.name": self.name, **_server(client)}
        self.span = _get().tracer.start_span(self.name, kind=SpanKind.CLIENT, attributes=attributes)
        self.start = time.perf_counter()
        self.sent = self.received = self.trips = 0
        self.rows: int | None = None

    def watch(self, plan: Plan[T]) -> Plan[T]:
        """``plan`` as it is, counting the bytes of each step and of its reply."""
        reply = None
        while True:
            try:
                step = plan.send(reply)
            except StopIteration as stop:
                return stop.value
            if not isinstance(step, (Emit, Scan)):
                self.trips += 1
                self.sent += _step_size(step)
            reply = yield step
            self.received += _size(reply)

    def end(self, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - self.start
        ins = _get()
        labels: dict[str, Any] = {"db.system.name": SYSTEM, "db.operation.name": self.name}
        span = self.span
        span.set_attribute("stateline.request.size", self.sent)
        span.set_attribute("stateline.response.size", self.received)
        span.set_attribute("stateline.round_trips", self.trips)
        if self.rows is not None:
            span.set_attribute("db.response.returned_rows", self.rows)
        if exc is not None and not isinstance(exc, GeneratorExit):
            labels["error.type"] = _error_type(exc)
            span.set_attribute("error.type", labels["error.type"])
            code = _status_code(exc)
            if code:
                span.set_attribute("db.response.status_code", code)
            # The class only: a message may quote a value the caller passed.
            span.set_status(StatusCode.ERROR, labels["error.type"])
        span.end()
        ins.duration.record(elapsed, labels)
        ins.request_size.record(self.sent, labels)
        ins.response_size.record(self.received, labels)


def traced_run(run: Callable[[Any, Plan[T]], T], client: Any, plan: Plan[T]) -> T:
    op = _Operation(plan, client)
    try:
        result = run(client, op.watch(plan))
    except BaseException as exc:
        op.end(exc)
        raise
    op.end(None)
    return result


async def traced_arun(arun: Callable[[Any, Plan[T]], Awaitable[T]], client: Any, plan: Plan[T]) -> T:
    op = _Operation(plan, client)
    try:
        result = await arun(client, op.watch(plan))
    except BaseException as exc:
        op.end(exc)
        raise
    op.end(None)
    return result


def traced_iterate(iterate: Callable[[Any, Plan[Any]], Iterator[Any]], client: Any, plan: Plan[Any]) -> Iterator[Any]:
    op = _Operation(plan, client)
    op.rows = 0
    try:
        for item in iterate(client, op.watch(plan)):
            op.rows += 1
            yield item
    except BaseException as exc:  # GeneratorExit: the caller stopped early, not a failure
        op.end(exc)
        raise
    op.end(None)


async def traced_aiterate(
    aiterate: Callable[[Any, Plan[Any]], AsyncIterator[Any]], client: Any, plan: Plan[Any]
) -> AsyncIterator[Any]:
    op = _Operation(plan, client)
    op.rows = 0
    try:
        async for item in aiterate(client, op.watch(plan)):
            op.rows += 1
            yield item
    except BaseException as exc:
        op.end(exc)
        raise
    op.end(None)
