"""A real 3-master Redis Cluster: conformance, graphs and discovery across every master."""

from __future__ import annotations

import uuid

import pytest
import redis
from langgraph.checkpoint.conformance import checkpointer_test
from redis.cluster import RedisCluster

from stateline.langgraph import AsyncRedisSaver, RedisSaver

from .test_conformance import assert_full_conformance
from .waiting import DEADLINE


async def test_full_conformance_on_a_cluster(cluster_url: str) -> None:
    @checkpointer_test(name="cluster")
    async def saver():
        s = AsyncRedisSaver.from_url(cluster_url, prefix=f"c{uuid.uuid4().hex[:6]}:")
        yield s
        await s.aclose()

    await assert_full_conformance(saver)


def test_threads_spread_over_every_master_and_discovery_sees_them_all(cluster_url: str) -> None:
    prefix = f"d{uuid.uuid4().hex[:6]}:"
    saver = RedisSaver(cluster_url, prefix=prefix)
    from langgraph.checkpoint.base import empty_checkpoint

    threads = [f"thread-{i}" for i in range(30)]
    for t in threads:
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": [f"{t} says {j}" for j in range(6)]}
        cp["channel_versions"] = {"messages": 1}
        cfg = saver.put(
            {"configurable": {"thread_id": t, "checkpoint_ns": ""}}, cp, {"run_id": f"run-{t}"}, {"messages": 1}
        )
        saver.put_writes(cfg, [("messages", ["x"]), ("__error__", "e")], "task")
    client: RedisCluster = saver._conn.sync
    owners = {client.get_node_from_key(saver.engine.keys(t).data).port for t in threads}
    assert len(owners) == 3  # the thread keys really live on all three masters
    assert {c.config["configurable"]["thread_id"] for c in saver.list(None)} == set(threads)
    saver.delete_for_runs(["run-thread-1", "run-thread-2"])
    assert saver.get_tuple({"configurable": {"thread_id": "thread-1"}}) is None
    assert saver.get_tuple({"configurable": {"thread_id": "thread-3"}}).pending_writes
    saver.copy_thread("thread-3", "copy-of-3")  # different slots, different masters
    assert (
        saver.get_tuple({"configurable": {"thread_id": "copy-of-3"}}).checkpoint["channel_values"]["messages"][0]
        == "thread-3 says 0"
    )
    saver.prune(["thread-4"], strategy="delete")
    assert saver.get_tuple({"configurable": {"thread_id": "thread-4"}}) is None


class NodeCommands:
    """The commands every primary runs (MONITOR), a script's own calls included; an ECHO to
    each node marks the end, so nothing waits on time."""

    def __init__(self, client: RedisCluster) -> None:
        self.nodes = [n.redis_connection for n in client.get_primaries()]
        self.monitors = [n.monitor().__enter__() for n in self.nodes]

    def since(self, mark: str) -> list[list[str]]:
        seen = []
        for node, monitor in zip(self.nodes, self.monitors, strict=True):
            node.echo(mark)
            while (cmd := monitor.next_command())["command"] != f"ECHO {mark}":
                seen.append(cmd["command"].split(" "))
        return seen


def keys_written(command: list[str]) -> list[str]:
    """The keys a command names: an EVALSHA's KEYS, otherwise its first argument."""
    name = command[0].upper()
    if name in ("EVALSHA", "EVAL"):
        return command[3 : 3 + int(command[2])]
    return command[1:2] if len(command) > 1 and name not in ("ECHO", "PING", "SCRIPT", "CLUSTER", "TIME") else []


def test_no_key_outside_a_thread_is_written_by_every_put_and_the_index_spreads_over_masters(
    cluster_url: str,
) -> None:
    prefix = f"h{uuid.uuid4().hex[:6]}:"
    saver = RedisSaver(cluster_url, prefix=prefix, ttl=60)
    from langgraph.checkpoint.base import empty_checkpoint

    client: RedisCluster = saver._conn.sync
    seen = NodeCommands(client)
    threads, puts = [f"hot-{i}" for i in range(200)], 0
    for step in range(3):
        for t in threads:
            cp = empty_checkpoint()
            cp["channel_values"], cp["channel_versions"] = {"n": step}, {"n": step + 1}
            saver.put(
                {"configurable": {"thread_id": t, "checkpoint_ns": ""}}, cp, {"run_id": f"run-{t}"}, {"n": step + 1}
            )
            puts += 1
    commands = seen.since(f"end-{uuid.uuid4().hex}")
    per_key: dict[str, int] = {}
    for command in commands:
        for key in keys_written(command):
            if key.startswith(prefix) and not key.endswith(("}:d", "}:i")):  # not a thread's own key
                per_key[key] = per_key.get(key, 0) + 1
    assert per_key and max(per_key.values()) < puts / 10, sorted(per_key.items(), key=lambda kv: -kv[1])[:3]
    shards = {s for s in saver.engine.schema.indexes if client.exists(s.entries)}
    assert len(shards) > 40  # 200 threads over 64 shards
    assert len({client.get_node_from_key(s.entries).name for s in shards}) == 3  # on every master
    assert {c.config["configurable"]["thread_id"] for c in saver.list(None)} == set(threads)
    saver.delete_for_runs([f"run-{t}" for t in threads[:100]])
    assert {c.config["configurable"]["thread_id"] for c in saver.list(None)} == set(threads[100:])


def test_a_cluster_client_passed_in_works_sync_and_async(cluster_url: str) -> None:
    host_port = cluster_url.removeprefix("redis+cluster://").split(",")[0]
    host, port = host_port.split(":")
    client = RedisCluster(host=host, port=int(port))
    saver = RedisSaver(client, prefix=f"p{uuid.uuid4().hex[:6]}:")
    from langgraph.checkpoint.base import empty_checkpoint

    cp = empty_checkpoint()
    cp["channel_values"] = {"a": 1}
    cp["channel_versions"] = {"a": 1}
    cfg = saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, {}, {"a": 1})

    import asyncio

    async def read():
        got = await saver.aget_tuple(cfg)  # an asyncio RedisCluster made from the same settings
        await saver.aclose()
        return got

    assert asyncio.run(read()).checkpoint["channel_values"] == {"a": 1}
    assert isinstance(saver._conn.sync, RedisCluster)


def test_strong_durability_on_a_cluster_waits_on_the_thread_s_own_node(cluster_url: str) -> None:
    saver = RedisSaver(cluster_url, prefix=f"w{uuid.uuid4().hex[:6]}:", durability="aof")
    from langgraph.checkpoint.base import empty_checkpoint

    for t in ("a", "b", "c", "d"):
        cp = empty_checkpoint()
        cp["channel_values"] = {"a": t}
        cp["channel_versions"] = {"a": 1}
        cfg = saver.put({"configurable": {"thread_id": t, "checkpoint_ns": ""}}, cp, {}, {"a": 1})
        saver.put_writes(cfg, [("a", 2)], "task")
        assert saver.get_tuple(cfg).checkpoint["channel_values"] == {"a": t}


def test_plain_client_against_a_cluster_node_gets_moved_errors_not_silence(cluster_url: str) -> None:
    host, port = cluster_url.removeprefix("redis+cluster://").split(",")[0].split(":")
    plain = RedisSaver(f"redis://{host}:{port}", prefix="x:")
    from stateline import ServerError

    with pytest.raises(ServerError, match="MOVED|CROSSSLOT"):
        for t in range(20):  # some thread lands on another master
            plain.get_tuple({"configurable": {"thread_id": f"t{t}"}})
    redis.Redis(host=host, port=int(port)).close()


@pytest.mark.parametrize("durability", ["ack", "aof"])
def test_a_live_thread_survives_the_migration_of_its_slot(cluster_url: str, durability: str) -> None:
    """A writer keeps saving checkpoints while the thread's slot moves to another master
    (IMPORTING/MIGRATING, MIGRATE of its keys, SETSLOT NODE): redirects (ASK/MOVED) are
    followed, and every acknowledged checkpoint is there afterwards."""
    import threading

    from langgraph.checkpoint.base import empty_checkpoint

    thread = f"migrating-{durability}"  # a slot of its own per run
    prefix = f"m{uuid.uuid4().hex[:6]}:"
    saver = RedisSaver(cluster_url, prefix=prefix, durability=durability)
    nodes, slot, owner, target, ids = _a_move(cluster_url, saver, thread)

    acknowledged: list[str] = []
    started, done = threading.Event(), threading.Event()
    errors: list[Exception] = []

    def write() -> None:
        cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        try:
            for i in range(400):
                cp = empty_checkpoint()
                cp["channel_values"] = {"n": i, "messages": [f"turn {j}" for j in range(i % 50 + 4)]}
                cp["channel_versions"] = {"n": i + 1, "messages": i + 1}
                cfg = saver.put(cfg, cp, {"step": i}, {"n": i + 1, "messages": i + 1})
                saver.put_writes(cfg, [("n", i)], f"task-{i}")
                acknowledged.append(cp["id"])
                if i == 20:
                    started.set()
                if done.is_set() and i > 60:
                    return
        except Exception as exc:  # noqa: BLE001 - the thread hands any error to the test
            errors.append(exc)
            started.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert started.wait(30)
    src, dst = nodes[owner], nodes[target]
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    while moving := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *moving)
    for c in nodes.values():
        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    done.set()
    writer.join(60)
    assert not errors, errors
    assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    # the thread's two keys (other tests' threads may share the slot: only this prefix counts)
    here = [k for k in dst.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000) if k.startswith(prefix.encode())]
    assert sorted(here) == sorted(k.encode() for k in saver.engine.keys(thread).all)
    stored = [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})]
    assert stored == acknowledged[::-1] and len(stored) > 60
    latest = saver.get_tuple({"configurable": {"thread_id": thread}})
    assert latest.pending_writes and latest.checkpoint["channel_values"]["n"] == len(acknowledged) - 1


def test_acknowledged_writes_survive_a_master_failover_with_replicas(tmp_path) -> None:
    """3 masters + 3 replicas, durability="replica": kill the master of a thread's slot; its
    replica takes over and every checkpoint the saver acknowledged is there."""
    import signal
    import time

    from langgraph.checkpoint.base import empty_checkpoint

    from stateline import DurabilityError, ServerError

    from . import servers

    with servers.cluster(tmp_path, servers.valkey_binary(), 3, 1) as nodes:
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes[:3])
        saver = RedisSaver(url, prefix="f:", durability="replica", durability_timeout_ms=500)
        cfg = {"configurable": {"thread_id": "failover", "checkpoint_ns": ""}}
        acknowledged, failures = [], 0
        owner = saver._conn.sync.get_node_from_key(saver.engine.keys("failover").data).port
        victim = next(n for n in nodes if n.port == owner)
        deadline = time.monotonic() + 2 * DEADLINE  # generous: a loaded machine slows the election
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            cp = empty_checkpoint()
            cp["channel_values"] = {"n": len(acknowledged)}
            cp["channel_versions"] = {"n": len(acknowledged) + 1}
            try:
                cfg = saver.put(cfg, cp, {}, {"n": len(acknowledged) + 1})
            except (DurabilityError, ServerError):  # replica not synced yet, or failing over
                failures += 1
                continue
            acknowledged.append(cp["id"])
            if len(acknowledged) == 30:
                victim.kill(signal.SIGKILL)
                # Once its replica owns the slot, the old master comes back as the new one's
                # replica, as an operator would bring it back: "replica" durability needs one.
                other = next(n for n in nodes[:3] if n is not victim).client()
                servers.until(lambda c=other: _owner_of(c, saver, "failover") not in (None, owner), 2 * DEADLINE)
                victim.restart()
        assert len(acknowledged) == 60, (len(acknowledged), failures)
        assert saver._conn.sync.get_node_from_key(saver.engine.keys("failover").data).port != owner
        stored = {t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "failover"}})}
        assert set(acknowledged) <= stored


def _owner_of(client: redis.Redis, saver: RedisSaver, thread: str) -> int | None:
    """The port of the master that owns a thread's slot, as a cluster node sees it."""
    slot = client.execute_command("CLUSTER", "KEYSLOT", saver.engine.keys(thread).data)
    for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return master[1]
    return None


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_durability_wait_shares_the_connection_of_its_write(cluster_url: str, kind: str) -> None:
    """WAIT/WAITAOF only count the writes of their own connection: on the thread's node the
    EVALSHA and the WAITAOF that confirms it must come from the same client."""
    import asyncio

    from langgraph.checkpoint.base import empty_checkpoint

    saver = (RedisSaver if kind == "sync" else AsyncRedisSaver)(cluster_url, prefix=f"wc{kind}:", durability="aof")
    port = saver._conn.sync.get_node_from_key(saver.engine.keys("t").data).port
    node = redis.Redis(port=port)
    cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}

    def checkpoint(n: int) -> dict:
        cp = empty_checkpoint()
        cp["channel_values"] = {"n": n}
        cp["channel_versions"] = {"n": n + 1}
        return cp

    async def puts(n: int) -> None:
        nonlocal cfg
        for i in range(n):
            cfg = (
                await saver.aput(cfg, checkpoint(i), {}, {"n": i + 1})
                if kind == "async"
                else saver.put(cfg, checkpoint(i), {}, {"n": i + 1})
            )

    asyncio.run(puts(2))  # scripts loaded, thread indexed
    with node.monitor() as monitor:
        asyncio.run(puts(3))
        node.echo("end")
        seen = []
        while (cmd := monitor.next_command())["command"] != "ECHO end":
            if cmd.get("client_type") != "lua":
                seen.append((cmd["command"].split(" ", 1)[0], cmd.get("client_address"), cmd.get("client_port")))
    pairs = [(seen[i], seen[i + 1]) for i in range(len(seen) - 1) if seen[i][0] == "EVALSHA"]
    assert len(pairs) == 3
    for write, wait in pairs:
        assert wait[0] == "WAITAOF" and wait[1:] == write[1:], seen


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_durable_writer_follows_a_fail_over_without_help(tmp_path, kind: str) -> None:
    """durability="aof": the thread's master is SIGKILLed and stays down; once its replica
    is promoted the writer's next puts reach it (the slot map is learnt again) and stay.
    ("aof" fsyncs on the master only, so puts acknowledged before the fail-over may be
    lost with it; surviving a fail-over is durability="replica", tested above.)"""
    import asyncio
    import signal
    import time

    from langgraph.checkpoint.base import empty_checkpoint

    from stateline import ServerError

    from . import servers

    with servers.cluster(tmp_path, servers.valkey_binary(), 3, 1, "--appendonly", "yes") as nodes:
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes[:3])
        saver = (RedisSaver if kind == "sync" else AsyncRedisSaver)(url, prefix="fo:", durability="aof")
        owner = saver._conn.sync.get_node_from_key(saver.engine.keys("t").data).port
        cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        acknowledged: list[str] = []

        async def write(n: int, deadline: float) -> None:
            nonlocal cfg
            while len(acknowledged) < n and time.monotonic() < deadline:
                cp = empty_checkpoint()
                cp["channel_values"] = {"n": len(acknowledged)}
                cp["channel_versions"] = {"n": len(acknowledged) + 1}
                try:
                    if kind == "async":
                        cfg = await saver.aput(cfg, cp, {}, {"n": len(acknowledged) + 1})
                    else:
                        cfg = saver.put(cfg, cp, {}, {"n": len(acknowledged) + 1})
                except ServerError:  # the master is gone and no replica has taken over yet
                    continue
                acknowledged.append(cp["id"])

        asyncio.run(write(10, time.monotonic() + DEADLINE))
        next(n for n in nodes if n.port == owner).kill(signal.SIGKILL)
        asyncio.run(write(20, time.monotonic() + 2 * DEADLINE))
        assert len(acknowledged) == 20
        stored = {t.checkpoint["id"] for t in RedisSaver(url, prefix="fo:").list({"configurable": {"thread_id": "t"}})}
        assert set(acknowledged[10:]) <= stored


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_durable_writes_follow_ask_then_moved_step_by_step(cluster_url: str, kind: str) -> None:
    """The keys move first (the old owner then answers ASK for every write), then the slot
    (MOVED): a durable writer follows both, through the new owner's own pipeline."""
    import asyncio

    from langgraph.checkpoint.base import empty_checkpoint

    thread = f"asked-{kind}"
    saver = (RedisSaver if kind == "sync" else AsyncRedisSaver)(cluster_url, prefix="ask:", durability="aof")
    nodes, slot, owner, target, ids = _a_move(cluster_url, saver, thread)
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    written: list[str] = []

    async def put(n: int) -> None:
        nonlocal cfg
        for _ in range(n):
            cp = empty_checkpoint()
            cp["channel_values"] = {"n": len(written)}
            cp["channel_versions"] = {"n": len(written) + 1}
            args = (cfg, cp, {}, {"n": len(written) + 1})
            cfg = await saver.aput(*args) if kind == "async" else saver.put(*args)
            written.append(cp["id"])

    async def scenario() -> None:
        await put(5)
        nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
        nodes[owner].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        moving = nodes[owner].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        nodes[owner].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *moving)
        await put(5)  # the old owner has no key of the slot now: ASK
        for c in nodes.values():
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        await put(5)  # the slot map is stale: MOVED
        if kind == "async":
            await saver.aclose()

    asyncio.run(scenario())
    assert nodes[target].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) >= 2
    reader = RedisSaver(cluster_url, prefix="ask:")
    assert [t.checkpoint["id"] for t in reader.list({"configurable": {"thread_id": thread}})] == written[::-1]


def _a_move(
    cluster_url: str, saver: RedisSaver, thread: str
) -> tuple[dict[int, redis.Redis], int, int, int, dict[int, str]]:
    """What moving a thread's slot needs: a client per master, the slot, the port of the
    master that owns it, another master to move it to, and every master's node id."""
    ports = [int(hp.split(":")[1]) for hp in cluster_url.removeprefix("redis+cluster://").split(",")]
    nodes = {p: redis.Redis(port=p) for p in ports}
    data = saver.engine.keys(thread).data
    slot = nodes[ports[0]].execute_command("CLUSTER", "KEYSLOT", data)
    owner = saver._conn.sync.get_node_from_key(data).port
    target = next(p for p in ports if p != owner)
    ids = {p: c.execute_command("CLUSTER", "MYID").decode() for p, c in nodes.items()}
    return nodes, slot, owner, target, ids
