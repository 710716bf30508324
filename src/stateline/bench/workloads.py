"""The workloads: (a) micro operations on threads of growing length, (b) a real agent,
(c) many concurrent threads. (d), memory, is sampled during (b): see agent.py.

Every workload is written once as a coroutine. Sync backends run it without an event
loop (``drive``): their operations never await, so the coroutine finishes in one step.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.checkpoint.base import Checkpoint, empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from .backends import SAVER_CLIENT, Floor, round_trips
from .stats import summary

__all__ = ["Api", "drive", "micro", "concurrent", "MICRO_OPS", "floor_payload"]

MICRO_OPS = ("put", "put_writes", "get_tuple_latest", "get_tuple_by_id", "list_10")
# Reads first, on the thread as built: put_writes adds pending writes to the newest
# checkpoint, which get_tuple(latest) would then have to return too.
MEASURE_ORDER = ("get_tuple_latest", "get_tuple_by_id", "list_10", "put_writes", "put")
TEXT = ("The quick brown fox jumps over the lazy dog while the agent keeps its state. " * 3)[:200]


def drive(coro: Awaitable[Any]) -> Any:
    """Runs a coroutine that never suspends (a sync backend's workload) to its end."""
    try:
        coro.send(None)  # type: ignore[attr-defined]
    except StopIteration as stop:
        return stop.value
    coro.close()  # type: ignore[attr-defined]
    raise RuntimeError("a sync backend's workload awaited something")


def base_config(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def small_checkpoint(api: Api, step: int, prev_version: Any) -> tuple[Checkpoint, dict, dict]:
    """A small checkpoint of two channels (a 200-char string and an int), both new."""
    cp = empty_checkpoint()
    ver = api.next_version(prev_version)
    cp["channel_values"] = {"input": TEXT, "step": step}
    cp["channel_versions"] = {"input": ver, "step": ver}
    cp["versions_seen"] = {"node": {"input": prev_version or ver}}
    metadata = {"source": "loop", "step": step, "parents": {}}
    return cp, metadata, {"input": ver, "step": ver}


def floor_payload() -> tuple[bytes, bytes]:
    """Bytes of the floor's writes: as big as a small checkpoint with its metadata, and
    as one of its values, serialized by LangGraph's default serializer."""
    serde = JsonPlusSerializer()
    api = Api(None, False)
    cp, md, _ = small_checkpoint(api, 1, None)
    header = {k: v for k, v in cp.items() if k != "channel_values"}
    record = serde.dumps_typed(header)[1] + serde.dumps_typed(md)[1]
    return record, serde.dumps_typed(TEXT)[1]


class Api:
    """One interface over a sync saver, an async saver and the floor. Each method returns
    the result (sync) or an awaitable (async); ``call`` hides the difference."""

    def __init__(self, saver: Any, is_async: bool) -> None:
        self.s = saver
        self.is_async = is_async
        self.floor = isinstance(saver, Floor)
        self._v = 0

    async def call(self, result: Any) -> Any:
        return (await result) if self.is_async else result

    def next_version(self, prev: Any) -> Any:
        if self.s is None or self.floor:
            self._v += 1
            return f"{self._v:032d}.0"
        return self.s.get_next_version(prev, None)

    def put(self, config: dict, cp: Checkpoint, md: dict, nv: dict, i: int = 0) -> Any:
        if self.floor:
            return self.s.write(i)
        return (self.s.aput if self.is_async else self.s.put)(config, cp, md, nv)

    def put_writes(self, config: dict, writes: list, task_id: str, i: int = 0) -> Any:
        if self.floor:
            return self.s.write(i)
        return (self.s.aput_writes if self.is_async else self.s.put_writes)(config, writes, task_id)

    def get(self, config: dict) -> Any:
        if self.floor:
            return self.s.read()
        return (self.s.aget_tuple if self.is_async else self.s.get_tuple)(config)

    def list10(self, config: dict) -> Any:
        if self.floor:
            return self.s.read()
        if self.is_async:
            return self._alist(config)
        return list(self.s.list(config, limit=10))

    async def _alist(self, config: dict) -> list:
        return [x async for x in self.s.alist(config, limit=10)]


async def _timed(api: Api, fn: Callable[[Any], Any], arg: Any) -> float:
    """Seconds one ``fn(arg)`` takes, awaited for an async backend (the clock sees nothing else)."""
    t0 = time.perf_counter()
    if api.is_async:
        await fn(arg)
    else:
        fn(arg)
    return time.perf_counter() - t0


async def _measure(
    api: Api,
    fn: Callable[[int], Any],
    n: int,
    budget_s: float,
    warmup: int,
    check: Callable[[Any], bool] | None = None,
    pair: Callable[[int], Any] | None = None,
    setup: Callable[[int], Any] | None = None,
) -> dict:
    """Median/p99 of ``fn``; ``check`` validates one result (a fast wrong answer is no
    result). ``pair``, the floor's matching operation, is timed right after each sample,
    so that both see the same machine (other processes, CPU frequency) and their ratio holds.
    ``setup(i)``, untimed, makes the argument of ``fn`` (the checkpoint a put stores:
    LangGraph builds it before it calls the saver); without it ``fn`` gets ``i``."""
    prepare = setup or (lambda i: i)
    last = None
    for i in range(warmup):
        last = await api.call(fn(prepare(-1 - i)))
        if pair is not None:
            await api.call(pair(-1 - i))
    valid = None if check is None or api.floor else bool(check(last))
    times: list[float] = []
    paired: list[float] = []
    sent = 0
    deadline = time.perf_counter() + budget_s
    perf = time.perf_counter
    for i in range(n):
        arg = prepare(i)
        rt = round_trips()
        times.append(await _timed(api, fn, arg))
        sent += round_trips() - rt
        if pair is not None:
            paired.append(await _timed(api, pair, i))
        if len(times) >= 20 and perf() > deadline:
            break
    out = summary(times)
    out["round_trips"] = round(sent / len(times), 2)
    if paired:
        out["floor_median_us"] = summary(paired)["median_us"]
    if valid is not None:
        out["valid"] = valid
    return out


async def _build(api: Api, thread_id: str, size: int, budget_s: float) -> tuple[dict, list[dict], Any, int, float]:
    """Puts ``size`` checkpoints on a new thread, one by one; stops at the budget."""
    config, ver, ids = base_config(thread_id), None, []
    t0 = time.perf_counter()
    for step in range(size):
        cp, md, nv = small_checkpoint(api, step, ver)
        ver = nv["input"]
        config = await api.call(api.put(config, cp, md, nv, step))
        if not api.floor:
            ids.append(config)
        if time.perf_counter() - t0 > budget_s:
            return config, ids, ver, step + 1, time.perf_counter() - t0
    return config, ids, ver, size, time.perf_counter() - t0


async def micro(
    api: Api,
    thread_prefix: str,
    sizes: tuple[int, ...],
    n: int,
    op_budget_s: float,
    build_budget_s: float,
    shallow: bool,
    tick: Callable[[], None],
    floor: Api | None = None,
) -> dict:
    """(a): per thread length, median/p99 of each operation and its round trips; with
    ``floor``, the floor's matching operation is timed alongside each sample."""
    out: dict = {}
    rng = random.Random(7)
    if api.floor:
        await api.call(api.s.prepare(*floor_payload()))
    if floor is not None:
        await floor.call(floor.s.prepare(*floor_payload()))
    for size in sizes:
        thread_id = f"{thread_prefix}-{size}"
        ids: list[dict]
        if api.floor:
            config, ids, ver, built, build_s = base_config(thread_id), [], None, size, 0.0
        else:
            config, ids, ver, built, build_s = await _build(api, thread_id, size, build_budget_s)
        entry: dict = {"build_s": round(build_s, 3), "built": built}
        out[str(size)] = entry
        if built < size:
            entry["skipped"] = (
                f"building the thread took over {build_budget_s:.0f} s ({built} of {size} checkpoints): too slow, not measured"
            )
            for _ in MICRO_OPS:
                tick()
            for later in sizes[sizes.index(size) + 1 :]:
                out[str(later)] = {"skipped": f"not run: the thread of {size} was already too slow to build"}
                for _ in MICRO_OPS:
                    tick()
            break
        entry["ops"] = await _micro_ops(
            api, thread_id, size, config, ids, ver, shallow, n, op_budget_s, rng, tick, floor
        )
    return out


async def _micro_ops(
    api: Api,
    thread_id: str,
    size: int,
    config: dict,
    ids: list[dict],
    ver: Any,
    shallow: bool,
    n: int,
    op_budget_s: float,
    rng: random.Random,
    tick: Callable[[], None],
    floor: Api | None,
) -> dict:
    latest = base_config(thread_id)
    by_id = [config] if shallow else ids
    state = {"config": config, "ver": ver, "step": size}

    def next_checkpoint(i: int) -> tuple[Checkpoint, dict, dict, int]:
        cp, md, nv = small_checkpoint(api, state["step"], state["ver"])
        state["ver"], state["step"] = nv["input"], state["step"] + 1
        return cp, md, nv, i

    def put(args: tuple[Checkpoint, dict, dict, int]) -> Any:
        cp, md, nv, i = args
        if api.is_async:
            return _aput(cp, md, nv, i)
        state["config"] = api.put(state["config"], cp, md, nv, i)
        return state["config"]

    async def _aput(cp: Checkpoint, md: dict, nv: dict, i: int) -> Any:
        state["config"] = await api.put(state["config"], cp, md, nv, i)
        return state["config"]

    ops: dict[str, Callable[[Any], Any]] = {
        "get_tuple_latest": lambda i: api.get(latest),
        "get_tuple_by_id": lambda i: api.get(by_id[rng.randrange(len(by_id))] if by_id else latest),
        "list_10": lambda i: api.list10(latest),
        "put_writes": lambda i: api.put_writes(
            state["config"], [("input", TEXT), ("step", i)], f"task-{size}-{i}", i + 10_000_000
        ),
        "put": put,
    }
    newest = config["configurable"].get("checkpoint_id")
    want = 1 if shallow else min(10, size)
    checks: dict[str, Callable[[Any], bool]] = {
        "get_tuple_latest": lambda t: t is not None and t.config["configurable"]["checkpoint_id"] == newest,
        "get_tuple_by_id": lambda t: t is not None,
        "list_10": lambda items: len(items) == want,
    }
    measured = {}
    for name in MEASURE_ORDER:
        setup = next_checkpoint if name == "put" else None
        pair, sized = None, None
        if floor is not None:
            pair, sized = await _sized_floor(api, floor, ops[name], (setup or _same)(-100), name in WRITES)
        measured[name] = await _measure(
            api, ops[name], n, op_budget_s, warmup=5, check=checks.get(name), pair=pair, setup=setup
        )
        if sized is not None:
            measured[name]["bytes"] = {"sent": sized[0], "received": sized[1]}
        tick()
    return {name: measured[name] for name in MICRO_OPS}


WRITES = ("put", "put_writes")  # paired with the floor's EVALSHA; the others with its GET


def _same(i: int) -> int:
    return i


async def _sized_floor(
    api: Api, floor: Api, fn: Callable[[Any], Any], arg: Any, write: bool
) -> tuple[Callable[[int], Any], tuple[int, int] | None]:
    """The floor call to pair with ``fn``: redis-py's EVALSHA (or GET) sending (or
    receiving) as many bytes as one call of ``fn(arg)`` does, by the server's count; the
    floor's fixed size where the server has no per-connection counters (Valkey 8+, Redis
    7.2+) or the backend no connection there (a saver without Redis, the peer's server)."""
    for _attempt in range(3):  # (a pooled connection may close in between: then again)
        before = await _saver_bytes(floor)
        await api.call(fn(arg))
        after = await _saver_bytes(floor)
        if before is None or after is None:
            break
        # Per connection: one opened for this call counts from zero, one closed is left out.
        sized = (
            sum(n_in - before.get(cid, (0, 0))[0] for cid, (n_in, _) in after.items()),
            sum(n_out - before.get(cid, (0, 0))[1] for cid, (_, n_out) in after.items()),
        )
        if sized[0] > 0 and sized[1] > 0:
            await floor.call(floor.s.size_to(*sized))
            return (floor.s.write_sized if write else floor.s.read_sized), sized
    return (floor.s.write if write else floor.s.read), None


async def _saver_bytes(floor: Api) -> dict[str, tuple[int, int]] | None:
    """Bytes received from and sent to each of the savers' connections so far, by the server."""
    mine = [c for c in await floor.call(floor.s.client.client_list()) if c.get("name") == SAVER_CLIENT]
    if not mine or "tot-net-in" not in mine[0]:
        return None
    return {str(c["id"]): (int(c["tot-net-in"]), int(c["tot-net-out"])) for c in mine}


async def concurrent(
    api: Api, clients: list[Any], thread_prefix: str, threads: int, steps: int, timeout_s: float
) -> dict:
    """(c): ``threads`` threads at once, each ``steps`` x (put, put_writes) then a get_tuple."""
    if api.floor:
        await api.s.prepare(*floor_payload())
    for c in clients:  # open the connections first: connecting is not what is measured
        await asyncio.gather(*(c.ping() for _ in range(min(threads, 200))))
    lat: dict[str, list[float]] = {"put": [], "put_writes": [], "get_tuple": []}
    perf = time.perf_counter

    async def one(t: int) -> None:
        thread_id = f"{thread_prefix}-{t}"
        config, ver = base_config(thread_id), None
        for step in range(steps):
            cp, md, nv = small_checkpoint(api, step, ver)
            ver = nv["input"]
            t0 = perf()
            config = await api.put(config, cp, md, nv, t * 1000 + step)
            lat["put"].append(perf() - t0)
            t0 = perf()
            await api.put_writes(config, [("input", TEXT)], f"task-{step}", t * 1000 + step)
            lat["put_writes"].append(perf() - t0)
        t0 = perf()
        await api.get(base_config(thread_id))
        lat["get_tuple"].append(perf() - t0)

    rt0 = round_trips()
    t0 = perf()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(t) for t in range(threads))), timeout_s)
    except TimeoutError:
        done = sum(len(v) for v in lat.values())
        return {"skipped": f"did not finish in {timeout_s:.0f} s ({done} operations done): too slow"}
    wall = perf() - t0
    ops = sum(len(v) for v in lat.values())
    return {
        "threads": threads,
        "steps": steps,
        "wall_s": round(wall, 3),
        "ops": ops,
        "ops_per_s": round(ops / wall, 1),
        "round_trips_per_op": round((round_trips() - rt0) / ops, 2),
        "ops_latency": {k: summary(v) for k, v in lat.items()},
        "all": summary([x for v in lat.values() for x in v]),
    }
