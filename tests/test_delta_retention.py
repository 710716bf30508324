"""Retention never loses DeltaChannel state: the writes behind a value are kept with it."""

from __future__ import annotations

from typing import Annotated, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import _messages_delta_reducer

from stateline.langgraph import RedisSaver, ShallowRedisSaver


class State(TypedDict):
    messages: Annotated[list, DeltaChannel(_messages_delta_reducer, snapshot_frequency=10)]


def reply(state: State) -> dict:
    return {"messages": [AIMessage(content=f"reply {len(state['messages'])}")]}


def graph(saver: RedisSaver):
    return (
        StateGraph(State).add_node("bot", reply).add_edge(START, "bot").add_edge("bot", END).compile(checkpointer=saver)
    )


def chat(saver: RedisSaver, turns: int) -> dict:
    cfg = {"configurable": {"thread_id": "delta"}}
    app = graph(saver)
    for i in range(turns):
        app.invoke({"messages": [HumanMessage(content=f"turn {i}")]}, cfg)
    return cfg


def expected(turns: int) -> list[str]:
    out: list[str] = []
    for i in range(turns):
        out += [f"turn {i}", f"reply {2 * i + 1}"]
    return out


@pytest.mark.parametrize("keep_last", [1, 3])
def test_a_shallow_saver_keeps_the_checkpoints_a_delta_channel_is_rebuilt_from(
    url: str, prefix: str, keep_last: int
) -> None:
    saver = (
        ShallowRedisSaver(url, prefix=prefix) if keep_last == 1 else RedisSaver(url, prefix=prefix, keep_last=keep_last)
    )
    cfg = chat(saver, 23)
    fresh = graph(RedisSaver(url, prefix=prefix))
    assert [m.content for m in fresh.get_state(cfg).values["messages"]] == expected(23)
    kept = len(list(saver.list({"configurable": {"thread_id": "delta", "checkpoint_ns": ""}})))
    assert keep_last <= kept < 23 * 3  # trimmed, but not below what the value needs


def test_prune_keep_latest_keeps_delta_state(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg = chat(saver, 17)
    before = len(list(saver.list(cfg)))
    saver.prune(["delta"])
    after = len(list(saver.list(cfg)))
    assert after < before
    assert [m.content for m in graph(saver).get_state(cfg).values["messages"]] == expected(17)
    graph(saver).invoke({"messages": [HumanMessage(content="turn 17")]}, cfg)  # and it goes on
    assert [m.content for m in graph(saver).get_state(cfg).values["messages"]] == expected(18)


def test_delta_snapshots_are_stored_by_item_not_as_whole_copies(url: str, prefix: str, client) -> None:
    """Every snapshot repeats the whole history; stored by item it costs 16 bytes a message."""
    saver = RedisSaver(url, prefix=prefix)
    cfg = chat(saver, 30)
    data = saver.engine.keys("delta").data
    values = [client.hget(data, f) for f in client.hkeys(data) if f.startswith(b"b:")]
    snapshots = [v for v in values if v.startswith(b"L") and v.endswith(b"|delta")]
    assert len(snapshots) >= 5  # snapshot_frequency=10, two updates a turn
    assert max(map(len, values)) < 1000  # no value holds a copy of the history (30 turns: ~6 KB)
    assert [m.content for m in graph(RedisSaver(url, prefix=prefix)).get_state(cfg).values["messages"]] == expected(30)
