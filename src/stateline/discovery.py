"""The discovery index: which threads exist, and which threads hold checkpoints of a run.

A thread's keys share one hash tag, so nothing that spans threads can live with them. The
index is split into ``keys.SHARDS`` shards, each a pair of keys with a tag of its own, and a
thread's entries (its own and those of its runs) live in the shard its id hashes to: the
writes of a deployment spread over every shard, and scripts/index.lua keeps a thread and
its runs together in one atomic, bounded call. Looking a run up asks every shard (one
pipeline): delete_for_runs is rare, puts are not.

Entries of a thread with a TTL expire by score: each call of index.lua removes a bounded
number of expired threads of its shard, so nobody has to list threads for them to go. A
process writes a thread's entry when it first writes the thread (or a run of it) and again
when half the TTL has passed since it last did, not on every put. The index is only ever
used to discover: an entry whose thread is gone is dropped on sight.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import keys as K
from .keys import SHARDS, Schema, enc
from .plan import SCRIPTS, Batch, Call, Command, Plan

__all__ = ["Discovery", "THREAD_PAGE"]

THREAD_PAGE = 500
# Shards a page of threads reads at once: few round trips for a small deployment, and at
# most this many shards read ahead for a large one (a page continues in a full shard alone).
PAGE_SHARDS = 8
# Runs per index.lua call (its own budget) and run entries per lookup of one shard.
RUNS_PER_CALL = 256
LOOKUP = 1000
_CACHE_THREADS = 1024
_CACHE_RUNS = 16


@dataclass(slots=True)
class _Indexed:
    due: float  # when the entry needs writing again (monotonic seconds; inf: never)
    runs: set[str] = field(default_factory=set)


class Discovery:
    """Plans on the discovery shards of one prefix; ``ttl_ms`` is the threads' TTL."""

    def __init__(self, schema: Schema, ttl_ms: int, clock: Any = time.monotonic, wall: Any = time.time) -> None:
        self.schema = schema
        # An entry lives twice the TTL and is written again once half the TTL has passed,
        # so it outlives its thread (whose TTL every write renews) by at least half a TTL.
        self.life_ms = 2 * ttl_ms
        self._refresh_s = ttl_ms / 2000 if ttl_ms else float("inf")
        self._clock = clock  # when to write an entry again (immune to the wall clock's jumps)
        self._wall = wall  # entries' expiry scores, in Unix ms
        self._indexed: OrderedDict[str, _Indexed] = OrderedDict()

    # -- writing ------------------------------------------------------------------------

    def entry(self, thread_id: str, run_id: str | None = None) -> tuple[Call, ...]:
        """The index call to send (before it) with a write of the thread: none if this
        process wrote the entry (with the run) recently enough."""
        seen = self._indexed.get(thread_id)
        if seen is not None and seen.due > self._clock() and (run_id is None or run_id in seen.runs):
            return ()
        return (self.add(thread_id, [run_id] if run_id else []),)

    def add(self, thread_id: str, run_ids: Sequence[str]) -> Call:
        """Indexes a thread and up to RUNS_PER_CALL runs of it."""
        shard = self.schema.index_of(thread_id)
        args = ("add", self._now_ms(), self.life_ms, enc(thread_id), *map(enc, run_ids))
        return Call(SCRIPTS.index, shard.all, args)

    def add_all(self, thread_id: str, run_ids: Iterable[str]) -> Batch:
        """Indexes a thread and any number of its runs, in calls of RUNS_PER_CALL runs."""
        runs = sorted(run_ids)
        chunks = [runs[i : i + RUNS_PER_CALL] for i in range(0, len(runs), RUNS_PER_CALL)] or [[]]
        return Batch(tuple(self.add(thread_id, chunk) for chunk in chunks))

    def written(self, thread_id: str, run_id: str | None, sent_at: float | None) -> None:
        """Remembers that a write went with the thread's entry (sent at ``sent_at``, or
        None if no entry was sent with it) and with the run."""
        seen = self._indexed.get(thread_id)
        if seen is None:
            if sent_at is None:
                return
            seen = self._indexed[thread_id] = _Indexed(sent_at + self._refresh_s)
            while len(self._indexed) > _CACHE_THREADS:
                self._indexed.popitem(last=False)
        elif sent_at is not None:
            seen.due = sent_at + self._refresh_s
        if run_id is not None and run_id not in seen.runs:
            if len(seen.runs) >= _CACHE_RUNS:
                seen.runs.clear()  # forgotten runs are only indexed again, which changes nothing
            seen.runs.add(run_id)

    def now(self) -> float:
        return self._clock()

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def forget(self, thread_id: str | None = None) -> None:
        """This process no longer knows the thread (None: any thread) to be indexed."""
        if thread_id is None:
            self._indexed.clear()
        else:
            self._indexed.pop(thread_id, None)

    # -- removing -------------------------------------------------------------------------

    def unindex(self, thread_ids: Sequence[str], before: tuple[Call | Command, ...] = ()) -> Plan[list[Any]]:
        """Removes every entry of the threads (and of their runs), in bounded calls sent
        together with the steps ``before``; returns the replies to those."""
        for t in thread_ids:
            self.forget(t)
        if not thread_ids and not before:
            return []
        got = yield Batch((*before, *map(self._drop, thread_ids)))
        replies, done = got[: len(before)], got[len(before) :]
        todo = [t for t, d in zip(thread_ids, done, strict=True) if not d]
        while todo:  # a thread with more runs than one call removes goes on in further calls
            done = yield Batch(tuple(map(self._drop, todo)))
            todo = [t for t, d in zip(todo, done, strict=True) if not d]
        return replies

    def _drop(self, thread_id: str) -> Call:
        return Call(SCRIPTS.index, self.schema.index_of(thread_id).all, ("drop", self._now_ms(), enc(thread_id)))

    def drop_runs(self, thread_id: str, runs: Sequence[str]) -> Command:
        """Removes the entries of the (encoded) runs of a thread that still lives."""
        shard = self.schema.index_of(thread_id)
        return Command(("ZREM", shard.entries, *K.run_entries(enc(thread_id), list(runs))))

    # -- reading --------------------------------------------------------------------------

    def threads_of_runs(self, runs: Sequence[str]) -> Plan[tuple[dict[str, list[str]], bool]]:
        """The threads indexed with each (encoded) run, as {thread: [runs]}, from every
        shard in one pipeline; and whether a shard had more than LOOKUP for a run (then
        look again once those are gone)."""
        shards = self.schema.indexes
        asked = [(r, s) for r in runs for s in shards]
        found = yield Batch(
            tuple(Command(("ZRANGEBYLEX", s.entries, *K.runs_range(r), "LIMIT", 0, LOOKUP)) for r, s in asked)
        )
        by_thread: dict[str, list[str]] = {}
        for (run, _), entries in zip(asked, found, strict=True):
            for m in entries:
                by_thread.setdefault(K.thread_of_run_entry(m), []).append(run)
        return by_thread, any(len(entries) == LOOKUP for entries in found)

    def page(self, bound: str = "-") -> Plan[tuple[list[str], str | None]]:
        """One page of live thread ids from ``bound`` ('-' = the first) on, and the bound of
        the next page (None after the last). Threads come shard by shard, in id order
        within a shard; entries whose thread is gone are removed on the way."""
        shard, after = _parse(bound)
        window = range(shard, min(shard + (1 if after else PAGE_SHARDS), SHARDS))
        low, high = K.THREAD_ENTRIES
        steps = tuple(
            Command(
                (
                    "ZRANGEBYLEX",
                    self.schema.index(s).entries,
                    K.thread_entry_bound(after) if after else low,
                    high,
                    "LIMIT",
                    0,
                    THREAD_PAGE,
                )
            )
            for s in window
        )
        members: list[bytes] = []
        nxt: str | None = None if window.stop == SHARDS else str(window.stop)
        for s, got in zip(window, (yield Batch(steps)), strict=True):
            members += got
            if len(got) == THREAD_PAGE:  # go on in this shard (what follows it is read again)
                last = got[-1].decode() if isinstance(got[-1], bytes) else got[-1]
                nxt = f"{s} {last}"
                break
        ids = [K.thread_of_entry(m) for m in members]
        if not ids:
            return [], nxt
        exists = yield Batch(tuple(Command(("EXISTS", self.schema.thread(t).index)) for t in ids))
        gone = [t for t, alive in zip(ids, exists, strict=True) if not alive]
        if gone:
            yield from self.unindex(gone)
        return [t for t, alive in zip(ids, exists, strict=True) if alive], nxt

    def delete_all(self) -> Batch:
        return Batch(tuple(Command(("UNLINK", key)) for shard in self.schema.indexes for key in shard.all))


def _parse(bound: str) -> tuple[int, str | None]:
    """A page bound: '-' (the first), '<shard>' (its start) or '<shard> <last entry>'."""
    if bound == "-":
        return 0, None
    shard, _, after = bound.partition(" ")
    return int(shard), after or None
