"""The operations on stored threads, written once and free of I/O.

Each public method returns a plan (see plan.py) that a sync or an async runner drives.
The adapters (LangGraph savers, the seed API) translate their own types to the
``Snapshot`` stored here and back from ``Stored``. Retention (``keep_last``, so "shallow"
is ``keep_last=1``) and the whole-thread TTL are settings of the engine, not variants.
"""

from __future__ import annotations

import builtins  # Engine.list shadows list in the class body: its signatures say builtins.list
import logging
import secrets
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import keys as K
from .codec import FORMAT, ValueCodec, describe, pack, pack_record, unpack, unpack_record, unpack_write
from .discovery import Discovery
from .elements import HINTS, ITEMS, KNOWN, item_cache
from .errors import ConflictError, DurabilityError, InvalidInput, StoredDataError
from .keys import Schema, ThreadKeys, dec, enc, place
from .plan import SCRIPTS, Batch, Call, Command, Emit, Plan, Scan
from .records import DURABILITY, Snapshot, Stored, TaggedList, ThreadStats, Write, check_keep_last

log = logging.getLogger("stateline")

__all__ = ["Engine", "LIST_MIN_ITEMS", "PAGE"]

# Lists shorter than this are stored whole: per-element addressing costs more than it saves.
LIST_MIN_ITEMS = 4
# A list-valued write (LangGraph's new messages) is stored by digest from this many bytes.
WRITE_LIST_MIN_BYTES = 256
PAGE = 100
# What one call may do, so that no command runs long on a shared server whatever the
# thread's length: list items sent along with a read (more are fetched in pipelined HMGETs
# of FETCH_ITEMS), bytes of records and values in a list page, ancestors per history
# call, checkpoints dropped per prune/delete call, fields per copy page.
INLINE_ITEMS = 64
FETCH_ITEMS = 128
PAGE_BYTES = 1 << 20
HISTORY_STEP = 64
DROP_STEP = 32
COPY_STEP = 256
# A put from a process that has not seen the thread sends more than this many bytes of
# list items only after the server named those it lacks (one round trip more).
PROBE_BYTES = 64 * 1024
# The most list items one read may refer to (a bound on what planted data can make a read
# fetch; a real 1,000-turn chat refers to 4,000).
READ_ITEMS = 1_000_000


def _replay_order(w: Write) -> tuple[str, str, int]:
    """The order a super-step's writes are applied in (LangGraph's writes_sort_key)."""
    return (w.task_path, w.task_id, w.idx)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Behind(ConflictError):
    """A put with ``expect`` whose checkpoint id sorts before the checkpoint it follows:
    it would not become the head. ``parent`` is that checkpoint's id; nothing was written."""

    def __init__(self, thread_id: str, ns: str, parent: str) -> None:
        super().__init__(
            f"thread {thread_id!r} namespace {ns!r}: the checkpoint would be ordered before its "
            f"parent {parent!r}; nothing was written"
        )
        self.parent = parent


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
        self._items_cache = item_cache(codec)
        # Items sealed with a key are bound to their thread: cached per thread, then.
        self._bound = _bound(codec)
        self._known = KNOWN
        self._store = ITEMS
        self._hints = HINTS
        self.discovery = Discovery(self.schema, ttl_ms)
        self._policy_asked = False  # the first put asks the server whether it may evict keys

    def keys(self, thread_id: str) -> ThreadKeys:
        return self.schema.thread(thread_id)

    # -- writing ---------------------------------------------------------------------------

    def put(self, snap: Snapshot, *, expect: str | None = None) -> Plan[None]:
        """Store ``snap`` in one round trip. ``expect`` = the head the namespace must have
        ('' = must be empty); otherwise ``ConflictError`` and nothing is written."""
        keys = self.keys(snap.thread_id)
        ns, cid = enc(snap.ns), enc(snap.checkpoint_id)
        valued = snap.values if snap.all_values is None else snap.all_values
        fields = {ch: K.value_field(ns, ch, v) for ch, v in snap.versions.items() if ch in valued or ch in snap.values}
        record = self._record(snap, ns, cid, list(fields.values()))
        if expect is None:
            guard = ""
        else:
            guard = enc(expect) if expect else "-"
        alias = enc(snap.alias) if snap.alias else ""
        run = enc(snap.run_id) if snap.run_id else ""
        # The small arguments travel as one (ids are percent-encoded: never a space in them).
        deltas = int(bool(snap.delta_channels))
        opts = f"{ns} {cid} {self.ttl_ms} {self.keep_last} {int(snap.keep_existing)} {deltas} {run} {guard} {alias}"
        log_id = secrets.token_hex(6)  # a log this put starts (if it must) is named by it
        values = dict(snap.values)
        stale: set[str] = set()  # channels whose log hint the server refused
        items: dict[bytes, bytes] = {}  # items to send
        sent_at = self.discovery.now()
        index = self.discovery.entry(snap.thread_id, snap.run_id)
        known: set[bytes] | frozenset[bytes] = self._known.of(keys.data)  # (read only: not copied)
        probing = not known  # a thread this process has not seen: it may hold most items already
        for _attempt in range(5):
            value_args, elements, lists = self._value_args(snap, keys, ns, values, fields, stale)
            new = {d: b for d, b in elements.items() if d not in known and d not in items}
            if not (probing and sum(map(len, new.values())) > PROBE_BYTES):
                items.update(self._sealed_items(snap.thread_id, new))  # (else the server names those it lacks)
            probing = False
            sent = [x for pair in items.items() for x in pair]
            args = (f"{opts} {len(items)} {log_id} {int(not self._policy_asked)}", record, *sent, *value_args)
            reply = yield from self._send(Call(SCRIPTS.put, keys.all, args), index)
            status = _text(reply[0])
            if status == "ok":
                break
            if status == "conflict":
                raise ConflictError(
                    f"thread {snap.thread_id!r} namespace {snap.ns!r}: expected head "
                    f"{expect or None!r}, found {dec(reply[1]) or None!r}; nothing was written"
                )
            if status == "behind":
                raise Behind(snap.thread_id, snap.ns, dec(_text(reply[1])))
            log.debug("retrying a put on thread %r: the server answered %r", snap.thread_id, status)
            if status == "missing":  # items we believed stored are gone (removed elsewhere)
                self._known.forget(keys.data)
                lacking = {bytes(d) for d in reply[1:]}
                known = {d for d in elements if d not in lacking}  # it holds the others
                items.update(self._sealed_items(snap.thread_id, {d: elements[d] for d in lacking if d in elements}))
            elif status == "stale":
                stale.update(ch for ch, f in fields.items() if f == _text(reply[1]))
            elif status == "gone":  # values of unchanged channels went meanwhile: send them
                _send_gone(snap.thread_id, {_text(f) for f in reply[1:]}, fields, values, valued)
        else:
            raise StoredDataError(f"thread {snap.thread_id!r} keeps changing under a put; nothing was written")
        self._learn_put(keys, ns, elements, lists, reply)
        if not index and (reply[1] or reply[2]):
            # The thread (or run) was new to the server though this engine had indexed it:
            # deleted or expired meanwhile, maybe by another process. Index it again.
            index = (self.discovery.add(snap.thread_id, [snap.run_id] if snap.run_id else []),)
            yield index[0]
        self.discovery.written(snap.thread_id, snap.run_id, sent_at if index else None)
        return None

    def _learn_put(
        self, keys: ThreadKeys, ns: str, elements: dict[bytes, bytes], lists: dict[str, tuple[str, bytes]], reply: Any
    ) -> None:
        """What an applied put teaches: the items the thread holds, the logs its lists live
        in (the next put extends them), and, the first time, whether the server may evict."""
        self._known.add(keys.data, elements)
        if not self._policy_asked:
            self._policy_asked = True
            _check_policy(_text(reply[4]) if len(reply) > 4 else "")
        placed = reply[3]
        for i in range(0, len(placed), 3):
            written = lists.get(_text(placed[i]))
            if written is not None:
                channel, digests = written
                n = int(placed[i + 2])
                self._hints.put((keys.data, ns, channel), (_text(placed[i + 1]), n, digests[: 16 * n]))

    def _value_args(
        self,
        snap: Snapshot,
        keys: ThreadKeys,
        ns: str,
        values: dict[str, Any],
        fields: dict[str, str],
        stale: set[str],
    ) -> tuple[list[Any], dict[bytes, bytes], dict[str, tuple[str, bytes]]]:
        """The script arguments for the channel values to write, the list items they use,
        and per list value field: (channel, digests). A list that extends one whose log this
        process knows is sent as that log's length and the new digests only."""
        elements: dict[bytes, bytes] = {}
        args: list[Any] = []
        lists: dict[str, tuple[str, bytes]] = {}
        for channel, value in values.items():
            vfield = fields.get(channel)
            if vfield is None:
                continue
            what = f"the value of channel {channel!r}"
            kind, listed = (value.kind, value.items) if isinstance(value, TaggedList) else ("", value)
            if type(listed) is list and (len(listed) >= LIST_MIN_ITEMS or kind):
                digests, items = self._items(listed, what, (snap.thread_id, snap.ns, channel))
                lists[vfield] = (channel, digests)
                hint = None if channel in stale else self._hints.get((keys.data, ns, channel))
                shared = 0 if hint is None else _shared_digests(digests, hint[2])
                if hint is not None and shared:  # the list extends (or forks from) a log this process knows
                    log = hint[0]
                    tail = digests[16 * shared :]
                    head = b"A" + kind.encode() + b"|" + log.encode() + b"|" + str(shared).encode() + b"|"
                    args += (vfield, head + tail)
                    elements.update((tail[k : k + 16], items[tail[k : k + 16]]) for k in range(0, len(tail), 16))
                else:
                    args += (vfield, b"L" + kind.encode() + b"|" + digests)
                    elements.update(items)
            else:
                codec = self.codec
                args += (vfield, b"v" + codec.seal(codec.dump(value, what), place(snap.thread_id, vfield)))
        return args, elements, lists

    def _sealed_items(self, thread_id: str, items: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """List items as stored: each sealed where it lives (``e:<digest>``)."""
        seal, head = self.codec.seal, place(thread_id, b"e:")
        return {d: seal(b, head + d) for d, b in items.items()}

    def _record(self, snap: Snapshot, ns: str, cid: str, fields: list[str]) -> bytes:
        """The checkpoint record (codec.pack_record): what the scripts read, then the
        envelope of the checkpoint and its metadata."""
        body = pack(
            [
                *self.codec.dumps(snap.header, "the checkpoint"),
                *self.codec.dumps(snap.metadata, "the checkpoint metadata"),
            ]
        )
        return pack_record(
            [
                FORMAT,
                enc(snap.parent_id) if snap.parent_id else "",
                fields,
                enc(snap.run_id) if snap.run_id else "",
                [K.value_prefix(ns, ch) for ch in snap.delta_channels],
                enc(snap.alias) if snap.alias else "",
            ],
            self.codec.seal(body, place(snap.thread_id, f"c:{ns}:{cid}")),
        )

    def _items(self, value: list[Any], what: str, key: Any = None) -> tuple[bytes, dict[bytes, bytes]]:
        return self._items_cache.address(value, f"an item of {what}", key, self.codec)

    def _with_elements(
        self, thread_id: str, elements: dict[bytes, bytes], call: Any, before: tuple[Call | Command, ...] = ()
    ) -> Plan[Any]:
        """Sends ``call(sent, n)`` with the list elements not known to be stored yet. A stale
        cache is safe: the script answers 'missing' (writing nothing) and we send those."""
        if not elements:
            return (yield from self._send(call([], 0), before))
        data_key = self.keys(thread_id).data
        known = self._known.of(data_key)
        to_send = self._sealed_items(thread_id, {d: b for d, b in elements.items() if d not in known})
        for _attempt in range(3):
            reply = yield from self._send(call([x for pair in to_send.items() for x in pair], len(to_send)), before)
            if not (isinstance(reply, list) and reply and _text(reply[0]) == "missing"):
                if not (isinstance(reply, list) and _text(reply[0]) == "conflict"):
                    self._known.add(data_key, elements)
                return reply
            log.debug("retrying a write on thread %r: list items it refers to are gone", thread_id)
            self._known.forget(data_key)  # items we believed stored are gone (pruned elsewhere)
            to_send = self._sealed_items(thread_id, {bytes(d): elements[bytes(d)] for d in reply[1:]}) | to_send
        raise StoredDataError(f"thread {thread_id!r} keeps losing list elements while writing")

    def _send(self, call: Call, before: tuple[Call | Command, ...] = ()) -> Plan[Any]:
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
            task_e = enc(w.task_id)
            # (a write is bound to its checkpoint, task and index: the field it is named by)
            where = place(thread_id, K.write_field(ns_e, cid, task_e, w.idx))
            value = self._write_value(w, what, elements, where)
            (overwrite if w.channel in special else keep_first).extend((task_e, w.idx, value))
        if not overwrite and not keep_first:
            return
        keys = self.keys(thread_id).all
        n_over = len(overwrite) // 3

        def call(sent: list[bytes], n: int) -> Call:
            opts = f"{self.ttl_ms} {n} {n_over} {ns_e} {cid}"
            return Call(SCRIPTS.put_writes, keys, (opts, *sent, *overwrite, *keep_first))

        # Writes renew the thread's TTL, so they renew its index entry too when it is due.
        sent_at = self.discovery.now()
        index = self.discovery.entry(thread_id) if self.ttl_ms else ()
        yield from self._with_elements(thread_id, elements, call, index)
        if index:
            self.discovery.written(thread_id, None, sent_at)

    def _write_value(self, w: Write, what: str, elements: dict[bytes, bytes], where: bytes) -> bytes:
        """A write record (codec.unpack_write); a list of sizeable items (messages) refers
        to its items by digest, so a message stored in a write and in the channel's list is
        kept once."""
        if type(w.value) is list and w.value:
            digests, items = self._items(w.value, what)
            if sum(map(len, items.values())) >= WRITE_LIST_MIN_BYTES:
                elements.update(items)
                record = self.codec.seal(pack([FORMAT, w.channel, None, w.task_path]), where)
                return b"W" + str(len(w.value)).encode() + b":" + digests + record
        value = self.codec.dump(w.value, what)
        return self.codec.seal(pack([FORMAT, w.channel, value, w.task_path]), where)

    # -- reading ---------------------------------------------------------------------------

    def get(self, thread_id: str, ns: str, checkpoint_id: str | None) -> Plan[Stored | None]:
        """The checkpoint ``checkpoint_id`` (or the newest of ns): one round trip, and for a
        long list the items this process does not have yet, fetched in bounded chunks."""
        keys = self.keys(thread_id)
        # The logs this process knows (beyond what a reply brings along anyway): the script
        # sends only what follows them, so a warm read does not grow with the list.
        known = {log: hint for log, hint in self._hints.logs_of(keys.data).items() if hint[0] > INLINE_ITEMS}
        marks = [x for log, (n, _digests) in list(known.items())[:8] for x in (log, n)]
        args = (enc(ns), enc(checkpoint_id or ""), self.refresh_ms, INLINE_ITEMS, *marks)
        call = Call(SCRIPTS.get, keys.all, args)
        for _attempt in range(3):
            reply = yield call
            if reply is None:
                return None
            entry, logs, inline = reply
            items = yield from self._fetch(keys, _whole_logs(logs, known), [entry[4]], inline)
            if items is not None:
                stored = self._stored(thread_id, entry, items)
                if checkpoint_id is None:
                    self._learn(keys, entry, items)
                yield from self._renewed(thread_id)
                return stored
        raise StoredDataError(f"thread {thread_id!r}: list items of a checkpoint keep disappearing while it is read")

    def _renewed(self, thread_id: str) -> Plan[None]:
        """After a read that renewed the thread's TTL: its index entry too, when due."""
        if self.refresh_ms:
            sent_at = self.discovery.now()
            index = self.discovery.entry(thread_id)
            if index:
                yield index[0]
                self.discovery.written(thread_id, None, sent_at)

    def _fetch(self, keys: ThreadKeys, logs: list[Any], writes: list[list[Any]], inline: list[Any]) -> Plan[Any]:
        """digest -> item for every item of a reply (``logs``: log, digests... ; ``writes``:
        write records), or None when one is gone (the checkpoint was deleted meanwhile).
        Items come from the reply, this process's store, or HMGETs of FETCH_ITEMS each in
        one pipeline."""
        scope = keys.data.encode() if self._bound else b""
        found = self._opened(keys, inline[::2], inline[1::2])
        self._store.add((scope + d, plain) for d, plain in found.items())
        wanted: dict[bytes, None] = {}
        pieces = [logs[i] for i in range(1, len(logs), 2)]
        for group in writes:
            pieces += [_write_digests(raw) for raw in group[1::2] if raw]
        for digests in pieces:
            if digests is None:  # a chunk of a log is gone
                return None
            for k in range(0, len(digests), 16):
                d = digests[k : k + 16]
                if d not in found and d not in wanted:
                    cached = self._store.get(scope + d)
                    if cached is None:
                        wanted[d] = None
                    else:
                        found[d] = cached
        if len(found) + len(wanted) > READ_ITEMS:
            raise StoredDataError(
                f"thread {keys.thread_id!r}: one read refers to {len(found) + len(wanted)} list items, over the "
                f"limit of {READ_ITEMS} (damaged or planted data?)"
            )
        if wanted:
            todo = list(wanted)
            chunks = [todo[i : i + FETCH_ITEMS] for i in range(0, len(todo), FETCH_ITEMS)]
            replies = yield Batch(tuple(Command(("HMGET", keys.data, *(b"e:" + d for d in c))) for c in chunks))
            decoded = sum(map(len, found.values()))
            for chunk, got in zip(chunks, replies, strict=True):
                if any(data is None for data in got):
                    return None
                opened = self._opened(keys, chunk, got)
                decoded += sum(map(len, opened.values()))
                if decoded > self.codec.max_read_bytes:
                    raise StoredDataError(
                        f"thread {keys.thread_id!r}: one read decodes more than {self.codec.max_read_bytes} bytes "
                        "of list items (damaged or planted data?)"
                    )
                found.update(opened)
            self._store.add((scope + d, found[d]) for d in todo)
        longest: dict[str, bytes] = {}  # (replies read together may name one log at two lengths)
        for i in range(0, len(logs), 2):
            if len(logs[i + 1]) > len(longest.get(_text(logs[i]), b"")):
                longest[_text(logs[i])] = logs[i + 1]
        found[b"logs"] = longest  # type: ignore[assignment]
        return found

    def _opened(self, keys: ThreadKeys, digests: Sequence[bytes], stored: Sequence[bytes | None]) -> dict[bytes, bytes]:
        """digest -> the plaintext of each list item given (items missing are left out)."""
        open_, head = self.codec.open, place(keys.thread_id, b"e:")
        return {d: open_(data, head + d) for d, data in zip(digests, stored, strict=True) if data is not None}

    def _learn(self, keys: ThreadKeys, entry: list[Any], items: dict[bytes, Any]) -> None:
        """Remembers the logs of a namespace's newest checkpoint, which its next put extends."""
        ns_e, raw, values = _text(entry[0]), entry[2], entry[3]
        index, _ = unpack_record(raw, f"thread {keys.thread_id!r}, a checkpoint record")
        logs = items[b"logs"]
        for ref, value in zip(index[2], values, strict=True):
            if isinstance(value, list) and len(value) == 3:
                _kind, n, log = value
                self._hints.put(
                    (keys.data, ns_e, dec(ref.split(":", 3)[2])), (_text(log), n, logs[_text(log)][: 16 * n])
                )

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
        Returns how many it emitted. A page is one round trip (and the items this process
        lacks); with ``select``, pages of records are filtered on their metadata first and
        only the checkpoints it accepts are read whole."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative int or None, got {limit!r}")
        keys = self.keys(thread_id)
        ns_e = None if ns is None else enc(ns)
        first = "" if before is None else enc(before)  # the script resolves an alias
        bound = ""
        bare = select is not None
        count = PAGE if bare or limit is None else max(1, min(limit, page))
        emitted, rereads = 0, 0
        while limit is None or emitted < limit:
            args = (ns_e or "", "1" if ns_e is None else "0", bound, count, first, int(bare), PAGE_BYTES, INLINE_ITEMS)
            reply = yield Call(SCRIPTS.list, keys.all, args)
            entries, logs, inline, more, last = reply
            if bare:
                found = yield from self._selected(thread_id, entries, select, limit and limit - emitted)
            else:
                items = yield from self._fetch(keys, logs, [e[4] for e in entries], inline)
                if items is None:  # a checkpoint of the page went meanwhile: read the page again
                    rereads += 1
                    if rereads > 3:
                        raise StoredDataError(f"thread {thread_id!r}: list items of a page keep disappearing")
                    continue
                found = [self._stored(thread_id, entry, items) for entry in entries]
            first = ""
            if limit is not None:
                found = found[: limit - emitted]
            if found:
                yield Emit(tuple(found))
                emitted += len(found)
            if not more:
                break
            bound = "(" + _text(last)
        return emitted

    def _selected(
        self, thread_id: str, entries: builtins.list[Any], select: Any, most: int | None
    ) -> Plan[builtins.list[Stored]]:
        """The checkpoints of a page of bare records that ``select`` accepts (at most
        ``most``), read whole in one pipelined round trip."""
        chosen = []
        for ns_e, cid_e, raw in entries:  # (the metadata alone decides: the header is not read)
            if select(self._stored(thread_id, [ns_e, cid_e, raw, None, []], {}, header=False)):
                chosen.append((ns_e, cid_e))
                if most is not None and len(chosen) >= most:
                    break
        if not chosen:
            return []
        keys = self.keys(thread_id)
        calls = [Call(SCRIPTS.get, keys.all, (ns, cid, self.refresh_ms, INLINE_ITEMS)) for ns, cid in chosen]
        replies = (yield Batch(tuple(calls))) if len(calls) > 1 else [(yield calls[0])]
        found = [r for r in replies if r is not None]  # (a checkpoint deleted meanwhile: not listed)
        logs = [x for r in found for x in r[1]]
        items = yield from self._fetch(keys, logs, [r[0][4] for r in found], [x for r in found for x in r[2]])
        if items is None:  # an item went meanwhile: read them one by one, as get does
            out = []
            for ns, cid in chosen:
                stored = yield from self.get(thread_id, dec(ns), dec(cid))
                if stored is not None:
                    out.append(stored)
            return out
        return [self._stored(thread_id, r[0], items) for r in found]

    def threads(self, limit: int | None = None) -> Plan[builtins.list[str]]:
        """Thread ids from the discovery index (at most ``limit``), sorted, dropping entries
        whose data is gone. A round trip per few shards and per page of 500 ids."""
        found: list[str] = []
        bound: str | None = "-"
        while bound is not None and (limit is None or len(found) < limit):
            page, bound = yield from self.thread_page(bound)
            found += page
        return sorted(found if limit is None else found[:limit])

    def thread_page(self, bound: str = "-") -> Plan[tuple[builtins.list[str], str | None]]:
        """One page of live thread ids from ``bound`` ('-' = the first page) on, and the
        bound of the next page (None after the last); see Discovery.page."""
        return (yield from self.discovery.page(bound))

    def delta_history(
        self, thread_id: str, ns: str, checkpoint_id: str | None, channels: Sequence[str]
    ) -> Plan[dict[str, tuple[builtins.list[Write], Any, bool]]]:
        """Per channel: the writes of the ancestors (oldest first) back to the nearest one
        with a stored value (the seed, included), and that seed. One round trip per
        HISTORY_STEP ancestors."""
        keys = self.keys(thread_id)
        ns_e = enc(ns)
        out: dict[str, tuple[list[Write], Any, bool]] = {}
        collected: dict[str, list[list[Write]]] = {ch: [] for ch in channels}
        wanted = list(channels)
        start = enc(checkpoint_id or "")
        while wanted:
            prefixes = [K.value_prefix(ns_e, ch) for ch in wanted]
            steps, logs, inline, going_on = yield Call(
                SCRIPTS.history, keys.all, (ns_e, start, HISTORY_STEP, INLINE_ITEMS, *prefixes)
            )
            items = yield from self._fetch(keys, logs, [w for _cid, w, _seeds in steps], inline)
            if items is None:
                raise StoredDataError(f"thread {thread_id!r}: an ancestor's items went while its history was read")
            seeded = set()
            for cid_e, writes, seeds in steps:  # from the parent towards the root
                decoded = self._writes(writes, items, thread_id, ns_e, _text(cid_e))
                for w, ch in enumerate(wanted):
                    if ch in seeded or ch in out:
                        continue
                    mine = sorted((x for x in decoded if x.channel == ch), key=_replay_order)
                    collected[ch].append(mine)
                    if seeds[w] is not None:
                        ref, stored = seeds[w]
                        seed = self._value(stored, items, thread_id, _text(ref))
                        out[ch] = ([x for group in reversed(collected[ch]) for x in group], seed, True)
                        seeded.add(ch)
            wanted = [ch for ch in wanted if ch not in out]
            if not going_on:
                break
            start = ">" + _text(going_on)
        for ch in wanted:
            out[ch] = ([x for group in reversed(collected[ch]) for x in group], None, False)
        return out

    # -- deleting and copying ----------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> Plan[None]:
        """Deletes the thread's two keys, then its discovery entries and those of every run
        it had (the index remembers them even where retention dropped their checkpoints).
        One round trip, more only for a thread with hundreds of runs."""
        self._forget_items(thread_id)
        yield from self.discovery.unindex([thread_id], before=(Command(("UNLINK", *self.keys(thread_id).all)),))

    def thread_stats(self) -> Plan[builtins.list[ThreadStats]]:
        """Checkpoints, writes, bytes and TTL of every thread (``survey.thread_stats``)."""
        from . import survey

        return (yield from survey.thread_stats(self, None))

    def delete_checkpoint(self, thread_id: str, ns: str, checkpoint_id: str) -> Plan[bool]:
        """Deletes one checkpoint and its writes, and the values no other checkpoint
        uses; False if it was not stored. One round trip."""
        self._forget_items(thread_id)
        keys = self.keys(thread_id)
        call = Call(SCRIPTS.delete_checkpoint, keys.all, (enc(ns), enc(checkpoint_id)))
        reply, alive = yield Batch((call, Command(("EXISTS", keys.index))))
        if not alive:  # that was all the thread had: the script deleted it
            yield from self.discovery.unindex([thread_id])
        return bool(reply)

    def _forget_items(self, thread_id: str) -> None:
        data_key = self.keys(thread_id).data
        self._known.forget(data_key)
        self._hints.forget(data_key)

    def delete_all(self) -> Plan[int]:
        """Deletes every key of this prefix (every thread and both discovery indexes), and
        nothing else: SCAN of every primary, never KEYS. Not atomic: a thread written
        meanwhile may survive. Returns how many keys it deleted."""
        self._known.forget()
        self._hints.forget()
        self.discovery.forget()
        deleted = 0
        step: Scan | None = Scan(self.schema.thread_pattern)
        while step is not None:
            cursor, found = yield step
            if found:  # one command per key: on a cluster each goes to its own slot
                deleted += sum((yield Batch(tuple(Command(("UNLINK", k)) for k in found))))
            step = None if cursor is None else Scan(step.match, cursor)
        replies = yield self.discovery.delete_all()
        return deleted + sum(replies)

    def prune(self, thread_id: str, keep: int) -> Plan[int]:
        """Keeps the ``keep`` newest checkpoints of each namespace (and, for DeltaChannel
        values, the ancestors needed to rebuild them); deletes everything else, and writes
        whose checkpoint is not stored. Up to DROP_STEP records per round trip."""
        if keep is None:
            raise InvalidInput("prune needs keep_last: how many checkpoints to keep per namespace")
        check_keep_last(keep)
        self._forget_items(thread_id)
        removed, going_on = 0, b""
        while True:
            went, going_on, more = yield Call(SCRIPTS.prune, self.keys(thread_id).all, (keep, DROP_STEP, going_on))
            removed += went
            if not more:
                return removed

    def delete_runs(self, run_ids: Sequence[str]) -> Plan[int]:
        """Deletes every checkpoint (with its writes) of the runs, in every thread the
        discovery index holds them in; returns how many went. A thread left empty goes
        from the index with all its runs."""
        runs = list(dict.fromkeys(enc(r) for r in run_ids))
        removed, more = 0, bool(runs)
        while more:  # more: a run had more threads than one lookup returns
            by_thread, more = yield from self.discovery.threads_of_runs(runs)
            if not by_thread:
                break
            removed += yield from self._delete_runs_in(by_thread)
        return removed

    def _delete_runs_in(self, by_thread: dict[str, builtins.list[str]]) -> Plan[int]:
        """Deletes the runs' checkpoints thread by thread (DROP_STEP per call, the threads'
        calls in one pipeline), then their index entries: all of a thread it emptied."""
        removed, todo = 0, dict(by_thread)
        for thread_id in todo:
            self._forget_items(thread_id)
        while todo:
            steps = tuple(Call(SCRIPTS.delete_runs, self.keys(t).all, (DROP_STEP, *runs)) for t, runs in todo.items())
            replies = yield Batch(steps)
            removed += sum(went for went, _more in replies)
            todo = {t: runs for (t, runs), (_went, more) in zip(todo.items(), replies, strict=True) if more}
        exists = yield Batch(tuple(Command(("EXISTS", self.keys(t).index)) for t in by_thread))
        alive = dict(zip(by_thread, exists, strict=True))
        entries = tuple(self.discovery.drop_runs(t, runs) for t, runs in by_thread.items() if alive[t])
        yield from self.discovery.unindex([t for t, a in alive.items() if not a], before=entries)
        return removed

    def copy_thread(self, source: str, target: str) -> Plan[int]:
        """Copies every checkpoint, value and write of ``source`` into ``target`` (ids kept)."""
        dumped = yield from self.dump(source)
        return (yield from self.restore(target, dumped, source, self.codec))

    def dump(self, thread_id: str) -> Plan[tuple[builtins.list[bytes], builtins.list[bytes]]]:
        """Everything stored for a thread, as opaque fields and index members (for copies
        and migrations between prefixes or servers), read a page per round trip. A thread
        written meanwhile is read again; ``ConflictError`` if it never holds still."""
        keys = self.keys(thread_id)
        for _attempt in range(3):
            fields: list[bytes] = []
            members: list[bytes] = []
            cursor, bound, generation = b"0", b"-", None
            while cursor != b"done" or bound:
                cursor, page, bound, found, gen = yield Call(SCRIPTS.dump, keys.all, (cursor, bound, COPY_STEP))
                fields += page
                members += found
                if generation is None:
                    generation = gen
                elif gen != generation:
                    break
            else:
                return fields, members
        raise ConflictError(f"thread {thread_id!r} kept changing while it was copied; try again when it is idle")

    def restore(
        self,
        target: str,
        dumped: tuple[builtins.list[bytes], builtins.list[bytes]],
        source: str | None = None,
        codec: ValueCodec | None = None,
    ) -> Plan[int]:
        """Writes a dump of thread ``source`` (read with ``codec``) into the new thread
        ``target`` (a page per round trip) and indexes it. Encrypted values are bound to
        their thread, so they are decrypted and sealed again for ``target`` (with this
        engine's codec: a copy to another saver takes its encryption and compression).
        Returns how many fields it wrote. Raises ``InvalidInput`` if ``target`` exists."""
        fields, members = dumped
        if not fields:
            return 0
        if source is not None and codec is not None and (_bound(codec) or _bound(self.codec)):
            fields = self._resealed(fields, source, target, codec)
        n = len(fields) // 2
        runs = {K.run_of(m) for m in members if m.startswith(b"r:")}
        self._forget_items(target)
        keys = self.keys(target).all
        step = 2 * COPY_STEP
        for i in range(0, max(len(fields), len(members)), step):
            page = fields[i : i + step]
            reply = yield Call(
                SCRIPTS.restore, keys, (self.ttl_ms, int(i == 0), len(page) // 2, *page, *members[i : i + step])
            )
            if _text(reply[0]) == "exists":
                raise InvalidInput(f"cannot copy into thread {target!r}: it exists already (delete it first)")
        # Indexed once the copy is made (a refused copy must leave no entry): a crash in
        # between leaves the copy unlisted until a process writes to it and indexes it.
        yield self.discovery.add_all(target, [dec(r) for r in runs])
        return n

    def _resealed(
        self, fields: builtins.list[bytes], source: str, target: str, codec: ValueCodec
    ) -> builtins.list[bytes]:
        """Dumped fields of ``source`` (sealed by ``codec``) sealed again for ``target``."""
        out: list[bytes] = []
        seal = self.codec.seal
        for i in range(0, len(fields), 2):
            f, v = bytes(fields[i]), bytes(fields[i + 1])
            src, dst = place(source, f), place(target, f)
            kind = f[:2]
            if kind == b"b:" and v[:1] == b"v":
                v = b"v" + seal(codec.open(v[1:], src), dst)
            elif kind == b"e:":
                v = seal(codec.open(v, src), dst)
            elif kind == b"c:":
                index, sealed = unpack_record(v, describe(src))
                v = pack_record(index, seal(codec.open(sealed, src), dst))
            elif kind == b"w:":
                parts = _text(f).split(":")
                if len(parts) == 3:  # a checkpoint's packed writes, each bound to its own name
                    packed, spilled = _packed_writes(v, describe(src))
                    entries = []
                    for task, idx, w in packed:
                        name = K.write_field(parts[1], parts[2], task, idx)
                        entries.append(
                            (task, idx, _resealed_write(w, place(source, name), place(target, name), codec.open, seal))
                        )
                    v = _pack_writes(entries, spilled)
                elif v[:1] == b"+":  # a format-2 write in a field of its own, bound to it
                    v = b"+" + _resealed_write(v[1:], src, dst, codec.open, seal)
                else:  # format 1: bound to its checkpoint
                    prefix = K.writes_prefix(*parts[1:3])
                    v = _resealed_write(v, place(source, prefix), place(target, prefix), codec.open, seal)
            out += (f, v)
        return out

    # -- decoding ----------------------------------------------------------------------------

    def _value(self, stored: bytes | builtins.list[Any], items: dict[bytes, Any], thread_id: str, ref: str) -> Any:
        where = place(thread_id, ref)
        if not isinstance(stored, list):
            if stored[:1] != b"v":
                raise StoredDataError(f"{describe(where)} is damaged: not a value")
            return self.codec.load(stored[1:], where)
        if len(stored) != 3 or not isinstance(stored[1], int):
            raise StoredDataError(f"{describe(where)} is damaged: not a list value")
        kind, n, log = stored
        digests = items[b"logs"].get(_text(log))
        if digests is None or len(digests) < 16 * n:
            raise StoredDataError(f"{describe(where)}: its log {_text(log)!r} is damaged")
        listed = self.codec.load_list([items.get(digests[k : k + 16]) for k in range(0, 16 * n, 16)], where)
        return TaggedList(_text(kind), listed) if kind else listed

    def _writes(
        self, named: builtins.list[bytes | None], items: dict[bytes, Any], thread_id: str, ns_e: str, cid_e: str
    ) -> builtins.list[Write]:
        """The writes of a reply ({name, value, ...}, see writes_of in _lib.lua): a value
        after '+' is format 2, bound to its name, which gives its task and index; any other
        is format 1, bound to its checkpoint, with its task and index inside."""
        out = []
        what = f"thread {thread_id!r}, a write to checkpoint {dec(cid_e)!r}"
        for name, raw in zip(named[::2], named[1::2], strict=True):
            if not raw:  # deleted between the index read and the fetch: not a write anymore
                continue
            task_idx: tuple[str, int] | None = None
            if raw[:1] == b"+":
                where = place(thread_id, bytes(name or b""))
                task_idx = _task_idx(_text(name or b""), what)
                raw = raw[1:]
            else:
                where = place(thread_id, K.writes_prefix(ns_e, cid_e))
            listed = None
            if raw[:1] == b"W":  # a list of items stored by digest: W<n>:<digests><record>
                digests = _write_digests(raw)
                if not digests and raw[1:2] != b"0":
                    raise StoredDataError(f"{what} is damaged: its list of items cannot be read")
                raw = raw[raw.index(b":") + 1 + len(digests) :]
                listed = [items.get(digests[k : k + 16]) for k in range(0, len(digests), 16)]
            task_id, channel, plain, task_path, idx = unpack_write(self.codec.open(raw, where), what, task_idx)
            if listed is not None:
                value = self.codec.load_list(listed, where)
            elif plain is None:
                raise StoredDataError(f"{describe(where)} is damaged: it has no value")
            else:
                value = self.codec.load_plain(plain, where)
            out.append(Write(task_id, channel, value, task_path, idx))
        return out

    def bare(self, thread_id: str, entry: builtins.list[Any]) -> Stored:
        """A checkpoint from a bare record of the list script (ns, cid, record): its ids,
        parent, header and metadata; no values, no writes."""
        ns_e, cid_e, raw = entry[:3]
        return self._stored(thread_id, [ns_e, cid_e, raw, None, []], {})

    def _stored(
        self, thread_id: str, entry: builtins.list[Any], items: dict[bytes, Any], *, header: bool = True
    ) -> Stored:
        ns_e, cid_e, raw, values, writes = entry
        ns_e, cid_e = _text(ns_e), _text(cid_e)
        where = place(thread_id, f"c:{ns_e}:{cid_e}")
        index, sealed = unpack_record(raw, describe(where))
        body = unpack(self.codec.open(sealed, where), describe(where))
        if not (isinstance(body, list) and len(body) == 4 and all(isinstance(x, str) for x in body[::2])):
            raise StoredDataError(f"{describe(where)} is damaged: its body is not [type, checkpoint, type, metadata]")
        h_typ, h_data, m_typ, m_data = body
        checkpoint = self.codec.loads(h_typ, h_data, where) if header else {}
        metadata = self.codec.loads(m_typ, m_data, where)
        channel_values = {}
        if values is not None and len(values) != len(index[2]):
            raise StoredDataError(
                f"{describe(where)} is damaged: it has {len(values)} values for {len(index[2])} fields"
            )
        for ref, value in zip(index[2], values, strict=True) if values is not None else ():
            if value is None:  # a value the record refers to is gone: never a silently smaller state
                raise StoredDataError(
                    f"thread {thread_id!r}: checkpoint {dec(cid_e)!r} refers to a value that is missing ({ref})"
                )
            parts = ref.split(":", 3)
            if len(parts) != 4:
                raise StoredDataError(f"{describe(where)} is damaged: it refers to a field {ref!r}")
            channel_values[dec(parts[2])] = self._value(value, items, thread_id, ref)
        return Stored(
            thread_id=thread_id,
            ns=dec(ns_e),
            checkpoint_id=dec(cid_e),
            parent_id=dec(index[1]) if index[1] else None,
            alias=dec(index[5]) if index[5] else None,
            header=checkpoint,
            metadata=metadata,
            values=channel_values,
            writes=self._writes(writes, items, thread_id, ns_e, cid_e),
        )


def _whole_logs(logs: builtins.list[Any], known: dict[str, tuple[int, bytes]]) -> builtins.list[Any]:
    """A reply's logs with every digest: where it sent only what follows the first m digests
    of a log this process knows ([m, the rest]), those m put back in front."""
    out = list(logs)
    for i in range(1, len(out), 2):
        if isinstance(out[i], list):
            m, after = out[i]
            hint = known.get(_text(out[i - 1]))
            out[i] = None if hint is None or hint[0] < m else hint[1][: 16 * m] + after
    return out


def _shared_digests(digests: bytes, known: bytes) -> int:
    """How many leading 16-byte digests two digest strings share (compared a block at a time)."""
    n = min(len(digests), len(known)) // 16
    if digests[: 16 * n] == known[: 16 * n]:
        return n
    low, high = 0, n  # the first n differ somewhere: bisect on equal prefixes (memcmp each)
    while low < high:
        mid = (low + high + 1) // 2
        if digests[: 16 * mid] == known[: 16 * mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _send_gone(
    thread_id: str, gone: set[str], fields: dict[str, str], values: dict[str, Any], valued: Mapping[str, Any]
) -> None:
    """Adds to ``values`` the values of the fields the server lost (the thread was deleted or
    expired between the read this checkpoint came from and its put); StoredDataError if the
    caller did not hand them over."""
    for ch, f in fields.items():
        if f in gone and ch not in values:
            if ch not in valued:
                raise StoredDataError(
                    f"thread {thread_id!r}: the values this checkpoint keeps from its parent are gone "
                    "(the thread was deleted or expired meanwhile); nothing was written"
                )
            values[ch] = valued[ch]


_POLICY_SEEN: set[str] = set()
# maxmemory-policy values under which the server may evict a thread's keys one at a time
# (allkeys-*: any key; volatile-*: keys with a TTL, so threads saved with a ttl).
_EVICTING = ("allkeys-", "volatile-")


def _check_policy(policy: str) -> None:
    """Warns once per process when the server may evict a thread's keys: a thread that lost
    one key reads as StoredDataError from then on (never as empty)."""
    if not policy or policy in _POLICY_SEEN:
        return
    _POLICY_SEEN.add(policy)
    if policy.startswith(_EVICTING):
        warnings.warn(
            f"the server's maxmemory-policy is {policy}: under memory pressure it evicts keys one at a "
            "time, and a thread that loses one of its keys can no longer be read. Use noeviction for "
            "checkpoints (see the README, 'Server settings').",
            RuntimeWarning,
            stacklevel=2,
        )


def _bound(codec: ValueCodec) -> bool:
    """Whether the codec's values are bound to their thread (encrypted)."""
    return codec.encryption is not None or codec.serde_cipher is not None


def _task_idx(name: str, what: str) -> tuple[str, int]:
    """The task id and index a format-2 write is named by ('w:<ns>:<cid>:<task>:<idx>')."""
    parts = name.split(":")
    try:
        return dec(parts[3]), int(parts[4])
    except (IndexError, ValueError):
        raise StoredDataError(f"{what} is damaged: its name {name!r} is not a write's") from None


def _packed_writes(raw: bytes, what: str) -> tuple[builtins.list[tuple[str, str, bytes]], bool]:
    """The entries (task, idx, value) of a packed writes field, and whether writes of its
    checkpoint may be in fields of their own: '<n>\n' or '<n>+\n', n bytes of heads
    '<task> <idx> <length>\n', then the values (see _lib.lua)."""
    count, sep, rest = raw.partition(b"\n")
    spilled = count.endswith(b"+")
    try:
        n = int(count.rstrip(b"+"))
        entries = [(t, i, int(size)) for t, i, size in (h.split(" ") for h in rest[:n].decode().splitlines())]
    except (UnicodeDecodeError, ValueError):
        raise StoredDataError(f"{what} is damaged: its packed writes cannot be read") from None
    values, out, pos = rest[n:], [], 0
    for task, idx, size in entries:
        out.append((task, idx, values[pos : pos + size]))
        pos += size
    if not sep or pos != len(values):
        raise StoredDataError(f"{what} is damaged: its packed writes cannot be read")
    return out, spilled


def _pack_writes(entries: builtins.list[tuple[str, str, bytes]], spilled: bool) -> bytes:
    heads = "".join(f"{task} {idx} {len(v)}\n" for task, idx, v in entries).encode()
    return str(len(heads)).encode() + (b"+\n" if spilled else b"\n") + heads + b"".join(v for _, _, v in entries)


def _resealed_write(v: bytes, src: bytes, dst: bytes, open_: Any, seal: Any) -> bytes:
    """A write value (a record, or W<n>:<digests><record>) sealed again for ``dst``."""
    digests = _write_digests(v)
    if v[:1] == b"W" and not digests and v[1:3] != b"0:":
        raise StoredDataError(f"{describe(src)} is damaged: its list of items cannot be read")
    cut = v.index(b":") + 1 + len(digests) if v[:1] == b"W" else 0
    return v[:cut] + seal(open_(v[cut:], src), dst)


def _write_digests(raw: bytes) -> bytes:
    """The item digests of a write record stored by digest (b'' for any other, or for a
    damaged one, which decoding the record then names)."""
    if raw[:1] == b"+":
        raw = raw[1:]
    if raw[:1] != b"W":
        return b""
    colon = raw.find(b":", 1, 16)
    count = raw[1:colon]
    if colon < 0 or not count.isdigit():
        return b""
    digests = raw[colon + 1 : colon + 1 + 16 * int(count)]
    return digests if len(digests) == 16 * int(count) else b""
