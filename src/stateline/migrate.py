"""Moving threads into stateline from another LangGraph saver (``stateline migrate``).

Everything goes through LangGraph's public saver API: ``list`` and ``get_tuple`` on the
source, ``put`` and ``put_writes`` on the destination, so each checkpoint keeps its id,
parent, namespace and metadata, with its pending writes, whatever the source stores.

- **Counted first.** ``survey`` lists the source once (ids and write counts only kept) and
  reads how far earlier runs got; ``--dry-run`` stops there.
- **Resumable, never duplicated.** A checkpoint is written by its id, so writing it again
  changes nothing; and the destination keeps, per thread, how far the migration got (the hash
  ``<prefix>{migration:<source>}``: checkpoints done and the last one written, sent every
  ``MARK_EVERY`` checkpoints and at each thread's end). A run after a kill starts each
  thread after its mark. A thread that exists at the destination without a mark of this
  source is refused before anything is written: it would mix two histories.
- **Oldest first.** A thread's checkpoints are written in id order (LangGraph's ids grow with
  time), each with the channels that changed since its parent, so a chat's messages are sent
  once, as they were in the first place.
- **Checked.** At the end every thread must have at least the source's number of
  checkpoints and writes at the destination.

A pending write's ``task_path`` is not part of LangGraph's read API; each write is given a
path that keeps the order the source returned them in.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import WRITES_IDX_MAP, CheckpointTuple

from .errors import InvalidInput, StatelineError
from .keys import Schema, count_writes, dec, enc, kind_range, writes_counted
from .langgraph import RedisSaver
from .plan import Batch, Command, Plan, named, together
from .records import Write
from .sources import Source, _config, open_source, source_kind

__all__ = [
    "Source",
    "Entry",
    "Mark",
    "Survey",
    "Report",
    "ThreadWriter",
    "open_source",
    "source_kind",
    "survey",
    "migrate",
    "verify",
]

MARK_EVERY = 100  # checkpoints between two progress marks of a thread
WIDTH = 32  # threads written side by side, one round trip per round
_CHUNK = 500  # threads per pipelined look-up


# -- what there is, and how far earlier runs got ---------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    """One checkpoint of the source, in the order it is written: by id, then namespace."""

    checkpoint_id: str
    ns: str
    writes: int = field(compare=False)


@dataclass(frozen=True, slots=True)
class Mark:
    """How far the migration got in a thread: checkpoints written, and the last one."""

    done: int
    last: tuple[str, str]  # (checkpoint_id, ns)

    def text(self) -> str:
        return f"{self.done} {enc(self.last[0])} {enc(self.last[1])}"

    @classmethod
    def parse(cls, raw: bytes | str) -> Mark:
        text = raw.decode() if isinstance(raw, bytes) else raw
        done, cid, ns = text.split(" ")
        return cls(int(done), (dec(cid), dec(ns)))


@dataclass
class Survey:
    """The source's threads (each a sorted list of entries), the marks of earlier runs, and
    the threads the destination holds that no run of this migration wrote."""

    threads: dict[str, list[Entry]]
    marks: dict[str, Mark]
    conflicts: list[str]
    key: str  # the destination's mark hash

    def todo(self, thread: str) -> list[Entry]:
        entries, mark = self.threads[thread], self.marks.get(thread)
        return entries if mark is None else [e for e in entries if (e.checkpoint_id, e.ns) > mark.last]

    @property
    def checkpoints(self) -> int:
        return sum(len(e) for e in self.threads.values())

    @property
    def writes(self) -> int:
        return sum(x.writes for e in self.threads.values() for x in e)

    @property
    def remaining(self) -> int:
        return sum(len(self.todo(t)) for t in self.threads)


def _ids(config: Mapping[str, Any]) -> tuple[str, str, str]:
    conf = config["configurable"]
    return str(conf["thread_id"]), conf.get("checkpoint_ns") or "", str(conf["checkpoint_id"])


def _listed(source: Source, threads: Collection[str] | None) -> Iterator[CheckpointTuple]:
    kwargs = {"limit": source.list_limit} if source.list_limit else {}
    if threads is None:
        yield from source.saver.list(None, **kwargs)
        return
    for thread in threads:
        yield from source.saver.list({"configurable": {"thread_id": thread}}, **kwargs)


def inventory(source: Source, threads: Collection[str] | None = None) -> dict[str, list[Entry]]:
    """Every checkpoint of the source (or of ``threads``), by thread, in writing order."""
    found: dict[str, list[Entry]] = defaultdict(list)
    n = 0
    for t in _listed(source, threads):
        n += 1
        thread, ns, cid = _ids(t.config)
        found[thread].append(Entry(cid, ns, len(t.pending_writes or ())))
    if source.list_limit and n >= source.list_limit:
        raise InvalidInput(
            f"the source lists {n} checkpoints or more, the most one listing of it returns: "
            "migrate it a few threads at a time (--thread)"
        )
    for entries in found.values():
        entries.sort()
    return dict(found)


def _marks(key: str, threads: list[str]) -> Plan[dict[str, Mark]]:
    out: dict[str, Mark] = {}
    for i in range(0, len(threads), _CHUNK):
        chunk = threads[i : i + _CHUNK]
        reply = yield Command(("HMGET", key, *(enc(t) for t in chunk)))
        out.update((t, Mark.parse(r)) for t, r in zip(chunk, reply, strict=True) if r is not None)
    return out


def _mark(key: str, thread: str, mark: Mark) -> Plan[None]:
    yield Command(("HSET", key, enc(thread), mark.text()))


def _existing(schema: Schema, threads: list[str]) -> Plan[list[str]]:
    out = []
    for i in range(0, len(threads), _CHUNK):
        chunk = threads[i : i + _CHUNK]
        reply = yield Batch(tuple(Command(("EXISTS", schema.thread(t).index)) for t in chunk))
        out += [t for t, n in zip(chunk, reply, strict=True) if n]
    return out


def _counts(schema: Schema, threads: list[str]) -> Plan[dict[str, tuple[int, int]]]:
    """Checkpoints and pending writes stored per thread (three counts each, pipelined)."""
    out: dict[str, tuple[int, int]] = {}
    for i in range(0, len(threads), _CHUNK):
        chunk = threads[i : i + _CHUNK]
        steps = []
        for t in chunk:
            keys = schema.thread(t)
            steps += [
                Command(("ZLEXCOUNT", keys.index, *kind_range("c"))),
                *(Command(c) for c in count_writes(keys.data, keys.index)),
            ]
        reply = yield Batch(tuple(steps))
        out.update((t, (reply[3 * j], writes_counted(reply[3 * j + 1], reply[3 * j + 2]))) for j, t in enumerate(chunk))
    return out


def migration_name(kind: str, name: str) -> str:
    """Names the marks of one source: a digest of its kind and name (a redacted spec, or an
    export file's id)."""
    return hashlib.sha1(f"{kind}|{name}".encode()).hexdigest()[:16]


def survey(source: Source, dest: RedisSaver, threads: Collection[str] | None = None) -> Survey:
    """What would move: the source's checkpoints by thread, what earlier runs did, and the
    destination's threads that would be overwritten (conflicts). Writes nothing."""
    return survey_of(inventory(source, threads), dest, migration_name(source.kind, source.name))


def survey_of(found: dict[str, list[Entry]], dest: RedisSaver, name: str) -> Survey:
    """``found`` (entries by thread) with the marks of the migration ``name`` at ``dest``."""
    schema = dest.engine.schema
    key = schema.migration(name)
    ids = sorted(found)
    marks = dest._run(_marks(key, ids))
    existing = dest._run(_existing(schema, [t for t in ids if t not in marks]))
    return Survey(found, marks, existing, key)


def refuse_conflicts(found: Survey) -> None:
    """``MigrationConflict`` when the destination holds threads of the source that no run of
    this migration wrote: writing them would mix two histories."""
    if found.conflicts:
        shown = ", ".join(repr(t) for t in found.conflicts[:5]) + (" ..." if len(found.conflicts) > 5 else "")
        raise MigrationConflict(
            f"{len(found.conflicts)} thread(s) exist at the destination and were not written by a "
            f"migration from this source: {shown}; delete them there, or migrate the others (--thread)"
        )


def mark(dest: RedisSaver, found: Survey, thread: str, done: int, last: tuple[str, str]) -> None:
    """Records how far a thread got (``last`` = ('', '') before its first checkpoint)."""
    dest._run(_mark(found.key, thread, Mark(done, last)))


# -- writing ---------------------------------------------------------------------------------


class ThreadWriter:
    """Writes one thread's checkpoints into a stateline saver, oldest first, as the source
    returned them (``CheckpointTuple``): same ids, parents, namespaces, metadata and writes.
    Writing a checkpoint again changes nothing. Shared by ``migrate`` and ``import``."""

    def __init__(self, dest: RedisSaver) -> None:
        self.dest = dest
        self._versions: dict[tuple[str, str], Mapping[str, Any]] = {}

    def write(self, t: CheckpointTuple) -> int:
        """Stores ``t`` and its pending writes (one round trip); returns how many writes."""
        self.dest._run(named(together(self.plans(t)), "write_checkpoint"))
        return len(t.pending_writes or ())

    def plans(self, t: CheckpointTuple) -> list[Plan[Any]]:
        """The put of ``t`` and the put of its writes: independent, so they may share a
        round trip (and those of other threads)."""
        thread, ns, cid = _ids(t.config)
        parent = t.parent_config["configurable"].get("checkpoint_id") if t.parent_config else None
        versions = t.checkpoint.get("channel_versions") or {}
        before = self._versions.get((ns, parent)) if parent else None
        # The channels that changed since the parent written just before: the others are
        # stored already. Without it (a first checkpoint, a resumed thread), every value goes
        # and the ones stored already are kept.
        changed = {} if before is None else {ch: v for ch, v in versions.items() if before.get(ch) != v}
        self._versions[(ns, cid)] = versions
        put = self.dest._put(_config(thread, ns, parent), t.checkpoint, t.metadata or {}, changed)
        return [put, *self._pending(thread, ns, cid, t.pending_writes or [])]

    def _pending(self, thread: str, ns: str, cid: str, pending: list[tuple[str, str, Any]]) -> list[Plan[None]]:
        """All of a checkpoint's writes in one call. Each gets a path that keeps the order the
        source returned them in (writes are ordered by path first); positions within a task
        count as LangGraph's put_writes does (special channels have fixed ones)."""
        writes, seen = [], Counter[str]()
        for pos, (task_id, channel, value) in enumerate(pending):
            idx = WRITES_IDX_MAP.get(channel)
            if idx is None:
                idx = seen[task_id]
                seen[task_id] += 1
            writes.append(Write(task_id, channel, value, f"{pos:010d}", idx))
        if not writes:
            return []
        return [self.dest.engine.put_writes(thread, ns, cid, writes, frozenset(WRITES_IDX_MAP))]


@dataclass
class Report:
    threads: int = 0
    checkpoints: int = 0
    writes: int = 0
    vanished: list[tuple[str, str, str]] = field(default_factory=list)  # gone from the source meanwhile


@dataclass
class _Lane:
    """A thread being written: what is left of it, and how far it got."""

    thread: str
    todo: list[Entry]
    done: int
    writer: ThreadWriter
    pos: int = 0


def migrate(
    source: Source,
    dest: RedisSaver,
    found: Survey,
    on_progress: Callable[[int], None] | None = None,
) -> Report:
    """Writes what ``found`` (a ``survey``) says is left, ``WIDTH`` threads side by side: each
    round reads the next checkpoint of each from the source and writes them all in one
    round trip; the marks follow in another, so a mark never runs ahead of what it marks.
    Refuses, before writing anything, when the destination holds threads of the source
    that no run of this migration wrote."""
    refuse_conflicts(found)
    report = Report()
    waiting = [t for t in sorted(found.threads, reverse=True) if found.todo(t)]
    lanes: list[_Lane] = []
    while waiting or lanes:
        opened = []
        while waiting and len(lanes) < WIDTH:
            thread = waiting.pop()
            mark = found.marks.get(thread)
            lanes.append(_Lane(thread, found.todo(thread), mark.done if mark else 0, ThreadWriter(dest)))
            report.threads += 1
            if mark is None:  # marked before its first checkpoint: a killed run's thread is ours
                opened.append(_mark(found.key, thread, Mark(0, ("", ""))))
        if opened:
            dest._run(named(together(opened), "migrate_mark"))
        dest._run(named(together([p for lane in lanes for p in _next(source, lane, report)]), "migrate"))
        marks = [_mark(found.key, lane.thread, _mark_of(lane)) for lane in lanes if _due(lane)]
        if marks:
            dest._run(named(together(marks), "migrate_mark"))
        if on_progress is not None:
            on_progress(len(lanes))
        lanes = [lane for lane in lanes if lane.pos < len(lane.todo)]
    return report


def _next(source: Source, lane: _Lane, report: Report) -> list[Plan[Any]]:
    """The plans that write the lane's next checkpoint (none if it vanished from the source)."""
    entry = lane.todo[lane.pos]
    lane.pos += 1
    lane.done += 1
    t = source.get(lane.thread, entry.ns, entry.checkpoint_id)
    if t is None:
        report.vanished.append((lane.thread, entry.ns, entry.checkpoint_id))
        return []
    report.checkpoints += 1
    report.writes += len(t.pending_writes or ())
    return lane.writer.plans(t)


def _due(lane: _Lane) -> bool:
    return lane.pos % MARK_EVERY == 0 or lane.pos == len(lane.todo)


def _mark_of(lane: _Lane) -> Mark:
    last = lane.todo[lane.pos - 1]
    return Mark(lane.done, (last.checkpoint_id, last.ns))


@dataclass(frozen=True, slots=True)
class Mismatch:
    thread: str
    expected: tuple[int, int]  # checkpoints, writes
    found: tuple[int, int]


def verify(dest: RedisSaver, found: Survey) -> list[Mismatch]:
    """Threads with fewer checkpoints or writes at the destination than at the source. (More
    is no loss: a graph that ran on at the destination adds its own.)"""
    ids = sorted(found.threads)
    stored = dest._run(_counts(dest.engine.schema, ids))
    out = []
    for t in ids:
        entries = found.threads[t]
        expected = (len(entries), sum(e.writes for e in entries))
        if stored[t][0] < expected[0] or stored[t][1] < expected[1]:
            out.append(Mismatch(t, expected, stored[t]))
    return out


class MigrationConflict(StatelineError):
    """The destination holds threads that a migration would mix with the source's."""
