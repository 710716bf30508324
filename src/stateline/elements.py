"""List items stored by content: their digests, and what this process knows is stored.

A list value (a chat's messages) is stored as one element per item, keyed by a digest of
the item's serialized bytes, so a message is kept once per thread however many versions
of the list refer to it. Every item is serialized on every put ("strict": LangGraph
mutates messages in place, so object identity proves nothing); the digest of bytes seen
before is looked up instead of computed again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from .codec import ValueCodec

__all__ = ["KnownElements", "address", "digest"]


def digest(data: bytes) -> bytes:
    """Content address of an item: 128-bit BLAKE2b, collision-resistant by design."""
    return hashlib.blake2b(data, digest_size=16).digest()


class KnownElements:
    """Per thread: the items (bytes -> digest) this process stored or saw stored, within a
    byte budget (least recently used threads go first). A stale entry is safe: the script
    answers 'missing' for an item it does not have, and the plan sends it."""

    def __init__(self, budget_bytes: int = 64 * 1024 * 1024) -> None:
        self.budget = budget_bytes
        self.size = 0
        self._threads: OrderedDict[str, dict[bytes, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # a sync saver is shared by LangGraph's worker threads

    def of(self, thread_id: str) -> dict[bytes, bytes]:
        """A read-only view for one put: a copy, so other threads may add meanwhile."""
        with self._lock:
            known = self._threads.get(thread_id)
            if known is None:
                return {}
            self._threads.move_to_end(thread_id)
            return dict(known)

    def add(self, thread_id: str, elements: dict[bytes, bytes]) -> None:
        """Records ``elements`` (digest -> bytes) as stored in the thread."""
        with self._lock:
            known = self._threads.setdefault(thread_id, {})
            self._threads.move_to_end(thread_id)
            for d, data in elements.items():
                if data not in known:
                    known[data] = d
                    self.size += len(data)
            while self.size > self.budget and len(self._threads) > 1:
                _, dropped = self._threads.popitem(last=False)
                self.size -= sum(map(len, dropped))

    def forget(self, thread_id: str | None = None) -> None:
        """Forgets one thread (or every thread)."""
        with self._lock:
            gone = list(self._threads) if thread_id is None else [thread_id]
            for t in gone:
                dropped = self._threads.pop(t, None)
                if dropped:
                    self.size -= sum(map(len, dropped))


def address(codec: ValueCodec, items: list[Any], what: str, known: dict[bytes, bytes]) -> tuple[bytes, dict[bytes, bytes]]:
    """The items' digests joined (16 bytes each, in order) and digest -> serialized bytes."""
    digests, elements = [], {}
    hashed = known.get
    for data in codec.dump_all(items, what):
        d = hashed(data) or digest(data)
        digests.append(d)
        elements[d] = data
    return b"".join(digests), elements
