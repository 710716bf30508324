"""The values the engine stores and returns, and the settings every adapter shares.

Plain dataclasses: adapters translate their own types (LangGraph's checkpoints,
the seed API's ``Checkpoint``) to a ``Snapshot`` and back from ``Stored``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput

__all__ = ["Snapshot", "TaggedList", "Write", "Stored", "ThreadStats", "DURABILITY", "ttl_ms", "check_keep_last"]

# What a write waits for before it returns: (command, local AOF fsyncs, replicas).
DURABILITY: dict[str, tuple[str, int, int] | None] = {
    "ack": None,  # acknowledged by the primary (in its memory)
    "aof": ("WAITAOF", 1, 0),  # fsynced to the primary's append-only file
    "replica": ("WAIT", 0, 1),  # received by at least one replica
    "aof+replica": ("WAITAOF", 1, 1),  # fsynced by the primary and by a replica
}


@dataclass(slots=True)  # not frozen: built on every operation, and frozen costs twice that
class Snapshot:
    """One checkpoint to store. ``values`` are the channel values to write now (usually
    those whose version is new); ``versions`` lists every channel the checkpoint refers to."""

    thread_id: str
    ns: str
    checkpoint_id: str
    parent_id: str | None
    header: Any  # the checkpoint without its values, serialized with the codec
    metadata: Any
    versions: Mapping[str, Any]
    values: Mapping[str, Any]
    keep_existing: bool = False  # True: don't overwrite values already stored (forks, copies)
    run_id: str | None = None
    delta_channels: Sequence[str] = ()
    # The id the adapter knows the checkpoint by, when it orders checkpoints by another one
    # (the seed API orders by created_at): get, list(before=), delete and expect accept it.
    alias: str | None = None
    # Every channel value of the checkpoint (None: ``values`` is all of them): sent when the
    # server lost a value the checkpoint refers to without changing it (deleted meanwhile).
    all_values: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TaggedList:
    """A list inside a wrapper the engine does not know (LangGraph's ``_DeltaSnapshot``):
    its items are stored by content like any list, and ``kind`` names the wrapper."""

    kind: str
    items: list[Any]

    def __post_init__(self) -> None:
        if not self.kind or "|" in self.kind:  # the script splits '<kind>|<digests>' at the first '|'
            raise InvalidInput(f"a list's kind must be a non-empty name without '|', got {self.kind!r}")


@dataclass(slots=True)  # not frozen: built on every operation, and frozen costs twice that
class Write:
    task_id: str
    channel: str
    value: Any
    task_path: str
    idx: int


@dataclass(frozen=True, slots=True)
class ThreadStats:
    thread_id: str
    checkpoints: int
    writes: int
    memory: int | None  # bytes, MEMORY USAGE of the thread's keys (None: not measured)
    ttl_ms: int  # -1 = no expiry, -2 = the thread does not exist

    @property
    def exists(self) -> bool:
        return self.ttl_ms != -2


@dataclass(slots=True)  # not frozen: built on every operation, and frozen costs twice that
class Stored:
    thread_id: str
    ns: str
    checkpoint_id: str
    parent_id: str | None
    header: Any
    metadata: Any
    values: dict[str, Any]
    writes: list[Write] = field(default_factory=list)
    alias: str | None = None


def ttl_ms(seconds: float | None) -> int:
    """A TTL in seconds (None = no TTL) as whole milliseconds, at least 1."""
    if seconds is None:
        return 0
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise InvalidInput(f"ttl must be a positive number of seconds or None, got {seconds!r}")
    return max(1, round(seconds * 1000))


def check_keep_last(keep_last: int | None) -> None:
    if keep_last is not None and (type(keep_last) is not int or keep_last < 1):
        raise InvalidInput(f"keep_last must be a positive int or None, got {keep_last!r}")
