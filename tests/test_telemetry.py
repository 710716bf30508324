"""OpenTelemetry spans and metrics per operation, checked with the SDK's in-memory exporters;
logging of retries and errors; and nothing of it when opentelemetry-api is not installed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint

from stateline import ServerUnavailable, telemetry
from stateline.langgraph import RedisSaver

from .servers import free_port

pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk (the dev extra)")

from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

SECRET = "classified-payload-7f3a"  # in checkpoint values, metadata and writes; never in telemetry


class Telemetry:
    """The process-wide providers (OpenTelemetry lets a process set them once)."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer = TracerProvider()
        tracer.add_span_processor(SimpleSpanProcessor(self.spans))
        trace.set_tracer_provider(tracer)
        self.reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.reader]))
        assert telemetry.refresh()  # (else seen within a second)

    def finished(self, prefix_ops: tuple[str, ...] = ()) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if not prefix_ops or s.name in prefix_ops]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        out += [(m.unit, p) for p in m.data.data_points]
        return out


_TELEMETRY: Telemetry | None = None


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    global _TELEMETRY
    if _TELEMETRY is None:
        _TELEMETRY = Telemetry()
    _TELEMETRY.spans.clear()
    yield _TELEMETRY


def checkpoint(n: int) -> dict:
    c = empty_checkpoint()
    c["id"] = f"1ef00000-0000-6000-8000-{n:012d}"
    c["channel_values"] = {"messages": [f"{SECRET} {i}" for i in range(n + 5)], "note": SECRET}
    c["channel_versions"] = {"messages": n + 1, "note": n + 1}
    return c


def root(thread: str, cid: str | None = None) -> dict:
    conf = {"thread_id": thread, "checkpoint_ns": ""}
    if cid:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def no_secret_in(span: Any) -> None:
    assert SECRET not in repr(dict(span.attributes)), span.attributes
    assert SECRET not in (span.status.description or "")
    for event in span.events:
        assert SECRET not in repr(dict(event.attributes or {}))


def test_one_client_span_per_operation_with_the_database_conventions(otel: Telemetry, url: str, prefix: str) -> None:
    with RedisSaver(url, prefix=prefix) as saver:
        saver.put(root("t"), checkpoint(0), {"source": "input", "step": -1, "who": SECRET}, {"messages": 1})
        cid = checkpoint(0)["id"]
        saver.put_writes(root("t", cid), [("note", SECRET), ("messages", [SECRET])], "task-1")
        assert saver.get_tuple(root("t")) is not None
        assert len(list(saver.list(root("t")))) == 1

    spans = {s.name: s for s in otel.finished()}
    assert {"put", "put_writes", "get_tuple", "list"} <= set(spans)
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    for name in ("put", "put_writes", "get_tuple", "list"):
        span = spans[name]
        attrs = dict(span.attributes)
        assert span.kind is SpanKind.CLIENT
        assert attrs["db.system.name"] == "redis"
        assert attrs["db.operation.name"] == name
        assert attrs["server.address"] == host and attrs["server.port"] == int(port)
        assert attrs["db.namespace"] == "0"
        assert attrs["stateline.request.size"] > 0 and attrs["stateline.response.size"] >= 0
        assert span.status.status_code is StatusCode.UNSET
        no_secret_in(span)
    assert spans["put"].attributes["stateline.round_trips"] >= 1
    assert spans["get_tuple"].attributes["stateline.round_trips"] == 1
    assert spans["list"].attributes["db.response.returned_rows"] == 1
    assert spans["get_tuple"].attributes["stateline.response.size"] > 100  # the values came back
    # the put sent the values: more bytes than the read of one checkpoint asked for
    assert spans["put"].attributes["stateline.request.size"] > spans["get_tuple"].attributes["stateline.request.size"]

    durations = otel.points("db.client.operation.duration")
    ops = {p.attributes["db.operation.name"]: (unit, p) for unit, p in durations}
    assert {"put", "put_writes", "get_tuple", "list"} <= set(ops)
    unit, point = ops["put"]
    assert unit == "s" and point.count >= 1 and point.sum > 0
    assert dict(point.attributes) == {"db.system.name": "redis", "db.operation.name": "put"}
    assert list(point.explicit_bounds) == [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]
    sizes = {p.attributes["db.operation.name"]: p for _, p in otel.points("stateline.client.request.size")}
    assert sizes["put"].sum > 0


async def test_async_operations_are_traced_too(otel: Telemetry, url: str, prefix: str) -> None:
    async with RedisSaver(url, prefix=prefix) as saver:
        await saver.aput(root("a"), checkpoint(1), {}, {"messages": 2})
        assert await saver.aget_tuple(root("a")) is not None
        assert [t async for t in saver.alist(root("a"))]
        await saver.adelete_thread("a")
    names = [s.name for s in otel.finished()]
    for name in ("put", "get_tuple", "list", "delete_thread"):
        assert name in names
    listed = next(s for s in otel.finished() if s.name == "list")
    assert listed.attributes["db.response.returned_rows"] == 1


def test_a_failed_operation_records_its_error_class_not_its_message(
    otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"redis://user:{SECRET}@127.0.0.1:{free_port()}/0"
    saver = RedisSaver(dead, prefix="x:", socket_connect_timeout=1)
    with caplog.at_level(logging.DEBUG, logger="stateline"), pytest.raises(ServerUnavailable):
        saver.get_tuple(root("t"))
    saver.close()
    (span,) = otel.finished(("get_tuple",))
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ServerUnavailable"
    assert span.status.description == "ServerUnavailable"
    no_secret_in(span)
    failed = [p for _, p in otel.points("db.client.operation.duration") if "error.type" in p.attributes]
    assert failed and failed[-1].attributes["error.type"] == "ServerUnavailable"
    # the operator's log says so once, without the password
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "cannot reach the server" in warnings[-1].getMessage()
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_a_server_error_reply_names_its_prefix(otel: Telemetry, url: str, prefix: str, client: redis.Redis) -> None:
    with RedisSaver(url, prefix=prefix) as saver:
        saver.put(root("w"), checkpoint(2), {}, {"messages": 3})
        data_key = saver.engine.keys("w").data
        client.delete(data_key)
        client.set(data_key, "not a hash")  # a key of the wrong type: the script fails
        with pytest.raises(Exception):  # noqa: B017 - whichever stateline error; the span is the point
            saver.get_tuple(root("w"))
    span = otel.finished(("get_tuple",))[-1]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["db.response.status_code"] == "WRONGTYPE"


def test_a_script_reload_is_logged_as_a_retry(url: str, prefix: str, client: redis.Redis, caplog) -> None:
    with RedisSaver(url, prefix=prefix) as saver:
        saver.put(root("s"), checkpoint(3), {}, {"messages": 4})
        client.script_flush()
        with caplog.at_level(logging.DEBUG, logger="stateline"):
            assert saver.get_tuple(root("s")) is not None
    assert any("not loaded on the server" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("api", ["absent", "without a provider"])
def test_without_opentelemetry_the_runner_runs_plain(api: str, url: str, prefix: str, tmp_path) -> None:
    """opentelemetry-api not importable, or no provider configured: no telemetry code runs
    per operation, and operations work."""
    script = tmp_path / "plain.py"
    script.write_text(
        "import sys\n"
        + ("sys.modules['opentelemetry'] = None  # import fails as if not installed\n" if api == "absent" else "")
        + "from stateline import runner, telemetry\n"
        "from stateline.langgraph import RedisSaver\n"
        "from langgraph.checkpoint.base import empty_checkpoint\n"
        + ("assert telemetry.ENABLED is False\n" if api == "absent" else "assert not telemetry.active()\n")
        + "def fail(*a, **k):\n"
        "    raise AssertionError('telemetry ran')\n"
        "telemetry.traced_run = telemetry.traced_iterate = fail\n"
        "s = RedisSaver(sys.argv[1], prefix=sys.argv[2])\n"
        "cfg = {'configurable': {'thread_id': 'p', 'checkpoint_ns': ''}}\n"
        "s.put(cfg, empty_checkpoint(), {}, {})\n"
        "assert s.get_tuple(cfg) is not None and len(list(s.list(cfg))) == 1\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script), url, prefix], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_migration_round_is_one_span_of_one_round_trip(otel: Telemetry, url: str, prefix: str) -> None:
    from stateline import migrate as mg

    source_prefix = "src" + prefix
    with RedisSaver(url, prefix=source_prefix) as source:
        for thread in ("a", "b", "c"):
            config = root(thread)
            for n in range(3):
                config = source.put(config, checkpoint(n), {"step": n}, {"messages": n + 1, "note": n + 1})
                source.put_writes(config, [("note", SECRET)], f"task-{n}")
    with mg.open_source(url, prefix=source_prefix) as src, RedisSaver(url, prefix=prefix) as dest:
        otel.spans.clear()
        mg.migrate(src, dest, mg.survey(src, dest))
    rounds = otel.finished(("migrate",))
    assert len(rounds) == 3  # three checkpoints deep, the three threads side by side
    for span in rounds:
        assert span.attributes["stateline.round_trips"] == 1  # three puts and three writes, one pipeline
        no_secret_in(span)
    assert otel.finished(("migrate_mark",))


def test_a_put_sent_again_is_logged(url: str, prefix: str, client: redis.Redis, caplog) -> None:
    with RedisSaver(url, prefix=prefix) as saver:
        config = saver.put(root("r"), checkpoint(5), {}, {"messages": 6, "note": 6})
        keys = saver.engine.keys("r")
        client.delete(keys.data, keys.index)  # gone behind the saver's back: what it knew is stale
        with caplog.at_level(logging.DEBUG, logger="stateline"):
            saver.put(config, checkpoint(6), {}, {"messages": 7, "note": 7})
        assert (
            saver.get_tuple(root("r")).checkpoint["channel_values"]["messages"]
            == checkpoint(6)["channel_values"]["messages"]
        )
    assert any("retrying a" in r.getMessage() and "'r'" in r.getMessage() for r in caplog.records)
    assert all(SECRET not in r.getMessage() for r in caplog.records)
