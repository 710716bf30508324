"""The operator plans (survey.py) alone, with scripted replies: bounded steps, cursors."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from stateline import InvalidInput, survey
from stateline import keys as K
from stateline.codec import ValueCodec
from stateline.engine import Engine
from stateline.plan import Batch


def engine() -> Engine:
    return Engine(ValueCodec(JsonPlusSerializer()), prefix="p:")


def finish(plan, reply):  # type: ignore[no-untyped-def]
    with pytest.raises(StopIteration) as done:
        plan.send(reply)
    return done.value.value


def test_a_page_cut_in_the_middle_resumes_right_after_its_last_thread() -> None:
    e = engine()
    plan = survey.thread_page(e, None, 2)
    first = plan.send(None)  # the discovery index: 8 shards in one pipeline
    assert isinstance(first, Batch) and len(first.steps) == 8
    entries = [[b"t:a", b"t:b", b"t:c"]] + [[]] * 7
    exists = plan.send(entries)  # then whether each thread still exists
    ids, cursor = finish(plan, [1, 1, 1])
    assert ids == ["a", "b"] and cursor == f"{K.shard_of('b')} t:b"
    resumed = survey.thread_page(e, cursor, 2).send(None)
    assert len(resumed.steps) == 1 and resumed.steps[0].args[2] == b"(t:b"  # one shard, after b
    assert isinstance(exists, Batch)


def test_a_search_reads_a_bounded_number_of_pages() -> None:
    e = engine()
    plan = survey.thread_page(e, None, 10, match="zzz", rounds=2)
    plan.send(None)
    plan.send([[b"t:a"]] + [[]] * 7)
    step = plan.send([1])  # no match in the first round: a second
    assert isinstance(step, Batch)
    plan.send([[b"t:b"]] + [[]] * 7)
    ids, cursor = finish(plan, [1])
    assert ids == [] and cursor == "16"  # stopped after two rounds, where to go on


def test_stats_go_a_hundred_threads_per_round_trip() -> None:
    e = engine()
    plan = survey.thread_stats(e, [f"t{i}" for i in range(250)], memory=False)
    sizes = []
    step = plan.send(None)
    while True:
        sizes.append(len(step.steps))
        n = len(step.steps) // 4  # checkpoints, packed writes, writes of their own, TTL
        try:
            step = plan.send([0, None, 0, -2] * n)
        except StopIteration as done:
            stats = done.value
            break
    assert sizes == [400, 400, 200] and len(stats) == 250 and not any(s.exists for s in stats)


def test_a_cursor_that_is_not_one_is_bad_input() -> None:
    with pytest.raises(InvalidInput, match="not a thread cursor"):
        survey.thread_page(engine(), "x y", 5).send(None)
