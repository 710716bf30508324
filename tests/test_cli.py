"""The operator CLI over a thread made by a real graph."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from stateline.cli import app
from stateline.demo import build  # the demo's graph
from stateline.langgraph import RedisSaver


@pytest.fixture
def thread(url: str, prefix: str) -> str:
    saver = RedisSaver(url, prefix=prefix)
    tid = "cli-thread"
    cfg = {"configurable": {"thread_id": tid}}
    from langchain_core.messages import HumanMessage
    from langgraph.types import Command

    app_ = build(saver)
    app_.invoke({"messages": [HumanMessage(content="What's the weather in Lisbon?")]}, cfg)
    app_.invoke(Command(resume="yes"), cfg)
    return tid


def cli(url: str, prefix: str, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--url", url, "--prefix", prefix], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_threads_history_show_and_diff(url: str, prefix: str, thread: str) -> None:
    out = cli(url, prefix, "threads")
    assert "cli-thread" in out and " 6 " in out  # six checkpoints
    out = cli(url, prefix, "history", thread, "-n", "3")
    assert out.count("loop") == 3
    out = cli(url, prefix, "show", thread)
    assert "ai: Here is the forecast" in out
    out = cli(url, prefix, "diff", thread)
    assert "~ messages (3 -> 4 items)" in out


def test_copy_prune_stats_and_delete(url: str, prefix: str, thread: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    assert "copied" in cli(url, prefix, "copy", thread, "copy")
    assert len(list(saver.list({"configurable": {"thread_id": "copy"}}))) == 6
    cli(url, prefix, "prune", "copy", "--keep", "2", "-y")
    assert len(list(saver.list({"configurable": {"thread_id": "copy"}}))) == 2
    out = cli(url, prefix, "stats")
    assert "threads" in out and " 2 " in out
    cli(url, prefix, "copy", "copy", "moved", "--to-prefix", prefix + "other:", "--move", "--yes")
    assert saver.get_tuple({"configurable": {"thread_id": "copy"}}) is None
    other = RedisSaver(url, prefix=prefix + "other:")
    assert other.get_tuple({"configurable": {"thread_id": "moved"}}).checkpoint["channel_values"]["messages"]
    cli(url, prefix, "delete", thread, "-y")
    assert [s.thread_id for s in saver.thread_stats()] == []


def test_show_of_a_missing_thread_says_so(url: str, prefix: str) -> None:
    result = CliRunner().invoke(app, ["show", "nope", "--url", url, "--prefix", prefix])
    assert result.exit_code == 3 and "no checkpoint" in result.stderr and result.stdout == ""


def test_errors_are_one_line_and_exit_1(url: str, prefix: str, thread: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "stateline", "copy", thread, thread, "--url", url, "--prefix", prefix],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2  # a target that exists: the command cannot be used so
    assert done.stderr.strip() == f"error: cannot copy into thread {thread!r}: it exists already (delete it first)"
    assert done.stdout == ""
