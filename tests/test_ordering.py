"""Order follows the parent chain, not the clock: a turn saved by a host whose clock is
behind its parent's host is still the newest, for RedisCheckpointer, its sync twin and
MemoryCheckpointer; and created_at orders correctly before 1970 and across timezones."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import stateline
from stateline import Checkpoint, ConflictError, SyncRedisCheckpointer, runner
from stateline import checkpointer as checkpointer_module
from stateline.plan import Batch

from . import test_checkpointer as base
from .test_checkpointer import Make

kind, make = base.kind, base.make  # the fixtures of the seed API's behaviour suite

UTC = timezone.utc

# A second process whose clock is `skew` seconds ahead saves one checkpoint and prints its id.
_AHEAD = textwrap.dedent(
    """
    import asyncio, sys, time
    from datetime import datetime, timedelta, timezone
    import stateline.checkpointer as c
    url, prefix, kind, session, skew = sys.argv[1:6]
    skew = float(skew)
    real_ns = time.time_ns
    time.time_ns = lambda: real_ns() + int(skew * 1e9)
    ahead = datetime.now(timezone.utc) + timedelta(seconds=skew)
    first = c.Checkpoint(session_id=session, state={"turns": ["from the host ahead"]}, created_at=ahead)
    if kind == "sync":
        with c.SyncRedisCheckpointer(url, prefix=prefix) as cp:
            cp.save(first)
    else:
        async def main():
            async with c.RedisCheckpointer(url, prefix=prefix) as cp:
                await cp.save(first)
        asyncio.run(main())
    print(first.checkpoint_id)
    """
)


def _save_from_a_host_ahead(url: str, prefix: str, kind: str, session: str, skew: float) -> str:
    src = str(Path(stateline.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, "-c", _AHEAD, url, prefix, kind, session, str(skew)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("server_kind", ["redis", "sync"])
async def test_a_turn_saved_by_a_host_whose_clock_is_behind_is_not_lost(
    server_kind: str, make: Make, url: str, prefix: str
) -> None:
    first_id = _save_from_a_host_ahead(url, prefix, server_kind, "skew", 60.0)
    cp = make(server_kind)
    first = await cp.load("skew")
    assert first is not None and first.checkpoint_id == first_id
    second = first.child({"turns": [*first.state["turns"], "from this host"]})
    assert second.created_at < first.created_at  # this host's clock is behind

    await cp.save(second)
    assert await cp.load("skew") == second
    assert [c.checkpoint_id for c in await cp.list("skew")] == [second.checkpoint_id, first_id]
    # A third turn built on the first one is a conflict, not a silent fork.
    with pytest.raises(ConflictError, match=second.checkpoint_id):
        await cp.save(first.child({"turns": ["lost?"]}))
    assert await cp.load("skew") == second


async def test_a_child_made_after_the_clock_stepped_back_is_the_newest(
    kind: str, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp = make(kind)
    first = Checkpoint(session_id="ntp", state={"n": 1})
    await cp.save(first)
    monkeypatch.setattr(checkpointer_module, "_now", lambda: datetime.now(UTC) - timedelta(seconds=30))
    second = first.child({"n": 2})
    third = second.child({"n": 3})
    assert third.created_at < first.created_at
    await cp.save(second)
    await cp.save(third)
    assert await cp.load("ntp") == third
    assert [c.state["n"] for c in await cp.list("ntp")] == [3, 2, 1]
    assert [c.state["n"] for c in await cp.list("ntp", before=second.checkpoint_id)] == [1]


async def test_a_child_stamped_before_its_parent_by_hand_is_ordered_after_it(kind: str, make: Make) -> None:
    cp = make(kind)
    parent = Checkpoint(session_id="hand", state={"n": 1}, created_at=datetime(2030, 1, 1, tzinfo=UTC))
    await cp.save(parent)
    child = Checkpoint(session_id="hand", state={"n": 2}, parent_id=parent.checkpoint_id,
                       created_at=datetime(2000, 1, 1, tzinfo=UTC))  # fmt: skip
    await cp.save(child)
    await cp.save(child)  # a retry of the very same save is not a conflict
    assert await cp.load("hand") == child  # created_at is kept as given
    assert [c.checkpoint_id for c in await cp.list("hand")] == [child.checkpoint_id, parent.checkpoint_id]
    grandchild = child.child({"n": 3})
    await cp.save(grandchild)
    assert [c.state["n"] for c in await cp.list("hand")] == [3, 2, 1]


@pytest.mark.parametrize(
    "moments",
    [
        [datetime(1950, 6, 1), datetime(1960, 1, 1), datetime(1969, 12, 31, 23, 59, 59, 999999), datetime(1970, 1, 1),
         datetime(1970, 1, 1, 0, 0, 0, 1), datetime(2001, 9, 9, 1, 46, 40)],
        [datetime(1, 1, 2), datetime(1000, 1, 1), datetime(9999, 12, 30)],
    ],
    ids=["around-1970", "extremes"],
)  # fmt: skip
async def test_created_at_orders_before_1970_and_at_the_extremes(
    kind: str, make: Make, moments: list[datetime]
) -> None:
    cp = make(kind)
    saved = [
        Checkpoint(session_id="old", state={"i": i}, created_at=m.replace(tzinfo=UTC)) for i, m in enumerate(moments)
    ]
    for c in reversed(saved):  # saved newest first: the order comes from created_at alone
        await cp.save(c)
    assert [c.state["i"] for c in await cp.list("old", limit=None)] == list(range(len(moments)))[::-1]
    assert (await cp.load("old")) == saved[-1]


async def test_created_at_orders_by_the_instant_whatever_the_timezone(kind: str, make: Make) -> None:
    cp = make(kind)
    tokyo = timezone(timedelta(hours=9))
    new_york = timezone(timedelta(hours=-5))
    # 09:00 in Tokyo is 00:00 UTC; 20:00 the day before in New York is 01:00 UTC.
    early = Checkpoint(session_id="tz", state={"at": "tokyo"}, created_at=datetime(2024, 5, 2, 9, 0, tzinfo=tokyo))
    late = Checkpoint(session_id="tz", state={"at": "new york"},
                      created_at=datetime(2024, 5, 1, 20, 0, tzinfo=new_york))  # fmt: skip
    await cp.save(late)
    await cp.save(early)
    assert [c.state["at"] for c in await cp.list("tz")] == ["new york", "tokyo"]


def test_the_order_id_sorts_as_the_instants_do() -> None:
    moments = [datetime(1, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in (0, 1, 365 * 1969, 365 * 1970, 3_000_000)]
    moments.append(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    ids = [checkpointer_module._order_id(Checkpoint(session_id="s", created_at=m, checkpoint_id="x")) for m in moments]
    assert ids == sorted(ids) and len({len(i) for i in ids}) == 1


def test_a_parent_stored_before_this_version_still_comes_first(url: str, prefix: str) -> None:
    """Order ids of 14 hex digits (stored before dates before 1970 were supported): a child
    saved on such a parent is ordered after it."""
    with SyncRedisCheckpointer(url, prefix=prefix) as cp:
        parent = Checkpoint(session_id="legacy", state={"n": 1}, created_at=datetime.now(UTC) + timedelta(days=1))
        snap, _ = cp._snapshot(parent, False)
        snap.checkpoint_id = f"{int(parent.created_at.timestamp() * 1_000_000):014x}.{parent.checkpoint_id}"
        runner.run(cp._conn.sync, cp.engine.put(snap))
        cp.save(parent.child({"n": 2}))
        assert [c.state["n"] for c in cp.list("legacy")] == [2, 1]


def test_a_save_the_server_finds_behind_its_parent_is_sent_again_just_after_it() -> None:
    """The plan alone: the 'behind' reply names the parent's order id; the save is sent
    again one microsecond after it, with the same alias; a second 'behind' is a conflict."""
    cp = SyncRedisCheckpointer("redis://127.0.0.1:1/0", prefix="p:")  # never connects
    parent_order = f"{(1 << 60) + 5_000_000:016x}.p"
    child = Checkpoint(session_id="s", parent_id="p", created_at=datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    plan = cp._save(child, False)

    def put_args(step: Any) -> list[str]:
        call = step.steps[-1] if isinstance(step, Batch) else step
        return call.args[0].split(" ")

    first = put_args(plan.send(None))
    assert first[1] == f"{(1 << 60) + 1_000_000:016x}.{child.checkpoint_id}" and first[7:9] == [
        "p",
        child.checkpoint_id,
    ]
    again = put_args(plan.send([1, [b"behind", parent_order.encode()]]))
    assert again[1] == f"{(1 << 60) + 5_000_001:016x}.{child.checkpoint_id}" and again[7:9] == first[7:9]
    with pytest.raises(ConflictError, match="ordered before its parent"):
        plan.send([1, [b"behind", parent_order.encode()]])
