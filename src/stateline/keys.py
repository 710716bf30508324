"""The key schema: the only place that builds a key or a field name.

A thread owns two keys sharing one Redis Cluster hash tag, ``<prefix>{<thread>}:d`` (a hash
of records) and ``<prefix>{<thread>}:i`` (a sorted set ordered by member bytes); the field
and member layout is documented in ``scripts/_lib.lua``. Discovery indexes that cannot
share a thread's slot are ``<prefix>threads`` and ``<prefix>runs``.

Every component (thread, namespace, checkpoint id, channel, version, task) is
percent-encoded, so ``:``, ``{``, ``}``, ``|``, spaces and non-ASCII text never reach a key
raw: two different ids can neither collide nor escape their hash tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote

from .errors import InvalidInput

__all__ = ["ThreadKeys", "Schema", "enc", "dec"]


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

    @property
    def threads(self) -> str:
        return self.prefix + "threads"

    @property
    def runs(self) -> str:
        return self.prefix + "runs"

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

    @staticmethod
    def run_member(run_id: str, thread_id: str) -> str:
        """A discovery entry of the runs index, from raw ids."""
        return f"{enc(run_id)} {enc(thread_id)}"


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
    if type(channel) is str and type(version) in (str, int):
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


def write_field(ns: str, cid: str, task_id: str, idx: int) -> str:
    return f"w:{ns}:{cid}:{enc(task_id)}:{idx}"


def after(ns: str | None, last_ns: str, last_cid: str) -> str:
    """The bound of the page after the one that ended with ``last_ns``/``last_cid``."""
    return f"(o:{last_cid} {last_ns}" if ns is None else f"(c:{last_ns}:{last_cid}"


def kind_range(kind: str) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX bounds of every index member of a kind: c (checkpoints), w (writes), r (runs)."""
    return f"[{kind}:".encode(), f"[{kind}:".encode() + b"\xff"


def run_of(member: bytes) -> str:
    """The encoded run id of an index member ``r:<run>:<ns>:<cid>``."""
    return member.split(b":", 2)[1].decode()


def runs_range(run_id: str) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX bounds of the discovery entries ``<run> <thread>`` of one (raw) run id."""
    start = f"[{enc(run_id)} ".encode()
    return start, start + b"\xff"


def thread_of_run_entry(entry: bytes) -> str:
    """The (raw) thread id of a discovery entry ``<run> <thread>``."""
    return dec(entry.split(b" ", 1)[1])
