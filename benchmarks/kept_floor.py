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
import functools
import statistics
from typing import Any

import redis
import redis.asyncio as aredis

from stateline.bench.backends import FLOOR_SCRIPT
from stateline.bench.servers import Server
from stateline.bench.workloads import Api, _timed, floor_payload, small_checkpoint
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


def put_on(api: Api, config: dict, checkpoint: tuple[dict, dict, dict]) -> Any:
    return api.put(config, *checkpoint)


async def run(url: str, n: int, rounds: int, is_async: bool) -> None:
    """Every kind sampled in turn, through the sync or the asyncio clients and savers
    (``_timed`` awaits only for asyncio: the clock sees the call and nothing else)."""
    client = (aredis.Redis if is_async else redis.Redis).from_url(url)
    floor = Api(client, is_async)
    sha = await floor.call(client.script_load(FLOOR_SCRIPT))
    record, value = floor_payload()
    kept = held(client)
    full, shallow = (AsyncRedisSaver, AsyncShallowRedisSaver) if is_async else (RedisSaver, ShallowRedisSaver)
    apis = {
        "put (full)": Api(full(url, prefix="kf:"), is_async),
        "put (shallow)": Api(shallow(url, prefix="kfs:"), is_async),
    }
    puts = {}
    for k, api in apis.items():
        config = await api.call(api.put({"configurable": {"thread_id": "t"}}, *small_checkpoint(api, 0, None)))
        puts[k] = functools.partial(put_on, api, config)

    def bare(args: tuple[Any, ...]) -> Any:
        return client.execute_command(*args)

    samples: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(rounds):
        todo = {k: checkpoints(api, n) for k, api in apis.items()}
        for i in range(n):
            args = ("EVALSHA", sha, 2, "floor:{k}:d", "floor:{k}:i", f"f:{r}:{i}", record, f"b:{r}:{i}", value)
            samples[KINDS[0]].append(await _timed(floor, bare, args))
            samples[KINDS[1]].append(await _timed(floor, kept.call, args))
            for k, api in apis.items():
                samples[k].append(await _timed(api, puts[k], todo[k][i]))
    report("asyncio (redis.asyncio.Redis)" if is_async else "sync (redis.Redis)", samples)
    await floor.call(client.aclose() if is_async else client.close())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000, help="samples of each kind per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with Server("plain") as server:
        for is_async in (False, True):
            asyncio.run(run(server.url, args.n, args.rounds, is_async))


if __name__ == "__main__":
    main()
