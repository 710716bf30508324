"""Bytes in and out: the stored record formats, pure functions of values.

Stored values carry their serializer's type tag: ``<type>\\0<bytes>``. A checkpoint
record is a 4-byte length, a msgpack array of strings the Lua scripts read with
``cmsgpack`` (format, parent, value fields, run, DeltaChannel value prefixes), then a
msgpack array of the serialized checkpoint and metadata (binary, which ``cmsgpack``
cannot read). Write records are one msgpack array starting with the format version.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import ormsgpack

from .errors import SerializationError, StoredDataError

__all__ = [
    "Serde", "ValueCodec", "FORMAT", "PLAIN_DATA", "FINGERPRINT_PLAIN", "FINGERPRINT_PYDANTIC",
    "pack", "unpack", "pack_record", "unpack_record",
]  # fmt: skip

FORMAT = 1
MAX_VALUE_BYTES = 256 * 1024 * 1024  # below Redis' 512 MB bulk limit, with room for the record

# ormsgpack options that pack plain data natively and hand every other type to `default`:
# stateline's Serde (serde.py), and list item fingerprints (elements.ItemCache, where
# `default` refuses, so that equal fingerprints mean equal content of equal types).
PLAIN_DATA = (
    ormsgpack.OPT_PASSTHROUGH_BIG_INT
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_UUID
)
# What a serde's output for a list item is a function of (ValueCodec.fingerprint):
FINGERPRINT_PLAIN = "plain"  # the item's plain data (stateline's Serde)
# ...or, for an item that is a pydantic model whose model_dump() runs no code of its own, its
# type, fields, extras and private attributes, when those are plain data (LangGraph's
# JsonPlusSerializer stores a model as its model_dump(); a model nested inside an item has no
# exact fingerprint and goes to the serde)
FINGERPRINT_PYDANTIC = "pydantic"


class Serde(Protocol):
    def dumps_typed(self, obj: Any) -> tuple[str, bytes]: ...
    def loads_typed(self, data: tuple[str, bytes]) -> Any: ...


def pack(value: Any) -> bytes:
    return ormsgpack.packb(value)


def unpack(data: bytes) -> Any:
    try:
        return ormsgpack.unpackb(data)
    except ormsgpack.MsgpackDecodeError as exc:
        raise StoredDataError(f"a stored record cannot be decoded: {exc}") from exc


def pack_record(index: list[Any], body: list[Any]) -> bytes:
    head = ormsgpack.packb(index)
    return len(head).to_bytes(4, "big") + head + ormsgpack.packb(body)


def unpack_record(data: bytes) -> tuple[Any, Any]:
    n = int.from_bytes(data[:4], "big")
    return unpack(data[4 : 4 + n]), unpack(data[4 + n :])


_MSGPACK = b"msgpack\0"  # the type tag of nearly every value, prefixed once


def _tagged(typ: str, data: bytes) -> bytes:
    return (_MSGPACK if typ == "msgpack" else typ.encode() + b"\0") + data


def _unserializable(what: str, exc: Exception) -> SerializationError:
    return SerializationError(f"{what} cannot be serialized: {exc}")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class ValueCodec:
    """Serializes values with a LangGraph-style serde (``dumps_typed``/``loads_typed``).

    ``fingerprint``: FINGERPRINT_PLAIN or FINGERPRINT_PYDANTIC when the serde's output for a
    list item is a function of the item's type and that content (None: no such promise,
    every item is serialized on every put)."""

    __slots__ = ("serde", "max_bytes", "fingerprint")

    def __init__(self, serde: Serde, max_bytes: int = MAX_VALUE_BYTES, *, fingerprint: str | None = None) -> None:
        self.serde = serde
        self.max_bytes = max_bytes
        self.fingerprint = fingerprint

    def dumps(self, value: Any, what: str) -> tuple[str, bytes]:
        try:
            typ, data = self.serde.dumps_typed(value)
        except Exception as exc:  # serdes raise TypeError, ValueError or their own errors
            raise _unserializable(what, exc) from exc
        if len(data) > self.max_bytes:
            raise self._oversized(what, data)
        return typ, data

    def seal_value(self, typ: str, data: bytes) -> bytes:
        """The stored form of a serde's ``(type, bytes)``."""
        return _tagged(typ, data)

    def dump(self, value: Any, what: str) -> bytes:
        """``<type>\\0<bytes>`` of one value."""
        return _tagged(*self.dumps(value, what))

    def dump_all(self, values: Iterable[Any], what: str) -> list[bytes]:
        """``<type>\\0<bytes>`` of each value. The hot loop of a put (every item of a chat's
        message list, every put): one serde call per value, no wrapper layers."""
        dumps, limit, out = self.serde.dumps_typed, self.max_bytes, []
        for value in values:
            try:
                typ, data = dumps(value)
            except Exception as exc:  # as in dumps
                raise _unserializable(what, exc) from exc
            if len(data) > limit:
                raise self._oversized(what, data)
            out.append(_tagged(typ, data))
        return out

    def _oversized(self, what: str, data: bytes) -> SerializationError:
        return SerializationError(f"{what} is {len(data)} bytes serialized, over the limit of {self.max_bytes}")

    def loads(self, typ: str, data: bytes) -> Any:
        try:
            return self.serde.loads_typed((typ, data))
        except Exception as exc:
            raise StoredDataError(f"a stored {typ!r} value cannot be decoded: {exc}") from exc

    def load(self, stored: bytes) -> Any:
        typ, sep, data = stored.partition(b"\0")
        if not sep:
            raise StoredDataError("a stored value has no type tag")
        return self.loads(typ.decode(), data)

    def load_list(self, elements: list[bytes | None]) -> list[Any]:
        if any(e is None for e in elements):
            raise StoredDataError("a stored list refers to an element that is missing")
        parts = [e.partition(b"\0") for e in elements]  # type: ignore[union-attr]
        if all(typ == b"msgpack" for typ, _, _ in parts):
            # One decode of the whole array is much faster than one per element.
            joined = _array_header(len(parts)) + b"".join(data for _, _, data in parts)
            return self.loads("msgpack", joined)
        return [self.loads(typ.decode(), data) for typ, _, data in parts]
