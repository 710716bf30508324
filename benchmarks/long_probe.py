"""The longest server command of each operation on one long thread, from SLOWLOG.

``python benchmarks/long_probe.py [checkpoints] [messages per checkpoint]`` (default
2,500 x 16 = 40,000 messages) builds one thread through the saver's public ``put_writes`` /
``put`` (each checkpoint carries the whole, growing list, as LangGraph's does), then runs
each operation once with ``slowlog-log-slower-than 0`` and prints its client time and the
three longest server commands it caused. A quick, single-backend complement to
``stateline bench --workloads long`` (which compares with InMemorySaver and
langgraph-checkpoint-redis): see docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from stateline.embedded import EmbeddedServer
from stateline.langgraph import RedisSaver


def message(role: str, text: str) -> dict[str, str]:
    return {"role": role, "content": text + " " + "x" * 250, "id": str(uuid.uuid4())}


def main(checkpoints: int, per: int) -> None:
    server = EmbeddedServer(tempfile.mkdtemp(prefix="stateline-probe-"))
    url = server.url
    client = redis.Redis.from_url(url)
    saver = RedisSaver(url, prefix="p:")
    thread = {"configurable": {"thread_id": "long", "checkpoint_ns": ""}}
    cfg: Any = dict(thread)
    messages: list[dict[str, str]] = []
    started = time.time()

    def step(i: int, extra: list[dict[str, str]], version: str) -> None:
        nonlocal cfg, messages
        messages = messages + extra
        cp = empty_checkpoint()
        cp["id"] = str(uuid6())
        cp["channel_values"] = {"messages": messages, "step": i}
        cp["channel_versions"] = {"messages": version, "step": version}
        if "checkpoint_id" in cfg["configurable"]:
            saver.put_writes(cfg, [("messages", extra)], f"task-{i}")
        md = {"step": i, "source": "loop", "run_id": f"run-{i // 25}"}
        cfg = saver.put(cfg, cp, md, {"messages": version, "step": version})

    for i in range(checkpoints):
        step(i, [message("user", f"turn {i} {k}") for k in range(per)], f"{i + 1:032}.0")
    print(f"built {checkpoints} checkpoints, {len(messages)} messages in {time.time() - started:.0f} s")

    def probe(label: str, fn: Callable[[], Any]) -> None:
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 100000)
        client.slowlog_reset()
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        top = sorted(client.slowlog_get(100000), key=lambda e: -e["duration"])[:3]
        worst = ", ".join(f"{e['duration'] / 1000:.2f} ms {e['command'][:24]!r}" for e in top)
        print(f"{label:34} client {dt * 1000:9.1f} ms | longest server commands: {worst}")

    def warm_step() -> None:
        step(
            checkpoints + 1,
            [message("user", "more") for _ in range(4)],
            f"{checkpoints + 9:032}.{uuid.uuid4().hex[:4]}",
        )

    probe("get_tuple (items fetched)", lambda: saver.get_tuple(thread))
    probe("get_tuple (warm)", lambda: saver.get_tuple(thread))
    probe("list(limit=10)", lambda: list(saver.list(thread, limit=10)))
    probe("list(filter, limit=1)", lambda: list(saver.list(thread, filter={"step": 3}, limit=1)))
    probe("a step (put_writes + put), warm", warm_step)
    fresh = RedisSaver(url, prefix="p:")
    probe("put from a process new to it", lambda: fresh.put(cfg, _fork_of(messages), {"step": -1}, {}))
    probe("delete_for_runs(one run)", lambda: saver.delete_for_runs(["run-1"]))
    probe("copy_thread", lambda: saver.copy_thread("long", "copy"))
    probe("prune(keep_last=10)", lambda: saver.prune(["long"], keep_last=10))
    probe("get_tuple after prune", lambda: saver.get_tuple(thread))
    probe("a step after prune", warm_step)
    probe("delete_thread", lambda: saver.delete_thread("long"))
    server.stop()


def _fork_of(messages: list[dict[str, str]]) -> Any:
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = {"messages": messages + [message("user", "cold")], "step": -1}
    cp["channel_versions"] = {"messages": "cold", "step": "cold"}
    return cp


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2500, int(sys.argv[2]) if len(sys.argv) > 2 else 16)
