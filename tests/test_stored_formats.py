"""Stored formats are frozen: threads stored by the version that froze each one (tests/
fixtures/format<N>/*.json: every field and index member of a thread, as the server held
them) must read, whole and unchanged, with every later version of stateline, and go on.

    python -m tests.test_stored_formats <redis url> format2   # wrote format 2's fixtures
    (never run it again for an existing format: a fixture is what an old version stored)
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage

from stateline import Checkpoint, Encryption, SyncRedisCheckpointer
from stateline.elements import ITEMS
from stateline.langgraph import RedisSaver
from stateline.runner import run

FIXTURES = Path(__file__).parent / "fixtures"
FORMATS = ("format1", "format2")
HERE = FIXTURES / "format1"
KEY = bytes(range(32))  # the fixture's key: a test key, published with the fixture


def _settings(name: str) -> dict[str, Any]:
    return {
        "plain": {"compression": False},
        "compressed": {},
        "encrypted": {"encryption": Encryption({"fixture-2026": KEY})},
        "seed": {},
    }[name]


def _canon(value: Any) -> Any:
    """A JSON form of what a read returns, independent of how a library prints it."""
    if isinstance(value, BaseMessage):
        keep = ("type", "content", "id", "name", "tool_calls", "tool_call_id")
        return {k: _canon(getattr(value, k, None)) for k in keep}
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _read(saver: RedisSaver, thread: str) -> Any:
    ITEMS.drop(lambda k: True)
    cfg = {"configurable": {"thread_id": thread}}
    tuples = list(saver.list(cfg))
    return _canon(
        [
            {
                "config": t.config,
                "parent": t.parent_config,
                "checkpoint": t.checkpoint,
                "metadata": t.metadata,
                "writes": t.pending_writes,
            }
            for t in tuples
        ]
    )


def _read_seed(cp: SyncRedisCheckpointer, session: str) -> Any:
    ITEMS.drop(lambda k: True)
    return [repr(c.to_dict()) for c in cp.list(session, limit=None)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["plain", "compressed", "encrypted"])
def test_a_langgraph_thread_stored_in_an_older_format_reads_unchanged(
    url: str, prefix: str, fmt: str, name: str
) -> None:
    fixture = json.loads((FIXTURES / fmt / f"{name}.json").read_text())
    saver = RedisSaver(url, prefix=prefix, **_settings(name))
    _restore(saver.engine, saver._run, fixture)
    assert _read(saver, fixture["thread"]) == fixture["expected"]
    # and the thread goes on: a new turn on top of what that format stored
    from stateline.bench.agent import build_graph

    app = build_graph(saver)
    cfg = {"configurable": {"thread_id": fixture["thread"]}}
    before = len(app.get_state(cfg).values["messages"])
    app.invoke({"messages": [HumanMessage(content="one more", id="more")]}, cfg)
    assert len(app.get_state(cfg).values["messages"]) == before + 4


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_seed_api_session_stored_in_an_older_format_reads_unchanged(url: str, prefix: str, fmt: str) -> None:
    fixture = json.loads((FIXTURES / fmt / "seed.json").read_text())
    with SyncRedisCheckpointer(url, prefix=prefix) as cp:
        _restore(cp.engine, lambda plan: run(cp._conn.sync, plan), fixture)
        assert _read_seed(cp, fixture["thread"]) == fixture["expected"]


def _restore(engine: Any, runs: Any, fixture: dict) -> None:
    fields = [base64.b64decode(x) for pair in fixture["fields"] for x in pair]
    members = [base64.b64decode(m) for m in fixture["members"]]
    runs(engine.restore(fixture["thread"], (fields, members)))


# -- how the fixtures were made ---------------------------------------------------------------


def _dump(engine: Any, runs: Any, thread: str, expected: Any, fmt: int) -> dict:
    fields, members = runs(engine.dump(thread))
    pairs = [
        [base64.b64encode(fields[i]).decode(), base64.b64encode(fields[i + 1]).decode()]
        for i in range(0, len(fields), 2)
    ]
    return {
        "format": fmt,
        "thread": thread,
        "fields": sorted(pairs),
        "members": sorted(base64.b64encode(m).decode() for m in members),
        "expected": expected,
    }


def _write(url: str, fmt: str) -> None:
    from langgraph.checkpoint.base import empty_checkpoint

    from stateline.bench.agent import build_graph
    from stateline.codec import FORMAT

    if fmt != f"format{FORMAT}" or (FIXTURES / fmt).exists():
        raise SystemExit(f"this version writes format{FORMAT}, and only once: {FIXTURES / fmt} is what it stored")
    here = FIXTURES / fmt
    here.mkdir(parents=True)
    for name in ("plain", "compressed", "encrypted"):
        saver = RedisSaver(url, prefix=f"fixture-{name}:", **_settings(name))
        app = build_graph(saver)
        cfg = {"configurable": {"thread_id": "chat ü:{1}"}}
        for t in range(3):
            app.invoke(
                {"messages": [HumanMessage(content=f"turn {t}: what is the weather in Paris?", id=f"h{t}")]}, cfg
            )
        head = saver.get_tuple(cfg)
        saver.put_writes(head.config, [("messages", [HumanMessage(content="pending", id="p")]), ("note", 1)], "t1")
        for task in range(24):  # a wide step: packed writes, then writes in fields of their own
            saver.put_writes(
                head.config, [("out", " ".join(str(task * 7919 + k * k) for k in range(200)))], f"wide-{task}"
            )
        sub = {"configurable": {"thread_id": "chat ü:{1}", "checkpoint_ns": "tool:1"}}
        saver.put(sub, empty_checkpoint(), {"source": "loop", "step": 0}, {})  # a subgraph's checkpoint
        fixture = _dump(saver.engine, saver._run, "chat ü:{1}", _read(saver, "chat ü:{1}"), FORMAT)
        (here / f"{name}.json").write_text(json.dumps(fixture, indent=0, sort_keys=True) + "\n")
    with SyncRedisCheckpointer(url, prefix="fixture-seed:") as cp:
        first = Checkpoint(
            session_id="session 1",
            state={
                "messages": [f"message {i}" for i in range(6)],
                "when": dt.datetime(2026, 6, 1, 12, 30, tzinfo=dt.timezone.utc),
                "seen": {1, 2, 3},
                "pair": (1, "a"),
                "price": Decimal("19.99"),
                "id": uuid.UUID(int=7),
                "big": 2**80,
                "blob": b"\x00\x01",
                "by_int": {1: "one"},
            },
            metadata={"user": "u1"},
            checkpoint_id="first",
            created_at=dt.datetime(2026, 6, 1, 12, 30, tzinfo=dt.timezone.utc),
        )
        cp.save(first)
        second = first.child(
            {**first.state, "messages": [*first.state["messages"], "message 6"]},
            checkpoint_id="second",
            created_at=dt.datetime(2026, 6, 1, 12, 31, tzinfo=dt.timezone.utc),
        )
        cp.save(second)
        fixture = _dump(
            cp.engine, lambda plan: run(cp._conn.sync, plan), "session 1", _read_seed(cp, "session 1"), FORMAT
        )
        (here / "seed.json").write_text(json.dumps(fixture, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    _write(sys.argv[1], sys.argv[2])
