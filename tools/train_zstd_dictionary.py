"""Trains a zstd dictionary for stateline's compression (src/stateline/dictionaries/<id>.zdict).

    python tools/train_zstd_dictionary.py 1        # writes src/stateline/dictionaries/1.zdict

How dictionary 1 was made: a LangGraph agent (a model node that calls a tool, a tool
node, messages with ids, tool calls, response and usage metadata, as chat models return
them) runs 120 threads of 8 turns on an embedded Valkey through RedisSaver with
compression off; its text is drawn from the docstrings of the Python standard library (so
it shares no text with the benchmark's chat). Every stored list item, channel value, write
value and checkpoint record body is opened and given to ``zstandard.train_dictionary``
(32 KB). A shipped dictionary is part of the stored format: never change or remove one,
train the next id instead, and add it beside the others.
"""

from __future__ import annotations

import inspect
import json
import random
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Annotated, Any, TypedDict

import zstandard
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from stateline import EmbeddedServer
from stateline.keys import place
from stateline.langgraph import RedisSaver

SIZE = 32 * 1024


def paragraphs() -> list[str]:
    """Docstring paragraphs of the standard library, in a fixed order."""
    out: list[str] = []
    warnings.simplefilter("ignore")  # (deprecated modules say so when imported)
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"):
            continue
        try:
            mod = __import__(name)
        except Exception:  # noqa: BLE001 - any module that does not import here is skipped
            continue
        for _, obj in sorted(vars(mod).items()):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc:
                out += [p.replace("\n", " ") for p in doc.split("\n\n") if 40 <= len(p) <= 900]
        if len(out) > 6000:
            break
    return out


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def graph(saver: RedisSaver, rng: random.Random, texts: list[str]) -> Any:
    def model(state: State) -> dict:
        last = state["messages"][-1]
        usage = {"input_tokens": rng.randint(50, 4000), "output_tokens": rng.randint(5, 800)}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        meta = {"model_name": rng.choice(["gpt-4o-mini", "claude-sonnet-4", "llama-3.1-70b"]), "finish_reason": "stop"}
        if isinstance(last, ToolMessage) or rng.random() < 0.3:
            return {
                "messages": [
                    AIMessage(
                        content=rng.choice(texts),
                        id=f"run-{uuid.UUID(int=rng.getrandbits(128))}",
                        response_metadata=meta,
                        usage_metadata=usage,
                    )
                ]
            }
        call = {
            "name": rng.choice(["search", "lookup", "calculator", "fetch_page"]),
            "args": {"query": rng.choice(texts)[:60]},
            "id": f"call_{rng.getrandbits(64):016x}",
            "type": "tool_call",
        }
        return {
            "messages": [
                AIMessage(
                    content="",
                    id=f"run-{uuid.UUID(int=rng.getrandbits(128))}",
                    tool_calls=[call],
                    response_metadata={**meta, "finish_reason": "tool_calls"},
                    usage_metadata=usage,
                )
            ]
        }

    def tool(state: State) -> dict:
        call = state["messages"][-1].tool_calls[0]
        result = json.dumps({"results": [rng.choice(texts)[:200] for _ in range(rng.randint(1, 3))]})
        return {
            "messages": [
                ToolMessage(
                    content=result,
                    tool_call_id=call["id"],
                    name=call["name"],
                    id=str(uuid.UUID(int=rng.getrandbits(128))),
                )
            ]
        }

    def route(state: State) -> str:
        last = state["messages"][-1]
        return "tool" if isinstance(last, AIMessage) and last.tool_calls else END

    g = StateGraph(State)
    g.add_node("model", model)
    g.add_node("tool", tool)
    g.add_edge(START, "model")
    g.add_conditional_edges("model", route, ["tool", END])
    g.add_edge("tool", "model")
    return g.compile(checkpointer=saver)


def samples(url: str, texts: list[str]) -> list[bytes]:
    rng = random.Random(1)
    saver = RedisSaver(url, prefix="train:", compression=False)
    app = graph(saver, rng, texts)
    for t in range(120):
        cfg = {"configurable": {"thread_id": f"train-{t}"}}
        for _ in range(8):
            app.invoke(
                {"messages": [HumanMessage(content=rng.choice(texts), id=str(uuid.UUID(int=rng.getrandbits(128))))]},
                cfg,
            )
    client = saver._conn.sync
    codec = saver.engine.codec
    out = []
    for t in range(120):
        thread = f"train-{t}"
        for field, value in client.hscan_iter(saver.engine.keys(thread).data, count=1000):
            kind = field[:2]
            if kind == b"e:":
                out.append(codec.open(value, place(thread, field)))
            elif kind == b"b:" and value[:1] == b"v":
                out.append(codec.open(value[1:], place(thread, field)))
            elif kind == b"c:":
                n = int.from_bytes(value[:4], "big")
                out.append(codec.open(value[4 + n :], place(thread, field)))
    saver.close()
    return out


def main() -> None:
    dict_id = int(sys.argv[1])
    texts = paragraphs()
    with tempfile.TemporaryDirectory() as d:
        server = EmbeddedServer(d)
        try:
            data = samples(server.url, texts)
        finally:
            server.stop()
    trained = zstandard.train_dictionary(SIZE, data, dict_id=dict_id, level=3)
    target = Path(__file__).resolve().parents[1] / "src" / "stateline" / "dictionaries" / f"{dict_id}.zdict"
    target.write_bytes(trained.as_bytes())
    print(f"{len(data)} samples, {sum(map(len, data))} bytes -> {target} ({len(trained.as_bytes())} bytes)")


if __name__ == "__main__":
    main()
