"""zstd compression of stored values, with the dictionaries stateline ships.

Small values (a chat message is about 600 bytes serialized) barely compress on their own
(1.4x); with a dictionary trained on what checkpoints hold (LangChain messages, checkpoint
headers and metadata as LangGraph writes them) they do (about 3x). Each dictionary ships
inside the package as ``dictionaries/<id>.zdict`` and is named in every value compressed
with it, so it is part of the stored format: a dictionary, once shipped, is never changed
or removed; a better one gets the next id. ``tools/train_zstd_dictionary.py`` says how
dictionary 1 was trained.

Decompression never trusts the frame: a frame must declare its size, which must be within
the caller's limit before anything is allocated.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from importlib.resources import files
from typing import Any

from .errors import InvalidInput, StoredDataError

__all__ = ["Compression", "NONE", "ZSTD", "ZSTD_DICT", "DICTIONARY"]

# Compression codes of the envelope (codec.py): part of the stored format, never renumbered.
NONE, ZSTD, ZSTD_DICT = 0, 1, 2
DICTIONARY = 1  # the dictionary new values are compressed with


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:  # (a dependency of stateline: only a broken install lacks it)
        raise InvalidInput("compression needs the zstandard package: pip install zstandard") from exc
    return zstandard


@lru_cache(maxsize=8)
def _dictionary(dict_id: int) -> Any:
    zstd = _zstd()
    try:
        data = files("stateline").joinpath("dictionaries").joinpath(f"{dict_id}.zdict").read_bytes()
    except FileNotFoundError:
        raise StoredDataError(
            f"a value was compressed with zstd dictionary {dict_id}, which this version of stateline does not have"
        ) from None
    return zstd.ZstdCompressionDict(data)


class Compression:
    """zstd at ``level`` of every value of at least ``threshold`` bytes, with stateline's
    dictionary (``dictionary=False``: without). A value is stored compressed only when that
    saves at least ``min_gain`` bytes."""

    __slots__ = ("level", "threshold", "dictionary", "min_gain", "_local")

    def __init__(self, level: int = 3, threshold: int = 64, *, dictionary: bool = True, min_gain: int = 8) -> None:
        if type(level) is not int or not 1 <= level <= 19:
            raise InvalidInput(f"the zstd level must be an int from 1 to 19, got {level!r}")
        if type(threshold) is not int or threshold < 0:
            raise InvalidInput(f"the compression threshold must be a non-negative int of bytes, got {threshold!r}")
        _zstd()
        self.level = level
        self.threshold = threshold
        self.dictionary = DICTIONARY if dictionary else 0
        self.min_gain = min_gain
        self._local = threading.local()  # zstandard's (de)compressors are not thread-safe

    def __repr__(self) -> str:
        return f"Compression(level={self.level}, threshold={self.threshold}, dictionary={bool(self.dictionary)})"

    def _compressor(self) -> Any:
        c = getattr(self._local, "c", None)
        if c is None:
            zstd = _zstd()
            d = _dictionary(self.dictionary) if self.dictionary else None
            c = self._local.c = zstd.ZstdCompressor(
                level=self.level, dict_data=d, write_checksum=False, write_content_size=True, write_dict_id=False
            )
        return c

    def compress(self, data: bytes) -> tuple[int, int, bytes] | None:
        """(code, dictionary id or 0, frame), or None when compressing does not pay."""
        if len(data) < self.threshold:
            return None
        frame = self._compressor().compress(data)
        if len(frame) + self.min_gain > len(data):
            return None
        return (ZSTD_DICT, self.dictionary, frame) if self.dictionary else (ZSTD, 0, frame)


_local = threading.local()


def _decompressor(dict_id: int) -> Any:
    cache = getattr(_local, "d", None)
    if cache is None:
        cache = _local.d = {}
    d = cache.get(dict_id)
    if d is None:
        zstd = _zstd()
        d = cache[dict_id] = zstd.ZstdDecompressor(dict_data=_dictionary(dict_id) if dict_id else None)
    return d


def decompress(frame: bytes, dict_id: int, limit: int) -> bytes:
    """The frame's content, refused (StoredDataError) when it does not declare its size or
    declares more than ``limit`` bytes: nothing is allocated for a frame over the limit."""
    zstd = _zstd()
    try:
        size = zstd.frame_content_size(frame)
    except zstd.ZstdError as exc:
        raise StoredDataError(f"a compressed value is damaged: {exc}") from None
    if size < 0:
        raise StoredDataError("a compressed value does not declare its size")
    if size > limit:
        raise StoredDataError(f"a compressed value declares {size} bytes, over the limit of {limit}")
    try:
        out = _decompressor(dict_id).decompress(frame)
    except zstd.ZstdError as exc:
        raise StoredDataError(f"a compressed value is damaged: {exc}") from None
    if len(out) != size:
        raise StoredDataError("a compressed value is damaged: its size is not what its frame declares")
    return out


def compression_of(option: Any) -> Compression | None:
    """A saver's ``compression=`` option: True (the default settings), False/None (off) or
    a ``Compression``."""
    if option is True:
        return Compression()
    if option is False or option is None:
        return None
    if isinstance(option, Compression):
        return option
    raise InvalidInput(f"compression must be True, False or a stateline.Compression, got {option!r}")
