"""The demo: an agent that calls a tool, waits for a human's approval, and is resumed by
a second process from the checkpoint in the embedded server.

The model is scripted (no network, no API key): it asks for the weather tool, then
answers with what the tool returned.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolCall, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

from .langgraph import RedisSaver


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def weather(city: str) -> str:
    return f"It is 21°C and sunny in {city}."


def model(state: State) -> dict[str, Any]:
    """A scripted model: asks for a tool first, then answers from the tool's result."""
    last = state["messages"][-1]
    if isinstance(last, ToolMessage):
        return {"messages": [AIMessage(content=f"Here is the forecast: {last.content}")]}
    call = {"name": "weather", "args": {"city": "Lisbon"}, "id": f"call-{uuid.uuid4().hex[:8]}"}
    return {"messages": [AIMessage(content="", tool_calls=[call])]}


def _requested_call(state: State) -> ToolCall:
    """The tool call of the model's last message (the graph routes here only with one)."""
    last = state["messages"][-1]
    assert isinstance(last, AIMessage) and last.tool_calls
    return last.tool_calls[0]


def approve(state: State) -> dict[str, Any]:
    call = _requested_call(state)
    answer = interrupt({"question": f"Run {call['name']}({call['args']})?"})
    if answer != "yes":
        return {"messages": [ToolMessage(content="The user declined.", tool_call_id=call["id"])]}
    return {}


def tools(state: State) -> dict[str, Any]:
    call = _requested_call(state)
    return {"messages": [ToolMessage(content=weather(**call["args"]), tool_call_id=call["id"])]}


def after_model(state: State) -> str:
    return "approve" if getattr(state["messages"][-1], "tool_calls", None) else END


def after_approval(state: State) -> str:
    return "model" if isinstance(state["messages"][-1], ToolMessage) else "tools"


def build(saver: RedisSaver) -> Any:
    g = StateGraph(State)
    g.add_node("model", model)
    g.add_node("approve", approve)
    g.add_node("tools", tools)
    g.add_edge(START, "model")
    g.add_conditional_edges("model", after_model, ["approve", END])
    g.add_conditional_edges("approve", after_approval, ["tools", "model"])
    g.add_edge("tools", "model")
    return g.compile(checkpointer=saver)


def start(url: str | None, data_dir: str | None, out: Any = print) -> str:
    """First process: run until the approval interrupt. Returns the thread id."""
    thread_id = f"demo-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": thread_id}}
    with RedisSaver.from_url(url, data_dir=data_dir) as saver:
        result = build(saver).invoke({"messages": [HumanMessage(content="What's the weather in Lisbon?")]}, config)
    out(f"[process 1] thread {thread_id}: paused for approval: {result['__interrupt__'][0].value['question']}")
    return thread_id


def resume(thread_id: str, url: str | None, data_dir: str | None, out: Any = print) -> list[str]:
    """Second process: approve, finish the run, print the history. Returns the final answer."""
    config = {"configurable": {"thread_id": thread_id}}
    with RedisSaver.from_url(url, data_dir=data_dir) as saver:
        app = build(saver)
        pending = app.get_state(config).next
        out(f"[process 2] resuming {thread_id} at {pending} with the answer 'yes'")
        result = app.invoke(Command(resume="yes"), config)
        out(f"[process 2] final answer: {result['messages'][-1].content}")
        out("[process 2] history, newest first:")
        for snap in app.get_state_history(config):
            md = snap.metadata or {}
            out(
                f"  step {md.get('step'):>2}  {md.get('source', ''):<6}  next={list(snap.next)}  messages={len(snap.values.get('messages', []))}"
            )
    return [m.content for m in result["messages"]]


def run(url: str | None = None, data_dir: str | None = None) -> None:
    thread_id = start(url, data_dir)
    cmd = [sys.executable, "-m", "stateline", "demo", "--resume", thread_id]
    env = dict(os.environ)
    if url:
        env["STATELINE_URL"] = url  # not on the command line: every user of the machine sees that (ps)
    if data_dir:
        cmd += ["--data-dir", data_dir]
    subprocess.run(cmd, check=True, env=env)
