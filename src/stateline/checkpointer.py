"""The framework-agnostic checkpointer (the seed API), over the same engine as the savers.

A session is an engine thread (namespace ""), a ``Checkpoint`` one engine checkpoint: the
state's top-level keys are its channels, the Checkpoint's own fields its header. A
channel's version is the digest of its serialized value, so a key that did not change
refers to the value already stored: stored once, shared by every checkpoint that has it
(lists of 4+ items are stored per element by the engine). A session's checkpoints are
ordered by ``created_at`` (then id), whatever their ids: the engine's id for a checkpoint
starts with its creation time, and the checkpoint's own id is its alias. A checkpoint saved
on its parent is ordered after it whatever the clocks say: one whose clock is behind its
parent's (another host, a clock stepped back) is ordered one microsecond after the parent.
"""

from __future__ import annotations

import builtins  # `builtins.list` in classes whose `list` method hides the type
import re
import secrets
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from . import runner
from .codec import FINGERPRINT_PLAIN, ValueCodec
from .compression import compression_of
from .connection import Connection
from .crypto import Encryption
from .engine import PAGE, Behind, Engine
from .errors import ConflictError, InvalidInput
from .keys import dec, enc
from .plan import Plan
from .records import Snapshot, Stored, check_keep_last, ttl_ms
from .serde import Serde

__all__ = [
    "Checkpoint",
    "BaseCheckpointer",
    "RedisCheckpointer",
    "SyncRedisCheckpointer",
    "MemoryCheckpointer",
    "new_id",
]

# -- ids ----------------------------------------------------------------------------------

_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_ids_lock = threading.Lock()
_last_stamp = 0  # (unix ms << 12) | sequence of the newest id made by this process


def _stamp(cid: str | None) -> int:
    if cid is None or not _UUID7.fullmatch(cid):
        return 0
    value = int(cid.replace("-", ""), 16)
    return (value >> 80) << 12 | (value >> 64) & 0xFFF


def new_id(after: str | None = None) -> str:
    """A UUIDv7 (RFC 9562) string that sorts after every id this process made and after
    ``after`` (a parent's id): a child sorts after its parent even if clocks disagree."""
    global _last_stamp
    with _ids_lock:
        _last_stamp = max((time.time_ns() // 1_000_000) << 12, _last_stamp + 1, _stamp(after) + 1)
        stamp = _last_stamp
    value = (stamp >> 12) << 80 | 7 << 76 | (stamp & 0xFFF) << 64 | 2 << 62 | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- the checkpoint -----------------------------------------------------------------------

_OPTIONAL_TEXT = ("parent_id", "run_id", "node", "prev_node", "dispatch_id")


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """One saved state of a session.

    ``state`` maps str keys to values the serializer stores exactly (see stateline.serde);
    ``metadata`` is yours. ``run_id`` groups the checkpoints of one agent run, ``step`` is
    the position in it, ``node`` the step that produced this state after ``prev_node``,
    ``updated_fields`` the keys it changed; ``attempt`` and ``dispatch_id`` are free for
    retries and fan-outs. ``created_at`` is UTC. Use ``child()`` to make the next one.
    """

    session_id: str
    state: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    checkpoint_id: str = field(default_factory=new_id)
    parent_id: str | None = None
    created_at: datetime = field(default_factory=_now)
    run_id: str | None = None
    node: str | None = None
    prev_node: str | None = None
    step: int = 0
    updated_fields: list[str] = field(default_factory=list)
    attempt: int | None = None
    dispatch_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("session_id", "checkpoint_id"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInput(f"{name} must be str, got {getattr(self, name)!r}")
        for name in _OPTIONAL_TEXT:
            if not isinstance(getattr(self, name), (str, type(None))):
                raise InvalidInput(f"{name} must be str or None, got {getattr(self, name)!r}")
        if not self.checkpoint_id:
            raise InvalidInput("checkpoint_id must not be empty")
        if not isinstance(self.state, dict) or any(type(k) is not str for k in self.state):
            raise InvalidInput(f"state must be a dict with str keys, got {_keys_of(self.state)}")
        if not isinstance(self.metadata, dict):
            raise InvalidInput(f"metadata must be a dict, got {type(self.metadata).__name__}")
        if not isinstance(self.created_at, datetime) or self.created_at.utcoffset() is None:
            raise InvalidInput(f"created_at must be a timezone-aware datetime, got {self.created_at!r}")
        if type(self.step) is not int or not isinstance(self.attempt, (int, type(None))):
            raise InvalidInput(f"step must be an int and attempt an int or None, got {self.step!r}, {self.attempt!r}")
        object.__setattr__(self, "created_at", self.created_at.astimezone(timezone.utc))

    def child(self, state: dict[str, Any] | None = None, **changes: Any) -> Checkpoint:
        """The next checkpoint of this session: this one is its parent (so saving it
        fails with ConflictError if another was saved after this one), same run, step + 1,
        ``prev_node`` = this ``node``, a new id and time; ``changes`` set other fields."""
        base: dict[str, Any] = {
            "state": dict(self.state) if state is None else state,
            "metadata": {},
            "checkpoint_id": new_id(after=self.checkpoint_id),
            "parent_id": self.checkpoint_id,
            "created_at": _now(),
            "step": self.step + 1,
            "node": None,
            "prev_node": self.node,
            "updated_fields": [],
            "attempt": None,
            "dispatch_id": None,
        }
        return replace(self, **(base | changes))

    def to_dict(self) -> dict[str, Any]:
        """Every field by name; ``created_at`` as ISO 8601 text."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["created_at"] = self.created_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """The inverse of ``to_dict``; ``created_at`` may be a datetime or ISO 8601 text."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidInput(f"unknown Checkpoint fields: {sorted(unknown)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("created_at"), str):
            try:
                kwargs["created_at"] = datetime.fromisoformat(kwargs["created_at"])
            except ValueError as exc:
                raise InvalidInput(f"created_at is not ISO 8601: {kwargs['created_at']!r}") from exc
        return cls(**kwargs)


def _keys_of(state: Any) -> str:
    if not isinstance(state, dict):
        return type(state).__name__
    return "keys " + ", ".join(repr(k) for k in state if type(k) is not str)


# Fields the engine keeps itself (thread, id, parent, values, metadata); the rest is the header.
_IN_ENGINE = frozenset({"session_id", "checkpoint_id", "parent_id", "state", "metadata"})
_HEADER = tuple(f.name for f in fields(Checkpoint) if f.name not in _IN_ENGINE)


def _header(cp: Checkpoint) -> dict[str, Any]:
    return {name: getattr(cp, name) for name in _HEADER}


def _checkpoint(
    session_id: str, checkpoint_id: str, parent_id: str | None, header: Any, state: dict, metadata: Any
) -> Checkpoint:
    # Fields a newer version may add are left out rather than refused.
    known = {k: v for k, v in header.items() if k in _HEADER}
    return Checkpoint(
        session_id=session_id, checkpoint_id=checkpoint_id, parent_id=parent_id, state=state, metadata=metadata, **known
    )


def _from_stored(s: Stored) -> Checkpoint:
    return _checkpoint(s.thread_id, s.alias or s.checkpoint_id, s.parent_id, s.header, s.values, s.metadata)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Added to microseconds since 1970 so that every datetime (years 1 to 9999) is a positive
# number of 16 hex digits, which sort as the instants do.
_STAMP_OFFSET = 1 << 60


def _order_id(cp: Checkpoint) -> str:
    """The engine's id for a checkpoint: its creation time first, so a session's checkpoints
    are ordered by ``created_at`` (then by id) whatever ids they have; the checkpoint's own
    id is its alias, which load, list(before=), delete and parents use."""
    micros = (cp.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros + _STAMP_OFFSET:016x}.{cp.checkpoint_id}"


def _order_after(parent_order: str, cp: Checkpoint) -> str:
    """The engine's id for ``cp`` when its own sorts before its parent's (the parent was
    saved by a host whose clock is ahead, or before the clock stepped back): the parent's
    time plus one microsecond. The same for every retry of the same save."""
    stamp, _, _ = parent_order.partition(".")
    try:
        after = int(stamp, 16) + 1
    except ValueError:
        raise ConflictError(
            f"checkpoint {cp.checkpoint_id!r} would be ordered before its parent {cp.parent_id!r}"
        ) from None
    return f"{after:0{len(stamp)}x}.{cp.checkpoint_id}"


def _expected_head(cp: Checkpoint, new_session: bool) -> str | None:
    """What the session's newest checkpoint must be for ``cp`` to be saved (the engine's
    ``expect``): its parent, nothing ('' with ``new_session``), or anything (None)."""
    if new_session:
        if cp.parent_id is not None:
            raise InvalidInput(f"checkpoint {cp.checkpoint_id!r} has a parent, so it cannot start a new session")
        return ""
    return cp.parent_id


def _not_a_checkpoint(value: Any) -> InvalidInput:
    hint = ""
    if hasattr(value, "metadata") and hasattr(value, "state"):  # llmfy's Checkpoint(metadata, state)
        hint = " (a llmfy checkpoint? stateline.llmfy.RedisCheckpointer takes llmfy's)"
    return InvalidInput(f"save() takes a stateline.Checkpoint, got {type(value).__name__}{hint}")


def _checkpoint_id(checkpoint_id: str | None, what: str = "checkpoint_id") -> str | None:
    """The seed API's id rule: session and checkpoint ids are str (a checkpoint id not
    empty); anything else is InvalidInput, never converted."""
    if checkpoint_id is not None and (not isinstance(checkpoint_id, str) or not checkpoint_id):
        raise InvalidInput(f"{what} must be a non-empty str or None (the newest), got {checkpoint_id!r}")
    return checkpoint_id


def _serde(types: Iterable[type], serde: Any) -> Any:
    if serde is not None and types:
        raise InvalidInput("pass types= or serde=, not both (register the types with your serde)")
    return serde if serde is not None else Serde(types)


def _codec(serde: Any, compression: Any = None, encryption: Encryption | None = None) -> ValueCodec:
    # stateline's Serde stores plain data as itself, so list items are recognised by it.
    if encryption is not None and not isinstance(encryption, Encryption):
        raise InvalidInput(f"encryption must be a stateline.Encryption, got {type(encryption).__name__}")
    return ValueCodec(
        serde,
        fingerprint=FINGERPRINT_PLAIN if type(serde) is Serde else None,
        compression=compression_of(compression),
        encryption=encryption,
    )


# -- the protocol -------------------------------------------------------------------------


class BaseCheckpointer(ABC):
    """Stores checkpoints per session (async). Every implementation guarantees:

    - ``save`` is atomic. If ``checkpoint.parent_id`` is set, the session's newest
      checkpoint must be that parent, else ``ConflictError`` and nothing is written (two
      turns saved on the same parent: one wins, the other learns it). With
      ``new_session=True`` the session must be empty. Without a parent, it just saves.
      Values that cannot be stored exactly raise ``SerializationError`` before anything
      is written.
    - ``load(session, id)`` only ever returns a checkpoint of ``session`` (None if absent);
      ``load(session)`` the newest. ``list`` returns newest first, older than ``before``.
      Newest means the latest ``created_at`` (any timezone, any year), except that a
      checkpoint saved on its parent is always newer than that parent, whatever the clocks
      of the hosts that made them.
    - ``delete(session, id)`` deletes only that checkpoint of that session;
      ``delete(session)`` the whole session. ``clear_all`` deletes every session.
    - ``ttl`` expires a whole session ``ttl`` seconds after its last save; ``keep_last``
      keeps the newest N checkpoints of each session.
    """

    @abstractmethod
    async def save(self, checkpoint: Checkpoint, *, new_session: bool = False) -> None: ...

    @abstractmethod
    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Checkpoint | None: ...

    @abstractmethod
    async def list(self, session_id: str, limit: int | None = 10, *, before: str | None = None) -> list[Checkpoint]: ...

    @abstractmethod
    async def delete(self, session_id: str, checkpoint_id: str | None = None) -> None: ...

    async def list_sessions(self) -> builtins.list[str]:
        """The ids of the sessions holding checkpoints. Optional for other backends."""
        raise NotImplementedError(f"{type(self).__name__} does not list sessions")

    @abstractmethod
    async def clear_all(self) -> None: ...

    async def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Releases what the checkpointer opened."""

    async def __aenter__(self) -> BaseCheckpointer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- Redis --------------------------------------------------------------------------------


def _split_target(redis_url: Any, client: Any) -> tuple[str | None, Any, Any]:
    """(url, sync client, async client) from ``redis_url`` (a URL or a client) and ``client``."""
    if isinstance(redis_url, str) or redis_url is None:
        target, url = client, redis_url
    elif client is not None:
        raise InvalidInput("pass the client as redis_url or as client=, not both")
    else:
        target, url = redis_url, None
    if target is None:
        return url, None, None
    return (url, None, target) if hasattr(target, "__aenter__") else (url, target, None)


class _RedisPlans:
    """Settings, connection and the plans shared by the async and the sync checkpointer."""

    def __init__(
        self,
        redis_url: Any = None,
        prefix: str = "stateline:cp:",
        ttl: float | None = None,
        keep_last: int | None = None,
        client: Any = None,
        types: Iterable[type] = (),
        *,
        serde: Any = None,
        data_dir: str | None = None,
        compression: Any = True,
        encryption: Encryption | None = None,
        **redis_options: Any,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise InvalidInput(f"prefix must be a non-empty str (clear_all deletes its keys), got {prefix!r}")
        url, sync_client, async_client = _split_target(redis_url, client)
        self.serde = _serde(types, serde)
        self._engine = Engine(
            _codec(self.serde, compression, encryption), prefix=prefix, keep_last=keep_last, ttl_ms=ttl_ms(ttl)
        )
        self._conn = Connection(url, client=sync_client, aclient=async_client, data_dir=data_dir, **redis_options)

    @property
    def engine(self) -> Engine:
        return self._engine

    def _save(self, cp: Checkpoint, new_session: bool) -> Plan[None]:
        snap, expect = self._snapshot(cp, new_session)
        try:
            yield from self._engine.put(snap, expect=expect)
        except Behind as behind:
            snap.checkpoint_id = _order_after(behind.parent, cp)
            yield from self._engine.put(snap, expect=expect)

    def _snapshot(self, cp: Checkpoint, new_session: bool) -> tuple[Snapshot, str | None]:
        if not isinstance(cp, Checkpoint):
            raise _not_a_checkpoint(cp)
        expect = _expected_head(cp, new_session)
        codec = self._engine.codec
        # (keyed when encrypted: a version is stored in plaintext, in the value's field name)
        versions = {k: codec.digest(codec.dump(v, f"state key {k!r}")).hex() for k, v in cp.state.items()}
        snap = Snapshot(
            thread_id=cp.session_id,
            ns="",
            checkpoint_id=_order_id(cp),
            alias=cp.checkpoint_id,
            parent_id=cp.parent_id,
            header=_header(cp),
            metadata=cp.metadata,
            versions=versions,
            values=cp.state,
            keep_existing=True,  # a version names its content: a stored one is already right
        )
        return snap, expect

    def _load(self, session_id: str, checkpoint_id: str | None) -> Plan[Checkpoint | None]:
        stored = yield from self._engine.get(session_id, "", _checkpoint_id(checkpoint_id))
        return None if stored is None else _from_stored(stored)

    def _list(self, session_id: str, limit: int | None, before: str | None) -> Plan[int]:
        # One page of `limit`: one round trip however many are asked for.
        before = _checkpoint_id(before, "before")
        return self._engine.list(session_id, "", before=before, limit=limit, page=limit or PAGE)

    def _delete(self, session_id: str, checkpoint_id: str | None) -> Plan[None]:
        cid = _checkpoint_id(checkpoint_id)
        if cid is None:
            yield from self._engine.delete_thread(session_id)
        else:
            yield from self._engine.delete_checkpoint(session_id, "", cid)


class RedisCheckpointer(_RedisPlans, BaseCheckpointer):
    """Checkpoints in Redis or Valkey (see BaseCheckpointer for the guarantees).

    ``RedisCheckpointer(redis_url=None, prefix="stateline:cp:", ttl=None, keep_last=None,
    client=None, types=(), *, serde=None, data_dir=None, compression=True, encryption=None,
    **redis_options)``. ``compression``: zstd for values of 64 bytes and more (True), off
    (False), or a ``stateline.Compression``. ``encryption``: a ``stateline.Encryption``
    (AES-GCM with named keys; see stateline.crypto).
    ``redis_url``: ``redis://``, ``rediss://``, ``unix://`` (or a Cluster/Sentinel form, see
    stateline.connection), or a redis-py client (sync or asyncio, also as ``client=``);
    None uses the embedded server in ``data_dir``. ``types``: dataclasses, pydantic models
    and enums allowed in states. ``save`` and ``load`` are one round trip each, ``list``
    one for any ``limit``. Keys: ``<prefix>{<session>}:d`` / ``:i``, and the discovery
    shards ``<prefix>{threads:<k>}`` / ``:exp``.
    """

    async def save(self, checkpoint: Checkpoint, *, new_session: bool = False) -> None:
        await runner.arun(self._conn.aio, self._save(checkpoint, new_session))

    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Checkpoint | None:
        return await runner.arun(self._conn.aio, self._load(session_id, checkpoint_id))

    async def list(self, session_id: str, limit: int | None = 10, *, before: str | None = None) -> list[Checkpoint]:
        return [_from_stored(s) async for s in runner.aiterate(self._conn.aio, self._list(session_id, limit, before))]

    async def delete(self, session_id: str, checkpoint_id: str | None = None) -> None:
        await runner.arun(self._conn.aio, self._delete(session_id, checkpoint_id))

    async def list_sessions(self) -> builtins.list[str]:
        return await runner.arun(self._conn.aio, self._engine.threads())

    async def clear_all(self) -> None:
        await runner.arun(self._conn.aio, self._engine.delete_all())

    async def close(self) -> None:
        await self._conn.aclose()


class SyncRedisCheckpointer(_RedisPlans):
    """``RedisCheckpointer`` for sync code: the same constructor, methods and plans."""

    def save(self, checkpoint: Checkpoint, *, new_session: bool = False) -> None:
        runner.run(self._conn.sync, self._save(checkpoint, new_session))

    def load(self, session_id: str, checkpoint_id: str | None = None) -> Checkpoint | None:
        return runner.run(self._conn.sync, self._load(session_id, checkpoint_id))

    def list(self, session_id: str, limit: int | None = 10, *, before: str | None = None) -> list[Checkpoint]:
        return [_from_stored(s) for s in runner.iterate(self._conn.sync, self._list(session_id, limit, before))]

    def delete(self, session_id: str, checkpoint_id: str | None = None) -> None:
        runner.run(self._conn.sync, self._delete(session_id, checkpoint_id))

    def list_sessions(self) -> builtins.list[str]:
        return runner.run(self._conn.sync, self._engine.threads())

    def clear_all(self) -> None:
        runner.run(self._conn.sync, self._engine.delete_all())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SyncRedisCheckpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- in memory ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    parent_id: str | None
    header: bytes
    state: dict[str, bytes]
    metadata: bytes
    order: str  # _order_id: created_at first, as RedisCheckpointer orders


class MemoryCheckpointer(BaseCheckpointer):
    """Checkpoints in this process, for tests and single-process tools: the behaviour of
    RedisCheckpointer (ordering, conflicts, retention, sliding ``ttl``) without a server.
    States are serialized with the same serializer, so what loads is a copy and what
    RedisCheckpointer would refuse is refused here too."""

    def __init__(
        self, ttl: float | None = None, keep_last: int | None = None, types: Iterable[type] = (), *, serde: Any = None
    ) -> None:
        check_keep_last(keep_last)
        self._ttl = None if ttl is None else ttl_ms(ttl) / 1000
        self._keep_last = keep_last
        self.serde = _serde(types, serde)
        self._codec = _codec(self.serde)
        self._sessions: dict[str, dict[str, _Record]] = {}
        self._expires: dict[str, float] = {}
        self._lock = threading.Lock()

    def _record(self, cp: Checkpoint) -> _Record:
        dump = self._codec.dump
        state = {k: dump(v, f"state key {k!r}") for k, v in cp.state.items()}
        return _Record(
            cp.parent_id,
            dump(_header(cp), "the checkpoint"),
            state,
            dump(cp.metadata, "the checkpoint metadata"),
            enc(_order_id(cp)),
        )

    def _checkpoint(self, session_id: str, checkpoint_id: str, r: _Record) -> Checkpoint:
        load = self._load_plain
        state = {k: load(v) for k, v in r.state.items()}
        return _checkpoint(session_id, checkpoint_id, r.parent_id, load(r.header), state, load(r.metadata))

    def _load_plain(self, plain: bytes) -> Any:
        return self._codec.load_plain(plain, b"")

    def _live(self, session_id: str) -> dict[str, _Record]:
        """The session's records, newest first; an expired session is dropped first."""
        enc(session_id)  # the same InvalidInput as RedisCheckpointer for a non-str id
        if self._ttl is not None and self._expires.get(session_id, float("inf")) <= time.monotonic():
            self._sessions.pop(session_id, None)
            self._expires.pop(session_id, None)
        return self._sessions.get(session_id, {})

    async def save(self, checkpoint: Checkpoint, *, new_session: bool = False) -> None:
        if not isinstance(checkpoint, Checkpoint):
            raise _not_a_checkpoint(checkpoint)
        sid, cid = checkpoint.session_id, checkpoint.checkpoint_id
        expect = _expected_head(checkpoint, new_session)
        record = self._record(checkpoint)
        with self._lock:
            records = self._live(sid)
            head = next(iter(records), None)
            # As put.lua: our own id as the head means this very save was applied already.
            if expect is not None and head != (expect or None) and head != cid:
                raise ConflictError(
                    f"session {sid!r}: expected head {expect or None!r}, found {head!r}; nothing was written"
                )
            parent = records.get(expect) if expect else None
            if parent is not None and record.order < parent.order:  # as put.lua's 'behind'
                record = replace(record, order=enc(_order_after(dec(parent.order), checkpoint)))
            records = {**records, cid: record}
            ordered = sorted(records, key=lambda k: records[k].order, reverse=True)[: self._keep_last]
            self._sessions[sid] = {k: records[k] for k in ordered}
            if self._ttl is not None:
                self._expires[sid] = time.monotonic() + self._ttl

    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Checkpoint | None:
        with self._lock:
            records = self._live(session_id)
            cid = _checkpoint_id(checkpoint_id) or next(iter(records), None)
            record = None if cid is None else records.get(cid)
        if cid is None or record is None:
            return None
        return self._checkpoint(session_id, cid, record)

    async def list(self, session_id: str, limit: int | None = 10, *, before: str | None = None) -> list[Checkpoint]:
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInput(f"limit must be a non-negative int or None, got {limit!r}")
        before = _checkpoint_id(before, "before")
        with self._lock:
            records = self._live(session_id)
            below = None if before is None else (records[before].order if before in records else enc(before))
            chosen = [(k, r) for k, r in records.items() if below is None or r.order < below][:limit]
        return [self._checkpoint(session_id, k, r) for k, r in chosen]

    async def delete(self, session_id: str, checkpoint_id: str | None = None) -> None:
        with self._lock:
            records = self._live(session_id)
            cid = _checkpoint_id(checkpoint_id)
            kept = {} if cid is None else {k: r for k, r in records.items() if k != cid}
            if kept:
                self._sessions[session_id] = kept
            else:
                self._sessions.pop(session_id, None)
                self._expires.pop(session_id, None)

    async def list_sessions(self) -> builtins.list[str]:
        with self._lock:
            return sorted((s for s in tuple(self._sessions) if self._live(s)), key=enc)

    async def clear_all(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._expires.clear()
