"""A small llmfy chat flow, run unchanged on llmfy's own RedisCheckpointer ("llmfy") or on
stateline's drop-in ("stateline"). Also a script, so a turn can run (and crash, or run with
a clock ahead) in a process of its own:

    python -m tests.llmfy_flow <url> <prefix> <impl> <session> <text> [crash|ahead]
"""

from __future__ import annotations

import asyncio
import operator
import os
import sys
from datetime import datetime, timedelta
from typing import Annotated, Any, TypedDict

from llmfy.flow_engine import END, START, FlowEngine


class Chat(TypedDict, total=False):
    # Bare `list`: llmfy 0.10 rebuilds typed fields with isinstance(), which refuses Any.
    messages: Annotated[list, operator.add]  # type: ignore[type-arg]
    turns: int
    notes: list  # type: ignore[type-arg]


CRASH = "CRASH_IN_REPLY"


def think(state: Chat) -> dict[str, Any]:
    last = state["messages"][-1]["content"]
    return {"notes": [*state.get("notes", []), f"thought about {last}"]}


def reply(state: Chat) -> dict[str, Any]:
    if os.environ.get(CRASH):
        os._exit(17)  # the process dies between two nodes: think is saved, reply is not
    last = state["messages"][-1]["content"]
    return {"messages": [{"role": "assistant", "content": f"echo {last}"}], "turns": state.get("turns", 0) + 1}


def checkpointer(impl: str, url: str, prefix: str) -> Any:
    if impl == "stateline":
        from stateline.llmfy import RedisCheckpointer
    else:
        from llmfy.flow_engine.checkpointer.redis_checkpointer import RedisCheckpointer  # type: ignore[no-redef]
    return RedisCheckpointer(url, prefix=prefix)


def flow(cp: Any) -> Any:
    engine = FlowEngine(Chat, checkpointer=cp)
    engine.add_node("think", think)
    engine.add_node("reply", reply)
    engine.add_edge(START, "think")
    engine.add_edge("think", "reply")
    engine.add_edge("reply", END)
    return engine.build()


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def _clock_ahead(seconds: float) -> None:
    """llmfy stamps checkpoints with its module's `datetime.now(UTC)`: make it run ahead."""

    class Ahead(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + timedelta(seconds=seconds)

    for name in ("llmfy.flow_engine.flow_engine", "llmfy.flow_engine.execution.engine_loop"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "datetime"):
            module.datetime = Ahead  # type: ignore[attr-defined]


async def _main(url: str, prefix: str, impl: str, session: str, text: str, how: str) -> None:
    if how == "crash":
        os.environ[CRASH] = "1"
    if how == "ahead":
        _clock_ahead(60)
    cp = checkpointer(impl, url, prefix)
    result = await flow(cp).invoke(user(text) if text else None, session_id=session)
    print(result["turns"])
    await cp.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(_main(*args[:5], args[5] if len(args) > 5 else ""))
