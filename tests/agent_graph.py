"""The graph the migration and export tests move: a subgraph (a namespace of its own),
messages, an interrupt, a finished thread and a fork; and a thread as LangGraph's public API
returns it, to compare a source with a destination."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt


class State(TypedDict, total=False):
    messages: Annotated[list, add_messages]
    approved: str


def _ask(state: State) -> State:
    answer = interrupt({"question": "approve?"})
    return {"approved": answer, "messages": [AIMessage(f"approved: {answer}")]}


def build(checkpointer: Any) -> Any:
    sub = StateGraph(State)
    sub.add_node("plan", lambda s: {"messages": [AIMessage("planned")]})
    sub.add_edge(START, "plan")
    sub.add_edge("plan", END)
    g = StateGraph(State)
    g.add_node("work", lambda s: {"messages": [AIMessage("working")]})
    g.add_node("sub", sub.compile())
    g.add_node("ask", _ask)
    g.add_edge(START, "work")
    g.add_edge("work", "sub")
    g.add_edge("sub", "ask")
    g.add_edge("ask", END)
    return g.compile(checkpointer=checkpointer)


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def populate(saver: Any) -> None:
    """'paused': waits at the interrupt. 'done': answered, then forked from an early step."""
    g = build(saver)
    g.invoke({"messages": [HumanMessage("hello")]}, cfg("paused"))
    g.invoke({"messages": [HumanMessage("hi")]}, cfg("done"))
    g.invoke(Command(resume="no"), cfg("done"))
    early = [s for s in g.get_state_history(cfg("done")) if s.next == ("sub",)][0]
    g.update_state(early.config, {"approved": "forked"})


def everything(saver: Any, thread: str) -> list[tuple]:
    """A thread as LangGraph's public API returns it, in a stable order."""
    out = []
    for t in saver.list(cfg(thread)):
        conf = t.config["configurable"]
        parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
        out.append((conf["checkpoint_ns"], conf["checkpoint_id"], parent, t.metadata, t.checkpoint, t.pending_writes))
    return sorted(out, key=lambda x: (x[0], x[1]))
