"""The key schema: the only place that builds a key or a field name.

A thread owns two keys sharing one Redis Cluster hash tag, ``<prefix>{<thread>}:d`` (a hash
of records) and ``<prefix>{<thread>}:i`` (a sorted set ordered by member bytes); the field
and member layout is documented in ``scripts/_lib.lua``. The discovery index (threads, and
the runs of each thread) cannot share a thread's slot: it is split into ``SHARDS`` pairs of
keys, ``<prefix>{threads:<k>}`` and ``<prefix>{threads:<k>}:exp``, each pair with a tag of
its own; a thread's entries live in the shard its id hashes to (``scripts/index.lua``).

Every component (thread, namespace, checkpoint id, channel, version, task) is
percent-encoded, so ``:``, ``{``, ``}``, ``|``, spaces and non-ASCII text never reach a key
raw: two different ids can neither collide nor escape their hash tag.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

from .errors import InvalidInput

__all__ = ["ThreadKeys", "IndexKeys", "Schema", "SHARDS", "enc", "dec"]

# Discovery shards: fixed, since a thread's shard is a function of its id and this number.
SHARDS = 64


_UNCHANGED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch  # what quote() keeps as it is (uuids...)


def enc(value: str) -> str:
    """Percent-encode one id component; injective, and keeps ``[A-Za-z0-9_.~-]`` readable."""
    # The type is checked before the cache sees the value: lru_cache hashes its argument
    # first, so a list would raise a bare TypeError ("unhashable type") instead.
    if not isinstance(value, str):
        raise InvalidInput(f"ids must be str, got {type(value).__name__}: {value!r}")
    return value if _UNCHANGED(value) else _enc(value)


@lru_cache(maxsize=65536)
def _enc(value: str) -> str:
    try:
        return quote(value, safe="", errors="strict")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") has no UTF-8 form
        raise InvalidInput(f"ids must be valid Unicode text (encodable as UTF-8), got {value!r}: {exc}") from None


def dec(value: str | bytes) -> str:
    if isinstance(value, bytes):
        value = value.decode()
    return unquote(value) if "%" in value else value


@dataclass(frozen=True, slots=True)
class ThreadKeys:
    thread_id: str
    data: str
    index: str

    @property
    def all(self) -> tuple[str, str]:
        return (self.data, self.index)


@dataclass(frozen=True, slots=True)
class IndexKeys:
    """One discovery shard: ``entries`` (threads and their runs, all scores 0) and ``expiry``
    (threads scored by when their entries may go); one hash tag, so one script sees both."""

    shard: int
    entries: str
    expiry: str

    @property
    def all(self) -> tuple[str, str]:
        return (self.entries, self.expiry)


@dataclass(frozen=True, slots=True)
class Schema:
    prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise InvalidInput(f"prefix must be str, got {type(self.prefix).__name__}")
        if "{" in self.prefix or "}" in self.prefix:
            raise InvalidInput(f"prefix {self.prefix!r} must not contain '{{' or '}}' (hash tags)")

    def thread(self, thread_id: str) -> ThreadKeys:
        enc(thread_id)  # refuses a non-str before the cache hashes it
        return _thread_keys(self.prefix, thread_id)

    def index_of(self, thread_id: str) -> IndexKeys:
        """The discovery shard of a thread (a stable hash of its encoded id)."""
        return self.index(shard_of(thread_id))

    def index(self, shard: int) -> IndexKeys:
        return _index_keys(self.prefix, shard)

    @property
    def indexes(self) -> tuple[IndexKeys, ...]:
        return tuple(self.index(k) for k in range(SHARDS))

    def migration(self, source: str) -> str:
        """The hash of a migration's progress into this prefix (``migrate.py``): a field per
        thread. ``source`` names the source; the tag's ':' keeps it apart from any thread."""
        return f"{self.prefix}{{migration:{enc(source)}}}"

    @property
    def thread_pattern(self) -> str:
        """SCAN pattern matching every thread key of this prefix (and nothing of a longer prefix)."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return escaped + "{*}:[di]"

    def thread_id_of(self, key: str | bytes) -> str | None:
        if isinstance(key, bytes):
            key = key.decode()
        if not key.startswith(self.prefix + "{"):
            return None
        tag = key[len(self.prefix) + 1 : key.rindex("}")]
        return "" if tag == "%" else dec(tag)


@lru_cache(maxsize=256)
def _index_keys(prefix: str, shard: int) -> IndexKeys:
    # 'threads:<k>' as the tag: ':' is never raw in an encoded thread id, so no thread's
    # tag can equal it, and thread_pattern (ending in '}:d' or '}:i') never matches these keys.
    base = f"{prefix}{{threads:{shard}}}"
    return IndexKeys(shard, base, base + ":exp")


@lru_cache(maxsize=4096)
def _thread_keys(prefix: str, thread_id: str) -> ThreadKeys:
    # The empty thread id gets the tag '%', which no encoding produces: '{}' would make
    # Redis Cluster hash the whole key and split the thread across slots.
    tag = enc(thread_id) or "%"
    base = f"{prefix}{{{tag}}}"
    return ThreadKeys(thread_id, base + ":d", base + ":i")


# Field and member names inside a thread's keys (mirrors scripts/_lib.lua). Components
# passed here are encoded already, except where a parameter says otherwise.
def value_field(ns: str, channel: str, version: object) -> str:
    # Every put names every channel's version, and most did not change: str and int versions
    # (LangGraph's) are remembered; any other kind (floats: 0.0 == -0.0) is spelled out each time.
    if type(channel) is str and (type(version) is str or type(version) is int):
        key = (ns, channel, version)
        found = _FIELDS.get(key)
        if found is None:
            if len(_FIELDS) >= _FIELDS_MAX:
                _FIELDS.clear()  # cheaper than an LRU on every miss (new versions miss each put)
            found = _FIELDS[key] = f"b:{ns}:{enc(channel)}:{enc(str(version))}"
        return found
    return f"b:{ns}:{enc(channel)}:{enc(str(version))}"


_FIELDS: dict[tuple[str, str, str | int], str] = {}
_FIELDS_MAX = 65536


def value_prefix(ns: str, channel: str) -> str:
    return f"b:{ns}:{enc(channel)}:"


def write_field(ns: str, cid: str, task: str, idx: int | str) -> str:
    """The name of a pending write (task id encoded): its own field, or the name it has
    in its checkpoint's packed writes field; what its envelope is bound to (format 2)."""
    return f"w:{ns}:{cid}:{task}:{idx}"


def writes_prefix(ns: str, cid: str) -> str:
    """What the envelopes of a checkpoint's writes were bound to in format 1."""
    return f"w:{ns}:{cid}:"


def after(ns: str | None, last_ns: str, last_cid: str) -> str:
    """The bound of the page after the one that ended with ``last_ns``/``last_cid``."""
    return f"(o:{last_cid} {last_ns}" if ns is None else f"(c:{last_ns}:{last_cid}"


def kind_range(kind: str) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX bounds of every index member of a kind: c (checkpoints), w (writes), r (runs)."""
    return f"[{kind}:".encode(), f"[{kind}:".encode() + b"\xff"


def count_writes(data: str, index: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The two commands that count a thread's pending writes (see ``writes_counted``): the
    packed ones (``nw``) and those in fields of their own (their index members)."""
    return ("HGET", data, "nw"), ("ZLEXCOUNT", index, *kind_range("w"))


def writes_counted(packed: Any, own: int) -> int:
    return int(packed or 0) + own


def run_of(member: bytes) -> str:
    """The encoded run id of an index member ``r:<run>:<ns>:<cid>``."""
    return member.split(b":", 2)[1].decode()


# Members of a discovery shard's ``entries`` (mirrors scripts/index.lua); ids encoded.
THREAD_ENTRIES = (b"[t:", b"[t:\xff")


def shard_of(thread_id: str) -> int:
    """The discovery shard a thread's entries live in."""
    return zlib.crc32(enc(thread_id).encode()) % SHARDS


def page_bound_after(thread_id: str) -> str:
    """A discovery page bound ('<shard> <entry>') that resumes right after ``thread_id``."""
    return f"{shard_of(thread_id)} t:{enc(thread_id)}"


def thread_entry_bound(member: bytes | str) -> bytes:
    """The (exclusive) ZRANGEBYLEX bound of the thread entries after ``member``."""
    return b"(" + (member.encode() if isinstance(member, str) else member)


def thread_of_entry(member: bytes | str) -> str:
    """The (raw) thread id of a discovery entry ``t:<thread>``."""
    return dec(member[2:])


def runs_range(run: str) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX bounds of the discovery entries ``r:<run> <thread>`` of one encoded run id."""
    start = f"[r:{run} ".encode()
    return start, start + b"\xff"


def run_entries(thread: str, runs: list[str]) -> list[str]:
    """Both discovery entries of each run of a thread (encoded ids): by run and by thread."""
    return [m for r in runs for m in (f"r:{r} {thread}", f"m:{thread} {r}")]


def thread_of_run_entry(entry: bytes | str) -> str:
    """The (raw) thread id of a discovery entry ``r:<run> <thread>``."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return dec(text.split(" ", 1)[1])


def place(thread_id: str, field: str | bytes) -> bytes:
    """Where a sealed value lives, ``<thread> <field>`` (ids encoded): the associated data
    that binds it there, and what an error about it names."""
    head = enc(thread_id).encode() + b" "
    return head + (field if isinstance(field, bytes) else field.encode())


def describe_place(where: bytes) -> str:
    """``thread 't', the value of channel 'c' (version 'v', namespace '')`` for a place."""
    thread, _, field = where.partition(b" ")
    try:
        return f"thread {dec(thread.decode())!r}, {describe_field(field)}"
    except (UnicodeDecodeError, ValueError):
        return f"thread {thread!r}, field {field!r}"


def describe_field(field: bytes) -> str:
    kind, parts = field[:2], field[2:].split(b":")
    if kind == b"e:":
        return f"list item {field[2:].hex()}"
    text = [dec(p.decode()) for p in parts]
    if kind == b"b:" and len(text) == 3:
        return f"the value of channel {text[1]!r} (version {text[2]!r}, namespace {text[0]!r})"
    if kind == b"c:" and len(text) == 2:
        return f"checkpoint {text[1]!r} (namespace {text[0]!r})"
    if kind == b"w:" and len(text) == 4:
        return f"write {text[3]} of task {text[2]!r} to checkpoint {text[1]!r} (namespace {text[0]!r})"
    if kind == b"w:" and len(text) == 3:
        return f"a write to checkpoint {text[1]!r} (namespace {text[0]!r})"
    return f"field {field.decode(errors='replace')!r}"
