"""`stateline export` / `import`: whole threads through a versioned JSON Lines file
(docs/export-format.md), against a real server; a foreign, newer or truncated file is
refused before anything is written; an import that stopped resumes."""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.types import Command
from typer.testing import CliRunner

from stateline import exchange
from stateline.cli import app
from stateline.langgraph import RedisSaver

from .agent_graph import build, cfg, everything, populate

RECORD_FIELDS = {
    "type",
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "parent_checkpoint_id",
    "checkpoint",
    "channel_values",
    "metadata",
    "pending_writes",
}


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def source_prefix(url: str, prefix: str) -> str:
    """A prefix holding the graph's two threads."""
    other = "src" + prefix
    with RedisSaver(url, prefix=other) as saver:
        populate(saver)
    return other


def lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    text = gzip.decompress(raw) if path.suffix == ".gz" else raw
    return [json.loads(line) for line in text.decode().splitlines()]


@pytest.mark.parametrize("name", ["backup.jsonl", "backup.jsonl.gz"])
def test_export_then_import_gives_the_same_threads_and_the_graph_resumes(
    name: str, tmp_path: Path, url: str, prefix: str, source_prefix: str
) -> None:
    path = tmp_path / name
    done = cli("export", str(path), "--url", url, "--prefix", source_prefix, "--json")
    assert done.exit_code == 0, done.output
    exported = json.loads(done.stdout)
    assert exported["threads"] == 2 and exported["checkpoints"] > 8 and exported["writes"] > 0
    assert not (tmp_path / f"{name}.partial").exists()

    loaded = cli("import", str(path), "--url", url, "--prefix", prefix, "--json")
    assert loaded.exit_code == 0, loaded.output
    report = json.loads(loaded.stdout)
    assert report["written_checkpoints"] == exported["checkpoints"]
    assert report["written_writes"] == exported["writes"] and report["mismatches"] == []

    with RedisSaver(url, prefix=source_prefix) as src, RedisSaver(url, prefix=prefix) as dest:
        for thread in ("paused", "done"):
            assert everything(dest, thread) == everything(src, thread)
        result = build(dest).invoke(Command(resume="yes"), cfg("paused"))
        assert result["approved"] == "yes"

    again = cli("import", str(path), "--url", url, "--prefix", prefix, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["written_checkpoints"] == 0  # imported already: nothing twice


def test_the_file_is_versioned_json_lines_of_whole_threads(tmp_path: Path, url: str, source_prefix: str) -> None:
    path = tmp_path / "x.jsonl"
    assert cli("export", str(path), "--url", url, "--prefix", source_prefix).exit_code == 0
    header, *records, end = lines(path)
    assert header["format"] == "stateline-export" and header["version"] == 1
    assert isinstance(header["export_id"], str) and header["created_at"]
    assert source_prefix in header["source"]
    assert end == {"type": "end", "threads": 2, "checkpoints": len(records), "writes": end["writes"]}
    assert end["writes"] == sum(len(r["pending_writes"]) for r in records)
    threads = [r["thread_id"] for r in records]
    assert threads == sorted(threads)  # each thread's lines together
    for r in records:
        assert set(r) == RECORD_FIELDS and r["type"] == "checkpoint"
        kind, data = r["metadata"]
        assert kind == "msgpack" and base64.b64decode(data)
        for _task, _channel, value in r["pending_writes"]:
            assert isinstance(value, list) and len(value) == 2
    ours = [r for r in records if r["thread_id"] == "paused" and r["checkpoint_ns"] == ""]
    ids = [r["checkpoint_id"] for r in ours]
    assert ids == sorted(ids)  # oldest first
    assert [r["parent_checkpoint_id"] for r in ours[1:]] == ids[:-1]


def test_export_of_some_threads(tmp_path: Path, url: str, prefix: str, source_prefix: str) -> None:
    path = tmp_path / "one.jsonl"
    done = cli("export", str(path), "-t", "paused", "--url", url, "--prefix", source_prefix, "--json")
    assert done.exit_code == 0, done.output
    assert {r.get("thread_id") for r in lines(path)[1:-1]} == {"paused"}
    assert cli("import", str(path), "--url", url, "--prefix", prefix).exit_code == 0
    with RedisSaver(url, prefix=prefix) as dest:
        assert dest.get_tuple(cfg("done")) is None and dest.get_tuple(cfg("paused")) is not None


def test_export_to_stdout_and_from_another_saver(tmp_path: Path, url: str, prefix: str) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    db = tmp_path / "s.db"
    conn = sqlite3.connect(db, check_same_thread=False)
    populate(SqliteSaver(conn))
    done = cli("export", "-", "--from", f"sqlite:///{db}", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stderr.strip().splitlines()[-1])["threads"] == 2  # the counts on stderr
    path = tmp_path / "from-sqlite.jsonl"
    path.write_text(done.stdout)
    assert cli("import", str(path), "--url", url, "--prefix", prefix).exit_code == 0
    with RedisSaver(url, prefix=prefix) as dest:
        source = SqliteSaver(conn)
        for thread in ("paused", "done"):
            assert everything(dest, thread) == everything(source, thread)
    conn.close()


def rewrite(path: Path, change: Any) -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in change(lines(path))))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda ls: [{**ls[0], "version": 2}, *ls[1:]], "format version 2; this stateline reads version 1"),
        (lambda ls: ls[1:], "is not a stateline export"),
        (lambda ls: ls[:-3], "truncated"),
        (lambda ls: ls[:-1] + [{**ls[-1], "checkpoints": 1}], "the end line counts"),
        (lambda ls: [ls[0], *ls[2:], ls[1]], "after the end line"),
        (lambda ls: [ls[0], {"type": "thread?"}, *ls[1:]], "unknown record type"),
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "out of order"),
    ],
)
def test_a_file_it_cannot_trust_is_refused_before_anything_is_written(
    change: Any, says: str, tmp_path: Path, url: str, prefix: str, source_prefix: str
) -> None:
    path = tmp_path / "x.jsonl"
    assert cli("export", str(path), "--url", url, "--prefix", source_prefix).exit_code == 0
    rewrite(path, change)
    refused = cli("import", str(path), "--url", url, "--prefix", prefix)
    assert refused.exit_code == 2, refused.output
    assert says in refused.stderr
    with RedisSaver(url, prefix=prefix) as dest:
        assert list(dest.list(None)) == []


def test_a_thread_the_destination_has_is_refused(tmp_path: Path, url: str, prefix: str, source_prefix: str) -> None:
    path = tmp_path / "x.jsonl"
    assert cli("export", str(path), "--url", url, "--prefix", source_prefix).exit_code == 0
    with RedisSaver(url, prefix=prefix) as dest:
        dest.put({"configurable": {"thread_id": "done", "checkpoint_ns": ""}}, empty_checkpoint(), {}, {})
    refused = cli("import", str(path), "--url", url, "--prefix", prefix)
    assert refused.exit_code == 1 and "'done'" in refused.stderr
    with RedisSaver(url, prefix=prefix) as dest:
        assert dest.get_tuple(cfg("paused")) is None


def test_an_import_that_stopped_resumes_without_duplicates(
    tmp_path: Path, url: str, prefix: str, source_prefix: str
) -> None:
    path = tmp_path / "x.jsonl.gz"
    assert cli("export", str(path), "--url", url, "--prefix", source_prefix).exit_code == 0
    contents = exchange.read(str(path))
    total, first = contents.counts.checkpoints, len(contents.threads["done"])  # 'done' comes first

    class Stop(Exception):
        pass

    seen = []

    def stop_halfway(n: int) -> None:
        seen.append(n)
        if len(seen) == first + 2:  # the first thread whole, two checkpoints of the second
            raise Stop

    with RedisSaver(url, prefix=prefix) as dest:
        with pytest.raises(Stop):
            exchange.import_file(str(path), dest, stop_halfway)
        report, mismatches = exchange.import_file(str(path), dest)
        assert not mismatches
        # the finished thread is skipped, the other written again from its start (marks come
        # every 100 checkpoints and at a thread's end): the same ids, so no duplicates
        assert (report.threads, report.checkpoints) == (1, total - first)
        with RedisSaver(url, prefix=source_prefix) as src:
            for thread in ("paused", "done"):
                assert everything(dest, thread) == everything(src, thread)
