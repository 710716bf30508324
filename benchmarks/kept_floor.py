"""``put`` against two floors: redis-py's own ``EVALSHA`` call, and the same call on a
connection kept between calls, as stateline sends its scripts (see src/stateline/held.py).

``python benchmarks/kept_floor.py [--n 3000] [--rounds 3]``

The floor of ``stateline bench`` is redis-py's ``client.evalsha``: a pool checkout with a
socket poll, metrics and a check-in on every call. stateline skips those for its script
calls, so part of what it gains over that floor is transport, not less work. This prints
both ratios, every sample of each kind taken in turn in one loop, sync and asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import redis
import redis.asyncio as aredis

from stateline.bench.backends import FLOOR_SCRIPT
from stateline.bench.servers import Server
from stateline.bench.workloads import Api, floor_payload, small_checkpoint
from stateline.held import held
from stateline.langgraph import AsyncRedisSaver, AsyncShallowRedisSaver, RedisSaver, ShallowRedisSaver

KINDS = ("floor: redis-py evalsha", "floor: kept connection", "put (full)", "put (shallow)")


def report(title: str, samples: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    print(f"\n{title}")
    for k in KINDS:
        print(
            f"  {k:26s} {med[k]:7.1f} µs   x redis-py floor {med[k] / med[KINDS[0]]:4.2f}   x kept floor {med[k] / med[KINDS[1]]:4.2f}"
        )


def checkpoints(api: Api, n: int) -> list[tuple[dict, dict, dict]]:
    out, ver = [], None
    for i in range(n):
        cp, md, nv = small_checkpoint(api, i, ver)
        ver = nv["input"]
        out.append((cp, md, nv))
    return out


def sync_run(url: str, n: int, rounds: int) -> None:
    client = redis.Redis.from_url(url)
    sha = client.script_load(FLOOR_SCRIPT)
    record, value = floor_payload()
    kept = held(client)
    savers = {"put (full)": RedisSaver(url, prefix="kf:"), "put (shallow)": ShallowRedisSaver(url, prefix="kfs:")}
    configs = {
        k: s.put({"configurable": {"thread_id": "t"}}, *small_checkpoint(Api(s, False), 0, None))
        for k, s in savers.items()
    }
    samples: dict[str, list[float]] = {k: [] for k in KINDS}
    clock = time.perf_counter
    for r in range(rounds):
        todo = {k: checkpoints(Api(s, False), n) for k, s in savers.items()}
        for i in range(n):
            args = ("EVALSHA", sha, 2, "floor:{k}:d", "floor:{k}:i", f"f:{r}:{i}", record, f"b:{r}:{i}", value)
            t = clock()
            client.execute_command(*args)
            samples[KINDS[0]].append(clock() - t)
            t = clock()
            kept.call(args)
            samples[KINDS[1]].append(clock() - t)
            for k, saver in savers.items():
                t = clock()
                saver.put(configs[k], *todo[k][i])
                samples[k].append(clock() - t)
    report("sync (redis.Redis)", samples)


async def async_run(url: str, n: int, rounds: int) -> None:
    client = aredis.Redis.from_url(url)
    sha = await client.script_load(FLOOR_SCRIPT)
    record, value = floor_payload()
    kept = held(client)
    savers = {
        "put (full)": AsyncRedisSaver(url, prefix="akf:"),
        "put (shallow)": AsyncShallowRedisSaver(url, prefix="akfs:"),
    }
    configs = {
        k: await s.aput({"configurable": {"thread_id": "t"}}, *small_checkpoint(Api(s, True), 0, None))
        for k, s in savers.items()
    }
    samples: dict[str, list[float]] = {k: [] for k in KINDS}
    clock = time.perf_counter
    for r in range(rounds):
        todo = {k: checkpoints(Api(s, True), n) for k, s in savers.items()}
        for i in range(n):
            args = ("EVALSHA", sha, 2, "floor:{k}:d", "floor:{k}:i", f"f:{r}:{i}", record, f"b:{r}:{i}", value)
            t = clock()
            await client.execute_command(*args)
            samples[KINDS[0]].append(clock() - t)
            t = clock()
            await kept.call(args)
            samples[KINDS[1]].append(clock() - t)
            for k, saver in savers.items():
                t = clock()
                await saver.aput(configs[k], *todo[k][i])
                samples[k].append(clock() - t)
    report("asyncio (redis.asyncio.Redis)", samples)
    await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000, help="samples of each kind per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with Server("plain") as server:
        sync_run(server.url, args.n, args.rounds)
        asyncio.run(async_run(server.url, args.n, args.rounds))


if __name__ == "__main__":
    main()
