"""Damaged data is always named: every field of a stored thread, truncated, overwritten with
garbage or given a future format version, reads as the state it held or as a
StoredDataError that names the thread, never as a raw decoding error or another state."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import ormsgpack
import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint

from stateline import Checkpoint, Compression, StoredDataError, SyncRedisCheckpointer
from stateline.codec import ENVELOPE, FORMAT
from stateline.elements import ITEMS
from stateline.langgraph import RedisSaver

LONG = [f"message {i}: " + "words that a chat would hold, " * 4 for i in range(6)]


def _cfg(thread: str, cid: str | None = None) -> dict:
    conf = {"thread_id": thread, "checkpoint_ns": ""}
    if cid:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def _put(saver: RedisSaver, thread: str, cid: str, parent: str | None, values: dict, version: int) -> dict:
    cp = empty_checkpoint()
    cp["id"] = cid
    cp["channel_values"] = values
    cp["channel_versions"] = {k: version for k in values}
    return saver.put(_cfg(thread, parent), cp, {"step": version, "source": "loop"}, dict(cp["channel_versions"]))


def _thread(saver: RedisSaver) -> None:
    """Two checkpoints with a list (items, a log), a small and a large value, and writes:
    plain, and a list of items stored by digest."""
    first = _put(saver, "t", "c1", None, {"msgs": LONG[:4], "n": 1, "big": "x" * 3000}, 1)
    saver.put_writes(first, [("note", "a small write"), ("msgs", LONG[4:])], "task-1", "~")
    _put(saver, "t", "c2", "c1", {"msgs": LONG, "n": 2}, 2)


def _reads(saver: RedisSaver) -> Any:
    ITEMS.drop(lambda k: True)  # items read before would hide a damaged one
    latest = saver.get_tuple(_cfg("t"))
    first = saver.get_tuple(_cfg("t", "c1"))
    listed = list(saver.list(_cfg("t")))
    history = saver.get_delta_channel_history(config=_cfg("t", "c2"), channels=["n"])
    return [(t.checkpoint, t.metadata, t.pending_writes) for t in (latest, first, *listed)], history


def _future(field: bytes, value: bytes, rng: random.Random) -> bytes | None:
    """The field with a newer version than this one reads: a record's format, or the
    envelope's version (None: a field without one)."""
    if field.startswith(b"c:"):
        n = int.from_bytes(value[:4], "big")
        index = ormsgpack.unpackb(value[4 : 4 + n])
        head = ormsgpack.packb([FORMAT + 1, *index[1:]])
        return len(head).to_bytes(4, "big") + head + value[4 + n :]
    newer = bytes([ENVELOPE + 1])
    if field.startswith(b"e:"):
        return newer + value[1:]
    if field.startswith(b"b:") and value[:1] == b"v":
        return b"v" + newer + value[2:]
    if field.startswith(b"w:"):
        at = 0
        if field.count(b":") == 2:  # packed writes: the first entry's value
            count, _, rest = value.partition(b"\n")
            at = len(count) + 1 + int(count.rstrip(b"+"))
        at += value[at : at + 1] == b"+"
        if value[at : at + 1] == b"W":
            colon = value.index(b":", at)
            at = colon + 1 + 16 * int(value[at + 1 : colon])
        return value[:at] + newer + value[at + 1 :]
    return None


DAMAGES: dict[str, Callable[[bytes, bytes, random.Random], bytes | None]] = {
    "truncated": lambda f, v, rng: v[: len(v) // 2],
    "garbage": lambda f, v, rng: bytes(rng.getrandbits(8) for _ in v) or b"?",
    "future": _future,
}


@pytest.mark.parametrize("compression", [False, True])
def test_every_damaged_field_reads_as_before_or_as_stored_data_error_naming_the_thread(
    url: str, prefix: str, client: redis.Redis, compression: bool
) -> None:
    saver = RedisSaver(url, prefix=prefix, compression=Compression(threshold=0) if compression else False)
    _thread(saver)
    key = saver.engine.keys("t").data
    before = _reads(saver)
    rng = random.Random(7)
    fields = client.hgetall(key)
    checked = 0
    for field, value in sorted(fields.items()):
        for name, damage in DAMAGES.items():
            bad = damage(field, value, rng)
            if bad is None or bad == value:
                continue
            client.hset(key, field, bad)
            try:
                after = _reads(saver)
            except StoredDataError as exc:
                assert "'t'" in str(exc), f"{field!r} {name}: {exc}"
                if name == "future":
                    assert re.search("format [0-9]+, newer", str(exc)), f"{field!r}: {exc}"
            else:
                sealed = field[:2] in (b"c:", b"e:", b"w:") or (field[:2] == b"b:" and value[:1] == b"v")
                assert not sealed, f"{field!r} {name}: damaged, and read without an error"
                assert after == before, f"{field!r} {name}: a different state"
            finally:
                client.hset(key, field, value)
            checked += 1
    assert checked > 40
    assert _reads(saver) == before


def test_the_seed_api_names_damage_too(url: str, prefix: str, client: redis.Redis) -> None:
    with SyncRedisCheckpointer(url, prefix=prefix) as cp:
        first = Checkpoint(session_id="s", state={"msgs": LONG, "n": 1})
        cp.save(first)
        key = cp.engine.keys("s").data
        for field, value in client.hgetall(key).items():
            if field.startswith((b"c:", b"e:", b"b:")):
                client.hset(key, field, value[: len(value) // 2])
                ITEMS.drop(lambda k: True)
                with pytest.raises(StoredDataError, match="'s'"):
                    cp.load("s")
                client.hset(key, field, value)
        assert cp.load("s") == first


def test_a_frame_declaring_more_than_the_limit_is_refused_before_decompressing(
    url: str, prefix: str, client: redis.Redis
) -> None:
    import zstandard

    saver = RedisSaver(url, prefix=prefix, max_value_bytes=1 << 20)
    cfg = _put(saver, "bomb", "c1", None, {"v": "small"}, 1)
    key = saver.engine.keys("bomb").data
    field = next(f for f in client.hkeys(key) if f.startswith(b"b:"))
    frame = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))  # a few KB that expand to 64 MB
    import zlib

    envelope = bytes([1, 0x11]) + frame
    client.hset(key, field, b"v" + envelope + zlib.crc32(envelope).to_bytes(4, "big"))
    with pytest.raises(StoredDataError, match="over the limit"):
        saver.get_tuple(cfg)


def test_one_read_decodes_at_most_max_read_bytes(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg = _put(saver, "long", "c1", None, {"msgs": [f"item {i} " + "x" * 200 for i in range(100)]}, 1)
    saver.engine.codec.max_read_bytes = 10_000  # (a planted log of millions of items, in small)
    ITEMS.drop(lambda k: True)
    with pytest.raises(StoredDataError, match="thread 'long': one read decodes more than 10000 bytes"):
        saver.get_tuple(cfg)
