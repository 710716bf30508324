"""Property-based round trips (hypothesis): nested values of every supported type, any ids
and channel names, through both APIs, with compression and encryption on and off.

The savers must return what LangGraph's own InMemorySaver returns for the same put (it
runs the same serde); the seed API must return what was saved, exactly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from stateline import Checkpoint, Compression, Encryption, SyncRedisCheckpointer
from stateline.elements import ITEMS
from stateline.langgraph import RedisSaver

SETTINGS = {
    "plain": {"compression": False},
    "compressed": {"compression": Compression(threshold=0)},
    "encrypted": {"compression": False, "encryption": Encryption({"k": b"\x07" * 32})},
    "both": {"compression": Compression(threshold=0), "encryption": Encryption({"k": b"\x07" * 32})},
}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Any text, but no lone surrogates (not UTF-8: refused as ids, and JSON-like serdes differ on them).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    text,
    st.binary(max_size=40),
)
# Lists long enough to be stored item by item (4+) and short ones, nested dicts and lists.
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=8), st.dictionaries(text, inner, max_size=5)),
    max_leaves=25,
)
rich_scalars = st.one_of(
    scalars,
    st.integers(),  # any size
    st.datetimes(timezones=st.sampled_from([None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30))])),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.timedeltas(),
)
rich = st.recursive(
    rich_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=8),
        st.tuples(inner, inner),
        st.dictionaries(text, inner, max_size=5),
        st.dictionaries(st.integers(), inner, max_size=3),
        st.frozensets(st.integers(), max_size=4),
        st.sets(text, max_size=4),
    ),
    max_leaves=25,
)


@pytest.fixture(params=list(SETTINGS))
def saver(request: pytest.FixtureRequest, url: str, prefix: str) -> Iterator[RedisSaver]:
    s = RedisSaver(url, prefix=prefix, **SETTINGS[request.param])
    yield s
    s.close()


def _put(saver: Any, thread: str, ns: str, values: dict, writes: list) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = {k: "1" for k in values}
    cfg = saver.put(
        {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}, cp, {"m": 1}, dict(cp["channel_versions"])
    )
    saver.put_writes(cfg, writes, "task")
    ITEMS.drop(lambda k: True)
    got = saver.get_tuple(cfg)
    return got.checkpoint["channel_values"], got.pending_writes, got.metadata


@FAST
@given(
    thread=text,
    ns=text,
    values=st.dictionaries(text, json_like, max_size=4),
    writes=st.lists(st.tuples(text, json_like), max_size=3),
)
def test_savers_return_what_inmemorysaver_returns(
    saver: RedisSaver, thread: str, ns: str, values: dict, writes: list
) -> None:
    saver.delete_thread(thread)
    assert _put(saver, thread, ns, values, writes) == _put(InMemorySaver(), thread, ns, values, writes)


@pytest.fixture(params=list(SETTINGS))
def checkpointer(request: pytest.FixtureRequest, url: str, prefix: str) -> Iterator[SyncRedisCheckpointer]:
    with SyncRedisCheckpointer(url, prefix=prefix, **SETTINGS[request.param]) as cp:
        yield cp


@FAST
@given(
    session=text,
    cid=text.filter(bool),
    state=st.dictionaries(text, rich, max_size=4),
    meta=st.dictionaries(text, rich, max_size=2),
)
def test_the_seed_api_returns_exactly_what_was_saved(
    checkpointer: SyncRedisCheckpointer, session: str, cid: str, state: dict, meta: dict
) -> None:
    checkpointer.delete(session)
    saved = Checkpoint(session_id=session, checkpoint_id=cid, state=state, metadata=meta)
    checkpointer.save(saved)
    ITEMS.drop(lambda k: True)
    assert checkpointer.load(session) == saved
    assert checkpointer.load(session, cid) == saved
    assert checkpointer.list(session) == [saved]
