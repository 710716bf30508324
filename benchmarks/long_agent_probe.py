"""The chat agent of the benchmark driven to many turns on one thread, with SLOWLOG.

``python benchmarks/long_agent_probe.py [turns]`` (default 1,000): bytes the server receives
per turn around turn 250 and at the end, then the longest server command and the client
time of each read and maintenance operation on the long thread. Single-backend; the
side-by-side figures are ``stateline bench --workloads long`` (docs/benchmarks.md).
"""

import sys
import tempfile
import time

import redis
from langchain_core.messages import HumanMessage

from stateline.bench.agent import build_graph, text
from stateline.embedded import EmbeddedServer
from stateline.langgraph import RedisSaver

TURNS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
srv = EmbeddedServer(tempfile.mkdtemp(prefix="agentprobe-"))
url = srv.url
c = redis.Redis.from_url(url)
saver = RedisSaver(url, prefix="a:")
app = build_graph(saver)
cfg = {"configurable": {"thread_id": "chat"}}
c.config_set("slowlog-log-slower-than", 0)
c.config_set("slowlog-max-len", 1000000)


def slow():
    log = c.slowlog_get(1000000)
    c.slowlog_reset()
    top = max(log, key=lambda e: e["duration"]) if log else None
    return (top["duration"] / 1000, top["command"][:20]) if top else (0, b"")


marks = {}
t0 = time.time()
for turn in range(1, TURNS + 1):
    if turn in (251, TURNS - 9):
        c.slowlog_reset()
        b0 = c.info("stats")["total_net_input_bytes"]
        tt = time.time()
    app.invoke({"messages": [HumanMessage(content=text(f"user-{turn}"), id=f"human-{turn}")]}, cfg, durability="sync")
    if turn in (260, TURNS):
        marks[turn] = (
            (c.info("stats")["total_net_input_bytes"] - b0) / 10 / 1024,
            slow(),
            (time.time() - tt) / 10 * 1000,
        )
print("built", TURNS, "turns in", round(time.time() - t0), "s")
for t, (kb, s, ms) in marks.items():
    print(f"turns {t - 9}-{t}: {kb:.1f} KB in per turn, longest command {s[0]:.2f} ms {s[1]!r}, {ms:.0f} ms per turn")


def probe(label, fn):
    c.slowlog_reset()
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    d, cmd = slow()
    print(f"{label:32} server max {d:6.2f} ms {cmd!r:24} client {dt * 1000:8.1f} ms")


probe("get_state", lambda: app.get_state(cfg))
probe("get_state_history(limit=10)", lambda: list(app.get_state_history(cfg, limit=10)))
probe("list(filter, limit=1)", lambda: list(saver.list(cfg, filter={"source": "input"}, limit=1)))
probe("list(limit=100)", lambda: list(saver.list(cfg, limit=100)))
probe("copy_thread", lambda: saver.copy_thread("chat", "chat-copy"))
probe("delete_for_runs(none)", lambda: saver.delete_for_runs(["nope"]))
probe("prune(keep_last=10)", lambda: saver.prune(["chat-copy"], keep_last=10))
probe("delete_thread", lambda: saver.delete_thread("chat-copy"))
srv.stop()
