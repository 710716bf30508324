"""Real LangGraph graphs compiled with the stateline savers.

Every scenario is written once and run twice: with ``RedisSaver`` through the sync graph
API (invoke, get_state, update_state, get_state_history) and with ``AsyncRedisSaver``
through the async one (ainvoke, aget_state, ...). ``Harness`` hides which is which.
"""

from __future__ import annotations

import json
import operator
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import _messages_delta_reducer, add_messages
from langgraph.types import Command, Send, StateSnapshot, interrupt

from stateline.langgraph import AsyncRedisSaver, RedisSaver

# -- harness -----------------------------------------------------------------------------------


class Harness:
    """Runs a scenario with the sync saver and sync graph API, or the async ones."""

    def __init__(self, mode: str, url: str, prefix: str) -> None:
        self.mode, self.url, self.prefix = mode, url, prefix
        self.is_async = mode == "async"
        self._savers: list[RedisSaver] = []

    def saver(self) -> RedisSaver:
        """A NEW saver instance (own connections, own caches) on the same URL and prefix."""
        cls = AsyncRedisSaver if self.is_async else RedisSaver
        s = cls.from_url(self.url, prefix=self.prefix)
        self._savers.append(s)
        return s

    def compile(self, builder: StateGraph, saver: Any = None, **kwargs: Any) -> Any:
        return builder.compile(checkpointer=saver if saver is not None else self.saver(), **kwargs)

    async def invoke(self, graph: Any, input: Any, config: dict, **kwargs: Any) -> Any:
        if self.is_async:
            return await graph.ainvoke(input, config, **kwargs)
        return graph.invoke(input, config, **kwargs)

    async def state(self, graph: Any, config: dict, *, subgraphs: bool = False) -> StateSnapshot:
        if self.is_async:
            return await graph.aget_state(config, subgraphs=subgraphs)
        return graph.get_state(config, subgraphs=subgraphs)

    async def update(self, graph: Any, config: dict, values: Any, as_node: str | None = None) -> dict:
        if self.is_async:
            return await graph.aupdate_state(config, values, as_node=as_node)
        return graph.update_state(config, values, as_node=as_node)

    async def history(self, graph: Any, config: dict, **kwargs: Any) -> list[StateSnapshot]:
        if self.is_async:
            return [s async for s in graph.aget_state_history(config, **kwargs)]
        return list(graph.get_state_history(config, **kwargs))

    async def delta_history(self, saver: Any, config: dict, channels: list[str]) -> tuple[Any, Any]:
        """(the saver's own get_delta_channel_history, the base class' default walk)."""
        if self.is_async:
            mine = await saver.aget_delta_channel_history(config=config, channels=channels)
            ref = await BaseCheckpointSaver.aget_delta_channel_history(saver, config=config, channels=channels)
        else:
            mine = saver.get_delta_channel_history(config=config, channels=channels)
            ref = BaseCheckpointSaver.get_delta_channel_history(saver, config=config, channels=channels)
        return mine, ref

    async def close(self) -> None:
        for s in self._savers:
            if self.is_async:
                await s.aclose()
            else:
                s.close()


@pytest.fixture(params=["sync", "async"])
async def h(request: pytest.FixtureRequest, url: str, prefix: str):
    harness = Harness(request.param, url, prefix)
    yield harness
    await harness.close()


def thread() -> dict:
    return {"configurable": {"thread_id": f"th-{uuid.uuid4().hex[:8]}"}}


def at(config: dict, checkpoint_id: str) -> dict:
    return {"configurable": {**config["configurable"], "checkpoint_id": checkpoint_id}}


def cid(snapshot_or_config: Any) -> str:
    config = snapshot_or_config.config if isinstance(snapshot_or_config, StateSnapshot) else snapshot_or_config
    return config["configurable"]["checkpoint_id"]


# -- graphs ------------------------------------------------------------------------------------


class Approval(TypedDict, total=False):
    request: str
    answer: str
    log: list[str]


def build_approval(calls: Counter | None = None) -> StateGraph:
    """prepare -> ask (interrupts for an answer) -> finish. Also built by the child process."""
    calls = calls if calls is not None else Counter()

    def prepare(state: Approval) -> dict:
        calls["prepare"] += 1
        return {"log": [*state.get("log", []), "prepare"]}

    def ask(state: Approval) -> dict:
        calls["ask"] += 1
        answer = interrupt({"approve": state["request"]})
        return {"answer": answer, "log": [*state["log"], f"ask:{answer}"]}

    def finish(state: Approval) -> dict:
        calls["finish"] += 1
        return {"log": [*state["log"], "finish"]}

    b = StateGraph(Approval)
    b.add_node("prepare", prepare)
    b.add_node("ask", ask)
    b.add_node("finish", finish)
    b.add_edge(START, "prepare")
    b.add_edge("prepare", "ask")
    b.add_edge("ask", "finish")
    b.add_edge("finish", END)
    return b


async def assert_paused_at_ask(h: Harness, graph: Any, cfg: dict, request: str) -> None:
    state = await h.state(graph, cfg)
    assert state.next == ("ask",)
    assert state.values == {"request": request, "log": ["prepare"]}
    assert [i.value for i in state.interrupts] == [{"approve": request}]
    assert [i.value for i in state.tasks[0].interrupts] == [{"approve": request}]


class Linear(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


def build_linear(calls: Counter) -> StateGraph:
    """a -> b, where b's output depends on x: a fork that changes x changes b's write."""

    def a(state: Linear) -> dict:
        calls["a"] += 1
        return {"log": ["a"]}

    def b(state: Linear) -> dict:
        calls["b"] += 1
        return {"log": [f"b{state['x']}"]}

    g = StateGraph(Linear)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", END)
    return g


# -- 1. interrupt and resume -------------------------------------------------------------------


async def test_interrupt_then_resume_on_the_same_saver(h: Harness) -> None:
    calls: Counter = Counter()
    graph = h.compile(build_approval(calls))
    cfg = thread()
    out = await h.invoke(graph, {"request": "deploy"}, cfg)
    assert [i.value for i in out["__interrupt__"]] == [{"approve": "deploy"}]
    await assert_paused_at_ask(h, graph, cfg, "deploy")

    out = await h.invoke(graph, Command(resume="yes"), cfg)
    assert out == {"request": "deploy", "answer": "yes", "log": ["prepare", "ask:yes", "finish"]}
    assert calls == {"prepare": 1, "ask": 2, "finish": 1}  # ask re-runs on resume, prepare doesn't
    assert (await h.state(graph, cfg)).next == ()


async def test_interrupt_then_resume_from_a_new_saver_instance(h: Harness) -> None:
    first_calls: Counter = Counter()
    cfg = thread()
    await h.invoke(h.compile(build_approval(first_calls)), {"request": "migrate"}, cfg)

    calls: Counter = Counter()
    graph = h.compile(build_approval(calls), h.saver())
    await assert_paused_at_ask(h, graph, cfg, "migrate")
    out = await h.invoke(graph, Command(resume="approved"), cfg)
    assert out["log"] == ["prepare", "ask:approved", "finish"]
    assert calls == {"ask": 1, "finish": 1}  # prepare's result came from the store

    state = await h.state(h.compile(build_approval(), h.saver()), cfg)
    assert state.values == {"request": "migrate", "answer": "approved", "log": ["prepare", "ask:approved", "finish"]}
    assert state.next == () and state.interrupts == ()


CHILD = """
import importlib.util, json, sys
from langgraph.types import Command
from stateline.langgraph import RedisSaver

path, url, prefix, thread_id = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("graphs_under_test", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
cfg = {"configurable": {"thread_id": thread_id}}
with RedisSaver.from_url(url, prefix=prefix) as saver:
    graph = mod.build_approval().compile(checkpointer=saver)
    before = graph.get_state(cfg)
    out = graph.invoke(Command(resume="from-child"), cfg)
    print(json.dumps({"next_before": list(before.next),
                      "interrupts_before": [i.value for i in before.interrupts],
                      "out": out}))
"""


async def test_interrupt_then_resume_from_a_new_process(url: str, prefix: str) -> None:
    h = Harness("async", url, prefix)
    try:
        cfg = thread()
        await h.invoke(h.compile(build_approval()), {"request": "ship"}, cfg)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(__file__).resolve()), url, prefix, cfg["configurable"]["thread_id"]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        assert child["next_before"] == ["ask"]
        assert child["interrupts_before"] == [{"approve": "ship"}]
        assert child["out"] == {
            "request": "ship",
            "answer": "from-child",
            "log": ["prepare", "ask:from-child", "finish"],
        }

        state = await h.state(h.compile(build_approval(), h.saver()), cfg)
        assert state.values == child["out"]
        assert state.next == ()
    finally:
        await h.close()


# -- 2. nested subgraphs -----------------------------------------------------------------------


class Nested(TypedDict):
    value: str
    log: list[str]  # last value, not a reducer: a subgraph returns its whole state


def build_nested(calls: Counter) -> StateGraph:
    """outer: start -> middle -> finish; middle: pre -> inner; inner: ask (interrupts) -> done."""

    def step(name: str):
        def node(state: Nested) -> dict:
            calls[name] += 1
            return {"log": [*state["log"], name]}

        return node

    def inner_ask(state: Nested) -> dict:
        calls["inner_ask"] += 1
        answer = interrupt("inner?")
        return {"value": answer, "log": [*state["log"], "inner_ask"]}

    def inner_done(state: Nested) -> dict:
        calls["inner_done"] += 1
        return {"log": [*state["log"], f"inner_done:{state['value']}"]}

    inner = StateGraph(Nested)
    inner.add_node("inner_ask", inner_ask)
    inner.add_node("inner_done", inner_done)
    inner.add_edge(START, "inner_ask")
    inner.add_edge("inner_ask", "inner_done")

    middle = StateGraph(Nested)
    middle.add_node("pre", step("pre"))
    middle.add_node("inner", inner.compile())
    middle.add_edge(START, "pre")
    middle.add_edge("pre", "inner")

    outer = StateGraph(Nested)
    outer.add_node("start", step("start"))
    outer.add_node("middle", middle.compile())
    outer.add_node("finish", step("finish"))
    outer.add_edge(START, "start")
    outer.add_edge("start", "middle")
    outer.add_edge("middle", "finish")
    return outer


async def test_interrupt_inside_a_nested_subgraph(h: Harness) -> None:
    calls: Counter = Counter()
    graph = h.compile(build_nested(calls))
    cfg = thread()
    out = await h.invoke(graph, {"value": "", "log": []}, cfg)
    assert [i.value for i in out["__interrupt__"]] == ["inner?"]

    graph = h.compile(build_nested(calls), h.saver())  # read and resume from a new saver
    outer = await h.state(graph, cfg, subgraphs=True)
    assert outer.next == ("middle",)
    assert outer.values == {"value": "", "log": ["start"]}
    assert [t.name for t in outer.tasks] == ["middle"]
    assert [i.value for i in outer.tasks[0].interrupts] == ["inner?"]
    middle = outer.tasks[0].state
    assert isinstance(middle, StateSnapshot)
    assert middle.next == ("inner",)
    assert middle.values["log"] == ["start", "pre"]
    assert middle.config["configurable"]["checkpoint_ns"].startswith("middle:")
    inner = middle.tasks[0].state
    assert isinstance(inner, StateSnapshot)
    assert inner.next == ("inner_ask",)
    assert [i.value for i in inner.tasks[0].interrupts] == ["inner?"]
    ns = inner.config["configurable"]["checkpoint_ns"]
    assert ns.startswith("middle:") and "|inner:" in ns

    # without subgraphs=True the subgraph task carries only its config
    plain = await h.state(graph, cfg)
    assert not isinstance(plain.tasks[0].state, StateSnapshot)

    out = await h.invoke(graph, Command(resume="deep"), cfg)
    assert out == {"value": "deep", "log": ["start", "pre", "inner_ask", "inner_done:deep", "finish"]}
    assert calls == {"start": 1, "pre": 1, "inner_ask": 2, "inner_done": 1, "finish": 1}
    done = await h.state(h.compile(build_nested(Counter()), h.saver()), cfg, subgraphs=True)
    assert done.next == () and done.tasks == ()
    assert done.values == out


# -- 3. history --------------------------------------------------------------------------------


async def test_state_history_is_newest_first(h: Harness) -> None:
    calls: Counter = Counter()
    graph = h.compile(build_linear(calls))
    cfg = thread()
    await h.invoke(graph, {"x": 1, "log": []}, cfg)
    await h.invoke(graph, {"x": 2, "log": ["again"]}, cfg)

    hist = await h.history(h.compile(build_linear(calls), h.saver()), cfg)
    assert [s.metadata["step"] for s in hist] == [6, 5, 4, 3, 2, 1, 0, -1]
    assert [s.next for s in hist] == [(), ("b",), ("a",), ("__start__",)] * 2
    assert [s.metadata["source"] for s in hist] == ["loop", "loop", "loop", "input"] * 2
    ids = [cid(s) for s in hist]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    for newer, older in zip(hist, hist[1:], strict=False):
        assert cid(newer.parent_config) == cid(older)
    assert hist[-1].parent_config is None
    assert hist[0].values == {"x": 2, "log": ["a", "b1", "again", "a", "b2"]}
    assert hist[0] == await h.state(graph, cfg)

    # the same history as LangGraph's own in-memory saver records
    ref_calls: Counter = Counter()
    ref = h.compile(build_linear(ref_calls), InMemorySaver())
    await h.invoke(ref, {"x": 1, "log": []}, cfg)
    await h.invoke(ref, {"x": 2, "log": ["again"]}, cfg)
    ref_hist = await h.history(ref, cfg)
    assert [(s.values, s.next, s.metadata["step"]) for s in hist] == [
        (s.values, s.next, s.metadata["step"]) for s in ref_hist
    ]

    assert [cid(s) for s in await h.history(graph, cfg, limit=3)] == ids[:3]
    assert [cid(s) for s in await h.history(graph, cfg, before=hist[2].config)] == ids[3:]
    assert [cid(s) for s in await h.history(graph, cfg, filter={"source": "input"})] == [ids[3], ids[7]]


# -- 4. fork from a past checkpoint --------------------------------------------------------------


async def test_fork_from_a_past_checkpoint_leaves_the_original_branch_intact(h: Harness) -> None:
    calls: Counter = Counter()
    graph = h.compile(build_linear(calls))
    cfg = thread()
    # lists of 4+ items are stored element by element: the forks rewrite that storage too
    original = await h.invoke(graph, {"x": 1, "log": ["i1", "i2", "i3"]}, cfg)
    assert original == {"x": 1, "log": ["i1", "i2", "i3", "a", "b1"]}
    hist = await h.history(graph, cfg)
    final_id = cid(hist[0])
    past = next(s for s in hist if s.next == ("b",))
    assert past.values == {"x": 1, "log": ["i1", "i2", "i3", "a"]}

    finals = {}
    for x in (7, 8):  # two forks of the same checkpoint, writing the same channels
        fork_cfg = await h.update(graph, past.config, {"x": x, "log": [f"edit{x}"]})
        forked = await h.state(graph, fork_cfg)
        assert cid(forked.parent_config) == cid(past)
        assert forked.next == ("b",)
        out = await h.invoke(graph, None, fork_cfg)
        assert out == {"x": x, "log": ["i1", "i2", "i3", "a", f"edit{x}", f"b{x}"]}
        finals[x] = cid(await h.state(graph, cfg))
    assert calls == {"a": 1, "b": 3}

    reader = h.compile(build_linear(Counter()), h.saver())
    assert (await h.state(reader, at(cfg, final_id))).values == original
    assert (await h.state(reader, at(cfg, cid(past)))).values == {"x": 1, "log": ["i1", "i2", "i3", "a"]}
    for x, final in finals.items():
        assert (await h.state(reader, at(cfg, final))).values == {
            "x": x,
            "log": ["i1", "i2", "i3", "a", f"edit{x}", f"b{x}"],
        }
    assert (await h.state(reader, cfg)).values["x"] == 8  # the newest checkpoint is the last fork's
    assert len(await h.history(reader, cfg)) == len(hist) + 4


# -- 5. __copy__ ---------------------------------------------------------------------------------


async def test_update_state_as_copy_duplicates_a_checkpoint(h: Harness) -> None:
    calls: Counter = Counter()
    graph = h.compile(build_linear(calls))
    cfg = thread()
    original = await h.invoke(graph, {"x": 3, "log": ["i1", "i2", "i3"]}, cfg)
    hist = await h.history(graph, cfg)
    past = next(s for s in hist if s.next == ("b",))

    copy_cfg = await h.update(graph, past.config, None, as_node="__copy__")
    assert cid(copy_cfg) not in {cid(s) for s in hist}
    copied = await h.state(h.compile(build_linear(calls), h.saver()), copy_cfg)
    assert copied.values == past.values
    assert copied.next == ("b",)
    assert copied.metadata["source"] == "fork"
    assert copied.metadata["step"] == past.metadata["step"] + 1
    assert cid(copied.parent_config) == cid(past.parent_config)  # a sibling of the original

    out = await h.invoke(graph, None, copy_cfg)
    assert out == original
    assert calls == {"a": 1, "b": 2}  # the copy has no pending writes: b runs again
    newest = await h.state(graph, cfg)
    assert cid(newest.parent_config) == cid(copy_cfg)
    assert (await h.state(graph, at(cfg, cid(hist[0])))).values == original
    assert (await h.state(graph, at(cfg, cid(past)))).next == ("b",)


# -- 6. parallel branches ------------------------------------------------------------------------


class Fan(TypedDict):
    log: Annotated[list[str], operator.add]


async def test_parallel_branches_merge_through_a_reducer(h: Harness) -> None:
    calls: Counter = Counter()

    def node(name: str):
        def run(state: Fan) -> dict:
            calls[name] += 1
            return {"log": [f"{name}:{len(state['log'])}"]}

        return run

    b = StateGraph(Fan)
    for name in ("a", "b1", "b2", "c"):
        b.add_node(name, node(name))
    b.add_edge(START, "a")
    b.add_edge("a", "b1")
    b.add_edge("a", "b2")
    b.add_edge(["b1", "b2"], "c")
    b.add_edge("c", END)
    graph = h.compile(b)
    cfg = thread()

    out = await h.invoke(graph, {"log": ["in"]}, cfg)
    assert out["log"][:2] == ["in", "a:1"]
    assert sorted(out["log"][2:4]) == ["b1:2", "b2:2"]  # both saw the state after a
    assert out["log"][4:] == ["c:4"]  # c saw both branches' writes
    assert calls == {"a": 1, "b1": 1, "b2": 1, "c": 1}

    reader = h.compile(b, h.saver())
    assert (await h.state(reader, cfg)).values == out
    hist = await h.history(reader, cfg)
    fanned = next(s for s in hist if set(s.next) == {"b1", "b2"})
    assert fanned.values == {"log": ["in", "a:1"]}
    joined = next(s for s in hist if s.next == ("c",))
    assert joined.values == {"log": out["log"][:4]}


# -- 7. Send -------------------------------------------------------------------------------------


class MapReduce(TypedDict, total=False):
    items: list[int]
    results: Annotated[list[int], operator.add]
    total: int


async def test_send_fan_out_survives_a_pause_and_aggregates(h: Harness) -> None:
    calls: Counter = Counter()

    def plan(state: MapReduce) -> dict:
        calls["plan"] += 1
        return {"items": [1, 2, 3, 4, 5]}

    def work(arg: dict) -> dict:
        calls["work"] += 1
        return {"results": [arg["item"] ** 2]}

    def collect(state: MapReduce) -> dict:
        calls["collect"] += 1
        return {"total": sum(state["results"])}

    b = StateGraph(MapReduce)
    b.add_node("plan", plan)
    b.add_node("work", work)
    b.add_node("collect", collect)
    b.add_edge(START, "plan")
    b.add_conditional_edges("plan", lambda s: [Send("work", {"item": i}) for i in s["items"]], ["work"])
    b.add_edge("work", "collect")
    b.add_edge("collect", END)
    cfg = thread()

    # pause before the sends run: the five Send packets must be in the store
    await h.invoke(h.compile(b, interrupt_before=["work"]), {"results": []}, cfg)
    assert calls == {"plan": 1}
    graph = h.compile(b, h.saver(), interrupt_before=["work"])
    paused = await h.state(graph, cfg)
    assert paused.next == ("work",) * 5
    assert len({t.id for t in paused.tasks}) == 5

    out = await h.invoke(graph, None, cfg)
    assert sorted(out["results"]) == [1, 4, 9, 16, 25]
    assert out["total"] == 55
    assert calls == {"plan": 1, "work": 5, "collect": 1}
    assert (await h.state(h.compile(b, h.saver()), cfg)).values == out


# -- 8. failure and retry ------------------------------------------------------------------------


async def test_retry_after_a_failure_does_not_rerun_the_successful_sibling(h: Harness) -> None:
    calls: Counter = Counter()
    broken = {"b2_flaky": True}

    def a(state: Fan) -> dict:
        calls["a"] += 1
        return {"log": ["a"]}

    def b1_ok(state: Fan) -> dict:
        calls["b1_ok"] += 1
        return {"log": ["b1_ok"]}

    def b2_flaky(state: Fan) -> dict:
        calls["b2_flaky"] += 1
        if broken["b2_flaky"]:
            raise ValueError("b2 is broken")
        return {"log": ["b2_flaky"]}

    def c(state: Fan) -> dict:
        calls["c"] += 1
        return {"log": ["c"]}

    b = StateGraph(Fan)
    for name, fn in (("a", a), ("b1_ok", b1_ok), ("b2_flaky", b2_flaky), ("c", c)):
        b.add_node(name, fn)
    b.add_edge(START, "a")
    b.add_edge("a", "b1_ok")
    b.add_edge("a", "b2_flaky")
    b.add_edge(["b1_ok", "b2_flaky"], "c")
    b.add_edge("c", END)
    # max_concurrency=1 runs the two siblings of the step one after the other, b1_ok first, so
    # b1_ok has finished (and its writes are committed) before b2_flaky raises: deterministic.
    cfg = {**thread(), "max_concurrency": 1}

    with pytest.raises(ValueError, match="b2 is broken"):
        await h.invoke(h.compile(b), {"log": []}, cfg)
    assert calls == {"a": 1, "b1_ok": 1, "b2_flaky": 1}

    graph = h.compile(b, h.saver())
    failed = await h.state(graph, cfg)
    assert failed.next == ("b2_flaky",)  # b1_ok's writes are stored: it is not due again
    assert failed.values == {"log": ["a", "b1_ok"]}  # get_state applies the stored pending writes
    tasks = {t.name: t for t in failed.tasks}
    assert tasks["b2_flaky"].error is not None and "b2 is broken" in repr(tasks["b2_flaky"].error)
    assert tasks["b1_ok"].error is None and tasks["b1_ok"].result == {"log": ["b1_ok"]}

    broken["b2_flaky"] = False
    out = await h.invoke(graph, None, cfg)
    assert out["log"][0] == "a" and out["log"][-1] == "c"
    assert sorted(out["log"][1:3]) == ["b1_ok", "b2_flaky"]
    assert calls == {"a": 1, "b1_ok": 1, "b2_flaky": 2, "c": 1}


# -- 9. durability -------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
async def test_every_durability_persists_an_interrupted_run(h: Harness, durability: str) -> None:
    calls: Counter = Counter()
    cfg = thread()
    out = await h.invoke(h.compile(build_approval(calls)), {"request": "pay"}, cfg, durability=durability)
    assert [i.value for i in out["__interrupt__"]] == [{"approve": "pay"}]

    graph = h.compile(build_approval(calls), h.saver())
    await assert_paused_at_ask(h, graph, cfg, "pay")
    out = await h.invoke(graph, Command(resume="ok"), cfg, durability=durability)
    assert out == {"request": "pay", "answer": "ok", "log": ["prepare", "ask:ok", "finish"]}
    assert calls == {"prepare": 1, "ask": 2, "finish": 1}

    reader = h.compile(build_approval(), h.saver())
    assert (await h.state(reader, cfg)).values == out
    steps = [s.metadata["step"] for s in await h.history(reader, cfg)]
    # "exit" saves only the checkpoint each run ends on; the others save every step
    assert steps == ([3, 1] if durability == "exit" else [3, 2, 1, 0, -1])


# -- 10. messages --------------------------------------------------------------------------------


class Chat(TypedDict):
    messages: Annotated[list, add_messages]


def build_tool_chat(turn: int) -> StateGraph:
    def agent(state: Chat) -> dict:
        return {
            "messages": [
                AIMessage(
                    "",
                    id=f"ai-{turn}-1",
                    tool_calls=[{"name": "lookup", "args": {"q": f"q{turn}", "n": [1, 2]}, "id": f"call_{turn}"}],
                    usage_metadata={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
                    response_metadata={"model_name": "fake"},
                )
            ]
        }

    def tool(state: Chat) -> dict:
        call = state["messages"][-1].tool_calls[0]
        return {"messages": [ToolMessage(f"result of {call['args']['q']}", tool_call_id=call["id"], id=f"tool-{turn}")]}

    def final(state: Chat) -> dict:
        return {"messages": [AIMessage(f"answer {turn}", id=f"ai-{turn}-2")]}

    b = StateGraph(Chat)
    b.add_node("agent", agent)
    b.add_node("tool", tool)
    b.add_node("final", final)
    b.add_edge(START, "agent")
    b.add_edge("agent", "tool")
    b.add_edge("tool", "final")
    b.add_edge("final", END)
    return b


async def test_message_lists_round_trip_as_message_objects(h: Harness) -> None:
    cfg = thread()
    first = await h.invoke(h.compile(build_tool_chat(1)), {"messages": [HumanMessage("hi", id="h-1")]}, cfg)
    await h.invoke(h.compile(build_tool_chat(2), h.saver()), {"messages": [HumanMessage("again", id="h-2")]}, cfg)

    msgs = (await h.state(h.compile(build_tool_chat(0), h.saver()), cfg)).values["messages"]
    assert [type(m) for m in msgs] == [HumanMessage, AIMessage, ToolMessage, AIMessage] * 2
    assert msgs[:4] == first["messages"]
    assert [m.id for m in msgs] == ["h-1", "ai-1-1", "tool-1", "ai-1-2", "h-2", "ai-2-1", "tool-2", "ai-2-2"]
    assert msgs[5].tool_calls == [
        {"name": "lookup", "args": {"q": "q2", "n": [1, 2]}, "id": "call_2", "type": "tool_call"}
    ]
    assert msgs[5].usage_metadata == {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}
    assert msgs[5].response_metadata == {"model_name": "fake"}
    assert isinstance(msgs[6], ToolMessage) and msgs[6].tool_call_id == "call_2"
    assert msgs[6].content == "result of q2"
    assert [m.content for m in msgs if isinstance(m, AIMessage) and m.content] == ["answer 1", "answer 2"]


# -- 11. DeltaChannel ----------------------------------------------------------------------------


class DeltaChat(TypedDict):
    messages: Annotated[list, DeltaChannel(_messages_delta_reducer, snapshot_frequency=10)]


def build_delta_chat() -> StateGraph:
    def reply(state: DeltaChat) -> dict:
        n = len(state["messages"])  # every turn must see the whole conversation so far
        return {"messages": [AIMessage(f"seen {n}", id=f"ai-{n}")]}

    b = StateGraph(DeltaChat)
    b.add_node("reply", reply)
    b.add_edge(START, "reply")
    b.add_edge("reply", END)
    return b


async def test_delta_channel_messages_over_fifty_turns(h: Harness) -> None:
    saver = h.saver()
    graph = h.compile(build_delta_chat(), saver)
    cfg = thread()
    for turn in range(50):
        await h.invoke(graph, {"messages": [HumanMessage(f"turn {turn}", id=f"h-{turn}")]}, cfg)

    fresh = h.saver()
    state = await h.state(h.compile(build_delta_chat(), fresh), cfg)
    msgs = state.values["messages"]
    assert len(msgs) == 100
    assert [type(m) for m in msgs] == [HumanMessage, AIMessage] * 50
    assert [m.content for m in msgs] == [x for t in range(50) for x in (f"turn {t}", f"seen {2 * t + 1}")]

    # the channel really is a DeltaChannel: most checkpoints store no value for it
    raw = [t.checkpoint["channel_values"].get("messages") for t in fresh.list(cfg)]
    assert any(v is None for v in raw)
    assert any(isinstance(v, _DeltaSnapshot) for v in raw)

    # the saver's own history walk agrees with the base class' default one
    hist = await h.history(graph, cfg, limit=12)
    nontrivial = 0
    for snap in hist:
        mine, ref = await h.delta_history(fresh, snap.config, ["messages"])
        assert mine == ref
        nontrivial += bool(ref["messages"]["writes"])
    assert nontrivial >= 6
    mine, ref = await h.delta_history(fresh, state.config, ["messages"])
    assert mine == ref and "seed" in ref["messages"]
