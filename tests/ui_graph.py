"""A real LangGraph graph for the inspector's tests: a subgraph, a tool call, an interrupt
and a fork (time travel from an earlier checkpoint with a changed value)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt

THREAD = "trip-planner"


class Research(TypedDict):
    city: str
    notes: Annotated[list[str], operator.add]


class Trip(TypedDict):
    city: str
    notes: Annotated[list[str], operator.add]
    messages: Annotated[list[AnyMessage], add_messages]
    approved: bool


def _look_up(state: Research) -> dict[str, Any]:
    return {"notes": [f"{state['city']}: museums, food, a river walk"]}


def _research() -> Any:
    g = StateGraph(Research)
    g.add_node("look_up", _look_up)
    g.add_edge(START, "look_up")
    g.add_edge("look_up", END)
    return g.compile()


def _plan(state: Trip) -> dict[str, Any]:
    city = state["city"]
    call = {
        "name": "book_hotel",
        "args": {"city": city, "nights": 2},
        "id": f"call-{city.lower()}",
        "type": "tool_call",
    }
    return {"messages": [AIMessage(content=f"I will book a hotel in {city}.", tool_calls=[call])]}


def _approve(state: Trip) -> dict[str, Any]:
    answer = interrupt({"question": f"Book 2 nights in {state['city']}?"})
    return {"approved": answer == "yes"}


def _book(state: Trip) -> dict[str, Any]:
    call = state["messages"][-1].tool_calls[0]
    return {"messages": [ToolMessage(content=f"Booked in {state['city']}.", tool_call_id=call["id"])]}


def build(saver: Any) -> Any:
    g = StateGraph(Trip)
    g.add_node("research", _research())
    g.add_node("plan", _plan)
    g.add_node("approve", _approve)
    g.add_node("book", _book)
    g.add_edge(START, "research")
    g.add_edge("research", "plan")
    g.add_edge("plan", "approve")
    g.add_edge("approve", "book")
    g.add_edge("book", END)
    return g.compile(checkpointer=saver)


def forked_interrupted_thread(saver: Any, thread: str = THREAD) -> dict[str, Any]:
    """Runs to the interrupt with city Lisbon, then forks from the checkpoint before the
    research with city Porto and runs that branch to its interrupt too. Returns the two
    branch tips' configs."""
    app = build(saver)
    cfg = {"configurable": {"thread_id": thread}}
    app.invoke({"city": "Lisbon", "notes": [], "messages": [HumanMessage(content="Plan a weekend away.")]}, cfg)
    first = app.get_state(cfg).config
    history = list(app.get_state_history(cfg))
    start = next(s for s in history if s.next == ("research",))
    forked = app.update_state(start.config, {"city": "Porto"})
    app.invoke(None, forked)
    second = app.get_state(cfg).config
    return {"lisbon": first, "porto": second}
