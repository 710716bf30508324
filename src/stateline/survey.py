"""Plans that look at threads without reading their values: what operators and the
inspector need (sizes, counts, the newest checkpoint of many threads, a thread's tree).

Every plan here does bounded work per round trip: threads go in steps of ``STEP`` per
pipeline, and nothing reads a whole thread's values. They are plans like the engine's
(no I/O), driven by the savers' runners.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import keys as K
from .errors import InvalidInput
from .keys import dec, enc
from .plan import SCRIPTS, Batch, Call, Command, Emit, Plan
from .records import Stored, ThreadStats

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["STEP", "thread_page", "thread_stats", "heads", "checkpoint_counts", "records"]

# Threads per pipeline: a round trip stays small whatever the deployment's size.
STEP = 100
# A page of bare records (ids, parents, metadata): the list script's own bounds apply too.
RECORDS_PAGE = 200
_PAGE_BYTES = 1 << 20


def _steps(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + STEP] for i in range(0, len(ids), STEP)]


def thread_page(
    engine: Engine, cursor: str | None, limit: int, match: str | None = None, rounds: int = 64
) -> Plan[tuple[list[str], str | None]]:
    """Up to ``limit`` thread ids from ``cursor`` on (None: the start), those containing
    ``match`` if given, and the cursor that resumes right after the last one (None at the
    end). Reads at most ``rounds`` pages of the discovery index, so a search that matches
    little returns early with a cursor to go on from."""
    if not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a positive int, got {limit!r}")
    if cursor is not None and not _CURSOR(cursor):
        raise InvalidInput(f"not a thread cursor: {cursor!r}")
    ids: list[str] = []
    bound: str | None = cursor or "-"
    while bound is not None and len(ids) < limit and rounds > 0:
        page, nxt = yield from engine.thread_page(bound)
        rounds -= 1
        for t in page:
            if match is None or match in t:
                ids.append(t)
                if len(ids) == limit:
                    # the page's order is the index's, so the next call resumes right after t
                    return ids, (K.page_bound_after(t) if t != page[-1] or nxt is not None else None)
        bound = nxt
    return ids, bound


_CURSOR = re.compile(r"(-|\d{1,2}( t:\S*)?)").fullmatch


def thread_stats(engine: Engine, thread_ids: Sequence[str] | None, *, memory: bool = True) -> Plan[list[ThreadStats]]:
    """Checkpoints, writes, TTL and (with ``memory``) bytes of each thread, ``STEP`` threads
    per round trip. Bytes are Redis' own ``MEMORY USAGE`` estimate, which samples the
    fields of a large hash rather than walking them. ``None``: every thread of the prefix."""
    ids = list(thread_ids) if thread_ids is not None else (yield from engine.threads())
    out: list[ThreadStats] = []
    for step in _steps(ids):
        commands: list[Command] = []
        for t in step:
            k = engine.keys(t)
            commands += (
                Command(("ZLEXCOUNT", k.index, *K.kind_range("c"))),
                *(Command(c) for c in K.count_writes(k.data, k.index)),
                Command(("PTTL", k.index)),
            )
            if memory:
                commands += (Command(("MEMORY", "USAGE", k.data)), Command(("MEMORY", "USAGE", k.index)))
        replies = yield Batch(tuple(commands))
        width = 6 if memory else 4
        for i, t in enumerate(step):
            got = replies[width * i : width * i + width]
            size = (got[4] or 0) + (got[5] or 0) if memory else None
            out.append(ThreadStats(t, got[0], K.writes_counted(got[1], got[2]), size, got[3]))
    return out


def heads(engine: Engine, thread_ids: Sequence[str]) -> Plan[list[Stored | None]]:
    """The newest root checkpoint of each thread (None where it has none), its header and
    metadata only, no values or writes: one pipelined script call per thread, ``STEP``
    threads per round trip."""
    out: list[Stored | None] = []
    for step in _steps(list(thread_ids)):
        args = ("", "0", "", 1, "", 1, _PAGE_BYTES, 0)  # root namespace, one bare record
        replies = yield Batch(tuple(Call(SCRIPTS.list, engine.keys(t).all, args) for t in step))
        for t, reply in zip(step, replies, strict=True):
            entries = reply[0]
            out.append(engine.bare(t, entries[0]) if entries else None)
    return out


def checkpoint_counts(engine: Engine, thread_ids: Sequence[str]) -> Plan[list[dict[str, int]]]:
    """How many checkpoints each namespace of each thread holds ({} for a thread that does
    not exist): two round trips per ``STEP`` threads."""
    out: list[dict[str, int]] = []
    for step in _steps(list(thread_ids)):
        spaces = yield Batch(tuple(Command(("ZRANGEBYLEX", engine.keys(t).index, *K.kind_range("s"))) for t in step))
        names = [[dec(m[2:]) for m in found] for found in spaces]
        counts = yield Batch(
            tuple(
                Command(("ZLEXCOUNT", engine.keys(t).index, *K.kind_range(f"c:{enc(ns)}")))
                for t, spaces_of in zip(step, names, strict=True)
                for ns in spaces_of
            )
        )
        it = iter(counts)
        for spaces_of in names:
            out.append({ns: n for ns in spaces_of if (n := next(it))})
    return out


def records(
    engine: Engine, thread_id: str, ns: str | None, *, before: str | None = None, limit: int | None = None
) -> Plan[int]:
    """Emits the thread's checkpoints newest first (in ``ns``, or every namespace) as bare
    records: ids, parent, header and metadata, without values or writes. A page of
    ``RECORDS_PAGE`` per round trip; returns how many it emitted."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidInput(f"limit must be a non-negative int or None, got {limit!r}")
    keys = engine.keys(thread_id)
    ns_e = "" if ns is None else enc(ns)
    first, bound, emitted = ("" if before is None else enc(before)), "", 0
    while limit is None or emitted < limit:
        count = RECORDS_PAGE if limit is None else min(RECORDS_PAGE, limit - emitted)
        args = (ns_e, "1" if ns is None else "0", bound, count, first, 1, _PAGE_BYTES, 0)
        entries, _logs, _inline, more, last = yield Call(SCRIPTS.list, keys.all, args)
        found = tuple(engine.bare(thread_id, e) for e in entries)
        if found:
            yield Emit(found)
            emitted += len(found)
        if not more or not entries:
            return emitted
        first, bound = "", "(" + (last.decode() if isinstance(last, bytes) else last)
    return emitted
