"""One id rule for every method: the savers follow LangGraph's (a str is the id, anything
else its str(), so 1 and "1" are one thread; None, bytes and collections are refused), the
seed API its documented one (str ids only)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from stateline import Checkpoint, InvalidInput, MemoryCheckpointer, SyncRedisCheckpointer
from stateline.langgraph import RedisSaver


def _cfg(thread: Any, cid: Any = None) -> dict:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if cid is not None:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def _put(saver: RedisSaver, thread: Any, run: Any = None) -> dict:
    cp = empty_checkpoint()
    cp["channel_values"], cp["channel_versions"] = {"a": 1}, {"a": 1}
    return saver.put(_cfg(thread), cp, {"run_id": run} if run is not None else {}, {"a": 1})


def test_an_int_thread_id_is_its_str_in_every_method(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    run = uuid.uuid4()
    cfg = _put(saver, 1, run)
    assert cfg["configurable"]["thread_id"] == "1"
    assert saver.get_tuple(_cfg("1")) is not None and saver.get_tuple(_cfg(1)) is not None
    assert len(list(saver.list(_cfg(1)))) == 1
    saver.put_writes(_cfg(1, cfg["configurable"]["checkpoint_id"]), [("a", 2)], "task")
    assert saver.get_tuple(_cfg("1")).pending_writes == [("task", "a", 2)]
    saver.copy_thread(1, 2)
    assert saver.get_tuple(_cfg("2")) is not None
    saver.prune([2], strategy="delete")
    assert saver.get_tuple(_cfg("2")) is None
    saver.delete_for_runs([run])  # a UUID run id is its str, as in the metadata
    assert saver.get_tuple(_cfg("1")) is None
    _put(saver, 3)
    saver.delete_thread(3)
    assert saver.get_tuple(_cfg("3")) is None


@pytest.mark.parametrize("bad", [b"x", None, ["a"], {"a": 1}])
def test_what_the_rule_refuses_every_method_refuses(url: str, prefix: str, bad: Any) -> None:
    saver = RedisSaver(url, prefix=prefix)
    calls = [
        lambda: _put(saver, bad),
        lambda: saver.get_tuple(_cfg(bad)),
        lambda: list(saver.list(_cfg(bad))),
        lambda: saver.put_writes(_cfg(bad, "c"), [("a", 1)], "task"),
        lambda: saver.delete_thread(bad),
        lambda: saver.copy_thread(bad, "t"),
        lambda: saver.copy_thread("t", bad),
        lambda: saver.prune([bad]),
        lambda: saver.delete_for_runs([bad]),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            call()


def test_checkpoint_id_zero_is_checkpoint_0_not_the_newest(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    _put(saver, "t")
    assert saver.get_tuple(_cfg("t", 0)) is None
    assert saver.get_tuple(_cfg("t", "")) is not None  # "" (like None) is the newest, as in LangGraph
    assert list(saver.list(_cfg("t"), before=_cfg("t", 0))) == []
    with pytest.raises(InvalidInput):
        saver.get_tuple(_cfg("t", b"0"))


async def test_the_seed_api_takes_str_ids_only(url: str, prefix: str) -> None:
    with SyncRedisCheckpointer(url, prefix=prefix) as cp:
        cp.save(Checkpoint(session_id="s"))
        for call in (
            lambda: cp.load(1),
            lambda: cp.load("s", 0),
            lambda: cp.load("s", ""),
            lambda: cp.list(1),
            lambda: cp.list("s", before=""),
            lambda: cp.list("s", before=0),
            lambda: cp.delete(b"s"),
            lambda: cp.delete("s", ""),
        ):
            with pytest.raises(InvalidInput):
                call()
        with pytest.raises(InvalidInput):
            Checkpoint(session_id=1)  # type: ignore[arg-type]
    memory = MemoryCheckpointer()
    await memory.save(Checkpoint(session_id="s"))
    for coro in (memory.load(1), memory.load("s", ""), memory.list("s", before=""), memory.delete("s", "")):
        with pytest.raises(InvalidInput):
            await coro
