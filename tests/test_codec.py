"""The envelope of stored format 1, as pure functions of bytes (no server)."""

from __future__ import annotations

import zlib

import pytest
import zstandard

from stateline import Compression, Encryption, StoredDataError
from stateline.codec import ValueCodec
from stateline.serde import Serde

WHERE = b"t b:%2F:ch:1"
PLAIN = b"stateline\0" + b"some bytes " * 20


def _crc(data: bytes) -> bytes:
    return data + zlib.crc32(data).to_bytes(4, "big")


@pytest.mark.parametrize(
    "settings",
    [{}, {"compression": Compression(threshold=0)}, {"encryption": Encryption({"k": b"\1" * 32})}],
    ids=["plain", "compressed", "encrypted"],
)
def test_an_envelope_opens_to_what_was_sealed(settings: dict) -> None:
    codec = ValueCodec(Serde(), **settings)
    sealed = codec.seal(PLAIN, WHERE)
    assert sealed[0] == 1 and codec.open(sealed, WHERE) == PLAIN
    assert codec.load(codec.seal(codec.dump({"a": [1, 2]}, "x"), WHERE), WHERE) == {"a": [1, 2]}


def test_what_a_reader_refuses_it_names() -> None:
    codec = ValueCodec(Serde())
    cases = {
        _crc(bytes([1, 0x30]) + PLAIN): "newer than this version",  # an unknown flag
        _crc(bytes([1, 0x13]) + PLAIN): "compression 3",
        _crc(bytes([2, 0x10]) + PLAIN): "format 2, newer",
        _crc(bytes([200, 0x10]) + PLAIN): "damaged",
        bytes([1, 0x10]) + PLAIN + b"\0\0\0\0": "CRC",
        b"\1": "truncated",
        _crc(bytes([1, 0x12, 9]) + zstandard.ZstdCompressor().compress(PLAIN)): "dictionary 9",
    }
    for stored, message in cases.items():
        with pytest.raises(StoredDataError, match=message) as err:
            codec.open(stored, WHERE)
        assert "thread 't', the value of channel 'ch' (version '1', namespace '/')" in str(err.value)
    assert codec.open(bytes([1, 0]) + PLAIN, WHERE) == PLAIN  # (no CRC: allowed by the format)


def test_a_frame_must_declare_a_size_within_the_limit() -> None:
    codec = ValueCodec(Serde(), max_bytes=1000)
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(PLAIN)
    with pytest.raises(StoredDataError, match="does not declare its size"):
        codec.open(_crc(bytes([1, 0x11]) + streamed), WHERE)
    big = zstandard.ZstdCompressor().compress(b"\0" * 5000)
    with pytest.raises(StoredDataError, match="declares 5000 bytes, over the limit of 1000"):
        codec.open(_crc(bytes([1, 0x11]) + big), WHERE)


def test_an_encrypted_envelope_is_bound_to_its_place_and_key() -> None:
    codec = ValueCodec(Serde(), encryption=Encryption({"k": b"\1" * 32}))
    sealed = codec.seal(PLAIN, WHERE)
    assert PLAIN[:20] not in sealed
    for where in (b"u b:%2F:ch:1", b"t b:%2F:ch:2"):
        with pytest.raises(StoredDataError, match="fails authentication"):
            codec.open(sealed, where)
    header_changed = sealed[:1] + bytes([sealed[1] | 0x01]) + sealed[2:]  # now it claims zstd
    with pytest.raises(StoredDataError, match="fails authentication"):
        codec.open(header_changed, WHERE)
