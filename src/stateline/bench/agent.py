"""(b) a realistic agent and (d) the memory it costs.

A compiled LangGraph graph over ``MessagesState``-style state (``add_messages``): each
turn is a user message, then model -> tool -> model, so 4 messages of about 300
characters join the thread per turn and 5 checkpoints are written (the shape of
shared/notes/storage-growth.md). The saver is wrapped in ``TimedSaver``; the saver time
of a turn is the sum of its calls' wall time. Memory is sampled every few turns, from a
baseline taken after one warm-up turn on another thread (``Memory``).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from .backends import TimedSaver, sync_client
from .stats import median, pct

__all__ = ["build_graph", "agent", "text", "warmup_thread"]

_WORDS = (
    "agent state thread checkpoint redis valkey graph node tool model message user answer search "
    "result weather city price order account invoice report summary context memory plan step reply "
    "the a of to and in for with on at by from is are was be this that it as or an"
).split()


def text(seed: str, n: int = 300) -> str:
    """About ``n`` characters of deterministic, distinct text."""
    rng = random.Random(seed)
    out = seed + ":"
    while len(out) < n:
        out += " " + rng.choice(_WORDS)
    return out[:n]


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _turn_of(state: ChatState) -> int:
    return (len(state["messages"]) - 1) // 4 + 1


def model(state: ChatState) -> dict:
    last = state["messages"][-1]
    turn = _turn_of(state)
    if isinstance(last, ToolMessage):
        return {"messages": [AIMessage(content=text(f"answer-{turn}"), id=f"ai-final-{turn}")]}
    call = {"name": "search", "args": {"query": text(f"query-{turn}", 40)}, "id": f"call-{turn}", "type": "tool_call"}
    return {"messages": [AIMessage(content=text(f"think-{turn}"), id=f"ai-call-{turn}", tool_calls=[call])]}


def tool(state: ChatState) -> dict:
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)  # route() leads here only from a model turn with a tool call
    call = last.tool_calls[0]
    turn = _turn_of(state)
    return {"messages": [ToolMessage(content=text(f"tool-{turn}"), tool_call_id=call["id"], id=f"tool-{turn}")]}


def route(state: ChatState) -> str:
    last = state["messages"][-1]
    return "tool" if isinstance(last, AIMessage) and last.tool_calls else END


def build_graph(checkpointer: Any) -> Any:
    g = StateGraph(ChatState)
    g.add_node("model", model)
    g.add_node("tool", tool)
    g.add_edge(START, "model")
    g.add_conditional_edges("model", route, ["tool", END])
    g.add_edge("tool", "model")
    return g.compile(checkpointer=checkpointer)


def _stored_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held in an InMemorySaver's storage: every bytes object in its containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return len(obj)
    if isinstance(obj, str):
        return len(obj.encode())
    if isinstance(obj, dict):
        return sum(_stored_bytes(k, seen) + _stored_bytes(v, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set)):
        return sum(_stored_bytes(x, seen) for x in obj)
    return 0


class Memory:
    """How many bytes a backend's thread costs: Redis ``used_memory`` delta and the sum of
    ``MEMORY USAGE`` of its keys; for local backends their own stored bytes.

    The baseline is taken by ``warmed()``, after a first turn on another thread: the first
    call a server sees costs it a one-time amount (its Lua VM and compiled scripts, a peer's
    search indexes) that would otherwise be spread over the measured thread's turns. That
    amount (with the warm-up turn's own thread) is kept as ``warmup_delta``."""

    def __init__(
        self, backend: Any, saver: Any, url: str | None, tag: str, thread_id: str, sqlite_path: str | None
    ) -> None:
        self.b, self.saver, self.tag, self.thread_id, self.sqlite_path = backend, saver, tag, thread_id, sqlite_path
        self.client = sync_client(url) if url else None
        self.before = self._total()
        self.base = self.before
        self.warmup_delta: int | None = None

    def _used(self) -> int:
        assert self.client is not None
        return int(self.client.info("memory")["used_memory"])

    def _sqlite_size(self) -> int:
        assert self.sqlite_path is not None
        return sum(os.path.getsize(p) for p in (self.sqlite_path, self.sqlite_path + "-wal") if os.path.exists(p))

    def _inmemory_bytes(self, thread_id: str | None = None) -> int:
        """Bytes an InMemorySaver holds, for every thread or for ``thread_id`` only (its
        storage is keyed by thread, its writes and blobs by tuples starting with it)."""
        s = self.saver
        if thread_id is None:
            return _stored_bytes([s.storage, s.writes, s.blobs])
        parts = [{k: v for k, v in d.items() if k[0] == thread_id} for d in (s.writes, s.blobs)]
        return _stored_bytes([s.storage.get(thread_id, {}), *parts])

    def _total(self) -> int:
        """What the backend holds for every thread: the figure the warm-up delta is taken of."""
        if self.client is not None:
            return self._used()
        if self.sqlite_path:
            return self._sqlite_size()
        return self._inmemory_bytes()

    @property
    def warmup_field(self) -> str:
        return "warmup_used_memory_delta" if self.client is not None else "warmup_stored_bytes_delta"

    def warmed(self) -> None:
        """Takes the baseline; call it once the warm-up turn is done."""
        self.base = self._total()
        self.warmup_delta = self.base - self.before

    def sample(self, with_keys: bool) -> dict:
        if self.client is not None:
            out: dict = {"used_memory_delta": self._used() - self.base}
            if with_keys:
                keys = self.b.redis_keys(self.client, self.tag, self.thread_id)
                pipe = self.client.pipeline(transaction=False)
                for k in keys:
                    pipe.memory_usage(k, samples=0)
                usage = pipe.execute()
                out["keys"] = sum(1 for x in usage if x is not None)  # (a candidate key may not exist)
                out["memory_usage_sum"] = sum(x or 0 for x in usage)
            return out
        if self.sqlite_path:
            # File pages are shared by threads: the thread's figure is the growth since the warm-up.
            return {"stored_bytes": self._sqlite_size() - self.base, "what": "SQLite file + WAL growth"}
        return {"stored_bytes": self._inmemory_bytes(self.thread_id), "what": "bytes held by InMemorySaver"}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def _busy(calls: list[tuple[str, float, float, float]]) -> float:
    """Seconds during which at least one saver call was running (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted((c[3], c[3] + c[1]) for c in calls):
        if start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def _turn_row(turn: int, wall: float, calls: list[tuple[str, float, float, float]]) -> dict:
    """saver_ms: the time saver calls were running (their union: LangGraph overlaps its
    put_writes calls with each other and with the graph's own work); saver_sum_ms: the sum
    of every call's wall time; saver_cpu_ms: CPU time of the calling threads."""
    row: dict[str, Any] = {
        "turn": turn,
        "wall_ms": wall * 1e3,
        "saver_ms": _busy(calls) * 1e3,
        "saver_sum_ms": 0.0,
        "saver_cpu_ms": 0.0,
        "calls": {},
    }
    for name, w, c, _start in calls:
        row["saver_sum_ms"] += w * 1e3
        row["saver_cpu_ms"] += c * 1e3
        agg = row["calls"].setdefault(name, [0, 0.0])
        agg[0] += 1
        agg[1] += w * 1e3
    return row


def _summarize(rows: list[dict], marks: tuple[int, ...]) -> dict:
    def window(upto: int) -> list[dict]:  # the 10 turns ending at ``upto`` (fewer in quick mode)
        w = max(1, min(10, upto // 5))
        return [r for r in rows if upto - w < r["turn"] <= upto]

    saver = [r["saver_ms"] for r in rows]
    out: dict[str, Any] = {
        "turns": len(rows),
        "saver_ms_per_turn": {"median": median(saver), "p99": pct(saver, 99), "mean": sum(saver) / len(saver)},
        "saver_cpu_ms_per_turn": {"median": median([r["saver_cpu_ms"] for r in rows])},
        "wall_ms_per_turn": {"median": median([r["wall_ms"] for r in rows])},
        "at": {},
    }
    for m in marks:
        w = window(m)
        if len(w) and w[-1]["turn"] == m:
            puts = [r["calls"].get("put", [0, 0.0]) for r in w]
            out["at"][str(m)] = {
                "saver_ms_per_turn": median([r["saver_ms"] for r in w]),
                "saver_sum_ms_per_turn": median([r["saver_sum_ms"] for r in w]),
                "saver_cpu_ms_per_turn": median([r["saver_cpu_ms"] for r in w]),
                "wall_ms_per_turn": median([r["wall_ms"] for r in w]),
                "put_ms": median([p[1] / p[0] for p in puts if p[0]]),
                "window": [w[0]["turn"], w[-1]["turn"]],
            }
    return out


def warmup_thread(thread_id: str) -> str:
    """The thread the one warm-up turn runs on, before the measured thread's first turn."""
    return f"{thread_id}-warmup"


async def _turn(app: Any, backend: Any, thread_id: str, turn: int) -> None:
    """One chat turn: the user's message ``turn``, then model -> tool -> model."""
    inp = {"messages": [HumanMessage(content=text(f"user-{turn}"), id=f"human-{turn}")]}
    config = {"configurable": {"thread_id": thread_id}}
    if backend.is_async:
        await app.ainvoke(inp, config, durability="sync")
    else:
        app.invoke(inp, config, durability="sync")


async def agent(
    backend: Any,
    saver: Any,
    thread_id: str,
    turns: int,
    marks: tuple[int, ...],
    sample_every: int,
    budget_s: float,
    memory: Memory,
    tick: Callable[[], None],
) -> dict:
    """Runs the chat for ``turns`` turns (or until ``budget_s``), sampling memory, after a
    one-turn warm-up on thread ``warmup_thread(thread_id)`` with the same saver (not timed:
    its calls come before the first row's)."""
    timed = TimedSaver(saver)
    app = build_graph(timed)
    await _turn(app, backend, warmup_thread(thread_id), 1)
    memory.warmed()
    config = {"configurable": {"thread_id": thread_id}}
    rows: list[dict] = []
    mem: dict[str, dict] = {}
    t_start = time.perf_counter()
    stopped = None
    for turn in range(1, turns + 1):
        first = len(timed.calls)
        t0 = time.perf_counter()
        await _turn(app, backend, thread_id, turn)
        rows.append(_turn_row(turn, time.perf_counter() - t0, timed.calls[first:]))
        if turn % sample_every == 0 or turn in marks:
            mem[str(turn)] = memory.sample(with_keys=turn in marks)
        tick()
        if time.perf_counter() - t_start > budget_s and turn < turns:
            stopped = f"stopped after {turn} of {turns} turns: over the budget of {budget_s:.0f} s"
            for _ in range(turns - turn):
                tick()
            break
    state = await app.aget_state(config) if backend.is_async else app.get_state(config)
    n_messages = len(state.values["messages"])
    out = _summarize(rows, marks)
    out.update(
        {
            "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
            "memory": mem,
            "messages_read_back": n_messages,
            "messages_expected": 4 * len(rows),
            "warmup_thread_id": warmup_thread(thread_id),
            memory.warmup_field: memory.warmup_delta,
        }
    )
    if stopped:
        out["stopped"] = stopped
    return out
