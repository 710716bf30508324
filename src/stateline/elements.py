"""List items stored by content: their digests, and what this process knows about them.

A list value (a chat's messages) is stored as one element per item, keyed by a digest of
the item's serialized bytes, so a message is kept once per thread however many versions
of the list refer to it.

Every put hands over the whole list again, and LangGraph lets nodes mutate messages in
place, so object identity proves nothing about an item. Its content does: ``ItemCache``
keys each item by a fingerprint, ormsgpack's native encoding of the item's plain data (for
a pydantic model, when the serde stores it as its model_dump(): its fields, extras and
private attributes, read directly), which is several times cheaper than the serde's own
path. An item whose fingerprint (and type) was seen before reuses the bytes and digest
computed then; anything the fingerprint cannot render exactly (datetimes, enums, subclasses,
big ints, models nested inside an item, tuples for a serde that keeps them apart from lists...)
is serialized afresh.

A channel's list usually grows at its end, so the whole list is fingerprinted first, in
one call: when the previous list of that channel is a prefix of it (msgpack is
self-delimiting, so equal leading bytes are equal leading items) and its items have the
same types, only the new items are looked at one by one.
"""

from __future__ import annotations

import hashlib
import operator
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import ormsgpack

from .codec import FINGERPRINT_PYDANTIC, PLAIN_DATA, ValueCodec

try:
    from pydantic import BaseModel

    _Model: type[BaseModel] | None = BaseModel
except ImportError:  # pydantic comes with LangGraph; the seed API does without it
    _Model = None

__all__ = [
    "ItemCache", "KnownElements", "ItemStore", "LogHints", "ITEMS", "KNOWN", "HINTS",
    "item_cache", "configure_caches", "cache_usage", "digest",
]  # fmt: skip


def digest(data: bytes) -> bytes:
    """Content address of an item: 128-bit BLAKE2b, collision-resistant by design."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _not_plain(obj: Any) -> Any:
    raise TypeError(f"{type(obj).__name__} has no exact fingerprint")


# By class: may a model be fingerprinted by its state (isinstance() on a model is slow, and
# the checks below walk its schema)? None: not a pydantic model at all.
_FINGERPRINTABLE: dict[type, bool | None] = {}
_UNSEEN: Any = object()  # (also: no view of an item)
# The state a pydantic model's model_dump() is made of (a tuple: see PYDANTIC_OPTIONS).
_STATE = operator.attrgetter("__dict__", "__pydantic_extra__", "__pydantic_private__")
# JsonPlusSerializer stores a tuple as a list, so its fingerprint may too.
PYDANTIC_OPTIONS = PLAIN_DATA & ~ormsgpack.OPT_PASSTHROUGH_TUPLE


def _custom_serialization(schema: Any) -> bool:
    """Whether a pydantic core schema calls user code to serialize anything."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ser = node.get("serialization")
            if isinstance(ser, dict) and str(ser.get("type", "")).startswith("function"):
                return True
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return False


def _fingerprintable(cls: type) -> bool | None:
    """A pydantic model class whose model_dump() depends on nothing but its fields, extras
    and private attributes: no serializer or computed field of its own, no model_dump of its
    own, no __slots__ of its own (state the fingerprint would not see). None: not a model."""
    if _Model is None or not issubclass(cls, _Model):
        return None
    decorators = cls.__pydantic_decorators__
    own_slots = any(c.__dict__.get("__slots__") for c in cls.__mro__[: cls.__mro__.index(_Model)])
    return not (
        decorators.field_serializers
        or decorators.model_serializers
        or decorators.computed_fields
        or cls.model_dump is not _Model.model_dump
        or own_slots
        or _custom_serialization(cls.__pydantic_core_schema__)
    )


def _model_views(items: list[Any], types: list[type]) -> list[Any]:
    """Each pydantic model (v2) as its state; other items as they are. A model that cannot
    be fingerprinted by its state becomes itself, which the fingerprint refuses."""
    known = _FINGERPRINTABLE
    kinds: dict[type, bool | None] = {}  # read from here only: another thread may clear `known`
    for t in set(types):
        kinds[t] = flag = known.get(t, _UNSEEN)
        if flag is _UNSEEN:
            if len(known) > 4096:  # classes made on the fly: don't keep them all
                known.clear()
            kinds[t] = known[t] = _fingerprintable(t)
    if all(kinds.values()):  # a chat's messages
        return list(map(_STATE, items))
    return [_STATE(x) if kinds[t] else x for x, t in zip(items, types, strict=True)]


@dataclass(slots=True)
class _Addressed:
    body: bytes  # the list's fingerprint without its array header
    types: list[type]
    n: int
    digests: bytes
    elements: dict[bytes, bytes]


def _nested(item: Any) -> Any:
    """A list item as it is serialized inside a whole list: msgpack has no bytearray, so
    there it comes back as bytes (from InMemorySaver, and from lists stored whole here)."""
    return bytes(item) if type(item) is bytearray else item


def _header_size(n: int) -> int:
    """Bytes of a msgpack array header of n items."""
    return 1 if n < 16 else 3 if n < 65536 else 5


class ItemCache:
    """fingerprint -> (type, digest, serialized bytes) of list items, for one codec.

    Bounded by bytes in two generations: when the young one is full it becomes the old one
    and the oldest is dropped; a hit in the old generation moves the entry back."""

    def __init__(self, codec: ValueCodec, budget_bytes: int = 16 * 1024 * 1024) -> None:
        self.codec = codec
        self.mode = codec.fingerprint
        self.models = codec.fingerprint == FINGERPRINT_PYDANTIC and _Model is not None
        self.options = PYDANTIC_OPTIONS if codec.fingerprint == FINGERPRINT_PYDANTIC else PLAIN_DATA
        self.budget = budget_bytes
        self._young: dict[bytes, tuple[type, bytes, bytes]] = {}
        self._old: dict[bytes, tuple[type, bytes, bytes]] = {}
        self._size = 0
        self._old_size = 0
        # The last list addressed under a key (a thread's channel), least recently used first.
        self._lists: OrderedDict[Any, _Addressed] = OrderedDict()
        self._lists_size = 0
        self._lock = threading.Lock()  # a sync saver is shared by LangGraph's worker threads

    def address(
        self, items: list[Any], what: str, key: Any = None, codec: ValueCodec | None = None
    ) -> tuple[bytes, dict[bytes, bytes]]:
        """The items' digests joined (16 bytes each, in order) and digest -> serialized bytes.
        ``key`` names where the list lives (a thread's channel): its previous list is reused.
        ``codec`` serializes what the cache lacks (the cache is shared by codecs whose output
        is a function of an item's content; each may refuse types another accepts)."""
        codec = codec or self.codec
        if self.mode is None:
            data = codec.dump_all([_nested(x) for x in items], what)
            each = [codec.digest(d) for d in data]
            return b"".join(each), dict(zip(each, data, strict=True))
        if key is None:
            return self._address(codec, items, what)
        types = list(map(type, items))
        try:
            views = _model_views(items, types) if self.models else items
            body = ormsgpack.packb(views, default=_not_plain, option=self.options)[_header_size(len(items)) :]
        except (TypeError, AttributeError):  # an item without an exact fingerprint: one by one
            return self._address(codec, items, what)
        last = self._lists.get(key)
        if last is not None and body.startswith(last.body) and types[: last.n] == last.types:
            digests, elements = self._address(codec, items[last.n :], what, views[last.n :])
            digests, elements = last.digests + digests, {**last.elements, **elements}
        else:
            digests, elements = self._address(codec, items, what, views)
        self._remember(key, _Addressed(body, types, len(items), digests, elements))
        return digests, elements

    def _remember(self, key: Any, addressed: _Addressed) -> None:
        with self._lock:
            old = self._lists.pop(key, None)
            if old is not None:
                self._lists_size -= 2 * len(old.body)
            self._lists[key] = addressed
            self._lists_size += 2 * len(addressed.body)  # its items' bytes are about as many
            while self._lists_size > self.budget // 5 and self._lists:
                _, dropped = self._lists.popitem(last=False)
                self._lists_size -= 2 * len(dropped.body)

    def _address(
        self, codec: ValueCodec, items: list[Any], what: str, views: list[Any] | None = None
    ) -> tuple[bytes, dict[bytes, bytes]]:
        """Item by item; ``views``: the items' fingerprint views, when already made."""
        packb, options, young, old, name = ormsgpack.packb, self.options, self._young, self._old, codec.digest
        digests, elements, learned = [], {}, []
        if views is None:
            try:
                views = _model_views(items, list(map(type, items))) if self.models else items
            except AttributeError:  # a model without its pydantic state (made with __new__...)
                views = [_UNSEEN] * len(items)
        for item, view in zip(items, views, strict=True):
            try:
                fp = None if view is _UNSEEN else packb(view, default=_not_plain, option=options)
            except TypeError:  # (ormsgpack.MsgpackEncodeError is one)
                fp = None  # no exact fingerprint: the serde decides, every time
            entry = None if fp is None else (young.get(fp) or old.get(fp))
            if entry is None or entry[0] is not type(item):
                data = codec.dump(_nested(item), what)
                entry = (type(item), name(data), data)
                if fp is not None:
                    learned.append((fp, entry))
            elif fp is not None and fp not in young:  # (never None here: the entry was found by fp)
                learned.append((fp, entry))
            digests.append(entry[1])
            elements[entry[1]] = entry[2]
        if learned:
            self._learn(learned)
        return b"".join(digests), elements

    def _learn(self, entries: list[tuple[bytes, tuple[type, bytes, bytes]]]) -> None:
        with self._lock:
            for fp, entry in entries:
                if fp not in self._young:
                    self._young[fp] = entry
                    self._size += len(fp) + len(entry[2])
                    if self._size > self.budget * 2 // 5:  # two generations and the lists: the budget
                        self._old, self._young, self._old_size, self._size = self._young, {}, self._size, 0

    def resize(self, budget: int) -> None:
        with self._lock:
            self.budget = budget
            self._old, self._young, self._old_size, self._size = {}, {}, 0, 0
            self._lists.clear()
            self._lists_size = 0

    @property
    def used(self) -> int:
        """Bytes held (about): both generations and the lists."""
        return self._size + self._old_size + self._lists_size


class KnownElements:
    """Per thread: the digests of items this process stored or saw stored there, within a
    budget of entries (least recently used threads go first). A stale entry is safe: the
    script answers 'missing' for an item it does not have, and the plan sends it."""

    def __init__(self, budget: int = 200_000) -> None:
        self.budget = budget
        self.size = 0
        self._threads: OrderedDict[str, set[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, thread_id: str) -> set[bytes] | frozenset[bytes]:
        """The thread's known digests, for membership tests (other threads may add meanwhile)."""
        with self._lock:
            known = self._threads.get(thread_id)
            if known is None:
                return frozenset()
            self._threads.move_to_end(thread_id)
            return known

    def add(self, thread_id: str, digests: Any) -> None:
        """Records ``digests`` as stored in the thread."""
        with self._lock:
            known = self._threads.setdefault(thread_id, set())
            self._threads.move_to_end(thread_id)
            before = len(known)
            known.update(digests)
            self.size += len(known) - before
            self._trim()

    def _trim(self) -> None:
        while self.size > self.budget and self._threads:
            _, dropped = self._threads.popitem(last=False)
            self.size -= len(dropped)

    def resize(self, budget: int) -> None:
        with self._lock:
            self.budget = budget
            self._trim()

    def forget(self, thread_id: str | None = None) -> None:
        """Forgets one thread (or every thread)."""
        with self._lock:
            gone = list(self._threads) if thread_id is None else [thread_id]
            for t in gone:
                dropped = self._threads.pop(t, None)
                if dropped:
                    self.size -= len(dropped)


class _Bounded:
    """An LRU map bounded by the bytes its entries report, safe across threads."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._map: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            found = self._map.get(key)
            if found is None:
                return None
            self._map.move_to_end(key)
            return found[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self.size -= old[1]
            self._map[key] = (value, size)
            self.size += size
            self._added(key)
            self._trim()

    def _added(self, key: Any) -> None:
        """(A subclass's hook: ``key`` was stored.)"""

    def _dropped(self, key: Any) -> None:
        """(A subclass's hook: ``key`` went.)"""

    def _trim(self) -> None:
        while self.size > self.budget and self._map:
            key, (_, dropped) = self._map.popitem(last=False)
            self.size -= dropped
            self._dropped(key)

    def resize(self, budget: int) -> None:
        with self._lock:
            self.budget = budget
            self._trim()

    def drop(self, match: Any) -> None:
        """Drops every entry whose key ``match(key)`` accepts."""
        with self._lock:
            for key in [k for k in self._map if match(k)]:
                self.size -= self._map.pop(key)[1]
                self._dropped(key)


class ItemStore(_Bounded):
    """digest -> the serialized item: what a reader fetched or was sent. Items are immutable
    and named by their content, so a cached one is never stale."""

    def add(self, items: Any) -> None:
        for d, data in items:
            self.put(d, data, len(data) + 80)


class LogHints(_Bounded):
    """(thread's data key, namespace, channel) -> (log, n, the log's first n digests): the
    log a channel's list lives in, so the next put sends only what it appends. A stale hint
    is safe: the script answers 'stale' and the list is sent whole."""

    def __init__(self, budget: int) -> None:
        super().__init__(budget)
        self._by_thread: dict[str, set[Any]] = {}  # data key -> its keys here

    def put(self, key: Any, value: Any, size: int | None = None) -> None:  # type: ignore[override]
        super().put(key, value, len(value[2]) + 120 if size is None else size)

    def _added(self, key: Any) -> None:
        self._by_thread.setdefault(key[0], set()).add(key)

    def _dropped(self, key: Any) -> None:
        keys = self._by_thread.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_thread[key[0]]

    def logs_of(self, data_key: str) -> dict[str, tuple[int, bytes]]:
        """log -> (n, its first n digests) for the logs this process knows of a thread, so a
        read asks only for what follows them."""
        with self._lock:
            out: dict[str, tuple[int, bytes]] = {}
            for key in self._by_thread.get(data_key, ()):
                log, n, digests = self._map[key][0]
                if n > out.get(log, (0, b""))[0]:
                    out[log] = (n, digests)
            return out

    def forget(self, data_key: str | None = None) -> None:
        self.drop(lambda k: data_key is None or k[0] == data_key)


# The caches of this process, shared by every engine (a LangGraph graph compiled in strict
# mode copies its saver, and with it the engine), within one budget: STATELINE_CACHE_MB
# (64 by default) or configure_caches(). A quarter for list item fingerprints (per kind of
# serde: one in practice), three eighths for items read, a quarter for the digests known to
# be stored (about 80 bytes each), an eighth for the logs lists live in.
_KNOWN_ENTRY_BYTES = 80
ITEMS = ItemStore(0)
KNOWN = KnownElements(0)
HINTS = LogHints(0)
_ITEM_CACHES: dict[tuple[type, str, int, str], ItemCache] = {}
_ITEM_CACHES_LOCK = threading.Lock()
_FINGERPRINT_BUDGET = [0]


def configure_caches(total_bytes: int) -> None:
    """Sets the memory budget of this process's caches (all savers and checkpointers)."""
    if type(total_bytes) is not int or total_bytes < 0:
        raise ValueError(f"the cache budget must be a non-negative int of bytes, got {total_bytes!r}")
    _FINGERPRINT_BUDGET[0] = total_bytes // 4
    for cache in _ITEM_CACHES.values():
        cache.resize(total_bytes // 4)
    ITEMS.resize(total_bytes * 3 // 8)
    KNOWN.resize(total_bytes // 4 // _KNOWN_ENTRY_BYTES)
    HINTS.resize(total_bytes // 8)


def cache_usage() -> dict[str, int]:
    """Bytes this process's caches hold now, by cache, and their budget."""
    with _ITEM_CACHES_LOCK:
        fingerprints = sum(c.used for c in _ITEM_CACHES.values())
    used = {
        "fingerprints": fingerprints,
        "items": ITEMS.size,
        "known": KNOWN.size * _KNOWN_ENTRY_BYTES,
        "hints": HINTS.size,
    }
    budget = _FINGERPRINT_BUDGET[0] + ITEMS.budget + KNOWN.budget * _KNOWN_ENTRY_BYTES + HINTS.budget
    return {**used, "total": sum(used.values()), "budget": budget}


def _budget_from_environment() -> int:
    text = os.environ.get("STATELINE_CACHE_MB", "64")
    try:
        return int(float(text) * 1024 * 1024)
    except ValueError:
        raise ValueError(f"STATELINE_CACHE_MB must be a number of megabytes, got {text!r}") from None


configure_caches(_budget_from_environment())


def item_cache(codec: ValueCodec) -> ItemCache:
    """The process's ItemCache for a codec: shared by codecs whose serde is of the same type
    when the serde's bytes are a function of an item's content (codec.fingerprint) and
    items are named alike (codec.digest_id); any other codec gets one of its own."""
    if codec.fingerprint is None:
        return ItemCache(codec)
    key = (type(codec.serde), codec.fingerprint, codec.max_bytes, codec.digest_id)
    with _ITEM_CACHES_LOCK:
        found = _ITEM_CACHES.get(key)
        if found is None:
            found = _ITEM_CACHES[key] = ItemCache(codec, _FINGERPRINT_BUDGET[0])
        return found
