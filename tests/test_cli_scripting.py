"""The CLI as a script drives it: --json parsed back, ids whole at 80 columns, exit
statuses, errors on stderr, prompts on every destructive path, bounded statistics, and
the README's ACL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from click.testing import Result
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.types import Command
from typer.testing import CliRunner

from stateline.cli import app
from stateline.demo import build
from stateline.langgraph import RedisSaver

LONG = "a-thread-id-long-enough-to-be-cut-at-eighty-columns-0123456789"
ROOT = Path(__file__).resolve().parents[1]


def run(url: str, prefix: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, [*args, "--url", url, "--prefix", prefix], input=input)


def ok(url: str, prefix: str, *args: str, input: str | None = None) -> str:
    result = run(url, prefix, *args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def sub(url: str, prefix: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The console script in a process of its own, at 80 columns, with no terminal."""
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "stateline", *args, "--url", url, "--prefix", prefix],
        input=stdin, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def chat(saver: RedisSaver, thread: str, resume: bool = True) -> None:
    """The demo agent: a question, a tool call that waits for approval, the answer."""
    graph = build(saver)
    cfg = {"configurable": {"thread_id": thread}}
    graph.invoke({"messages": [HumanMessage(content="What's the weather in Lisbon?")]}, cfg)
    if resume:
        graph.invoke(Command(resume="yes"), cfg)


@pytest.fixture
def saver(url: str, prefix: str) -> RedisSaver:
    s = RedisSaver(url, prefix=prefix)
    chat(s, LONG)
    chat(s, "paused", resume=False)
    return s


def put(saver: RedisSaver, thread: str, values: dict) -> None:
    """One checkpoint with these channel values, without a graph."""
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = values
    cp["channel_versions"] = {k: 1 for k in values}
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    saver.put(cfg, cp, {"source": "loop", "step": 0}, dict(cp["channel_versions"]))


def exists(saver: RedisSaver, thread: str) -> bool:
    return saver.get_tuple({"configurable": {"thread_id": thread}}) is not None


# -- listings: JSON parsed back, ids whole ---------------------------------------------------


def test_every_listing_prints_json_that_parses_back(url: str, prefix: str, saver: RedisSaver) -> None:
    page = json.loads(ok(url, prefix, "threads", "--json"))
    by_id = {t["thread_id"]: t for t in page["threads"]}
    assert set(by_id) == {LONG, "paused"} and page["next"] is None
    assert by_id[LONG]["checkpoints"] == 6 and by_id[LONG]["step"] == 4 and by_id[LONG]["memory_bytes"] > 0
    assert by_id["paused"]["ttl_ms"] == -1

    history = json.loads(ok(url, prefix, "history", LONG, "--json"))
    assert [h["metadata"]["step"] for h in history] == [4, 3, 2, 1, 0, -1]
    assert history[0]["parent_id"] == history[1]["checkpoint_id"]

    shown = json.loads(ok(url, prefix, "show", "paused", "--json"))
    ai = shown["values"]["messages"][1]
    assert ai["type"] == "ai" and ai["tool_calls"][0]["name"] == "weather"
    assert ai["tool_calls"][0]["args"] == {"city": "Lisbon"}
    [interrupt] = [w for w in shown["pending_writes"] if w["channel"] == "__interrupt__"]
    assert interrupt["value"][0]["interrupt"] == {"question": "Run weather({'city': 'Lisbon'})?"}

    changes = json.loads(ok(url, prefix, "diff", LONG, "--json"))
    assert changes["from"] == history[1]["checkpoint_id"] and changes["to"] == history[0]["checkpoint_id"]
    [added] = [c for c in changes["changes"] if c["path"] == "messages[3]"]
    assert added["op"] == "+" and added["new"]["content"].startswith("Here is the forecast")

    stats = json.loads(ok(url, prefix, "stats", "--json"))
    assert stats["threads"] == 2 and stats["exact"] and stats["checkpoints"] == 6 + 3


def test_ids_are_never_cut_at_80_columns(url: str, prefix: str, saver: RedisSaver) -> None:
    done = sub(url, prefix, "threads")
    assert done.returncode == 0, done.stderr
    assert LONG in done.stdout.split()
    ids = [t.config["configurable"]["checkpoint_id"] for t in saver.list({"configurable": {"thread_id": LONG}})]
    done = sub(url, prefix, "history", LONG)
    words = done.stdout.split()
    assert all(cid in words for cid in ids)  # every id and parent id, whole
    assert "…" not in done.stdout


def test_threads_page_with_a_cursor_and_search(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    names = [f"user-{i:02d}" for i in range(12)] + ["other-1", "other-2"]
    for name in names:
        put(saver, name, {"x": 1})
    seen: list[str] = []
    cursor = None
    while True:
        page = json.loads(ok(url, prefix, "threads", "-n", "5", "--json", *(["--after", cursor] if cursor else [])))
        assert len(page["threads"]) <= 5
        seen += [t["thread_id"] for t in page["threads"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(names)  # every thread once, across pages
    found = json.loads(ok(url, prefix, "threads", "--match", "other", "--json"))
    assert sorted(t["thread_id"] for t in found["threads"]) == ["other-1", "other-2"]
    result = run(url, prefix, "threads", "--after", "not a cursor")
    assert result.exit_code == 2 and "not a thread cursor" in result.stderr


def test_a_tool_call_message_shows_its_call(url: str, prefix: str, saver: RedisSaver) -> None:
    out = ok(url, prefix, "show", "paused")
    assert re.search(r'ai: -> weather\(\{"city": "Lisbon"\}\) \[call-', out)
    assert "interrupt: " in out and "Run weather" in out  # the pending interrupt
    out = ok(url, prefix, "show", LONG)
    assert "tool: [call-" in out and "21°C" in out


# -- errors: stderr, statuses, no traceback ----------------------------------------------------


def test_unknown_ids_are_errors_on_stderr(url: str, prefix: str, saver: RedisSaver) -> None:
    for args in (("diff", LONG, "--from", "no-such-id"), ("diff", LONG, "--to", "no-such-id"), ("show", "nope")):
        result = run(url, prefix, *args)
        assert result.exit_code == 3, args
        assert result.stdout == "" and result.stderr.startswith("error: no checkpoint"), args
    done = sub(url, prefix, "show", LONG, "-c", "no-such-id")
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.strip() == f"error: no checkpoint 'no-such-id' (--checkpoint) in thread {LONG!r}"


def test_an_error_is_one_line_and_debug_shows_a_traceback_without_secrets() -> None:
    url = "redis://someone:s3cret-pw@127.0.0.1:1/0"  # nothing listens on port 1
    done = sub(url, "p:", "threads")
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach the server") and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "stateline", "--debug", "threads", "--url", url],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout  # no local variables, no URL with its password


def test_usage_errors_exit_2(url: str, prefix: str) -> None:
    assert run(url, prefix, "threads", "--no-such-option").exit_code == 2
    assert run(url, prefix, "prune", "--keep", "0").exit_code == 2


# -- destructive commands ask ---------------------------------------------------------------------


def test_delete_asks_and_says_which_threads_do_not_exist(url: str, prefix: str, saver: RedisSaver) -> None:
    result = run(url, prefix, "delete", "paused", input="n\n")
    assert result.exit_code == 4 and "delete 1 thread(s)?" in result.stderr and exists(saver, "paused")
    done = sub(url, prefix, "delete", "paused")  # no terminal, no --yes: nothing happens
    assert done.returncode == 4 and exists(saver, "paused")
    result = run(url, prefix, "delete", "paused", input="y\n")
    assert result.exit_code == 0 and "deleted 1 thread(s)" in result.stdout and not exists(saver, "paused")

    result = run(url, prefix, "delete", "paused", "never-was", "-y")
    assert result.exit_code == 3
    assert "no thread 'paused'" in result.stderr and "no thread 'never-was'" in result.stderr
    assert "deleted" not in result.stdout
    result = run(url, prefix, "delete", LONG, "never-was", "-y")  # the one that exists goes
    assert result.exit_code == 3 and "deleted 1 thread(s)" in result.stdout and not exists(saver, LONG)


def test_prune_shows_what_would_go_and_acts_only_when_confirmed(url: str, prefix: str, saver: RedisSaver) -> None:
    def count(thread: str) -> int:
        return len(list(saver.list({"configurable": {"thread_id": thread}})))

    result = run(url, prefix, "prune", "--keep", "2", input="n\n")
    assert result.exit_code == 4
    table = result.stdout
    assert re.search(rf"{LONG}\s+6\s+4", table) and re.search(r"paused\s+3\s+1", table)
    assert "5 checkpoint(s) of 2 thread(s) would go" in table
    assert count(LONG) == 6 and count("paused") == 3
    assert run(url, prefix, "prune", "--keep", "2", "--dry-run").exit_code == 0
    preview = json.loads(ok(url, prefix, "prune", "--keep", "2", "--dry-run", "--json"))
    assert preview["would_go"] == 5 and not preview["pruned"]
    assert {t["thread_id"]: t["would_go"] for t in preview["threads"]} == {LONG: 4, "paused": 1}
    assert count(LONG) == 6
    result = run(url, prefix, "prune", LONG, "--keep", "2", input="y\n")
    assert result.exit_code == 0 and "pruned 1 thread(s)" in result.stdout
    assert count(LONG) == 2 and count("paused") == 3
    result = run(url, prefix, "prune", "--keep", "3", "-y")
    assert result.exit_code == 0 and "nothing to prune" in result.stdout
    done = json.loads(ok(url, prefix, "prune", "paused", "--keep", "1", "-y", "--json"))
    assert done["pruned"] and done["would_go"] == 2 and count("paused") == 1
    result = run(url, prefix, "prune", "nope", "-y")
    assert result.exit_code == 3 and "no thread 'nope'" in result.stderr


def test_copy_move_asks_before_deleting_the_source(url: str, prefix: str, saver: RedisSaver) -> None:
    result = run(url, prefix, "copy", "paused", "moved", "--move", input="n\n")
    assert result.exit_code == 4 and exists(saver, "paused") and not exists(saver, "moved")
    result = run(url, prefix, "copy", "paused", "moved", "--move", input="y\n")
    assert result.exit_code == 0 and not exists(saver, "paused") and exists(saver, "moved")
    assert "paused" in result.stderr  # the question named the thread
    result = run(url, prefix, "copy", "paused", "again")
    assert result.exit_code == 3 and "no thread 'paused'" in result.stderr
    # a graph resumes on the moved thread where it paused
    moved = saver.get_tuple({"configurable": {"thread_id": "moved"}})
    assert any(w[1] == "__interrupt__" for w in moved.pending_writes)


# -- bounded statistics ---------------------------------------------------------------------------


def _calls(client: redis.Redis, command: str) -> int:
    return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


def test_stats_measure_a_sample_not_every_thread(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix)
    for i in range(30):
        put(saver, f"t{i}", {"x": list(range(i))})
    before = _calls(client, "memory|usage")
    report = json.loads(ok(url, prefix, "stats", "--sample", "5", "--json"))
    assert report["threads"] == 30 and report["measured"] == 5 and not report["exact"]
    assert report["checkpoints"] == 30  # one each: the estimate is exact here
    assert _calls(client, "memory|usage") - before == 2 * 5  # the sample's two keys each, no more
    text = ok(url, prefix, "stats", "--sample", "5")
    assert "a random sample, scaled up" in text and "~30" in text
    every = json.loads(ok(url, prefix, "stats", "--all", "--json"))
    assert every["exact"] and every["measured"] == 30


# -- the README's ACL is enough ---------------------------------------------------------------------


def _readme_acl() -> str:
    """The commands the README's ACL line lists for the savers and for the CLI."""
    text = (ROOT / "README.md").read_text()
    savers = re.search(r"needs `~<prefix>\* ([^`]+)`", text)
    cli = re.search(r"The CLI and the inspector also need `([^`]+)`", text)
    assert savers and cli, "the README's ACL lines moved"
    return f"{savers.group(1)} {cli.group(1)}"


def test_the_cli_works_as_a_user_with_the_readme_acl(url: str, prefix: str, client: redis.Redis) -> None:
    owner = RedisSaver(url, prefix=prefix)
    chat(owner, "t1")
    chat(owner, "t2", resume=False)
    user = f"cli-{uuid.uuid4().hex[:6]}"
    client.execute_command("ACL", "SETUSER", user, "reset", "on", ">pw", f"~{prefix}*", "-@all", *_readme_acl().split())
    try:
        client.execute_command("ACL", "LOG", "RESET")
        limited = url.replace("redis://", f"redis://{user}:pw@", 1)
        for args in (
            ("threads", "--json"), ("history", "t1"), ("show", "t2"), ("diff", "t1"), ("stats", "--json"),
            ("stats", "--all"), ("prune", "t1", "--keep", "2", "-y"), ("prune", "--dry-run"),
            ("copy", "t1", "t3"), ("copy", "t3", "t4", "--move", "-y"), ("delete", "t4", "-y"),
        ):  # fmt: skip
            result = run(limited, prefix, *args)
            assert result.exit_code == 0, (args, result.stderr)
        denied = [e[b"object"] for e in client.execute_command("ACL", "LOG")]
        assert [d for d in denied if d != b"client|setinfo"] == []  # (redis-py's best-effort hello)
    finally:
        client.execute_command("ACL", "DELUSER", user)
