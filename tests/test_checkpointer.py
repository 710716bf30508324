"""The seed API: one behaviour suite over RedisCheckpointer, its sync twin and
MemoryCheckpointer, then what only a server can show (keys, TTL on the server, prefixes,
round trips, a cluster), all against real servers the tests start."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pydantic
import pytest
import redis
import redis.asyncio as aredis
from redis.cluster import RedisCluster

import stateline
from stateline import (
    BaseCheckpointer,
    Checkpoint,
    ConflictError,
    InvalidInput,
    MemoryCheckpointer,
    RedisCheckpointer,
    SerializationError,
    StoredDataError,
    SyncRedisCheckpointer,
    new_id,
)
from stateline.codec import ValueCodec
from stateline.engine import Engine
from stateline.plan import SCRIPTS, Batch, Call, Command, Scan
from stateline.serde import Serde

from . import servers
from .conftest import index_members
from .waiting import auntil

# -- types the states use -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    label: str = dataclasses.field(default="", compare=True)


class Item(pydantic.BaseModel):
    name: str
    price: Decimal
    seen: datetime | None = None
    extra: Any = None


class Mood(enum.Enum):
    CALM = "calm"
    BUSY = "busy"


@stateline.register
@dataclasses.dataclass
class GloballyRegistered:
    n: int


class Opaque:
    """A class nobody registered."""


@dataclasses.dataclass
class NotRegistered:
    n: int


TYPES = [Point, Item, Mood]


def rich_state() -> dict[str, Any]:
    return {
        "when": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc),
        "local": datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
        "offset": datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        "naive": datetime(2020, 1, 1, 0, 0, 1),
        "day": date(2024, 5, 1),
        "wait": timedelta(days=1, microseconds=7),
        "tags": {"a", "b", "c"},
        "frozen": frozenset({1, 2, 3}),
        "pair": (1, "x", (2.5, None), [3]),
        "blob": b"\x00\xffraw bytes",
        "price": Decimal("19.990"),
        "id": UUID("12345678-1234-5678-1234-567812345678"),
        "by_int": {1: "one", 2: {3: "three"}},
        "odd_keys": {(1, 2): "tuple", UUID(int=7): "uuid", 10**30: "big", date(2024, 1, 1): "day", None: 0},
        "big": -(2**100),
        "point": Point(1, 2, "p"),
        "item": Item(name="tea", price=Decimal("2.50"), seen=datetime(2024, 1, 1, tzinfo=timezone.utc), extra=(1, 2)),
        "mood": Mood.BUSY,
        "points": [Point(i, i * i) for i in range(6)],  # >= 4 items: stored per element
        "messages": [
            {"role": "user", "at": datetime(2024, 1, 1, i, tzinfo=timezone.utc), "ids": {i}} for i in range(5)
        ],
        "nothing": None,
        "flag": True,
        "ratio": -0.0,
    }


def assert_same(a: Any, b: Any, path: str = "state") -> None:
    """Equal, and of exactly the same types all the way down (keys included)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, datetime):
        assert (a, a.tzinfo, a.fold) == (b, b.tzinfo, b.fold), path
    elif isinstance(a, float):
        assert repr(a) == repr(b), path
    else:
        assert a == b, path


# -- the three checkpointers behind one async face --------------------------------------------


class SyncDriven(BaseCheckpointer):
    """The sync twin seen through the async protocol, by plain calls (no thread, no loop)."""

    def __init__(self, sync: SyncRedisCheckpointer) -> None:
        self.sync = sync
        self.engine = sync.engine

    async def save(self, checkpoint: Checkpoint, *, new_session: bool = False) -> None:
        self.sync.save(checkpoint, new_session=new_session)

    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Checkpoint | None:
        return self.sync.load(session_id, checkpoint_id)

    async def list(self, session_id: str, limit: int | None = 10, *, before: str | None = None) -> list[Checkpoint]:
        return self.sync.list(session_id, limit, before=before)

    async def delete(self, session_id: str, checkpoint_id: str | None = None) -> None:
        self.sync.delete(session_id, checkpoint_id)

    async def list_sessions(self) -> list[str]:
        return self.sync.list_sessions()

    async def clear_all(self) -> None:
        self.sync.clear_all()

    async def close(self) -> None:
        self.sync.close()


KINDS = ["redis", "sync", "memory"]
SERVER_KINDS = ["redis", "sync"]
Make = Callable[..., BaseCheckpointer]


@pytest.fixture
async def make(url: str, prefix: str) -> AsyncIterator[Make]:
    made: list[BaseCheckpointer] = []

    def make(kind: str, **settings: Any) -> BaseCheckpointer:
        settings.setdefault("types", TYPES)
        if kind == "memory":
            cp: BaseCheckpointer = MemoryCheckpointer(**settings)
        else:
            settings.setdefault("prefix", prefix)
            cp = (
                RedisCheckpointer(url, **settings)
                if kind == "redis"
                else SyncDriven(SyncRedisCheckpointer(url, **settings))
            )
        made.append(cp)
        return cp

    yield make
    for cp in made:
        await cp.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def twin(make: Make, kind: str, cp: BaseCheckpointer, **settings: Any) -> BaseCheckpointer:
    """A second writer on the same store: another instance and connection on a server."""
    return cp if kind == "memory" else make(kind, **settings)


def _count_keys(engine: Engine, client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(match=engine.schema.prefix + "*", count=1000))


# -- the behaviour suite ----------------------------------------------------------------------


async def test_save_then_load_returns_every_field(kind: str, make: Make) -> None:
    cp = make(kind)
    first = Checkpoint(session_id="s", state={"n": 1}, metadata={"source": "test", "at": date(2024, 1, 2)}, run_id="r1",
                       node="plan", prev_node="__start__", step=1, updated_fields=["n"], attempt=1)  # fmt: skip
    await cp.save(first)
    second = first.child({"n": 2, "notes": ["a"]}, node="act", updated_fields=["n", "notes"], dispatch_id="d1")
    await cp.save(second)

    assert await cp.load("s") == second
    assert await cp.load("s", first.checkpoint_id) == first
    assert await cp.load("s", "no-such-id") is None
    assert await cp.load("never-saved") is None
    assert second.parent_id == first.checkpoint_id and second.prev_node == "plan" and second.step == 2
    assert second.run_id == "r1" and second.created_at.tzinfo is timezone.utc


async def test_values_beyond_json_round_trip_exactly(kind: str, make: Make) -> None:
    cp = make(kind)
    state = rich_state()
    meta = {"when": datetime(2024, 2, 2, tzinfo=timezone.utc), "ids": (1, 2), 3: "int key"}
    await cp.save(Checkpoint(session_id="types", state=state, metadata=meta))
    got = await cp.load("types")
    assert got is not None
    assert_same(state, got.state)
    assert_same(meta, got.metadata)
    assert got.state["item"].model_fields_set == state["item"].model_fields_set


async def test_a_globally_registered_class_needs_no_types(kind: str, make: Make) -> None:
    cp = make(kind, types=())
    await cp.save(Checkpoint(session_id="g", state={"v": GloballyRegistered(3)}))
    got = await cp.load("g")
    assert got is not None and got.state["v"] == GloballyRegistered(3)


@pytest.mark.parametrize("bad", [Opaque(), NotRegistered(1), {"deep": [{"x": (Opaque(),)}]}, {1: {2: Opaque()}}])
async def test_an_unregistered_class_fails_at_save_and_writes_nothing(kind: str, make: Make, bad: Any) -> None:
    cp = make(kind)
    ok = Checkpoint(session_id="u", state={"n": 1})
    await cp.save(ok)
    with pytest.raises(SerializationError, match="not a type stateline stores: register it"):
        await cp.save(ok.child({"n": 2, "bad": bad}))
    with pytest.raises(SerializationError, match="metadata"):
        await cp.save(ok.child({"n": 2}, metadata={"bad": bad}))
    assert [c.checkpoint_id for c in await cp.list("u")] == [ok.checkpoint_id]


async def test_loaded_states_are_copies(kind: str, make: Make) -> None:
    cp = make(kind)
    state = {"items": [1, 2], "d": {"k": "v"}}
    await cp.save(Checkpoint(session_id="c", state=state))
    state["items"].append(3)
    got = await cp.load("c")
    assert got is not None and got.state == {"items": [1, 2], "d": {"k": "v"}}
    got.state["d"]["k"] = "changed"
    again = await cp.load("c")
    assert again is not None and again.state["d"] == {"k": "v"}


async def test_list_is_newest_first_with_limit_and_before(kind: str, make: Make) -> None:
    cp = make(kind)
    head = Checkpoint(session_id="l", state={"i": 0})
    await cp.save(head)
    saved = [head]
    for i in range(1, 25):
        head = head.child({"i": i})
        await cp.save(head)
        saved.append(head)
    newest_first = [c.checkpoint_id for c in reversed(saved)]

    assert [c.checkpoint_id for c in await cp.list("l")] == newest_first[:10]  # the seed's default
    assert [c.checkpoint_id for c in await cp.list("l", limit=3)] == newest_first[:3]
    assert [c.checkpoint_id for c in await cp.list("l", limit=None)] == newest_first
    assert await cp.list("l", limit=0) == []
    pages, before = [], None
    while page := await cp.list("l", limit=7, before=before):
        pages.append([c.checkpoint_id for c in page])
        before = page[-1].checkpoint_id
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [cid for p in pages for cid in p] == newest_first
    assert (await cp.list("l", limit=1))[0] == saved[-1]
    assert await cp.list("nobody") == []
    with pytest.raises(InvalidInput):
        await cp.list("l", limit=-1)


async def test_sessions_never_see_each_other(kind: str, make: Make) -> None:
    cp = make(kind)
    a = Checkpoint(session_id="a", state={"who": "a"})
    b = Checkpoint(session_id="b", state={"who": "b"})
    await cp.save(a)
    await cp.save(b)

    assert await cp.load("a", b.checkpoint_id) is None
    await cp.delete("a", b.checkpoint_id)
    assert await cp.load("b", b.checkpoint_id) == b
    assert await cp.load("a") == a


async def test_a_session_id_that_looks_like_a_key_suffix_is_its_own_session(kind: str, make: Make) -> None:
    cp = make(kind)
    ids = ["foo", "foo:run:x", "foo:run:zzz", "foo}", "{foo}", "foo bar", "fö*o?[x]", ""]
    for sid in ids:
        await cp.save(Checkpoint(session_id=sid, state={"sid": sid}))
    assert sorted(await cp.list_sessions()) == sorted(ids)

    await cp.delete("foo")
    assert sorted(await cp.list_sessions()) == sorted(set(ids) - {"foo"})
    for sid in set(ids) - {"foo"}:
        got = await cp.load(sid)
        assert got is not None and got.state == {"sid": sid}
        assert len(await cp.list(sid)) == 1
    assert await cp.load("foo") is None


async def test_delete_one_checkpoint_or_the_whole_session(kind: str, make: Make) -> None:
    cp = make(kind)
    first = Checkpoint(session_id="d", state={"n": 1})
    second = first.child({"n": 2})
    third = second.child({"n": 3})
    for c in (first, second, third):
        await cp.save(c)
    await cp.save(Checkpoint(session_id="other", state={}))

    await cp.delete("d", second.checkpoint_id)
    assert [c.checkpoint_id for c in await cp.list("d")] == [third.checkpoint_id, first.checkpoint_id]
    assert await cp.load("d", second.checkpoint_id) is None
    await cp.delete("d", "not-there")  # deleting what is absent is not an error

    await cp.delete("d", third.checkpoint_id)
    assert await cp.load("d") == first  # the newest left is the head again
    await cp.delete("d")
    assert await cp.load("d") is None and await cp.list("d") == []
    assert await cp.list_sessions() == ["other"]


async def test_a_session_whose_last_checkpoint_is_deleted_is_gone(kind: str, make: Make, client: redis.Redis) -> None:
    cp = make(kind)
    only = Checkpoint(session_id="one", state={"x": [1, 2, 3, 4, 5]})
    await cp.save(only)
    await cp.delete("one", only.checkpoint_id)
    assert await cp.list_sessions() == []
    if kind != "memory":
        engine = cp.engine  # type: ignore[attr-defined]
        assert _count_keys(engine, client) == 0


async def test_two_saves_on_the_same_parent_one_wins_one_conflicts(kind: str, make: Make) -> None:
    writer_a = make(kind)
    writer_b = twin(make, kind, writer_a)
    base = Checkpoint(session_id="race", state={"turns": []})
    await writer_a.save(base)

    turn_x = base.child({"turns": ["x"]})
    turn_y = base.child({"turns": ["y"]})
    results = await asyncio.gather(writer_a.save(turn_x), writer_b.save(turn_y), return_exceptions=True)
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    assert len(conflicts) == 1 and results.count(None) == 1, results
    assert "nothing was written" in str(conflicts[0])

    # Nothing is lost: the loser learns it, reloads the head and re-applies its turn.
    loser_turn = turn_y if isinstance(results[1], ConflictError) else turn_x
    head = await writer_a.load("race")
    assert head is not None and head.checkpoint_id != loser_turn.checkpoint_id
    retried = head.child({"turns": head.state["turns"] + loser_turn.state["turns"]})
    await writer_b.save(retried)
    assert sorted((await writer_a.load("race")).state["turns"]) == ["x", "y"]  # type: ignore[union-attr]
    assert len(await writer_a.list("race")) == 3


async def test_new_session_requires_an_empty_session(kind: str, make: Make) -> None:
    cp = make(kind)
    first = Checkpoint(session_id="fresh", state={})
    await cp.save(first, new_session=True)
    with pytest.raises(ConflictError):
        await cp.save(Checkpoint(session_id="fresh", state={"again": 1}), new_session=True)
    with pytest.raises(InvalidInput, match="cannot start a new session"):
        await cp.save(first.child(), new_session=True)
    await cp.save(first, new_session=True)  # a retry of the very same save is not a conflict
    assert [c.checkpoint_id for c in await cp.list("fresh")] == [first.checkpoint_id]


async def test_checkpoints_are_ordered_by_creation_whatever_their_ids(kind: str, make: Make) -> None:
    """The seed's users pass their own ids (uuid4, names): newest first means the newest
    created_at, and every id still works for load, list(before=), delete and parents."""
    import uuid

    cp = make(kind)
    ids = [str(uuid.uuid4()) for _ in range(4)] + ["a", "m"]
    saved = []
    for i, cid in enumerate(ids):
        parent = saved[-1].checkpoint_id if saved else None
        saved.append(Checkpoint(session_id="o", state={"i": i}, checkpoint_id=cid, parent_id=parent))
        await cp.save(saved[-1])
    assert (await cp.load("o")).checkpoint_id == "m"  # type: ignore[union-attr]
    assert [c.checkpoint_id for c in await cp.list("o", limit=None)] == ids[::-1]
    assert [c.checkpoint_id for c in await cp.list("o", before="a")] == ids[3::-1]
    assert (await cp.load("o", ids[1])).state == {"i": 1}  # type: ignore[union-attr]
    with pytest.raises(ConflictError):  # the parent check knows the ids too
        await cp.save(Checkpoint(session_id="o", state={}, checkpoint_id="late", parent_id="a"))
    await cp.delete("o", "a")
    assert [c.checkpoint_id for c in await cp.list("o", limit=None)] == [ids[5], *ids[3::-1]]
    again = Checkpoint(session_id="o", state={"i": "again"}, checkpoint_id=ids[0])
    await cp.save(again)  # the same id saved again replaces it (and is now the newest)
    listed = await cp.list("o", limit=None)
    assert [c.checkpoint_id for c in listed] == [ids[0], ids[5], ids[3], ids[2], ids[1]]
    assert listed[0].state == {"i": "again"}


async def test_keep_last_keeps_the_newest(kind: str, make: Make) -> None:
    cp = make(kind, keep_last=2)
    head = Checkpoint(session_id="k", state={"i": 0, "log": list(range(10))})
    await cp.save(head)
    saved = [head]
    for i in range(1, 6):
        head = head.child({"i": i, "log": list(range(10 + i))})
        await cp.save(head)
        saved.append(head)
    assert await cp.list("k") == [saved[-1], saved[-2]]
    assert await cp.load("k", saved[0].checkpoint_id) is None


def ttl_left(kind: str, cp: BaseCheckpointer, client: redis.Redis, session_id: str) -> float:
    """Seconds until a session expires: on a server, the least of its keys' TTLs."""
    if kind == "memory":
        return cp._expires[session_id] - time.monotonic()  # type: ignore[attr-defined]
    return min(client.pttl(k) for k in cp.engine.keys(session_id).all) / 1000  # type: ignore[attr-defined]


async def test_every_save_slides_the_ttl_of_the_whole_session(kind: str, make: Make, client: redis.Redis) -> None:
    cp = make(kind, ttl=60.0)  # long, so reading what is left of it races nothing
    first = Checkpoint(session_id="t", state={"doc": "shared " * 50, "n": 0})
    await cp.save(first)
    at_save = ttl_left(kind, cp, client, "t")
    assert 0 < at_save <= 60

    async def clock_moved() -> bool:
        return ttl_left(kind, cp, client, "t") < at_save - 0.2

    await auntil(clock_moved, what="the session's TTL to run down")
    before = ttl_left(kind, cp, client, "t")
    await cp.save(first.child({"doc": first.state["doc"], "n": 1}))
    # Every key of the session starts over, not only what the save wrote: the first
    # checkpoint's record (written once, by the first save) lives as long as the newest.
    assert ttl_left(kind, cp, client, "t") > before
    assert await cp.load("t", first.checkpoint_id) == first


async def test_an_idle_session_vanishes_whole(kind: str, make: Make, client: redis.Redis) -> None:
    cp = make(kind, ttl=0.5)
    keys = [] if kind == "memory" else list(cp.engine.keys("t").all)  # type: ignore[attr-defined]
    first = Checkpoint(session_id="t", state={"doc": "shared " * 50, "n": 0})
    await cp.save(first)
    await cp.save(Checkpoint(session_id="bystander", state={}))

    async def gone() -> bool:
        if keys:
            alive = client.exists(*keys)
            assert alive in (0, len(keys)), "one key of the session expired without the other"
            return alive == 0
        return await cp.load("t") is None

    await auntil(gone, what="the idle session to expire")
    assert await cp.load("t") is None and await cp.load("t", first.checkpoint_id) is None
    assert await cp.list("t") == []

    async def bystander_gone() -> bool:
        return "bystander" not in await cp.list_sessions()

    await auntil(bystander_gone, what="the idle bystander to expire")
    assert "t" not in await cp.list_sessions()
    if keys:  # no index entry is left without its data
        assert index_members(client, cp.engine.schema) == []  # type: ignore[attr-defined]
        assert _count_keys(cp.engine, client) == 0  # type: ignore[attr-defined]

    # A session saved again after it expired is whole and listed again.
    await cp.save(Checkpoint(session_id="t", state={"n": 9}))
    assert await cp.list_sessions() == ["t"]


async def test_clear_all_deletes_every_session(kind: str, make: Make) -> None:
    cp = make(kind)
    for sid in ("x", "y", "z"):
        await cp.save(Checkpoint(session_id=sid, state={"sid": sid, "l": [1, 2, 3, 4, 5]}))
    await cp.clear_all()
    assert await cp.list_sessions() == []
    assert await cp.load("x") is None
    await cp.save(Checkpoint(session_id="x", state={}))  # usable afterwards, and listed
    assert await cp.list_sessions() == ["x"]


async def test_async_context_manager_closes(kind: str, make: Make) -> None:
    async with make(kind) as cp:
        await cp.save(Checkpoint(session_id="ctx", state={"a": 1}))
        assert (await cp.load("ctx")).state == {"a": 1}  # type: ignore[union-attr]


async def test_bad_input_is_refused_clearly(kind: str, make: Make) -> None:
    cp = make(kind)
    with pytest.raises(InvalidInput):
        await cp.save({"session_id": "s"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await cp.load(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await cp.load("s", "")
    with pytest.raises(InvalidInput):
        make(kind, ttl=0)
    with pytest.raises(InvalidInput):
        make(kind, keep_last=0)


# -- the Checkpoint value -----------------------------------------------------------------------


def test_checkpoint_to_dict_and_back() -> None:
    cp = Checkpoint(session_id="s", state={"a": 1}, metadata={"m": True}, run_id="r", node="n", step=3)
    data = cp.to_dict()
    assert data["created_at"] == cp.created_at.isoformat() and data["session_id"] == "s"
    assert Checkpoint.from_dict(data) == cp
    assert Checkpoint.from_dict({**data, "created_at": cp.created_at}) == cp
    with pytest.raises(InvalidInput, match="unknown Checkpoint fields"):
        Checkpoint.from_dict({**data, "colour": "red"})


def test_checkpoint_validates_its_fields() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        Checkpoint(session_id="s", created_at=datetime(2024, 1, 1))
    with pytest.raises(InvalidInput, match="str keys"):
        Checkpoint(session_id="s", state={1: "a"})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput):
        Checkpoint(session_id=None)  # type: ignore[arg-type]
    paris = Checkpoint(session_id="s", created_at=datetime(2024, 6, 1, 14, tzinfo=ZoneInfo("Europe/Paris")))
    assert paris.created_at == datetime(2024, 6, 1, 12, tzinfo=timezone.utc) and paris.created_at.tzinfo is timezone.utc


def test_ids_are_time_ordered_and_children_sort_after_parents() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    ahead_ms = time.time_ns() // 1_000_000 + 5_000  # a parent made by a clock 5 s ahead of ours
    parent = str(UUID(int=ahead_ms << 80 | 7 << 76 | 2 << 62))
    assert new_id(after=parent) > parent and new_id() > parent  # and ids stay monotonic after it
    assert new_id(after="zzz-not-a-uuid7") < "zzz"  # foreign ids cannot be ordered after (save says so)
    assert all(UUID(i).version == 7 for i in ids[:10])


def test_the_serializer_refuses_what_it_cannot_store_exactly_and_never_imports() -> None:
    serde = Serde()
    with pytest.raises(SerializationError, match="time zone"):
        serde.dumps(datetime(2024, 1, 1, tzinfo=_OddZone()))
    with pytest.raises(InvalidInput, match="only dataclasses"):
        serde.register(Opaque)
    serde.register(Point)
    with pytest.raises(InvalidInput, match="already registered"):
        serde.register(NotRegistered, name=f"{Point.__module__}.{Point.__qualname__}")
    writer = Serde()
    writer.register(NotRegistered, name="os.system")  # a name that is also an importable function
    with pytest.raises(StoredDataError, match="'os.system', which is not registered"):
        Serde().loads(writer.dumps({"x": NotRegistered(1)}))
    with pytest.raises(StoredDataError, match="type tag 'pickle'"):
        serde.loads_typed(("pickle", b"..."))
    with pytest.raises(StoredDataError):
        serde.loads(b"\xc7\x01\x63x")  # an extension code this version does not know
    assert serde.loads_typed(serde.dumps_typed({"p": Point(1, 2)})) == {"p": Point(1, 2)}


class _OddZone(tzinfo):
    def utcoffset(self, d: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, d: datetime | None) -> timedelta:
        return timedelta(0)


# -- what only a server shows -------------------------------------------------------------------


async def test_an_unchanged_state_key_is_stored_once(server_kind: str, make: Make, client: redis.Redis) -> None:
    cp = make(server_kind)
    doc = "a long document " * 200
    head = Checkpoint(session_id="share", state={"doc": doc, "n": 0})
    await cp.save(head)
    for i in range(1, 4):
        head = head.child({"doc": doc, "n": i})
        await cp.save(head)
    data_key = cp.engine.keys("share").data  # type: ignore[attr-defined]
    fields = client.hkeys(data_key)
    assert sum(f.startswith(b"b::doc:") for f in fields) == 1
    assert sum(f.startswith(b"b::n:") for f in fields) == 4
    assert all(c.state["doc"] == doc for c in await cp.list("share"))

    # Deleting a checkpoint removes the values only it had, keeps the shared ones.
    await cp.delete("share", head.checkpoint_id)
    fields = client.hkeys(data_key)
    assert sum(f.startswith(b"b::doc:") for f in fields) == 1
    assert sum(f.startswith(b"b::n:") for f in fields) == 3


async def test_a_class_registered_by_the_writer_only_fails_on_load(server_kind: str, make: Make) -> None:
    writer = make(server_kind)
    reader = make(server_kind, types=())
    await writer.save(Checkpoint(session_id="cls", state={"p": Point(1, 2)}))
    with pytest.raises(StoredDataError, match="not registered"):
        await reader.load("cls")


async def test_prefixes_app_and_app2_are_isolated_and_clear_all_removes_exactly_its_keys(
    server_kind: str, make: Make, client: redis.Redis, prefix: str
) -> None:
    app = make(server_kind, prefix=prefix + "app")
    app2 = make(server_kind, prefix=prefix + "app2")
    sessions = ["foo", "foo:run:x", "}{", "*"]
    for sid in sessions:
        await app.save(Checkpoint(session_id=sid, state={"of": "app", "l": [1, 2, 3, 4]}, run_id="r"))
        await app2.save(Checkpoint(session_id=sid, state={"of": "app2"}, run_id="r"))
    # Keys stateline does not own, some of them close to app's names.
    foreign = [prefix + k for k in ("apple", "app:x", "app2", "appthreads2", "app{foo}:z", "app{foo}", "other")]
    for k in foreign:
        client.set(k, b"not stateline's")

    assert sorted(await app.list_sessions()) == sorted(sessions) == sorted(await app2.list_sessions())
    for sid in sessions:
        assert (await app.load(sid)).state["of"] == "app"  # type: ignore[union-attr]
        assert (await app2.load(sid)).state["of"] == "app2"  # type: ignore[union-attr]

    everything = set(client.scan_iter(match=prefix + "*", count=1000))
    of_app2 = {k for k in everything if k.startswith((prefix + "app2{").encode())}
    owned = everything - of_app2 - {k.encode() for k in foreign}
    shards = len({app.engine.schema.index_of(sid) for sid in sessions})  # type: ignore[attr-defined]
    assert len(owned) == 2 * len(sessions) + shards and len(of_app2) == 2 * len(sessions) + shards
    await app.clear_all()
    assert set(client.scan_iter(match=prefix + "*", count=1000)) == everything - owned
    assert await app.list_sessions() == []
    assert sorted(await app2.list_sessions()) == sorted(sessions)
    for sid in sessions:
        assert (await app2.load(sid)).state["of"] == "app2"  # type: ignore[union-attr]
    assert all(client.get(k) == b"not stateline's" for k in foreign)
    with pytest.raises(InvalidInput, match="non-empty"):
        make(server_kind, prefix="")


def _evalsha_calls(client: redis.Redis) -> int:
    # Commands a script runs count in commandstats too: only EVALSHA says what the client sent.
    return client.info("commandstats").get("cmdstat_evalsha", {"calls": 0})["calls"]


async def test_save_is_one_round_trip_and_list_one_for_any_limit(
    server_kind: str, make: Make, client: redis.Redis
) -> None:
    cp = make(server_kind)
    head = Checkpoint(session_id="rt", state={"n": 0, "messages": ["hello"] * 5, "doc": "x" * 1000})
    await cp.save(head)  # loads the script
    await cp.list("rt", limit=1)
    for i in range(1, 300):
        head = head.child({"n": i, "messages": head.state["messages"] + [f"m{i}"], "doc": "x" * 1000})
        before = _evalsha_calls(client)
        await cp.save(head)  # one pipeline: the script and the discovery-index ZADD
        assert _evalsha_calls(client) - before == 1
    before = _evalsha_calls(client)
    await cp.load("rt")
    assert _evalsha_calls(client) - before == 1
    for n in (1, 10, 100, 250, 300):
        before = _evalsha_calls(client)
        got = await cp.list("rt", limit=n)
        assert len(got) == n and got[0] == head
        assert _evalsha_calls(client) - before == 1, n


def _race(writers: list[SyncRedisCheckpointer], turns: list[Checkpoint]) -> list[Any]:
    """Saves turns[i] with writers[i], each in its own thread, released together."""
    barrier = threading.Barrier(len(writers))
    outcomes: list[Any] = [None] * len(writers)

    def turn(i: int) -> None:
        barrier.wait()
        try:
            writers[i].save(turns[i])
            outcomes[i] = "won"
        except ConflictError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_the_sync_twin_under_real_threads_lets_exactly_one_of_two_win(url: str, prefix: str) -> None:
    writers = [SyncRedisCheckpointer(url, prefix=prefix) for _ in range(2)]
    head = Checkpoint(session_id="threads", state={"round": 0})
    writers[0].save(head)
    for r in range(1, 21):
        outcomes = _race(writers, [head.child({"round": r, "by": i}) for i in range(2)])
        assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "str"], outcomes
        head = writers[0].load("threads")
        assert head is not None and head.state["round"] == r
    assert len(writers[0].list("threads", limit=None)) == 21
    for w in writers:
        w.close()


async def test_clients_and_url_forms(url: str, prefix: str) -> None:
    sync_client = redis.Redis.from_url(url)
    async_client = aredis.Redis.from_url(url)
    by_sync = RedisCheckpointer(client=sync_client, prefix=prefix)
    by_async = RedisCheckpointer(async_client, prefix=prefix)
    twin_by_sync = SyncRedisCheckpointer(sync_client, prefix=prefix)
    await by_sync.save(Checkpoint(session_id="c", state={"n": 1}))
    assert (await by_async.load("c")).state == {"n": 1}  # type: ignore[union-attr]
    assert twin_by_sync.load("c").state == {"n": 1}  # type: ignore[union-attr]
    await by_sync.close()
    await by_async.close()
    assert sync_client.ping() and await async_client.ping()  # a client passed in stays open
    await async_client.aclose()
    sync_client.close()

    RedisCheckpointer("rediss://127.0.0.1:6380/0", prefix=prefix)  # accepted (connects on first use)
    with pytest.raises(InvalidInput):
        RedisCheckpointer("http://example.com", prefix=prefix)
    with pytest.raises(InvalidInput, match="not both"):
        RedisCheckpointer(url, client=redis.Redis.from_url(url))
    with pytest.raises(InvalidInput, match="decode"):
        RedisCheckpointer(client=redis.Redis.from_url(url, decode_responses=True))


@pytest.fixture(scope="module")
def unix_socket() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="sl", dir="/tmp"))  # socket paths must stay short
    sock = base / "v.sock"
    server = servers.start(servers.valkey_binary(), base / "data", "--unixsocket", str(sock), "--unixsocketperm", "700")
    yield f"unix://{sock}"
    servers.stop_all([server])


async def test_a_unix_socket_url(unix_socket: str, prefix: str) -> None:
    async with RedisCheckpointer(unix_socket, prefix=prefix) as cp:
        await cp.save(Checkpoint(session_id="u", state={"via": "unix"}))
        assert (await cp.load("u")).state == {"via": "unix"}  # type: ignore[union-attr]
    with SyncRedisCheckpointer(unix_socket, prefix=prefix) as sync:
        assert sync.list_sessions() == ["u"]


# -- Redis Cluster --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with servers.cluster(tmp_path_factory.mktemp("cp-cluster"), servers.valkey_binary(), 3) as nodes:
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_clear_all_on_a_cluster_scans_every_primary(cluster_url: str, flavour: str) -> None:
    prefix = f"cc{uuid4().hex[:6]}:"
    mine = (
        RedisCheckpointer(cluster_url, prefix=prefix)
        if flavour == "async"
        else SyncDriven(SyncRedisCheckpointer(cluster_url, prefix=prefix))
    )
    neighbour = RedisCheckpointer(cluster_url, prefix=prefix + "2")
    sessions = [f"s{i}" for i in range(40)]
    for sid in sessions:
        await mine.save(Checkpoint(session_id=sid, state={"sid": sid, "log": list(range(6))}))
        await neighbour.save(Checkpoint(session_id=sid, state={"sid": sid}))
    cluster = RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://").split(",")[0])
    cluster.set(prefix + "foreign", b"keep")

    def keys_by_node() -> dict[str, set[bytes]]:
        return {n.name: set(cluster.scan_iter(match=prefix + "*", target_nodes=n)) for n in cluster.get_primaries()}

    before = keys_by_node()
    assert all(len(keys) > 5 for keys in before.values()), "sessions should span every primary"
    await mine.clear_all()
    left = set().union(*keys_by_node().values())
    assert {k for k in left if k.startswith((prefix + "{").encode())} == set()  # threads and index shards
    assert (prefix + "foreign").encode() in left
    assert sorted(await neighbour.list_sessions()) == sorted(sessions)
    assert await mine.list_sessions() == []
    await mine.close()
    await neighbour.close()
    cluster.close()


# -- plans alone, no server -----------------------------------------------------------------------


def test_delete_all_plan_scans_then_unlinks_key_by_key_then_the_indexes() -> None:
    engine = Engine(ValueCodec(Serde()), prefix="p*:")
    plan = engine.delete_all()
    step = plan.send(None)
    assert step == Scan("p\\*:{*}:[di]")
    step = plan.send(("next", [b"p*:{a}:d", b"p*:{a}:i"]))
    assert step == Batch((Command(("UNLINK", b"p*:{a}:d")), Command(("UNLINK", b"p*:{a}:i"))))
    assert plan.send([1, 1]) == Scan("p\\*:{*}:[di]", "next")
    step = plan.send((None, []))
    assert step.steps[:3] == (
        Command(("UNLINK", "p*:{threads:0}")),
        Command(("UNLINK", "p*:{threads:0}:exp")),
        Command(("UNLINK", "p*:{threads:1}")),
    )
    assert len(step.steps) == 2 * 64 and step.steps[-1] == Command(("UNLINK", "p*:{threads:63}:exp"))
    with pytest.raises(StopIteration) as done:
        plan.send([1] + [0] * 127)
    assert done.value.value == 3


def test_delete_checkpoint_plan_is_one_round_trip_unless_it_empties_the_thread() -> None:
    engine = Engine(ValueCodec(Serde()), prefix="p:")
    engine.discovery._wall = lambda: 1.0
    plan = engine.delete_checkpoint("a b", "", "c1")
    call = Call(SCRIPTS.delete_checkpoint, ("p:{a%20b}:d", "p:{a%20b}:i"), ("", "c1"))
    assert plan.send(None) == Batch((call, Command(("EXISTS", "p:{a%20b}:i"))))
    with pytest.raises(StopIteration) as done:
        plan.send([1, 1])  # the thread lives on
    assert done.value.value is True
    plan = engine.delete_checkpoint("a b", "", "c1")
    plan.send(None)
    shard = engine.schema.index_of("a b")
    assert plan.send([1, 0]) == Batch((Call(SCRIPTS.index, shard.all, ("drop", 1000, "a%20b")),))  # its last one
    with pytest.raises(StopIteration) as done:
        plan.send([1])
    assert done.value.value is True
