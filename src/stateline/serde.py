"""stateline's value serializer: msgpack (ormsgpack) with an explicit table of types.

Round-trips exactly, beyond msgpack's own types: ``datetime`` (naive, fixed offsets and
``zoneinfo`` zones), ``date``, ``time``, ``timedelta``, ``set``, ``frozenset``, ``tuple``,
``bytes``, ``Decimal``, ``UUID``, ints of any size, and dicts whose keys are not ``str``
(``int``, ``tuple``, ``UUID``...). Dataclasses, pydantic models and enums round-trip once
registered: ``register(cls)`` for every serializer of the process, or ``Serde(types=[...])``
(a checkpointer's ``types=``) for one. Anything else raises ``SerializationError`` when it
is saved, not when it is loaded.

Stored data never names a module to import or code to run: a registered class is found by
the name it was registered under, and an unknown name is a ``StoredDataError``. No pickle.
``bytearray`` and ``memoryview`` come back as ``bytes``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import threading
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import ormsgpack

from .codec import PLAIN_DATA
from .errors import InvalidInput, SerializationError, StoredDataError

__all__ = ["Serde", "register", "TAG"]

TAG = "stateline"  # the type tag of dumps_typed: the format of this module, version 1

# Everything outside plain JSON-like data reaches `default` (and so the table below).
_OPTIONS = PLAIN_DATA

# msgpack extension codes (part of the stored format: never renumber).
DATETIME, DATE, TIME, TIMEDELTA, SET, FROZENSET, TUPLE, DECIMAL, UUID, BIGINT, KEYED, CLASS = range(1, 13)


# -- time zones ---------------------------------------------------------------------------


def _tz_out(tz: dt.tzinfo | None) -> Any:
    """None, a zone key, or [offset in microseconds, name or None] for a fixed offset."""
    if tz is None:
        return None
    if isinstance(tz, zoneinfo.ZoneInfo) and tz.key is not None:
        return tz.key
    if isinstance(tz, dt.timezone):
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default_name = dt.timezone(offset).tzname(None)
        return [offset // dt.timedelta(microseconds=1), None if name == default_name else name]
    raise SerializationError(
        f"time zone {tz!r} ({type(tz).__name__}) cannot be stored exactly: use datetime.timezone or zoneinfo.ZoneInfo"
    )


def _tz_in(spec: Any) -> dt.tzinfo | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return zoneinfo.ZoneInfo(spec)
    offset = dt.timedelta(microseconds=spec[0])
    return dt.timezone(offset) if spec[1] is None else dt.timezone(offset, spec[1])


# -- registered classes -------------------------------------------------------------------


def _is_pydantic(cls: type) -> bool:
    return hasattr(cls, "model_fields") and hasattr(cls, "model_construct")


def _class_state(obj: Any) -> Any:
    cls = type(obj)
    if isinstance(obj, enum.Enum):
        return obj.name
    if _is_pydantic(cls):
        fields = {name: getattr(obj, name) for name in cls.model_fields}
        return [fields | (obj.__pydantic_extra__ or {}), sorted(obj.model_fields_set)]
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _rebuild(cls: type[Any], state: Any) -> Any:
    """Restores what _class_state took: enums by member name, pydantic models with
    ``model_construct`` (validated when first built), dataclasses with their constructor."""
    if issubclass(cls, enum.Enum):
        return cls[state]
    if _is_pydantic(cls):
        fields, fields_set = state
        return cls.model_construct(_fields_set=set(fields_set), **fields)
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in state.items() if k in init})
    for k, v in state.items():
        if k not in init:
            object.__setattr__(obj, k, v)
    return obj


def _check_registrable(cls: Any) -> None:
    if not isinstance(cls, type) or not (
        dataclasses.is_dataclass(cls) or _is_pydantic(cls) or issubclass(cls, enum.Enum)
    ):
        raise InvalidInput(f"only dataclasses, pydantic (v2) models and enums can be registered, got {cls!r}")


class _Registry:
    __slots__ = ("by_type", "by_name", "lock")

    def __init__(self) -> None:
        self.by_type: dict[type, str] = {}
        self.by_name: dict[str, type] = {}
        self.lock = threading.Lock()

    def add(self, cls: type, name: str | None) -> None:
        _check_registrable(cls)
        name = name or f"{cls.__module__}.{cls.__qualname__}"
        with self.lock:
            known = self.by_name.get(name)
            if known is not None and known is not cls:
                raise InvalidInput(
                    f"another class is already registered as {name!r} ({known!r}): pass a distinct name="
                )
            self.by_type[cls] = name
            self.by_name[name] = cls


_GLOBAL = _Registry()


def register(cls: type, name: str | None = None) -> type:
    """Allows ``cls`` (a dataclass, pydantic model or enum) in every stateline serializer of
    this process, stored under ``name`` (default ``module.QualName``). Usable as a decorator."""
    _GLOBAL.add(cls, name)
    return cls


# -- the serializer -----------------------------------------------------------------------


class _TypedKeys:
    """Marks a dict with a key msgpack would not keep exactly (anything but ``str``)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class Serde:
    """Serializes values for stateline; ``dumps_typed``/``loads_typed`` plug into ValueCodec.

    ``Serde(types=[...])`` allows these classes in addition to those given to ``register``.
    Raises ``SerializationError`` for a value it cannot store exactly (an unregistered
    class, a ``tzinfo`` other than ``timezone``/``ZoneInfo``) and ``StoredDataError`` for
    stored bytes it cannot decode (another format, a class name no longer registered).
    """

    def __init__(self, types: Iterable[type] = ()) -> None:
        self._own = _Registry()
        for cls in types:
            self._own.add(cls, None)
        self._out: dict[type, Callable[[Any], ormsgpack.Ext]] = {
            dt.datetime: lambda v: _plain(DATETIME, [*_fields_of(v, _DT), _tz_out(v.tzinfo), v.fold]),
            dt.date: lambda v: _plain(DATE, [v.year, v.month, v.day]),
            dt.time: lambda v: _plain(TIME, [*_fields_of(v, _TIME), _tz_out(v.tzinfo), v.fold]),
            dt.timedelta: lambda v: _plain(TIMEDELTA, [v.days, v.seconds, v.microseconds]),
            set: lambda v: self._ext(SET, list(v)),
            frozenset: lambda v: self._ext(FROZENSET, list(v)),
            tuple: lambda v: self._ext(TUPLE, list(v)),
            Decimal: lambda v: ormsgpack.Ext(DECIMAL, str(v).encode()),
            uuid.UUID: lambda v: ormsgpack.Ext(UUID, v.bytes),
            int: lambda v: ormsgpack.Ext(BIGINT, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True)),
            _TypedKeys: lambda v: self._ext(KEYED, v.items),
        }
        self._in: dict[int, Callable[[bytes], Any]] = {
            DATETIME: lambda b: _datetime(ormsgpack.unpackb(b)),
            DATE: lambda b: dt.date(*ormsgpack.unpackb(b)),
            TIME: lambda b: _time(ormsgpack.unpackb(b)),
            TIMEDELTA: lambda b: dt.timedelta(*ormsgpack.unpackb(b)),
            SET: lambda b: set(self.loads(b)),
            FROZENSET: lambda b: frozenset(self.loads(b)),
            TUPLE: lambda b: tuple(self.loads(b)),
            DECIMAL: lambda b: Decimal(b.decode()),
            UUID: lambda b: uuid.UUID(bytes=b),
            BIGINT: lambda b: int.from_bytes(b, "big", signed=True),
            KEYED: lambda b: _pairs(self.loads(b)),
            CLASS: self._load_class,
        }

    def register(self, cls: type, name: str | None = None) -> type:
        """Allows ``cls`` in this serializer only (see the module function ``register``)."""
        self._own.add(cls, name)
        return cls

    # -- LangGraph-style serde protocol, used by ValueCodec ---------------------------------

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return TAG, self.dumps(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        typ, raw = data
        if typ != TAG:
            raise StoredDataError(f"stored value has type tag {typ!r}, not {TAG!r}: written by another serializer")
        return self.loads(raw)

    # -- bytes ------------------------------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        failed: list[SerializationError] = []

        def default(value: Any) -> Any:
            try:
                return self._default(value)
            except SerializationError as exc:  # ormsgpack replaces it by a generic TypeError
                failed.append(exc)
                raise

        try:
            return ormsgpack.packb(obj, default=default, option=_OPTIONS)
        except TypeError as exc:
            if failed:
                raise failed[0] from None
            # Most often a dict key that is not str: mark such dicts and pack once more.
            try:
                return ormsgpack.packb(_mark_keys(obj), default=default, option=_OPTIONS)
            except TypeError:
                if failed:
                    raise failed[0] from None
                raise SerializationError(f"{type(obj).__name__} value cannot be serialized: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        failed: list[Exception] = []

        def hook(code: int, payload: bytes) -> Any:
            try:
                return self._ext_in(code, payload)
            except Exception as exc:  # ormsgpack replaces it by ValueError('ext_hook failed')
                failed.append(exc)
                raise

        try:
            return ormsgpack.unpackb(data, ext_hook=hook)
        except (ormsgpack.MsgpackDecodeError, ValueError) as exc:
            cause = failed[0] if failed else exc
            if isinstance(cause, StoredDataError):
                raise cause from None
            raise StoredDataError(f"a stored value cannot be decoded: {cause!r}") from cause

    def _ext(self, code: int, value: Any) -> ormsgpack.Ext:
        return ormsgpack.Ext(code, self.dumps(value))

    def _ext_in(self, code: int, data: bytes) -> Any:
        decode = self._in.get(code)
        if decode is None:
            raise StoredDataError(f"a stored value uses extension type {code}, unknown to this version of stateline")
        return decode(data)

    def _default(self, value: Any) -> Any:
        cls = type(value)
        encode = self._out.get(cls)
        if encode is not None:
            return encode(value)
        name = self._own.by_type.get(cls) or _GLOBAL.by_type.get(cls)
        if name is None:
            raise SerializationError(
                f"{cls.__module__}.{cls.__qualname__} is not a type stateline stores: register it "
                f"(stateline.register({cls.__name__}) or types=[{cls.__name__}]) if it is a dataclass, "
                "pydantic model or enum, or convert it to supported values"
            )
        return self._ext(CLASS, [name, _class_state(value)])

    def _load_class(self, data: bytes) -> Any:
        name, state = self.loads(data)
        cls = self._own.by_name.get(name) or _GLOBAL.by_name.get(name)
        if cls is None:
            raise StoredDataError(f"stored data holds a {name!r}, which is not registered with this serializer")
        try:
            return _rebuild(cls, state)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise StoredDataError(f"a stored {name!r} cannot be rebuilt: {exc}") from exc


def _plain(code: int, parts: list[Any]) -> ormsgpack.Ext:
    """An extension whose payload is plain msgpack (no nested types to look up)."""
    return ormsgpack.Ext(code, ormsgpack.packb(parts))


_DT = ("year", "month", "day", "hour", "minute", "second", "microsecond")
_TIME = ("hour", "minute", "second", "microsecond")


def _fields_of(value: Any, names: tuple[str, ...]) -> list[int]:
    return [getattr(value, n) for n in names]


def _datetime(parts: list[Any]) -> dt.datetime:
    year, month, day, hour, minute, second, microsecond, tz, fold = parts
    return dt.datetime(year, month, day, hour, minute, second, microsecond, tzinfo=_tz_in(tz), fold=fold)


def _time(parts: list[Any]) -> dt.time:
    hour, minute, second, microsecond, tz, fold = parts
    return dt.time(hour, minute, second, microsecond, tzinfo=_tz_in(tz), fold=fold)


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _mark_keys(value: Any) -> Any:
    """Rebuilds the plain containers of ``value``, turning each dict with a key that is not
    exactly ``str`` into a _TypedKeys (its keys then go through the type table too).
    Other values (tuples, sets, classes) are packed separately by ``default``, which
    comes back here if they hold such a dict."""
    if type(value) is dict:
        if all(type(k) is str for k in value):
            return {k: _mark_keys(v) for k, v in value.items()}
        return _TypedKeys([x for k, v in value.items() for x in (k, _mark_keys(v))])
    if type(value) is list:
        return [_mark_keys(v) for v in value]
    return value
