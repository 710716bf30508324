"""Plans alone, with scripted replies: no server, no I/O."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from stateline import ConflictError, DurabilityError
from stateline.codec import ValueCodec
from stateline.elements import digest
from stateline.engine import Engine
from stateline.plan import SCRIPTS, Batch, Call, Command
from stateline.records import Snapshot, Write


def engine(**kw) -> Engine:
    e = Engine(ValueCodec(JsonPlusSerializer()), prefix="p:", **kw)
    e.discovery._wall = lambda: 1.0  # index entries are scored by the Unix time in ms: 1000
    return e


def snap(values: dict, **kw) -> Snapshot:
    return Snapshot(
        thread_id="t:1", ns="", checkpoint_id="c2", parent_id="c1", header={"id": "c2", "channel_versions": {k: 1 for k in values}},
        metadata={}, versions={k: 1 for k in values}, values=values, **kw,
    )  # fmt: skip


def test_first_put_registers_the_thread_in_the_same_pipeline_then_sends_one_call() -> None:
    e = engine()
    plan = e.put(snap({"a": 1}, run_id="r"))
    step = plan.send(None)
    assert isinstance(step, Batch)
    shard = e.schema.index_of("t:1")
    assert step.steps[0] == Call(SCRIPTS.index, shard.all, ("add", 1000, 0, "t%3A1", "r"))
    assert step.steps[1].script == SCRIPTS.put and step.steps[1].keys == ("p:{t%3A1}:d", "p:{t%3A1}:i")
    with pytest.raises(StopIteration):
        plan.send([1, [b"ok", 1, 1, []]])
    again = e.put(snap({"a": 2}, run_id="r")).send(None)
    assert isinstance(again, Call)  # registered now: one EVALSHA
    other_run = e.put(snap({"a": 3}, run_id="r2")).send(None)
    assert other_run.steps[0] == Call(SCRIPTS.index, shard.all, ("add", 1000, 0, "t%3A1", "r2"))


def test_with_a_ttl_the_entry_is_written_again_once_half_the_ttl_passed() -> None:
    now = [100.0]
    e = engine(ttl_ms=10_000)
    e.discovery._clock = lambda: now[0]
    shard = e.schema.index_of("t:1")
    add = Call(SCRIPTS.index, shard.all, ("add", 1000, 20_000, "t%3A1"))  # an entry lives twice the TTL
    plan = e.put(snap({"a": 1}))
    assert plan.send(None).steps[0] == add
    with pytest.raises(StopIteration):
        plan.send([1, [b"ok", 1, 0, []]])
    for t in (101.0, 104.9):  # not before half the TTL: no write to the shard
        now[0] = t
        assert isinstance(e.put(snap({"a": 2})).send(None), Call)
        assert isinstance(e.put_writes("t:1", "", "c2", [Write("task", "a", 1, "", 0)], frozenset()).send(None), Call)
    now[0] = 105.1
    assert e.put_writes("t:1", "", "c2", [Write("task", "a", 1, "", 0)], frozenset()).send(None).steps[0] == add
    plan = e.put(snap({"a": 3}))
    assert plan.send(None).steps[0] == add
    with pytest.raises(StopIteration):
        plan.send([1, [b"ok", 0, 0, []]])
    assert isinstance(e.put(snap({"a": 4})).send(None), Call)  # written again at 105.1


def test_a_put_that_finds_its_thread_new_indexes_it_again() -> None:
    e = engine()
    e.discovery.written("t:1", None, 0.0)
    plan = e.put(snap({"a": 1}))
    assert isinstance(plan.send(None), Call)
    shard = e.schema.index_of("t:1")
    assert plan.send([b"ok", 1, 0, []]) == Call(
        SCRIPTS.index, shard.all, ("add", 1000, 0, "t%3A1")
    )  # deleted elsewhere


def n_sent(call: Call) -> int:
    """How many list elements a put carries (one of its small arguments)."""
    return int(call.args[0].split(" ")[-3])


def test_list_elements_are_sent_once_and_resent_when_the_server_lost_them() -> None:
    e = engine()
    items = [f"message {i}" for i in range(5)]
    plan = e.put(snap({"messages": items}))
    first = plan.send(None).steps[-1]
    assert n_sent(first) == 5  # five new elements travel with the first put
    assert first.args[-1].startswith(b"L|")  # the whole list: no log of it is known yet
    with pytest.raises(StopIteration):  # the server says which log the list lives in
        plan.send([1, [b"ok", 0, 0, [b"b::messages:1", b"l::messages:abc", 5], b""]])
    plan = e.put(snap({"messages": items + ["message 5"]}))
    call = plan.send(None)
    assert n_sent(call) == 1  # only the new one
    new = digest(e.codec.dump("message 5", "x"))
    assert call.args[-1] == b"A|l::messages:abc|5|" + new  # the log's length and what it appends
    stale = plan.send([b"stale", b"b::messages:1"])  # the log went meanwhile: the whole list
    assert stale.args[-1].startswith(b"L|") and n_sent(stale) == 1
    lost = digest(e.codec.dump("message 0", "x"))
    retry = plan.send([b"missing", lost])  # and its items with it: send them again
    assert n_sent(retry) == 2 and lost in retry.args


def test_a_stale_head_is_a_conflict() -> None:
    plan = engine().put(snap({"a": 1}), expect="c1")
    plan.send(None)
    with pytest.raises(ConflictError, match="expected head 'c1', found 'c9'"):
        plan.send([1, [b"conflict", b"c9"]])


def test_strong_durability_waits_in_the_same_pipeline_and_checks_the_answer() -> None:
    e = engine(durability="aof", durability_timeout_ms=50)
    e.discovery.written("t:1", None, 0.0)
    plan = e.put(snap({"a": 1}))
    batch = plan.send(None)
    assert batch.steps[-1] == Command(("WAITAOF", 1, 0, 50), route="p:{t%3A1}:d")
    with pytest.raises(DurabilityError, match="not confirmed 'aof' within 50 ms"):
        plan.send([[b"ok", 0, 0, [], b""], [0, 0]])


def test_unknown_settings_are_refused() -> None:
    from stateline import InvalidInput

    with pytest.raises(InvalidInput, match="durability"):
        engine(durability="eventually")
    with pytest.raises(InvalidInput, match="keep_last"):
        engine(keep_last=0)


def test_a_read_that_renews_the_ttl_renews_the_index_entry_when_due() -> None:
    now = [100.0]
    e = engine(ttl_ms=10_000, refresh_on_read=True)
    e.discovery._clock = lambda: now[0]
    shard = e.schema.index_of("t:1")
    plan = e.get("t:1", "", None)
    plan.send(None)
    with pytest.raises(StopIteration) as done:
        plan.send(None)  # nothing stored: nothing to index
    assert done.value.value is None
    stored = [[b"", b"c2", e._record(snap({}), "", "c2", []), [], []], [], []]  # entry, logs, items
    plan = e.get("t:1", "", None)
    plan.send(None)
    assert plan.send(stored) == Call(SCRIPTS.index, shard.all, ("add", 1000, 20_000, "t%3A1"))  # found: index it
    e.discovery.written("t:1", None, now[0])
    plan = e.get("t:1", "", None)
    plan.send(None)
    with pytest.raises(StopIteration) as done:
        plan.send(stored)  # written just now: the read is one call
    assert done.value.value.checkpoint_id == "c2"
