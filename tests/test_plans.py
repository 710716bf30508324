"""Plans alone, with scripted replies: no server, no I/O."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from stateline import ConflictError, DurabilityError
from stateline.codec import ValueCodec
from stateline.elements import digest
from stateline.engine import Engine
from stateline.plan import SCRIPTS, Batch, Call, Command
from stateline.records import Snapshot


def engine(**kw) -> Engine:
    return Engine(ValueCodec(JsonPlusSerializer()), prefix="p:", **kw)


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
    assert [type(s) for s in step.steps] == [Command, Command, Call]
    assert step.steps[2].script == SCRIPTS.put and step.steps[2].keys == ("p:{t%3A1}:d", "p:{t%3A1}:i")
    with pytest.raises(StopIteration):
        plan.send([1, 1, [b"ok", 0, 0, []]])
    again = e.put(snap({"a": 2}, run_id="r")).send(None)
    assert isinstance(again, Call)  # registered now: one EVALSHA


def n_sent(call: Call) -> int:
    """How many list elements a put carries (one of its small arguments)."""
    return int(call.args[0].split(" ")[-2])


def test_list_elements_are_sent_once_and_resent_when_the_server_lost_them() -> None:
    e = engine()
    items = [f"message {i}" for i in range(5)]
    plan = e.put(snap({"messages": items}))
    first = plan.send(None).steps[-1]
    assert n_sent(first) == 5  # five new elements travel with the first put
    assert first.args[-1].startswith(b"L|")  # the whole list: no log of it is known yet
    with pytest.raises(StopIteration):  # the server says which log the list lives in
        plan.send([1, [b"ok", 0, 0, [b"b::messages:1", b"l::messages:abc", 5]]])
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
    e._registered_now("t:1", None)
    plan = e.put(snap({"a": 1}))
    batch = plan.send(None)
    assert batch.steps[-1] == Command(("WAITAOF", 1, 0, 50), route="p:{t%3A1}:d")
    with pytest.raises(DurabilityError, match="not confirmed 'aof' within 50 ms"):
        plan.send([[b"ok", 0, 0, []], [0, 0]])


def test_unknown_settings_are_refused() -> None:
    from stateline import InvalidInput

    with pytest.raises(InvalidInput, match="durability"):
        engine(durability="eventually")
    with pytest.raises(InvalidInput, match="keep_last"):
        engine(keep_last=0)
