"""List items are recognised by their content, never by identity: in-place changes are stored."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from pydantic import BaseModel, ConfigDict, PrivateAttr, computed_field, field_serializer, model_serializer

from stateline import Checkpoint, SerializationError, SyncRedisCheckpointer
from stateline.codec import FINGERPRINT_PYDANTIC, ValueCodec
from stateline.elements import ItemCache, digest
from stateline.langgraph import RedisSaver


def fresh_bytes(serde: JsonPlusSerializer, item: object) -> bytes:
    typ, data = serde.dumps_typed(item)
    return typ.encode() + b"\0" + data


def exact(value: object) -> object:
    """A value with its types spelled out, so that 1 and 1.0 and True differ."""
    if isinstance(value, dict):
        return {exact(k): exact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [exact(v) for v in value])
    if hasattr(value, "model_dump"):
        return (type(value).__name__, exact(value.model_dump()))
    return (type(value).__name__, value)


ITEMS = [
    "text",
    1,
    1.0,
    True,
    None,
    b"raw",
    {"a": 1},
    {"a": 1.0},
    {"a": True},
    {"a": [1, 2]},
    {"a": (1, 2)},
    {"when": dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)},
    HumanMessage("hi", id="h"),
    HumanMessage("hi", id="h", name="alice"),
    HumanMessage("hi", id="h", extra_field="x"),
    AIMessage("ok", id="a", tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "c"}]),
    AIMessage("ok", id="a", tool_calls=[{"name": "search", "args": {"q": "y"}, "id": "c"}]),
    AIMessage("ok", id="a", additional_kwargs={"score": 1}),
    AIMessage("ok", id="a", additional_kwargs={"score": 1.0}),
    AIMessage("ok", id="a", additional_kwargs={"at": dt.date(2026, 12, 1)}),
    ToolMessage("done", id="t", tool_call_id="c"),
]


def test_cached_bytes_are_the_serdes_own_and_distinct_contents_never_share_them() -> None:
    serde = JsonPlusSerializer()
    cache = ItemCache(ValueCodec(serde, fingerprint=FINGERPRINT_PYDANTIC))
    first_digests, first = cache.address(ITEMS, "x")
    again_digests, again = cache.address(ITEMS, "x")  # from the cache where it can
    assert again_digests == first_digests and again == first
    for i, item in enumerate(ITEMS):
        d = again_digests[16 * i : 16 * i + 16]
        assert again[d] == fresh_bytes(serde, item) and d == digest(again[d]), item
    # items the serde tells apart (1, 1.0 and True; a str and a message...) are kept apart
    distinct = {again_digests[i : i + 16] for i in range(0, len(again_digests), 16)}
    assert len(distinct) == len({fresh_bytes(serde, item) for item in ITEMS}) == len(ITEMS) - 1  # (1, 2) is [1, 2]


def test_an_item_changed_in_place_is_serialized_again() -> None:
    serde = JsonPlusSerializer()
    cache = ItemCache(ValueCodec(serde, fingerprint=FINGERPRINT_PYDANTIC))
    msg = AIMessage("ok", id="a", tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "c"}])
    changes = [
        lambda: setattr(msg, "content", "edited"),
        lambda: msg.tool_calls[0]["args"].update(q="y"),
        lambda: msg.additional_kwargs.update(score=1),
        lambda: msg.additional_kwargs.update(score=1.0),
        lambda: msg.additional_kwargs.update(score=True),
        lambda: msg.response_metadata.update(at=dt.datetime(2026, 1, 1)),
        lambda: msg.response_metadata.update(at=dt.datetime(2026, 1, 2)),
    ]
    seen = set()
    for change in changes:
        change()
        digests, elements = cache.address([msg], "x")
        assert elements[digests] == fresh_bytes(serde, msg)
        seen.add(digests)
    assert len(seen) == len(changes)


def test_the_cache_stays_within_its_budget_and_right_after_dropping_entries() -> None:
    serde = JsonPlusSerializer()
    cache = ItemCache(ValueCodec(serde, fingerprint=FINGERPRINT_PYDANTIC), budget_bytes=20_000)
    messages = [HumanMessage(f"message {i} " + "x" * 200, id=str(i)) for i in range(300)]
    for n in range(0, 300, 10):
        digests, elements = cache.address(messages[: n + 10], "x")
        assert [elements[digests[i : i + 16]] for i in range(0, len(digests), 16)] == [
            fresh_bytes(serde, m) for m in messages[: n + 10]
        ]
        assert cache._size <= 20_000 // 2 + 1_000


def test_only_serdes_known_to_store_plain_content_use_fingerprints(url: str, prefix: str) -> None:
    assert RedisSaver(url, prefix=prefix).engine.codec.fingerprint == FINGERPRINT_PYDANTIC

    class Custom(JsonPlusSerializer):  # may store anything its own way
        def dumps_typed(self, obj: object) -> tuple[str, bytes]:
            return super().dumps_typed(obj)

    assert RedisSaver(url, prefix=prefix, serde=Custom()).engine.codec.fingerprint is None
    assert SyncRedisCheckpointer(url, prefix=prefix)._engine.codec.fingerprint is not None


class Chat(TypedDict):
    messages: Annotated[list, add_messages]


def test_a_node_that_edits_earlier_messages_in_place_has_its_edits_stored(url: str, prefix: str) -> None:
    """LangGraph hands nodes the very message objects of the state; a node that changes one
    in place (bad practice, but it happens) changes what the next checkpoint holds."""

    def bot(state: Chat) -> dict:
        n = len(state["messages"])
        first = state["messages"][0]
        first.content = f"edited at {n}"  # in place
        first.additional_kwargs["turn"] = n if n % 2 else float(n)  # int, then float
        last = state["messages"][-1]
        last.response_metadata["seen"] = True
        return {"messages": [AIMessage(f"reply {n}", id=f"a{n}")]}

    saver = RedisSaver(url, prefix=prefix)
    app = StateGraph(Chat).add_node("bot", bot).add_edge(START, "bot").add_edge("bot", END).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "edits"}}
    for turn in range(6):
        live = app.invoke({"messages": [HumanMessage(f"turn {turn}", id=f"h{turn}")]}, cfg)["messages"]
        stored = RedisSaver(url, prefix=prefix).get_tuple(cfg).checkpoint["channel_values"]["messages"]  # no cache
        assert exact(stored) == exact(live)
    assert stored[0].content == "edited at 11" and stored[0].additional_kwargs == {"turn": 11}


def test_the_seed_api_stores_dicts_changed_in_place(url: str, prefix: str) -> None:
    store = SyncRedisCheckpointer(url, prefix=prefix)
    messages = [{"role": "user", "content": f"m{i}", "n": i} for i in range(8)]
    store.save(Checkpoint(session_id="s", checkpoint_id="c1", state={"messages": messages}))
    messages[2]["n"] = 2.0
    messages[3]["content"] = "edited"
    store.save(Checkpoint(session_id="s", checkpoint_id="c2", state={"messages": messages}))
    loaded = store.load("s").state["messages"]
    assert exact(loaded) == exact(messages)
    assert exact(store.load("s", "c1").state["messages"][2]) == exact({"role": "user", "content": "m2", "n": 2})


@pytest.mark.parametrize("bad", [object(), {"k": object()}])
def test_an_unserializable_item_is_still_refused(bad: object) -> None:
    serde = JsonPlusSerializer()
    cache = ItemCache(ValueCodec(serde, fingerprint=FINGERPRINT_PYDANTIC))
    with pytest.raises(SerializationError, match="an item"):
        cache.address(["fine", bad], "an item of the list")


def test_a_channels_growing_list_reuses_its_prefix_only_when_content_and_types_match() -> None:
    class A(BaseModel):
        x: int

    class B(BaseModel):  # the same fields, another class: stored under another name
        x: int

    serde = JsonPlusSerializer()
    cache = ItemCache(ValueCodec(serde, fingerprint=FINGERPRINT_PYDANTIC))
    items: list[object] = [HumanMessage(f"m{i}", id=str(i)) for i in range(20)] + [A(x=1)]

    def check() -> None:
        digests, elements = cache.address(items, "x", key=("thread", "", "messages"))
        assert [elements[digests[i : i + 16]] for i in range(0, len(digests), 16)] == [
            fresh_bytes(serde, m) for m in items
        ]

    check()
    items.append(AIMessage("new", id="n"))  # grows at its end
    check()
    items[3].content = "edited in place"  # a change before the end
    check()
    items[20] = B(x=1)  # same fingerprint, another type
    check()
    items.insert(0, HumanMessage("first", id="f"))  # rewritten from the start
    check()
    del items[5:]  # shorter
    check()
    items.append({"when": dt.datetime(2026, 1, 1)})  # no exact fingerprint for the whole list
    check()


class Cat(BaseModel):
    name: str


class Dog(BaseModel):  # Cat's fields under another name
    name: str


class Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int


class TimesTen(BaseModel):
    a: int

    @model_serializer
    def dump(self) -> dict:
        return {"a": self.a * 10}


class FromPrivate(BaseModel):
    a: int
    _p: int = PrivateAttr(default=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def c(self) -> int:
        return self._p


class TupleAware(BaseModel):
    x: Any

    @field_serializer("x")
    def keep_tuples(self, v: Any) -> Any:
        return {"tuple": list(v)} if isinstance(v, tuple) else v


class Slotted(BaseModel):
    __slots__ = ("tag",)  # state outside the fields, read by a computed field
    x: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def t(self) -> str:
        return self.tag


def _slotted(tag: str) -> Slotted:
    m = Slotted()
    object.__setattr__(m, "tag", tag)
    return m


class FieldsSet(BaseModel):
    x: Any = None

    @model_serializer(mode="wrap")
    def dump(self, handler: Any) -> dict:
        return {**handler(self), "set": sorted(self.model_fields_set)}


def _private(p: int) -> FromPrivate:
    m = FromPrivate(a=1)
    m._p = p
    return m


# Pairs of items that look alike to a careless fingerprint but that the serde stores differently.
LOOKALIKES = [
    ({"pet": Cat(name="x")}, {"pet": Dog(name="x")}),  # a model nested in a plain item
    ({"pet": Cat(name="x")}, {"pet": {"name": "x"}}),
    ({"pet": {"name": "x"}}, {"pet": Cat(name="x")}),
    ([Cat(name="x")], [Dog(name="x")]),
    (Cat(name="x"), Dog(name="x")),
    (Extra(a=1, z=1), Extra(a=1, z=2)),  # extras
    (Extra(a=1), Extra(a=1, z=2)),
    (AIMessage("hi", additional_kwargs={"p": Cat(name="x")}), AIMessage("hi", additional_kwargs={"p": Dog(name="x")})),
    (AIMessage("hi", additional_kwargs={"p": {"a": 1}}), AIMessage("hi", additional_kwargs={"p": TimesTen(a=1)})),
    (_private(0), _private(5)),  # a computed field reading a private attribute
    (TupleAware(x=[1]), TupleAware(x=(1,))),  # a serializer that tells tuples from lists
    (_slotted("A"), _slotted("B")),
    (FieldsSet(x=1), FieldsSet.model_construct(x=1, _fields_set=set())),
]


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize(("first", "then"), LOOKALIKES)
def test_items_that_only_look_alike_keep_their_own_bytes(first: object, then: object, keyed: bool) -> None:
    serde = JsonPlusSerializer()
    cache = ItemCache(ValueCodec(serde, fingerprint=FINGERPRINT_PYDANTIC))
    key = ("thread", "", "channel") if keyed else None
    for items in ([first, "a", "b", "c"], [then, "a", "b", "c"], [first, "a", "b", "c", "d"]):
        digests, elements = cache.address(items, "x", key)
        assert [elements[digests[i : i + 16]] for i in range(0, len(digests), 16)] == [
            fresh_bytes(serde, m) for m in items
        ]


def test_a_model_nested_in_a_stored_item_is_not_confused_across_threads(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix, serde=JsonPlusSerializer(allowed_msgpack_modules=[Cat, Dog]))

    def put(thread: str, pet: BaseModel) -> dict:
        cp = empty_checkpoint()
        cp["channel_values"] = {"pets": [{"pet": pet}, {"n": 1}, {"n": 2}, {"n": 3}]}
        cp["channel_versions"] = {"pets": "1"}
        return saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, cp, {}, {"pets": "1"})

    put("alice", Cat(name="rex"))
    bob = put("bob", Dog(name="rex"))
    assert type(saver.get_tuple(bob).checkpoint["channel_values"]["pets"][0]["pet"]) is Dog
