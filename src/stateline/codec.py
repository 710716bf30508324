"""Bytes in and out: the stored format (version 2; version 1 is read too), pure functions
of values.

Every stored value, list item, write value and checkpoint record body is an *envelope*:

    byte 0    the envelope's version (1 in both formats; a newer one is refused with an
              error that names it)
    byte 1    flags: bits 0-1 compression (0 none, 1 zstd, 2 zstd with a stateline
              dictionary), bit 2 AES-GCM by stateline's Encryption, bit 3 the cipher of
              LangGraph's EncryptedSerializer, bit 4 a CRC-32 ends the envelope; other
              bits are refused (a newer feature)
    [1 byte]  the dictionary id (compression 2)
    [AES-GCM: 1 byte key id length, the key id, a 12-byte nonce]
    [serde cipher: 1 byte cipher name length, the name]
    payload   the serialized bytes (for values: ``<serde type tag>\\0<bytes>``),
              compressed, then encrypted (AES-GCM: with its 16-byte tag)
    [4 bytes] CRC-32 of everything before it (every envelope but AES-GCM's, whose tag
              authenticates it), so damaged bytes are found, never read as another value

The associated data of AES-GCM is the envelope's header and where the value lives: the
thread and the field (namespace, checkpoint, channel and version, task and index, or the
item's digest), so a value moved elsewhere fails to decrypt. What the Lua scripts read is
never sealed: a checkpoint record is a 4-byte length, a msgpack array of strings the
scripts read with ``cmsgpack`` (format, parent, value fields, run, DeltaChannel value
prefixes, alias), then the envelope of the checkpoint and its metadata. A pending write
is the envelope of ``[2, channel, <type>\\0<bytes> or nil, task path]`` (format 1:
``[1, task, channel, value, task path, idx]``; format 2 has the task and index in the
field the scripts read, and binds the envelope to them), after ``W<n>:<n digests>`` (which
the scripts read) when its value is a list of items.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable
from typing import Any, Protocol

import ormsgpack

from .compression import decompress
from .errors import InvalidInput, SerializationError, StoredDataError
from .keys import describe_place

__all__ = [
    "Serde", "ValueCodec", "FORMAT", "PLAIN_DATA", "FINGERPRINT_PLAIN", "FINGERPRINT_PYDANTIC",
    "pack", "unpack", "pack_record", "unpack_record",
]  # fmt: skip

FORMAT = 2  # the stored format: records and write records say which one they are in
READS = (1, 2)  # the formats this version reads
ENVELOPE = 1  # the envelope's own version (the same in formats 1 and 2)
MAX_VALUE_BYTES = 256 * 1024 * 1024  # below Redis' 512 MB bulk limit, with room for the record
MAX_READ_BYTES = 1024 * 1024 * 1024  # what one read may decode (list items), whatever is stored

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


class Cipher(Protocol):
    """LangGraph's CipherProtocol (what an EncryptedSerializer encrypts with)."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]: ...
    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes: ...


def pack(value: Any) -> bytes:
    return ormsgpack.packb(value)


def unpack(data: bytes, what: str = "a stored record") -> Any:
    try:
        return ormsgpack.unpackb(data)
    except (ormsgpack.MsgpackDecodeError, TypeError, ValueError) as exc:
        raise StoredDataError(f"{what} cannot be decoded: {exc}") from None


def pack_record(index: list[Any], body: bytes) -> bytes:
    head = ormsgpack.packb(index)
    return len(head).to_bytes(4, "big") + head + body


def unpack_record(data: bytes, what: str = "a checkpoint record") -> tuple[list[Any], bytes]:
    """(the index the scripts read, the envelope of the rest), checked: a format this
    version reads and the shape the scripts write; StoredDataError naming ``what`` otherwise."""
    n = int.from_bytes(data[:4], "big")
    if len(data) < 4 + n:
        raise StoredDataError(f"{what} is truncated")
    index = unpack(data[4 : 4 + n], what)
    if not isinstance(index, list) or not index:
        raise StoredDataError(f"{what} is damaged: its index is not a list")
    check_format(index[0], what)
    if (
        len(index) < 6
        or not all(isinstance(index[i], str) for i in (1, 3, 5))
        or not isinstance(index[2], list)
        or not all(isinstance(f, str) and f.startswith("b:") for f in index[2])
    ):
        raise StoredDataError(f"{what} is damaged: its index is not [format, parent, fields, run, deltas, alias]")
    return index, data[4 + n :]


def check_format(version: Any, what: str, reads: tuple[int, ...] = READS) -> None:
    if version not in reads or type(version) is not int:
        if type(version) is int and reads[-1] < version <= 16:  # (beyond: garbage, not a version)
            raise StoredDataError(
                f"{what} is stored in format {version}, newer than this version of stateline reads "
                f"(format {reads[-1]}): upgrade stateline"
            )
        raise StoredDataError(f"{what} is damaged: format {version!r} is not one stateline writes")


def unpack_write(raw: bytes, what: str, task_idx: tuple[str, int] | None) -> tuple[str, str, bytes | None, str, int]:
    """(task, channel, ``<type>\\0<bytes>`` of the value or None, task path, idx) of an
    opened write record: format 2 with ``task_idx`` (the task and index its field names),
    format 1 without (the record holds them)."""
    record = unpack(raw, what)
    if not isinstance(record, list) or not record:
        raise StoredDataError(f"{what} is damaged: not a write record")
    check_format(record[0], what)
    if task_idx is None and record[0] == 1 and len(record) == 6:
        _fmt, task_id, channel, value, task_path, idx = record
    elif task_idx is not None and record[0] == 2 and len(record) == 4:
        (_fmt, channel, value, task_path), (task_id, idx) = record, task_idx
    else:
        raise StoredDataError(f"{what} is damaged: not a write record")
    if not (
        isinstance(task_id, str)
        and isinstance(channel, str)
        and isinstance(task_path, str)
        and type(idx) is int
        and (value is None or isinstance(value, bytes))
    ):
        raise StoredDataError(f"{what} is damaged: its fields have the wrong types")
    return task_id, channel, value, task_path, idx


def _unserializable(what: str, exc: Exception) -> SerializationError:
    return SerializationError(f"{what} cannot be serialized: {exc}")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


_MSGPACK = b"msgpack\0"  # the type tag of nearly every value, prefixed once


def _tagged(typ: str, data: bytes) -> bytes:
    return (_MSGPACK if typ == "msgpack" else typ.encode() + b"\0") + data


# -- the envelope ---------------------------------------------------------------------------

_COMPRESSION, _AESGCM, _SERDE_CIPHER, _CRC = 0x03, 0x04, 0x08, 0x10
_KNOWN_FLAGS = _COMPRESSION | _AESGCM | _SERDE_CIPHER | _CRC
_PLAIN = bytes([ENVELOPE, _CRC])  # the header of a value neither compressed nor encrypted


def _crc(data: bytes) -> bytes:
    return data + zlib.crc32(data).to_bytes(4, "big")


def _digest(data: bytes) -> bytes:
    """Content address of an item: 128-bit BLAKE2b of its serialized bytes."""
    return hashlib.blake2b(data, digest_size=16).digest()


class ValueCodec:
    """Serializes values with a LangGraph-style serde (``dumps_typed``/``loads_typed``) and
    seals them in the stored envelope (compression, encryption).

    ``fingerprint``: FINGERPRINT_PLAIN or FINGERPRINT_PYDANTIC when the serde's output for a
    list item is a function of the item's type and that content (None: no such promise,
    every item is serialized on every put). ``compression``: a ``Compression`` (None: off).
    ``encryption``: a ``crypto.Encryption`` (None: off). ``serde_cipher``: the cipher of an
    EncryptedSerializer whose inner serde is ``serde``. ``digest_key``: list items are named
    by a keyed digest (the encryption's own unless given). ``max_bytes``: the largest value
    written, and read back (decompression included); ``max_read_bytes``: the most one read
    decodes (MAX_READ_BYTES)."""

    __slots__ = (
        "serde", "max_bytes", "max_read_bytes", "fingerprint", "compression", "encryption", "serde_cipher",
        "digest", "digest_id", "_sealed",
    )  # fmt: skip

    def __init__(
        self,
        serde: Serde,
        max_bytes: int = MAX_VALUE_BYTES,
        *,
        fingerprint: str | None = None,
        compression: Any = None,
        encryption: Any = None,
        serde_cipher: Cipher | None = None,
        digest_key: bytes | None = None,
    ) -> None:
        if encryption is not None and serde_cipher is not None:
            raise InvalidInput("pass encryption= or an EncryptedSerializer, not both")
        self.serde = serde
        self.max_bytes = max_bytes
        self.max_read_bytes = max(MAX_READ_BYTES, max_bytes)
        self.fingerprint = fingerprint
        self.compression = compression
        self.encryption = encryption
        self.serde_cipher = serde_cipher
        self._sealed = compression is not None or encryption is not None or serde_cipher is not None
        key = digest_key if digest_key is not None else (encryption.digest_key if encryption is not None else None)
        if key is not None:
            self.digest = lambda data: hashlib.blake2b(data, key=key, digest_size=16).digest()
            # (names the digest function in shared caches, without revealing the key)
            self.digest_id = hashlib.blake2b(key, person=b"stateline-dkid", digest_size=8).hexdigest()
        elif serde_cipher is not None:
            # An EncryptedSerializer without a digest key: a digest of the plaintext would tell
            # anyone who can read the server whether a message is one they guess. Items get a
            # random name instead (kept with the item in this process's caches): no guessing,
            # but a message is stored again by each process that writes it.
            self.digest = lambda data: os.urandom(16)
            self.digest_id = "random"
        else:
            self.digest = _digest
            self.digest_id = ""

    # -- writing ------------------------------------------------------------------------------

    def dumps(self, value: Any, what: str) -> tuple[str, bytes]:
        try:
            typ, data = self.serde.dumps_typed(value)
        except Exception as exc:  # serdes raise TypeError, ValueError or their own errors
            raise _unserializable(what, exc) from exc
        if len(data) > self.max_bytes:
            raise self._oversized(what, data)
        return typ, data

    def dump(self, value: Any, what: str) -> bytes:
        """``<type>\\0<bytes>`` of one value (not sealed yet)."""
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

    def seal(self, plain: bytes, where: bytes) -> bytes:
        """The envelope of ``plain``, stored at ``where`` (``<thread> <field>``, ids encoded)."""
        if not self._sealed:
            return _crc(_PLAIN + plain)
        flags, extra = _CRC, b""
        if self.compression is not None:
            packed = self.compression.compress(plain)
            if packed is not None:
                code, dict_id, plain = packed
                flags |= code
                if dict_id:
                    extra = bytes([dict_id])
        if self.encryption is not None and self.encryption.encrypts:  # (its tag authenticates it: no CRC)
            kid = self.encryption.kid
            header = bytes([ENVELOPE, (flags & ~_CRC) | _AESGCM]) + extra + bytes([len(kid)]) + kid + os.urandom(12)
            return header + self.encryption.encrypt_with(header[-12:], plain, header + where)
        if self.serde_cipher is not None:
            name, body = self.serde_cipher.encrypt(plain)
            label = name.encode()
            return _crc(bytes([ENVELOPE, flags | _SERDE_CIPHER]) + extra + bytes([len(label)]) + label + body)
        return _crc(bytes([ENVELOPE, flags]) + extra + plain)

    def seal_value(self, typ: str, data: bytes, where: bytes = b"") -> bytes:
        """The stored envelope of a serde's ``(type, bytes)``."""
        return self.seal(_tagged(typ, data), where)

    # -- reading ------------------------------------------------------------------------------

    def open(self, stored: bytes, where: bytes) -> bytes:
        """The plaintext an envelope holds. StoredDataError names the thread and field
        (``where``) when it is damaged, of a newer format, tampered with, moved, or
        decompresses to more than ``max_bytes``."""
        try:
            return self._open(stored, where)
        except StoredDataError as exc:
            raise StoredDataError(f"{describe(where)}: {exc}") from None

    def _open(self, stored: bytes, where: bytes) -> bytes:
        if len(stored) < 2:
            raise StoredDataError("the value is truncated")
        version, flags = stored[0], stored[1]
        if version != ENVELOPE:
            check_format(version, "the value", (ENVELOPE,))
        if flags & ~_KNOWN_FLAGS:
            raise StoredDataError(f"the value uses features (flags {flags:#04x}) newer than this version of stateline")
        if flags & _CRC:
            if len(stored) < 6 or zlib.crc32(stored[:-4]) != int.from_bytes(stored[-4:], "big"):
                raise StoredDataError("the value is damaged (its CRC does not match)")
            stored = stored[:-4]
            flags &= ~_CRC
        if flags == 0:
            payload = stored[2:]
            if len(payload) > self.max_bytes:
                raise StoredDataError(f"the value is {len(payload)} bytes, over the limit of {self.max_bytes}")
            return payload
        pos, dict_id, compression = 2, 0, flags & _COMPRESSION
        if compression == 3:
            raise StoredDataError("the value names compression 3, unknown to this version of stateline")
        if compression == 2:
            dict_id, pos = _byte(stored, 2), 3
        if flags & _AESGCM and flags & _SERDE_CIPHER:
            raise StoredDataError("the value is damaged: it names two ciphers")
        if flags & _AESGCM:
            n = _byte(stored, pos)
            kid, nonce = stored[pos + 1 : pos + 1 + n], stored[pos + 1 + n : pos + 13 + n]
            pos += 13 + n
            if len(nonce) != 12 or len(stored) < pos + 16:
                raise StoredDataError("the value is truncated")
            if self.encryption is None:
                raise StoredDataError(f"the value is encrypted (key {kid.decode(errors='replace')!r}): pass its keys")
            payload = self.encryption.decrypt(kid, nonce, stored[pos:], stored[:pos] + where)
        elif flags & _SERDE_CIPHER:
            n = _byte(stored, pos)
            name = stored[pos + 1 : pos + 1 + n].decode(errors="replace")
            if self.serde_cipher is None:
                raise StoredDataError(f"the value is encrypted by an EncryptedSerializer ({name!r}): pass it as serde")
            try:
                payload = self.serde_cipher.decrypt(name, stored[pos + 1 + n :])
            except Exception as exc:  # ciphers raise ValueError, AssertionError or their own
                raise StoredDataError(f"the value cannot be decrypted ({name!r}): {exc}") from exc
        else:
            payload = stored[pos:]
        if compression:
            return decompress(payload, dict_id, self.max_bytes)
        if len(payload) > self.max_bytes:
            raise StoredDataError(f"the value is {len(payload)} bytes, over the limit of {self.max_bytes}")
        return payload

    def loads(self, typ: str, data: bytes, where: bytes = b"") -> Any:
        try:
            return self.serde.loads_typed((typ, data))
        except Exception as exc:
            raise StoredDataError(f"{describe(where)}: a stored {typ!r} value cannot be decoded: {exc}") from exc

    def load_plain(self, plain: bytes, where: bytes) -> Any:
        """The value of an opened ``<type>\\0<bytes>``."""
        typ, sep, data = plain.partition(b"\0")
        if not sep:
            raise StoredDataError(f"{describe(where)}: the value has no type tag")
        return self.loads(_text_of(typ, where), data, where)

    def load(self, stored: bytes, where: bytes) -> Any:
        """The value of an envelope stored at ``where``."""
        return self.load_plain(self.open(stored, where), where)

    def load_list(self, elements: list[bytes | None], where: bytes) -> list[Any]:
        """The values of opened list items (``<type>\\0<bytes>`` each)."""
        if any(e is None for e in elements):
            raise StoredDataError(f"{describe(where)}: the list refers to an item that is missing")
        parts = [e.partition(b"\0") for e in elements]  # type: ignore[union-attr]
        if all(typ == b"msgpack" for typ, _, _ in parts):
            # One decode of the whole array is much faster than one per element.
            joined = _array_header(len(parts)) + b"".join(data for _, _, data in parts)
            return self.loads("msgpack", joined, where)
        if not all(sep for _, sep, _ in parts):
            raise StoredDataError(f"{describe(where)}: an item of the list has no type tag")
        return [self.loads(_text_of(typ, where), data, where) for typ, _, data in parts]


def _byte(data: bytes, i: int) -> int:
    if i >= len(data):
        raise StoredDataError("the value is truncated")
    return data[i]


def _text_of(typ: bytes, where: bytes) -> str:
    try:
        return typ.decode()
    except UnicodeDecodeError:
        raise StoredDataError(f"{describe(where)}: the value's type tag is not text") from None


def describe(where: bytes) -> str:
    return describe_place(where) if where else "a stored value"
