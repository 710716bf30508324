"""stateline.llmfy against llmfy itself: llmfy's FlowEngine (0.10 or 0.11, whichever is
installed) runs unchanged on the drop-in and on llmfy's own RedisCheckpointer against the
same real server, with the same results; then every call of llmfy's documented surface,
keyword and positional, with its defaults."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

import stateline
from stateline import InvalidInput, StoredDataError
from stateline import llmfy as dropin
from stateline.llmfy import (
    REDIS_AVAILABLE,
    BaseCheckpointer,
    Checkpoint,
    CheckpointMetadata,
    CheckpointPayloadTooLargeException,
    RedisCheckpointer,
)

from .conftest import keys_of

pytest.importorskip("llmfy.flow_engine")
from llmfy.flow_engine.checkpointer import base_checkpointer as theirs  # noqa: E402

from . import llmfy_flow  # noqa: E402

# Which llmfy runs the FlowEngine tests: 0.11 writes run_id, 0.10 does not.
LLMFY_011 = "run_id" in {f.name for f in dataclasses.fields(theirs.CheckpointMetadata)}
UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[1]


def _script(url: str, prefix: str, impl: str, session: str, text: str, how: str = "") -> subprocess.CompletedProcess:
    src = str(Path(stateline.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "tests.llmfy_flow", url, prefix, impl, session, text, how],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def seen(cp: Any) -> dict[str, Any]:
    """What a user reads from a checkpoint, without its fresh ids and times."""
    d = cp.to_dict()
    d.pop("checkpoint_id")
    d.pop("run_id", None)
    d.pop("created_at", None)
    d.pop("timestamp", None)
    return d


async def chat_session(impl: str, url: str, prefix: str) -> list[Any]:
    """Two turns, a crash in a process of its own, the resume in another, then reads and a
    reset: everything the FlowEngine user sees, in order."""
    cp = llmfy_flow.checkpointer(impl, url, prefix)
    engine = llmfy_flow.flow(cp)
    out: list[Any] = []
    out.append(await engine.invoke(llmfy_flow.user("hello"), session_id="chat"))
    out.append(await engine.invoke(llmfy_flow.user("how are you"), session_id="chat"))
    crashed = _script(url, prefix, impl, "chat", "tell me more", "crash")
    assert crashed.returncode == 17, crashed.stderr  # died in `reply`, after `think` was saved
    out.append(await engine.get_state("chat"))
    resumed = _script(url, prefix, impl, "chat", "")
    assert resumed.returncode == 0, resumed.stderr
    out.append(resumed.stdout.strip())
    out.append(await engine.get_state("chat"))
    out.append([seen(c) for c in await engine.list_checkpoints("chat")])
    out.append([seen(c) for c in await engine.list_checkpoints("chat", limit=3)])
    latest = await engine.get_checkpoint("chat")
    out.append(seen(latest))
    await engine.reset_session("chat")
    out.append(await engine.get_state("chat"))
    out.append(await engine.list_checkpoints("chat"))
    await cp.close()
    return out


async def test_flow_engine_runs_unchanged_with_the_same_results_as_llmfys_own(url: str, prefix: str) -> None:
    expected = await chat_session("llmfy", url, prefix + "theirs:")
    got = await chat_session("stateline", url, prefix)
    assert got == expected
    assert got[4]["turns"] == 3 and len(got[4]["messages"]) == 6  # the crashed turn was completed


async def test_a_turn_from_a_host_whose_clock_is_behind_is_kept(url: str, prefix: str) -> None:
    """A turn runs on a host whose clock is a minute ahead, the next one here: llmfy's own
    checkpointer orders by created_at and loses the second turn; the drop-in keeps it."""
    kept = {}
    for impl, p in (("llmfy", prefix + "theirs:"), ("stateline", prefix)):
        ahead = _script(url, p, impl, "skew", "from the host ahead", "ahead")
        assert ahead.returncode == 0, ahead.stderr
        cp = llmfy_flow.checkpointer(impl, url, p)
        engine = llmfy_flow.flow(cp)
        await engine.invoke(llmfy_flow.user("from this host"), session_id="skew")
        kept[impl] = (await engine.get_state("skew"))["turns"]
        await cp.close()
    assert kept == {"llmfy": 1, "stateline": 2}


# -- the documented surface --------------------------------------------------------------------


def md11(cid: str = "c1", session: str = "s1", **changes: Any) -> CheckpointMetadata:
    fields = dict(checkpoint_id=cid, session_id=session, run_id="r1", created_at=datetime(2025, 3, 1, tzinfo=UTC),
                  node="reply", prev_node="think", step=2, updated_fields=["messages"], attempt=1, dispatch_id=None)  # fmt: skip
    return CheckpointMetadata(**{**fields, **changes})


def test_module_names_and_defaults() -> None:
    assert REDIS_AVAILABLE is True
    cp = RedisCheckpointer()
    assert (cp.redis_url, cp.prefix, cp.ttl) == ("redis://localhost:6379/0", "llmfy_checkpoint:", None)
    assert cp.max_checkpoints_per_session is None and cp.max_state_bytes == 25 * 1024 * 1024
    assert cp.requires_serialization is True
    positional = RedisCheckpointer("redis://h:1/2", "app:", 30, True, None, 1000, 5)
    assert (positional.redis_url, positional.prefix, positional.ttl, positional.max_checkpoints_per_session) == (
        "redis://h:1/2", "app:", 30, 5,
    )  # fmt: skip
    keywords = RedisCheckpointer(redis_url="redis://h:1/2", prefix="app:", ttl=30, max_checkpoints_per_session=5)
    assert (keywords.redis_url, keywords.prefix, keywords.ttl, keywords.max_checkpoints_per_session) == (
        "redis://h:1/2", "app:", 30, 5,
    )  # fmt: skip
    with pytest.raises(InvalidInput, match="pass a URL"):
        RedisCheckpointer(None)


def test_the_default_url_is_localhost_not_an_embedded_server() -> None:
    cp = RedisCheckpointer()
    assert cp._store._conn.url == "redis://localhost:6379/0"


def test_checkpoint_in_both_forms_keyword_and_positional() -> None:
    when = datetime(2025, 3, 1, 12, tzinfo=UTC)
    old_kw = CheckpointMetadata(checkpoint_id="c", session_id="s", timestamp=when, node_name="n", step=3)
    old_pos = CheckpointMetadata("c", "s", when, "n", 3)
    assert old_kw == old_pos and old_pos.step == 3 and old_pos.node_name == "n" and old_pos.timestamp == when
    new_pos = CheckpointMetadata("c", "s", "r", when, "n", "p", 3, ["x"], 1, None)
    assert new_pos == md11("c", "s", run_id="r", created_at=when, node="n", prev_node="p", step=3, updated_fields=["x"])
    assert (new_pos.run_id, new_pos.created_at, new_pos.node, new_pos.prev_node) == ("r", when, "n", "p")
    with pytest.raises(TypeError):
        CheckpointMetadata("c", "s", when, "n")  # every field is required, as in llmfy
    with pytest.raises(TypeError):
        CheckpointMetadata(checkpoint_id="c", session_id="s", run_id="r")

    for cp in (Checkpoint(metadata=old_pos, state={"a": 1}), Checkpoint(new_pos, {"a": 1})):
        assert Checkpoint.from_dict(cp.to_dict()) == cp
    assert set(Checkpoint(old_pos, {}).to_dict()) == {
        "checkpoint_id",
        "session_id",
        "timestamp",
        "node_name",
        "step",
        "state",
    }
    if LLMFY_011:  # the same dict as llmfy's own
        same = theirs.CheckpointMetadata(
            *(getattr(new_pos, f.name) for f in dataclasses.fields(theirs.CheckpointMetadata))
        )
        assert Checkpoint(new_pos, {"a": 1}).to_dict() == theirs.Checkpoint(same, {"a": 1}).to_dict()


def test_from_dict_of_llmfy_0_10_output() -> None:
    # What llmfy 0.10.1's Checkpoint.to_dict() returned for a state holding an object.
    data = {"checkpoint_id": "c1", "session_id": "s1", "timestamp": "2025-03-01T12:00:00+00:00", "node_name": "reply",
            "step": 2, "state": '{"messages": ["hi"], "note": {"__type__": "Note", "__module__": "__main__", "data": {"text": "x"}}, "n": 1}'}  # fmt: skip
    cp = Checkpoint.from_dict(data)
    assert cp.metadata.step == 2 and cp.metadata.node_name == "reply" and cp.metadata.session_id == "s1"
    assert cp.state["note"] == {"__type__": "Note", "__module__": "__main__", "data": {"text": "x"}}  # never imported
    assert cp.to_dict() == data


@pytest.fixture
async def cp(url: str, prefix: str):
    c = RedisCheckpointer(url, prefix)
    yield c
    await c.clear_all()
    await c.close()


async def test_save_load_list_delete_clear_all_keyword_and_positional(cp: RedisCheckpointer, url: str) -> None:
    saved = [
        Checkpoint(md11(f"c{i}", created_at=datetime(2025, 3, 1, 0, i, tzinfo=UTC), step=i), {"i": i})
        for i in range(12)
    ]
    for i, c in enumerate(saved):
        await (cp.save(c) if i % 2 else cp.save(checkpoint=c))
    assert await cp.load("s1") == saved[-1]
    assert await cp.load(session_id="s1", checkpoint_id="c3") == saved[3]
    assert await cp.load("s1", "c3") == saved[3]
    assert await cp.load("other-session", "c3") is None  # never another session's checkpoint
    assert [c.metadata.step for c in await cp.list("s1")] == list(range(11, 1, -1))  # limit=10, newest first
    assert [c.metadata.step for c in await cp.list("s1", 3)] == [11, 10, 9]
    assert [c.metadata.step for c in await cp.list(session_id="s1", limit=2)] == [11, 10]
    await cp.delete("s1", "c11")
    await cp.delete(session_id="s1", checkpoint_id="c10")
    assert (await cp.load("s1")) == saved[9]
    await cp.delete("s1")
    assert await cp.list("s1") == [] and await cp.load("s1") is None
    await cp.save(saved[0])
    await cp.save(Checkpoint(md11("x", "s2"), {}))
    assert sorted(await cp.list_sessions()) == ["s1", "s2"]
    await cp.clear_all()
    assert await cp.list_sessions() == []
    client = redis.Redis.from_url(url)
    assert keys_of(client, cp.prefix + "*") == []
    client.close()


async def test_llmfys_own_checkpoint_objects_are_saved(cp: RedisCheckpointer) -> None:
    if LLMFY_011:
        mine = theirs.CheckpointMetadata("c", "s", "r", datetime.now(UTC), "n", "p", 1, ["a"], 1, None)
    else:
        mine = theirs.CheckpointMetadata("c", "s", datetime.now(UTC), "n", 1)
    await cp.save(theirs.Checkpoint(mine, {"a": [1, 2]}))
    loaded = await cp.load("s")
    assert loaded is not None and loaded.to_dict() == theirs.Checkpoint(mine, {"a": [1, 2]}).to_dict()


async def test_times_come_back_as_given_naive_or_any_offset(cp: RedisCheckpointer) -> None:
    naive = datetime(2025, 1, 1, 8, 0)
    shifted = datetime(2025, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=-5)))
    await cp.save(Checkpoint(CheckpointMetadata("a", "tz", naive, "n", 1), {}))
    await cp.save(Checkpoint(md11("b", "tz", created_at=shifted), {}))
    assert (await cp.load("tz", "a")).metadata.timestamp == naive  # type: ignore[union-attr]
    got = (await cp.load("tz", "b")).metadata.created_at  # type: ignore[union-attr]
    assert got == shifted and got.utcoffset() == timedelta(hours=-5)


async def test_ttl_zero_is_no_expiry_and_a_ttl_slides_over_the_session(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    async with RedisCheckpointer(url, prefix, ttl=0) as forever:
        await forever.save(Checkpoint(md11("a", "forever"), {}))
    assert {client.pttl(k) for k in keys_of(client, prefix + "{forever}*")} == {-1}
    async with RedisCheckpointer(url, prefix, 120) as expiring:
        await expiring.save(Checkpoint(md11("a", "soon"), {}))
    assert all(0 < client.pttl(k) <= 120_000 for k in keys_of(client, prefix + "{soon}*"))
    client.close()
    with pytest.raises(InvalidInput, match="ttl"):
        RedisCheckpointer(url, prefix, ttl=-1)


async def test_max_checkpoints_per_session_and_list_by_run(url: str, prefix: str) -> None:
    async with RedisCheckpointer(url, prefix, max_checkpoints_per_session=2) as cp:
        for i in range(4):
            md = md11(f"c{i}", created_at=datetime(2025, 1, 1, 0, i, tzinfo=UTC), run_id=f"r{i % 2}", step=i)
            await cp.save(Checkpoint(md, {}))
        assert [c.metadata.checkpoint_id for c in await cp.list("s1")] == ["c3", "c2"]
        assert [c.metadata.checkpoint_id for c in await cp.list_by_run("s1", "r1")] == ["c3"]
        assert await cp.list_by_run("s1", "r1", limit=0) == []


async def test_max_state_bytes_refuses_and_writes_nothing(url: str, prefix: str) -> None:
    async with RedisCheckpointer(url, prefix, max_state_bytes=100) as cp:
        with pytest.raises(CheckpointPayloadTooLargeException, match="exceeding the configured limit of 100") as e:
            await cp.save(Checkpoint(md11(), {"big": "x" * 200}))
        assert (e.value.session_id, e.value.max_bytes) == ("s1", 100) and e.value.size_bytes > 200
        assert await cp.load("s1") is None


async def test_compress_and_encryption_key(url: str, prefix: str) -> None:
    Fernet = pytest.importorskip("cryptography.fernet").Fernet  # (in the dev extra)

    key = Fernet.generate_key()
    state = {"messages": ["secret words"] * 10, "n": 1}
    async with RedisCheckpointer(url, prefix, compress=True, encryption_key=key) as sealed:
        await sealed.save(Checkpoint(md11("c", "sealed"), state))
        assert (await sealed.load("sealed")).state == state  # type: ignore[union-attr]
    client = redis.Redis.from_url(url)
    stored = b"".join(v for k in keys_of(client, prefix + "{sealed}*") if client.type(k) == b"hash"
                      for v in client.hvals(k))  # fmt: skip
    client.close()
    assert b"secret words" not in stored
    async with RedisCheckpointer(url, prefix, encryption_key=Fernet.generate_key(), compress=True) as wrong_key:
        with pytest.raises(StoredDataError, match="fails authentication"):
            await wrong_key.load("sealed")
    async with RedisCheckpointer(url, prefix) as plain:
        with pytest.raises(StoredDataError, match="is encrypted \\(key 'llmfy'\\): pass its keys"):
            await plain.load("sealed")
    with pytest.raises(InvalidInput, match="Fernet key"):
        RedisCheckpointer(url, prefix, encryption_key="not a key")


async def test_a_backend_written_for_llmfy_subclasses_base_checkpointer_unchanged() -> None:
    class Mine(BaseCheckpointer):
        def __init__(self) -> None:
            self.saved: dict[str, Any] = {}

        async def save(self, checkpoint):  # type: ignore[no-untyped-def]
            self.saved[checkpoint.metadata.checkpoint_id] = checkpoint

        async def load(self, session_id, checkpoint_id=None):  # type: ignore[no-untyped-def]
            return self.saved.get(checkpoint_id) if checkpoint_id else None

        async def list(self, session_id, limit=10):  # type: ignore[no-untyped-def]
            return list(self.saved.values())[:limit]

        async def delete(self, session_id, checkpoint_id=None):  # type: ignore[no-untyped-def]
            self.saved.clear()

        async def clear_all(self):  # type: ignore[no-untyped-def]
            self.saved.clear()

    async with Mine() as mine:
        assert mine.requires_serialization is True
        await mine.save(Checkpoint(md11(), {}))
        assert len(await mine.list("s1")) == 1
        with pytest.raises(NotImplementedError):
            await mine.list_sessions()

    class Native(stateline.BaseCheckpointer):  # stateline's own protocol: list_sessions is optional too
        async def save(self, checkpoint, *, new_session=False):  # type: ignore[no-untyped-def]
            pass

        async def load(self, session_id, checkpoint_id=None):  # type: ignore[no-untyped-def]
            return None

        async def list(self, session_id, limit=10, *, before=None):  # type: ignore[no-untyped-def]
            return []

        async def delete(self, session_id, checkpoint_id=None):  # type: ignore[no-untyped-def]
            pass

        async def clear_all(self):  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(NotImplementedError):
        await Native().list_sessions()


def test_the_module_exports_llmfys_names() -> None:
    assert {"REDIS_AVAILABLE", "RedisCheckpointer", "BaseCheckpointer", "Checkpoint", "CheckpointMetadata"} <= set(
        dropin.__all__
    )


async def test_the_guides_carry_over_script_moves_llmfys_sessions(url: str, prefix: str) -> None:
    """docs/porting-from-llmfy.md's script, as printed there (with its imports)."""
    import re

    import redis.asyncio as aredis
    from llmfy.flow_engine.checkpointer import RedisCheckpointer as Old

    from stateline.llmfy import RedisCheckpointer as New

    async def carry_over(url: str, prefix: str = "llmfy_checkpoint:") -> None:
        old, new, r = Old(url, prefix), New(url, prefix), aredis.from_url(url, decode_responses=True)
        async for key in r.scan_iter(match=f"{prefix}session:*"):
            session = key[len(prefix) + len("session:") :]
            if re.search(r":run:[0-9a-f]{8}-[0-9a-f-]{27}$", session):  # llmfy 0.11's per-run indexes
                continue
            for cp in reversed(await old.list(session, limit=await r.zcard(key))):
                await new.save(cp)
        await old.close()
        await new.close()
        await r.aclose()

    theirs_cp = llmfy_flow.checkpointer("llmfy", url, prefix)
    engine = llmfy_flow.flow(theirs_cp)
    for session in ("a", "b:run:x"):
        await engine.invoke(llmfy_flow.user("hello"), session_id=session)
        await engine.invoke(llmfy_flow.user("again"), session_id=session)
    await carry_over(url, prefix)
    async with RedisCheckpointer(url, prefix) as moved:
        assert sorted(await moved.list_sessions()) == ["a", "b:run:x"]
        for session in ("a", "b:run:x"):
            before = [c.to_dict() for c in await theirs_cp.list(session, 100)]
            assert [c.to_dict() for c in await moved.list(session, 100)] == before
    await theirs_cp.close()


async def test_stateline_s_own_checkpointer_points_a_llmfy_checkpoint_to_the_drop_in() -> None:
    with pytest.raises(InvalidInput, match="stateline.llmfy.RedisCheckpointer"):
        await stateline.MemoryCheckpointer().save(Checkpoint(md11(), {}))  # type: ignore[arg-type]
