"""Where stateline's ``put`` spends its time on workload (b), the 200-turn agent chat.

``python benchmarks/profile_put.py [--turns 200] [--saver stateline|inmemory|lcr]``

Runs the agent of ``stateline.bench.agent`` on a server of its own and profiles, with
cProfile, only the saver's ``put`` calls (each call in the thread LangGraph runs it in),
then prints the functions that take the time and a breakdown by kind of work.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import tempfile
import time
from typing import Any

from langchain_core.messages import HumanMessage

from stateline.bench.agent import build_graph, text
from stateline.bench.backends import BACKENDS, Env, TimedSaver
from stateline.bench.servers import Server, module_paths

# (label, predicate on (file, function name)): cumulative time of the outermost match
KINDS = (
    ("serde.dumps_typed (msgpack of values, checkpoint, metadata)", lambda f, n: n == "dumps_typed"),
    ("list items: fingerprints, cache, new items (ItemCache.address)", lambda f, n: n == "address" and "elements" in f),
    ("blake2b digests of list elements", lambda f, n: n == "digest" and "stateline" in f),
    ("redis-py: send + wait for the server (EVALSHA)", lambda f, n: n == "execute_command" and "redis" in f),
    ("LangGraph -> Snapshot (_convert.snapshot)", lambda f, n: n == "snapshot" and "stateline" in f),
    ("record packing (pack_record)", lambda f, n: n == "pack_record"),
    ("JSON.SET / search (lcr)", lambda f, n: n in ("json", "set") and "redis" in f and "commands" in f),
)


class Profiled(TimedSaver):
    """TimedSaver whose ``put`` calls run under a fresh cProfile.Profile each."""

    def __init__(self, inner: Any, stats: list[pstats.Stats], calls: list | None = None) -> None:
        super().__init__(inner, calls)
        self.stats = stats

    def with_allowlist(self, extra_allowlist: Any) -> Profiled:
        inner = self.inner.with_allowlist(extra_allowlist)
        return self if inner is self.inner else Profiled(inner, self.stats, self.calls)

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        prof = cProfile.Profile()
        prof.enable()
        try:
            return super().put(config, checkpoint, metadata, new_versions)
        finally:
            prof.disable()
            self.stats.append(pstats.Stats(prof))


def outermost(stats: pstats.Stats, match: Any) -> float:
    """Cumulative seconds of functions matching ``match``, not counting matches called by matches."""
    total = 0.0
    for (file, _line, name), (_cc, _nc, _tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if not match(file, name):
            continue
        inside = sum(v[3] for (cf, _cl, cn), v in callers.items() if match(cf, cn))
        total += ct - inside
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--saver", default="stateline", choices=["stateline", "stateline-shallow", "inmemory", "lcr"])
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    b = BACKENDS[args.saver]
    with Server("plain") as plain, Server("modules", module_paths()) as mods:
        saver = b.open(Env(plain.url, mods.url, tempfile.mkdtemp()), "prof")
        collected: list[pstats.Stats] = []
        timed = Profiled(saver, collected)
        app = build_graph(timed)
        config = {"configurable": {"thread_id": "profiled-chat"}}
        t0 = time.perf_counter()
        for turn in range(1, args.turns + 1):
            inp = {"messages": [HumanMessage(content=text(f"user-{turn}"), id=f"human-{turn}")]}
            app.invoke(inp, config, durability="sync")
        wall = time.perf_counter() - t0
        b.close(saver)
    puts = [c for c in timed.calls if c[0] == "put"]
    put_s = sum(c[1] for c in puts)
    stats = collected[0]
    for s in collected[1:]:
        stats.add(s)
    print(f"{args.saver}: {args.turns} turns in {wall:.1f} s; {len(puts)} puts, {put_s * 1e3:.0f} ms in put (profiled)")
    print(f"saver time per turn (all calls, profiled puts): {sum(c[1] for c in timed.calls) / args.turns * 1e3:.2f} ms")
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"\nprofiled time inside put: {total:.3f} s; by kind of work (outermost calls):")
    for label, match in KINDS:
        t = outermost(stats, match)
        if t:
            print(f"  {label:<62} {t:8.3f} s  {t / total:6.1%}")
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(args.top)
        print(f"\n--- top {args.top} by {key} ---")
        print(
            "\n".join(re.sub(r"\S*/site-packages/", "", line) for line in out.getvalue().splitlines() if line.strip())
        )


if __name__ == "__main__":
    main()
