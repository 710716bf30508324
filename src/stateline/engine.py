"""The operations on stored threads, written once and free of I/O.

Each public method returns a plan (see plan.py) that a sync or an async runner drives.
The adapters (LangGraph savers, the seed API) translate their own types to the
``Snapshot`` stored here and back from ``Stored``. Retention (``keep_last``, so "shallow"
is ``keep_last=1``) and the whole-thread TTL are settings of the engine, not variants.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from . import keys as K
from .codec import FORMAT, ValueCodec, pack, pack_record, unpack, unpack_record
from .elements import ItemCache, KnownElements
from .errors import ConflictError, DurabilityError, InvalidInput, StoredDataError
from .keys import Schema, ThreadKeys, dec, enc
from .plan import SCRIPTS, Batch, Call, Command, Emit, Plan, Scan
from .records import DURABILITY, Snapshot, Stored, TaggedList, ThreadStats, Write, check_keep_last

__all__ = ["Engine", "LIST_MIN_ITEMS", "PAGE"]

# Lists shorter than this are stored whole: per-element addressing costs more than it saves.
LIST_MIN_ITEMS = 4
# A list-valued write (LangGraph's new messages) is stored by digest from this many bytes.
WRITE_LIST_MIN_BYTES = 256
LIST_TYPE = "stateline.list"
PAGE = 100
THREAD_PAGE = 500
_CACHE_THREADS = 1024


def _replay_order(w: Write) -> tuple[str, str, int]:
    """The order a super-step's writes are applied in (LangGraph's writes_sort_key)."""
    return (w.task_path, w.task_id, w.idx)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Engine:
    """Plans for one key prefix, codec, retention policy and TTL."""

    def __init__(
        self,
        codec: ValueCodec,
        *,
        prefix: str = "stateline:",
        keep_last: int | None = None,
        ttl_ms: int = 0,
        refresh_on_read: bool = False,
        durability: str = "ack",
        durability_timeout_ms: int = 1000,
        index_every_put: bool = False,
    ) -> None:
        if durability not in DURABILITY:
            raise InvalidInput(f"durability must be one of {sorted(DURABILITY)}, got {durability!r}")
        check_keep_last(keep_last)
        if type(ttl_ms) is not int or ttl_ms < 0:
            raise InvalidInput(f"ttl_ms must be a non-negative int (0 = no TTL), got {ttl_ms!r}")
        self.codec = codec
        self.schema = Schema(prefix)
        self.keep_last = keep_last or 0
        self.ttl_ms = ttl_ms
        self.refresh_ms = ttl_ms if refresh_on_read else 0
        self.durability = durability
        self._wait = DURABILITY[durability]
        self._wait_timeout = durability_timeout_ms
        # List items already serialized (by content), and those known to be stored per
        # thread, so a put serializes and sends only new ones.
        self._items_cache = ItemCache(codec)
        self._known = KnownElements()
        self._registered: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        # The cache above cannot see a thread expire or another process delete it; with
        # index_every_put the index entries ride along every put (same round trip).
        self.index_every_put = index_every_put

    def keys(self, thread_id: str) -> ThreadKeys:
        return self.schema.thread(thread_id)

    # -- writing ---------------------------------------------------------------------------

    def put(self, snap: Snapshot, *, expect: str | None = None) -> Plan[None]:
        """Store ``snap`` in one round trip. ``expect`` = the head the namespace must have
        ('' = must be empty); otherwise ``ConflictError`` and nothing is written."""
        keys = self.keys(snap.thread_id)
        ns, cid = enc(snap.ns), enc(snap.checkpoint_id)
        fields = {ch: K.value_field(ns, ch, v) for ch, v in snap.versions.items()}
        value_args, elements = self._value_args(snap, fields)
        record = self._record(snap, ns, list(fields.values()))
        if expect is None:
            guard = ""
        else:
            guard = enc(expect) if expect else "-"
        alias = enc(snap.alias) if snap.alias else ""
        run = enc(snap.run_id) if snap.run_id else ""
        # The small arguments travel as one (ids are percent-encoded: never a space in them).
        deltas = int(bool(snap.delta_channels))
        opts = f"{ns} {cid} {self.ttl_ms} {self.keep_last} {int(snap.keep_existing)} {deltas} {run} {guard} {alias}"

        def call(sent: list[bytes], n: int) -> Call:
            return Call(SCRIPTS.put, keys.all, (f"{opts} {n}", record, *sent, *value_args))

        index = self._registration(snap.thread_id, snap.run_id)
        reply = yield from self._with_elements(snap.thread_id, elements, call, index)
        if _text(reply[0]) == "conflict":
            raise ConflictError(
                f"thread {snap.thread_id!r} namespace {snap.ns!r}: expected head "
                f"{expect or None!r}, found {dec(reply[1]) or None!r}; nothing was written"
            )
        if not index and (reply[1] or reply[2]):
            # The thread (or run) was new to the server though this engine had indexed it:
            # deleted or expired meanwhile, maybe by another process. Index it again.
            yield Batch(self._registration(snap.thread_id, snap.run_id, force=True))
        self._registered_now(snap.thread_id, snap.run_id)
        return None

    def _value_args(self, snap: Snapshot, fields: dict[str, str]) -> tuple[list[Any], dict[bytes, bytes]]:
        """The script arguments for the channel values to write (``fields``: each channel's
        value field), and the list items they use."""
        elements: dict[bytes, bytes] = {}
        args: list[Any] = []
        for channel, value in snap.values.items():
            vfield = fields.get(channel)
            if vfield is None:
                continue
            what = f"the value of channel {channel!r}"
            kind, listed = (value.kind, value.items) if isinstance(value, TaggedList) else ("", value)
            if type(listed) is list and (len(listed) >= LIST_MIN_ITEMS or kind):
                digests, items = self._items(listed, what, (snap.thread_id, snap.ns, channel))
                elements.update(items)
                args += (vfield, b"L" + kind.encode() + b"|" + digests)
            else:
                args += (vfield, b"v" + self.codec.dump(value, what))
        return args, elements

    def _record(self, snap: Snapshot, ns: str, fields: list[str]) -> bytes:
        """The checkpoint record (codec.pack_record): what the scripts read, then the rest."""
        return pack_record(
            [
                FORMAT,
                enc(snap.parent_id) if snap.parent_id else "",
                fields,
                enc(snap.run_id) if snap.run_id else "",
                [K.value_prefix(ns, ch) for ch in snap.delta_channels],
                enc(snap.alias) if snap.alias else "",
            ],
            [
                *self.codec.dumps(snap.header, "the checkpoint"),
                *self.codec.dumps(snap.metadata, "the checkpoint metadata"),
            ],
        )

    def _items(self, value: list[Any], what: str, key: Any = None) -> tuple[bytes, dict[bytes, bytes]]:
        return self._items_cache.address(value, f"an item of {what}", key)

    def _with_elements(
        self, thread_id: str, elements: dict[bytes, bytes], call: Any, before: tuple[Command, ...] = ()
    ) -> Plan[Any]:
        """Sends ``call(sent, n)`` with the list elements not known to be stored yet. A stale
        cache is safe: the script answers 'missing' (writing nothing) and we send those."""
        if not elements:
            return (yield from self._send(call([], 0), before))
        known = self._known.of(thread_id)
        to_send = {d: b for d, b in elements.items() if d not in known}
        for _attempt in range(3):
            reply = yield from self._send(call([x for pair in to_send.items() for x in pair], len(to_send)), before)
            if not (isinstance(reply, list) and reply and _text(reply[0]) == "missing"):
                if not (isinstance(reply, list) and _text(reply[0]) == "conflict"):
                    self._known.add(thread_id, elements)
                return reply
            self._known.forget(thread_id)  # items we believed stored are gone (pruned elsewhere)
            to_send = {bytes(d): elements[bytes(d)] for d in reply[1:]} | to_send
        raise StoredDataError(f"thread {thread_id!r} keeps losing list elements while writing")

    def _registration(self, thread_id: str, run_id: str | None, force: bool = False) -> tuple[Command, ...]:
        """Discovery-index entries to add the first time this engine writes a thread (or
        run), sent in the write's pipeline. Index first: readers drop an entry without
        data on sight, but data without an entry would be invisible to discovery."""
        known = (thread_id, None) in self._registered and (thread_id, run_id) in self._registered
        if known and not (force or self.index_every_put):
            return ()
        steps = [Command(("ZADD", self.schema.threads, 0, enc(thread_id)))]
        if run_id is not None:
            steps.append(Command(("ZADD", self.schema.runs, 0, Schema.run_member(run_id, thread_id))))
        return tuple(steps)

    def _registered_now(self, thread_id: str, run_id: str | None) -> None:
        if (thread_id, run_id) in self._registered and (thread_id, None) in self._registered:
            return
        self._registered[(thread_id, None)] = self._registered[(thread_id, run_id)] = None
        while len(self._registered) > _CACHE_THREADS * 4:
            self._registered.popitem(last=False)

    def _send(self, call: Call, before: tuple[Command, ...] = ()) -> Plan[Any]:
        """One write, in one round trip with the commands ``before`` it and, at a stronger
        durability level, the WAIT/WAITAOF that confirms it."""
        wait: tuple[Command, ...] = ()
        if self._wait is not None:
            name, local, replicas = self._wait
            args = (
                (name, local, replicas, self._wait_timeout)
                if name == "WAITAOF"
                else (name, replicas, self._wait_timeout)
            )
            wait = (Command(args, route=call.keys[0]),)
        if not before and not wait:
            return (yield call)
        replies = yield Batch((*before, call, *wait))
        if wait:
            self._check_durable(replies[-1])
        return replies[len(before)]

    def _check_durable(self, reply: Any) -> None:
        assert self._wait is not None
        name, local, replicas = self._wait
        got_local, got_replicas = (reply[0], reply[1]) if name == "WAITAOF" else (local, reply)
        if got_local < local or got_replicas < replicas:
            raise DurabilityError(
                f"the write was applied but not confirmed {self.durability!r} within "
                f"{self._wait_timeout} ms ({name}: {got_local} local fsync(s), {got_replicas} replica(s))"
            )

    def _forget(self, thread_id: str) -> None:
        self._known.forget(thread_id)
        for k in [k for k in list(self._registered) if k[0] == thread_id]:  # list(): atomic copy
            self._registered.pop(k, None)

    def put_writes(
        self, thread_id: str, ns: str, checkpoint_id: str, writes: Iterable[Write], special: frozenset[str]
    ) -> Plan[None]:
        """Store pending writes in one round trip: ordinary ones keep the first value per
        (task, idx), channels in ``special`` overwrite."""
        ns_e, cid = enc(ns), enc(checkpoint_id)
        overwrite: list[Any] = []
        keep_first: list[Any] = []
        elements: dict[bytes, bytes] = {}
        for w in writes:
            what = f"the write to channel {w.channel!r}"
            value = self._write_value(w, what, elements)
            (overwrite if w.channel in special else keep_first).extend(
                (K.write_field(ns_e, cid, w.task_id, w.idx), value)
            )
        if not overwrite and not keep_first:
            return
        keys = self.keys(thread_id).all
        n_over = len(overwrite) // 2

        def call(sent: list[bytes], n: int) -> Call:
            return Call(SCRIPTS.put_writes, keys, (f"{self.ttl_ms} {n} {n_over}", *sent, *overwrite, *keep_first))

        yield from self._with_elements(thread_id, elements, call)

    def _write_value(self, w: Write, what: str, elements: dict[bytes, bytes]) -> bytes:
        """A write record; a list of sizeable items (messages) refers to its items by digest,
        so a message stored in a write and in the channel's list is kept once."""
        if type(w.value) is list and w.value:
            digests, items = self._items(w.value, what)
            if sum(map(len, items.values())) >= WRITE_LIST_MIN_BYTES:
                elements.update(items)
                record = pack([FORMAT, w.task_id, w.channel, LIST_TYPE, b"", w.task_path, w.idx])
                return b"W" + str(len(w.value)).encode() + b":" + digests + record
        typ, data = self.codec.dumps(w.value, what)
        return pack([FORMAT, w.task_id, w.channel, typ, data, w.task_path, w.idx])

    # -- reading ---------------------------------------------------------------------------

    def get(self, thread_id: str, ns: str, checkpoint_id: str | None) -> Plan[Stored | None]:
        """The checkpoint ``checkpoint_id`` (or the newest of ``ns``), in one round trip."""
        call = Call(SCRIPTS.get, self.keys(thread_id).all, (enc(ns), enc(checkpoint_id or ""), self.refresh_ms))
        reply = yield call
        return None if reply is None else self._stored(thread_id, reply)

    def list(
        self,
        thread_id: str,
        ns: str | None,
        *,
        before: str | None = None,
        select: Any = None,
        limit: int | None = None,
        page: int = PAGE,
    ) -> Plan[int]:
        """Emits the thread's checkpoints newest first (in ``ns``, or in every namespace),
        older than ``before``, that ``select(stored)`` accepts, at most ``limit``.
        Returns how many it emitted. One round trip per page of up to ``page``."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative int or None, got {limit!r}")
        keys = self.keys(thread_id)
        ns_e = None if ns is None else enc(ns)
        first = "" if before is None else enc(before)  # the script resolves an alias
        bound = ""
        count = PAGE if select is not None or limit is None else max(1, min(limit, page))
        emitted = 0
        while limit is None or emitted < limit:
            args = (ns_e or "", "1" if ns_e is None else "0", bound, count, first)
            entries = yield Call(SCRIPTS.list, keys.all, args)
            first = ""
            found = [self._stored(thread_id, entry) for entry in entries]
            if select is not None:
                found = [s for s in found if select(s)]
            if limit is not None:
                found = found[: limit - emitted]
            if found:
                yield Emit(tuple(found))
                emitted += len(found)
            if len(entries) < count:
                break
            last_ns, last_cid = _text(entries[-1][0]), _text(entries[-1][1])
            bound = K.after(ns_e, last_ns, last_cid)
        return emitted

    def threads(self, limit: int | None = None) -> Plan[list[str]]:
        """Thread ids from the discovery index (at most ``limit``), dropping entries whose
        data is gone. Two round trips per page of 500 ids."""
        found: list[str] = []
        bound: str | None = "-"
        while bound is not None and (limit is None or len(found) < limit):
            page, bound = yield from self.thread_page(bound)
            found += page
        return found if limit is None else found[:limit]

    def thread_page(self, bound: str = "-") -> Plan[tuple[list[str], str | None]]:
        """One page of live thread ids from ``bound`` on, and the bound of the next page
        (None after the last)."""
        members = yield Command(("ZRANGEBYLEX", self.schema.threads, bound, "+", "LIMIT", 0, THREAD_PAGE))
        if not members:
            return [], None
        ids = [dec(m) for m in members]
        exists = yield Batch(tuple(Command(("EXISTS", self.keys(t).index)) for t in ids))
        gone = [enc(t) for t, alive in zip(ids, exists, strict=True) if not alive]
        if gone:
            yield Command(("ZREM", self.schema.threads, *gone))
            for t in gone:
                self._forget(dec(t))
        live = [t for t, alive in zip(ids, exists, strict=True) if alive]
        return live, (None if len(members) < THREAD_PAGE else "(" + _text(members[-1]))

    def delta_history(
        self, thread_id: str, ns: str, checkpoint_id: str | None, channels: Sequence[str]
    ) -> Plan[dict[str, tuple[list[Write], Any, bool]]]:
        """Per channel: the writes of the ancestors (oldest first) back to the nearest one
        with a stored value (the seed, included), and that seed. One round trip."""
        ns_e = enc(ns)
        prefixes = [K.value_prefix(ns_e, ch) for ch in channels]
        reply = yield Call(SCRIPTS.history, self.keys(thread_id).all, (ns_e, enc(checkpoint_id or ""), *prefixes))
        out: dict[str, tuple[list[Write], Any, bool]] = {}
        for w, ch in enumerate(channels):
            collected: list[list[Write]] = []
            seed, seeded = None, False
            for _cid, writes, seeds in reply:  # from the parent towards the root
                mine = sorted((x for x in self._writes(writes) if x.channel == ch), key=_replay_order)
                collected.append(mine)
                if seeds[w] is not None:
                    seed, seeded = self._value(seeds[w]), True
                    break
            flat = [x for group in reversed(collected) for x in group]
            out[ch] = (flat, seed, seeded)
        return out

    # -- deleting and copying ----------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> Plan[None]:
        """Deletes the thread's two keys and its entries in the discovery indexes."""
        keys = self.keys(thread_id)
        self._forget(thread_id)
        runs = yield Command(("ZRANGEBYLEX", keys.index, *K.kind_range("r")))
        members = {Schema.run_member(dec(K.run_of(m)), thread_id) for m in runs}
        steps = [Command(("DEL", *keys.all)), Command(("ZREM", self.schema.threads, enc(thread_id)))]
        if members:
            steps.append(Command(("ZREM", self.schema.runs, *sorted(members))))
        yield Batch(tuple(steps))

    def thread_stats(self) -> Plan[list[ThreadStats]]:
        """Checkpoints, writes, bytes (MEMORY USAGE) and TTL of every thread. Two round trips."""
        ids = yield from self.threads()
        steps: list[Command] = []
        for t in ids:
            k = self.keys(t)
            steps += (
                Command(("ZLEXCOUNT", k.index, *K.kind_range("c"))),
                Command(("ZLEXCOUNT", k.index, *K.kind_range("w"))),
                Command(("MEMORY", "USAGE", k.data, "SAMPLES", 0)),
                Command(("MEMORY", "USAGE", k.index, "SAMPLES", 0)),
                Command(("PTTL", k.index)),
            )
        replies = (yield Batch(tuple(steps))) if steps else []
        out = []
        for i, t in enumerate(ids):
            cps, writes, data, index, ttl = replies[5 * i : 5 * i + 5]
            out.append(ThreadStats(t, cps, writes, (data or 0) + (index or 0), ttl))
        return out

    def delete_checkpoint(self, thread_id: str, ns: str, checkpoint_id: str) -> Plan[bool]:
        """Deletes one checkpoint and its writes, then the values no other checkpoint
        uses; False if it was not stored. One round trip."""
        self._known.forget(thread_id)
        reply = yield Call(SCRIPTS.delete_checkpoint, self.keys(thread_id).all, (enc(ns), enc(checkpoint_id)))
        return bool(reply)

    def delete_all(self) -> Plan[int]:
        """Deletes every key of this prefix (every thread and both discovery indexes), and
        nothing else: SCAN of every primary, never KEYS. Not atomic: a thread written
        meanwhile may survive. Returns how many keys it deleted."""
        self._known.forget()
        self._registered.clear()
        deleted = 0
        step: Scan | None = Scan(self.schema.thread_pattern)
        while step is not None:
            cursor, found = yield step
            if found:  # one command per key: on a cluster each goes to its own slot
                deleted += sum((yield Batch(tuple(Command(("UNLINK", k)) for k in found))))
            step = None if cursor is None else Scan(step.match, cursor)
        replies = yield Batch((Command(("UNLINK", self.schema.threads)), Command(("UNLINK", self.schema.runs))))
        return deleted + sum(replies)

    def prune(self, thread_id: str, keep: int) -> Plan[int]:
        """Keeps the ``keep`` newest checkpoints of each namespace (and, for DeltaChannel
        values, the ancestors needed to rebuild them); deletes everything else."""
        if keep is None:
            raise InvalidInput("prune needs keep_last: how many checkpoints to keep per namespace")
        check_keep_last(keep)
        self._known.forget(thread_id)
        return (yield Call(SCRIPTS.prune, self.keys(thread_id).all, (keep,)))

    def delete_runs(self, run_ids: Sequence[str]) -> Plan[int]:
        if not run_ids:
            return 0
        found = yield Batch(tuple(Command(("ZRANGEBYLEX", self.schema.runs, *K.runs_range(r))) for r in run_ids))
        by_thread: dict[str, list[str]] = {}
        members: list[bytes] = []
        for run_id, entries in zip(run_ids, found, strict=True):
            for m in entries:
                members.append(m)
                by_thread.setdefault(K.thread_of_run_entry(m), []).append(enc(run_id))
        removed = 0
        for thread_id, runs in by_thread.items():
            self._known.forget(thread_id)
            removed += yield Call(SCRIPTS.delete_runs, self.keys(thread_id).all, tuple(runs))
        if members:
            yield Command(("ZREM", self.schema.runs, *members))
        return removed

    def copy_thread(self, source: str, target: str) -> Plan[int]:
        """Copies every checkpoint, value and write of ``source`` into ``target`` (ids kept)."""
        dumped = yield from self.dump(source)
        return (yield from self.restore(target, dumped))

    def dump(self, thread_id: str) -> Plan[tuple[list[bytes], list[bytes]]]:
        """Everything stored for a thread, as opaque fields and index members (for copies
        and migrations between prefixes or servers). One round trip."""
        fields, members = yield Call(SCRIPTS.dump, self.keys(thread_id).all, ())
        return fields, members

    def restore(self, target: str, dumped: tuple[list[bytes], list[bytes]]) -> Plan[int]:
        """Writes a dump into the new thread ``target`` and indexes it. Returns how many
        fields it wrote. Raises ``InvalidInput`` if ``target`` exists already."""
        fields, members = dumped
        if not fields:
            return 0
        n = len(fields) // 2
        runs = {K.run_of(m) for m in members if m.startswith(b"r:")}
        self._known.forget(target)
        reply = yield Call(SCRIPTS.restore, self.keys(target).all, (self.ttl_ms, n, *fields, *members))
        if _text(reply[0]) == "exists":
            raise InvalidInput(f"cannot copy into thread {target!r}: it exists already (delete it first)")
        # Indexed once the copy is made (a refused copy must leave no entry): a crash in
        # between leaves the copy unlisted until a process writes to it and indexes it.
        steps = [Command(("ZADD", self.schema.threads, 0, enc(target)))]
        steps += [Command(("ZADD", self.schema.runs, 0, Schema.run_member(dec(r), target))) for r in runs]
        yield Batch(tuple(steps))
        return n

    # -- decoding ----------------------------------------------------------------------------

    def _value(self, stored: bytes | list) -> Any:
        if isinstance(stored, list):
            if stored and stored[0] is not None and stored[0][:1] == b"\0":  # a TaggedList
                return TaggedList(stored[0][1:].decode(), self.codec.load_list(stored[1:]))
            return self.codec.load_list(stored)
        return self.codec.load(stored[1:])

    def _writes(self, records: list[bytes | None]) -> list[Write]:
        out = []
        for raw in records:
            if raw is None:  # deleted between the index read and the fetch: not a write anymore
                continue
            items = None
            if isinstance(raw, list):  # a list of items stored by digest: [record, item...]
                raw, items = raw[0], raw[1:]
            _fmt, task_id, channel, typ, data, task_path, idx = unpack(raw)
            value = self.codec.load_list(items) if items is not None else self.codec.loads(typ, data)
            out.append(Write(task_id, channel, value, task_path, idx))
        return out

    def _stored(self, thread_id: str, reply: list) -> Stored:
        ns_e, cid_e, raw, values, writes = reply
        index, (h_typ, h_data, m_typ, m_data) = unpack_record(raw)
        if index[0] != FORMAT:
            raise StoredDataError(f"checkpoint record format {index[0]!r} is not supported")
        header = self.codec.loads(h_typ, h_data)
        metadata = self.codec.loads(m_typ, m_data)
        channel_values = {}
        for ref, value in zip(index[2], values, strict=True):
            if value is not None:  # no value stored at that version: the channel is empty
                channel_values[dec(ref.split(":", 3)[2])] = self._value(value)
        return Stored(
            thread_id=thread_id,
            ns=dec(ns_e),
            checkpoint_id=dec(cid_e),
            parent_id=dec(index[1]) if index[1] else None,
            alias=dec(index[5]) if len(index) > 5 and index[5] else None,
            header=header,
            metadata=metadata,
            values=channel_values,
            writes=self._writes(writes),
        )
