"""Side by side with LangGraph's reference saver: every scenario runs real graphs once on
InMemorySaver and once on stateline (sync API on RedisSaver, async API on AsyncRedisSaver),
and everything a user can observe must be the same: results, states, interrupts, tasks,
history (newest first, with metadata and parents), filters, and the exact types of values.
Ids, timestamps and channel versions are made by LangGraph or the saver and differ from run
to run: ids are compared by where they first appear, the others are left out."""

from __future__ import annotations

import operator
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, Interrupt, PregelTask, RetryPolicy, Send, StateSnapshot, interrupt

from stateline.langgraph import AsyncRedisSaver, RedisSaver

# -- what is observed ----------------------------------------------------------------------------

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


class Ids:
    """Ids by order of first appearance: the same structure gives the same numbers."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        return _ID.sub(lambda m: self.seen.setdefault(m.group(0), f"<id{len(self.seen)}>"), text)


def observe(x: Any, ids: Ids) -> Any:
    """``x`` as plain data that keeps every type a user could tell apart."""
    o = lambda v: observe(v, ids)  # noqa: E731
    if isinstance(x, StateSnapshot):
        return {
            "values": o(x.values),
            "next": list(x.next),
            "config": o(x.config),
            "metadata": o(x.metadata),
            "parent_config": o(x.parent_config),
            "tasks": [o(t) for t in x.tasks],
            "interrupts": [o(i) for i in x.interrupts],
        }
    if isinstance(x, PregelTask):
        return {"id": ids(x.id), "name": x.name, "path": o(x.path), "error": repr(x.error),
                "interrupts": [o(i) for i in x.interrupts], "state": o(x.state), "result": o(x.result)}  # fmt: skip
    if isinstance(x, Interrupt):
        return {"interrupt": o(x.value), "id": ids(x.id)}
    if isinstance(x, BaseMessage):
        return {type(x).__name__: o(x.model_dump())}
    if isinstance(x, Send):
        return {"send": x.node, "arg": o(x.arg)}
    if isinstance(x, dict):
        return {"dict": [[o(k), o(v)] for k, v in x.items()]}
    if isinstance(x, list):
        if x and all(isinstance(v, Interrupt) for v in x):  # parallel tasks' order: who finished first
            x = sorted(x, key=lambda i: repr(i.value))
        return [o(v) for v in x]
    if isinstance(x, (tuple, set, frozenset)):
        items = sorted(x, key=repr) if isinstance(x, (set, frozenset)) else x
        return {type(x).__name__: [o(v) for v in items]}
    if isinstance(x, (bytes, bytearray)):
        return {type(x).__name__: x.hex()}
    if isinstance(x, str):
        return ids(x)
    if x is None or type(x) in (int, float, bool):
        return x
    return {type(x).__name__: ids(repr(x))}


# -- running one scenario on one saver -------------------------------------------------------


@dataclass
class Run:
    """One scenario's run: the graph API in sync or async form, and what it observed."""

    is_async: bool
    saver: Any
    seen: list[Any] = field(default_factory=list)
    ids: Ids = field(default_factory=Ids)

    def note(self, label: str, value: Any) -> None:
        self.seen.append([label, observe(value, self.ids)])

    async def invoke(self, graph: Any, input: Any, config: dict, **kw: Any) -> Any:
        out = await graph.ainvoke(input, config, **kw) if self.is_async else graph.invoke(input, config, **kw)
        self.note("invoke", out)
        return out

    async def state(self, graph: Any, config: dict, **kw: Any) -> StateSnapshot:
        snap = await graph.aget_state(config, **kw) if self.is_async else graph.get_state(config, **kw)
        self.note("state", snap)
        return snap

    async def update(self, graph: Any, config: dict, values: Any, **kw: Any) -> dict:
        if self.is_async:
            new = await graph.aupdate_state(config, values, **kw)
        else:
            new = graph.update_state(config, values, **kw)
        self.note("update", new)
        return new

    async def history(self, graph: Any, config: dict, **kw: Any) -> list[StateSnapshot]:
        if self.is_async:
            found = [s async for s in graph.aget_state_history(config, **kw)]
        else:
            found = list(graph.get_state_history(config, **kw))
        self.note(f"history {sorted(kw)}", found)
        return found


Scenario = Callable[[Run], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def cfg(thread: str = "t", **metadata: Any) -> dict:
    out: dict[str, Any] = {"configurable": {"thread_id": thread}}
    if metadata:
        out["metadata"] = metadata
    return out


def at(snapshot: StateSnapshot) -> dict:
    return snapshot.config


# -- scenarios ----------------------------------------------------------------------------------


class Log(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    x: int
    answer: Any


def linear(*names: str, ask: str | None = None) -> StateGraph:
    """START -> names... -> END; the node named ``ask`` interrupts for an answer."""
    g = StateGraph(Log)
    for name in names:

        def node(state: Log, name: str = name) -> dict:
            if name == ask:
                return {"log": [name], "answer": interrupt({"question": name, "log": state.get("log", [])})}
            return {"log": [f"{name}{state.get('x', '')}"]}

        g.add_node(name, node)
    for a, b in zip((START, *names), (*names, END), strict=True):
        g.add_edge(a, b)
    return g


@scenario
async def interrupt_and_resume(r: Run) -> None:
    g = linear("a", "ask", "b", ask="ask").compile(checkpointer=r.saver)
    await r.invoke(g, {"log": []}, cfg())
    await r.state(g, cfg())
    await r.invoke(g, Command(resume="yes"), cfg())
    await r.state(g, cfg())
    await r.history(g, cfg())


@scenario
async def parallel_interrupts(r: Run) -> None:
    g = StateGraph(Log)
    g.add_node("x", lambda s: {"log": [f"x:{interrupt('x?')}"]})
    g.add_node("y", lambda s: {"log": [f"y:{interrupt('y?')}"]})
    g.add_node("z", lambda s: {"log": ["z"]})
    g.add_edge(START, "x")
    g.add_edge(START, "y")
    g.add_edge(START, "z")
    g.add_edge(["x", "y", "z"], END)
    graph = g.compile(checkpointer=r.saver)
    await r.invoke(graph, {"log": []}, cfg())
    paused = await r.state(graph, cfg())
    answers = {i.id: f"answer to {i.value}" for i in paused.interrupts}
    await r.invoke(graph, Command(resume=answers), cfg())
    await r.history(graph, cfg())


@scenario
async def nested_subgraphs(r: Run) -> None:
    inner = linear("deep", "ask", ask="ask").compile()
    middle = StateGraph(Log)
    middle.add_node("inner", inner)
    middle.add_node("after", lambda s: {"log": ["after"]})
    middle.add_edge(START, "inner")
    middle.add_edge("inner", "after")
    middle.add_edge("after", END)
    outer = StateGraph(Log)
    outer.add_node("first", lambda s: {"log": ["first"]})
    outer.add_node("middle", middle.compile())
    outer.add_edge(START, "first")
    outer.add_edge("first", "middle")
    outer.add_edge("middle", END)
    graph = outer.compile(checkpointer=r.saver)
    await r.invoke(graph, {"log": []}, cfg())
    await r.state(graph, cfg(), subgraphs=True)
    await r.invoke(graph, Command(resume="deep answer"), cfg())
    await r.state(graph, cfg(), subgraphs=True)
    await r.history(graph, cfg())


@scenario
async def update_state_as_a_node(r: Run) -> None:
    g = linear("a", "b", "c").compile(checkpointer=r.saver, interrupt_before=["c"])
    await r.invoke(g, {"log": [], "x": 1}, cfg())
    await r.update(g, cfg(), {"log": ["edited"], "x": 2}, as_node="b")
    await r.state(g, cfg())
    await r.invoke(g, None, cfg())
    await r.update(g, cfg(), {"x": 9})
    await r.history(g, cfg())


@scenario
async def time_travel_replay_and_fork(r: Run) -> None:
    g = linear("a", "b", "c").compile(checkpointer=r.saver)
    await r.invoke(g, {"log": [], "x": 1}, cfg())
    history = await r.history(g, cfg())
    after_a = next(s for s in history if s.next == ("b",))
    await r.invoke(g, None, at(after_a))  # replay from a past checkpoint
    fork = await r.update(g, at(after_a), {"x": 5})  # a branch
    await r.invoke(g, None, fork)
    await r.state(g, at(after_a))
    await r.history(g, cfg())


@scenario
async def command_goto_and_update(r: Run) -> None:
    g = StateGraph(Log)
    g.add_node("route", lambda s: Command(goto="right" if s.get("x") else "left", update={"log": ["route"]}))
    g.add_node("left", lambda s: {"log": ["left"]})
    g.add_node("right", lambda s: {"log": ["right"]})
    g.add_edge(START, "route")
    g.add_edge("left", END)
    g.add_edge("right", END)
    graph = g.compile(checkpointer=r.saver)
    await r.invoke(graph, {"log": [], "x": 0}, cfg())
    await r.invoke(graph, {"log": [], "x": 1}, cfg())
    await r.history(graph, cfg())


class MapState(TypedDict, total=False):
    items: list[int]
    results: Annotated[list[str], operator.add]


@scenario
async def send_fan_out_with_a_retry(r: Run) -> None:
    failed: set[int] = set()

    def work(arg: dict) -> dict:
        if arg["i"] == 2 and 2 not in failed:  # fails once, then the retry policy runs it again
            failed.add(2)
            raise RuntimeError("flaky")
        return {"results": [f"done {arg['i']}"]}

    def ask(state: MapState) -> dict:
        return {"results": [f"approved: {interrupt(sorted(state['results']))}"]}

    g = StateGraph(MapState)
    g.add_node("plan", lambda s: {"items": [1, 2, 3]})
    g.add_node(
        "work",
        work,
        retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False, retry_on=RuntimeError),
    )
    g.add_node("ask", ask)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", lambda s: [Send("work", {"i": i}) for i in s["items"]], ["work"])
    g.add_edge("work", "ask")
    g.add_edge("ask", END)
    graph = g.compile(checkpointer=r.saver)
    await r.invoke(graph, {"results": []}, cfg())
    await r.state(graph, cfg())
    await r.invoke(graph, Command(resume="ok"), cfg())
    await r.history(graph, cfg())


@scenario
async def functional_api(r: Run) -> None:
    @task
    def double(n: int) -> int:
        return 2 * n

    @entrypoint(checkpointer=r.saver)
    def workflow(n: int, *, previous: Any = None) -> dict:
        a = double(n).result()
        answer = interrupt({"a": a, "previous": previous})
        return {"a": a, "answer": answer}

    await r.invoke(workflow, 3, cfg())
    await r.state(workflow, cfg())
    await r.invoke(workflow, Command(resume="yes"), cfg())
    await r.invoke(workflow, 4, cfg())  # a second run sees the first one's return value
    await r.history(workflow, cfg())


@scenario
async def durability_modes(r: Run) -> None:
    for durability in ("exit", "async", "sync"):
        g = linear("a", "ask", "b", ask="ask").compile(checkpointer=r.saver)
        thread = cfg(f"d-{durability}")
        await r.invoke(g, {"log": []}, thread, durability=durability)
        await r.invoke(g, Command(resume=durability), thread, durability=durability)
        await r.history(g, thread)


@scenario
async def history_filters(r: Run) -> None:
    g = linear("a", "b").compile(checkpointer=r.saver)
    await r.invoke(g, {"log": []}, cfg(user="u1", tag=None, rank=1))
    await r.invoke(g, {"log": ["again"]}, cfg(user="u2", rank=2))
    for query in ({"source": "loop"}, {"step": 1}, {"user": "u1"}, {"user": "u2", "step": 2}, {"rank": 2},
                  {"tag": None}, {"absent": None}, {"user": None}, {"source": "input", "user": "u2"}):  # fmt: skip
        await r.history(g, cfg(), filter=query)
    newest = await r.history(g, cfg(), limit=2)
    await r.history(g, cfg(), before=newest[-1].config, limit=3)


class Rich(TypedDict, total=False):
    blobs: list[Any]
    other: list[Any]
    pending: list[Any]
    messages: Annotated[list[BaseMessage], add_messages]


@scenario
async def exact_types_in_lists_and_pending_writes(r: Run) -> None:
    long = b"y" * 300  # a pending write over 256 bytes
    blobs = [b"a", bytearray(b"b"), ("t", 1), {1, 2}, datetime(2024, 1, 2, tzinfo=timezone.utc), Decimal("1.5")]
    short = [bytearray(b"c"), b"d"]

    def fill(state: Rich) -> dict:
        return {"blobs": blobs, "other": short, "messages": [HumanMessage("hi", id="m1"), AIMessage("yo", id="m2")]}

    def writer(state: Rich) -> dict:
        return {"pending": [bytearray(long), long, "x", "y", ("z",)]}

    g = StateGraph(Rich)
    g.add_node("fill", fill)
    g.add_node("writer", writer)
    g.add_node("ask", lambda s: {"other": [interrupt("go?")]})
    g.add_edge(START, "fill")
    g.add_edge("fill", "writer")
    g.add_edge("fill", "ask")
    g.add_edge(["writer", "ask"], END)
    graph = g.compile(checkpointer=r.saver)
    await r.invoke(graph, {"blobs": []}, cfg())
    await r.state(graph, cfg())  # the writer's write is pending, stored on its own
    await r.invoke(graph, Command(resume=bytearray(b"resumed")), cfg())
    await r.history(graph, cfg())


# -- the comparison ---------------------------------------------------------------------------


async def observed(scenario_fn: Scenario, saver: Any, is_async: bool) -> list[Any]:
    run = Run(is_async, saver)
    await scenario_fn(run)
    return run.seen


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_stateline_matches_in_memory_saver(name: str, mode: str, url: str) -> None:
    is_async = mode == "async"
    expected = await observed(SCENARIOS[name], InMemorySaver(), is_async)
    prefix = f"ref{uuid.uuid4().hex[:8]}:"
    saver = AsyncRedisSaver(url, prefix=prefix) if is_async else RedisSaver(url, prefix=prefix)
    try:
        got = await observed(SCENARIOS[name], saver, is_async)
    finally:
        if is_async:
            await saver.aclose()
        else:
            saver.close()
    assert len(got) == len(expected)
    for (label, mine), (_, reference) in zip(got, expected, strict=True):
        assert mine == reference, label
