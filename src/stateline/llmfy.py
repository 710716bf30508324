"""llmfy's checkpointer API on stateline: a program written for llmfy's ``RedisCheckpointer``
changes its import line and nothing else.

    from llmfy.flow_engine.checkpointer import RedisCheckpointer   # before
    from stateline.llmfy import RedisCheckpointer                   # after

Names, signatures and defaults are llmfy's (``redis_url="redis://localhost:6379/0"``,
``prefix="llmfy_checkpoint:"``, ``ttl=None``, and 0.11's ``compress``, ``encryption_key``,
``max_state_bytes``, ``max_checkpoints_per_session``), and so are ``Checkpoint`` and
``CheckpointMetadata`` in both of llmfy's forms: 0.10's ``(checkpoint_id, session_id,
timestamp, node_name, step)`` and 0.11's ``(checkpoint_id, session_id, run_id, created_at,
node, prev_node, step, updated_fields, attempt, dispatch_id)``, with their ``to_dict`` and
``from_dict``. llmfy's own ``FlowEngine`` (0.10 and 0.11) runs on it unchanged.

Underneath is stateline's engine, so a save is one atomic round trip, a session's
checkpoints are isolated from every other session's (a checkpoint id is looked up in its
own session only), ``ttl`` slides over the whole session, states round-trip with their exact
types (dataclasses and pydantic models once allowed with ``types=``), and a session's order
survives clock skew: after ``load(session)``, this checkpointer's saves of that session are
ordered after the checkpoint it loaded and after each other, whatever the hosts' clocks say.
Where this differs from llmfy, and why: docs/porting-from-llmfy.md.
"""

from __future__ import annotations

import base64
import builtins  # `builtins.list` in classes whose `list` method hides the type
import inspect
import json
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import checkpointer as native
from . import runner
from .crypto import Encryption
from .errors import InvalidInput, SerializationError
from .plan import Plan

__all__ = [
    "REDIS_AVAILABLE",
    "DEFAULT_MAX_STATE_BYTES",
    "CheckpointMetadata",
    "Checkpoint",
    "BaseCheckpointer",
    "RedisCheckpointer",
    "CheckpointPayloadTooLargeException",
]

REDIS_AVAILABLE = True  # llmfy's flag: redis-py is one of stateline's own dependencies
DEFAULT_MAX_STATE_BYTES = 25 * 1024 * 1024  # llmfy 0.11's default, 25 MiB

_V10 = ("checkpoint_id", "session_id", "timestamp", "node_name", "step")
_V11 = ("checkpoint_id", "session_id", "run_id", "created_at", "node", "prev_node", "step",
        "updated_fields", "attempt", "dispatch_id")  # fmt: skip
_SIGNATURES = {
    form: inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    for form, names in (("0.10", _V10), ("0.11", _V11))
}


class CheckpointPayloadTooLargeException(SerializationError):
    """A state over ``max_state_bytes``: nothing was written (llmfy 0.11's exception)."""

    def __init__(self, message: str, *, session_id: str, size_bytes: int, max_bytes: int) -> None:
        super().__init__(message)
        self.session_id, self.size_bytes, self.max_bytes = session_id, size_bytes, max_bytes


# -- the checkpoint, in both of llmfy's forms ------------------------------------------------


def _form_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """0.10 when the call names 0.10's fields or passes a datetime third (0.10's timestamp
    where 0.11 has run_id); otherwise 0.11."""
    if "timestamp" in kwargs or "node_name" in kwargs or (len(args) > 2 and isinstance(args[2], datetime)):
        return "0.10"
    return "0.11"


@dataclass(init=False)
class CheckpointMetadata:
    """llmfy's checkpoint metadata, built in its 0.10 or its 0.11 form, positional or by
    keyword (every field required, as llmfy's dataclasses have no defaults). Both forms
    have every field: ``timestamp`` is ``created_at`` and ``node_name`` is ``node``; the
    fields 0.10 lacks are "" (``run_id``, ``prev_node``), [] and None. ``to_dict`` writes the
    form the metadata was built in."""

    checkpoint_id: str
    session_id: str
    run_id: str
    created_at: datetime
    node: str
    prev_node: str
    step: int
    updated_fields: list[str]
    attempt: int | None
    dispatch_id: str | None
    form: str = field(default="0.11", repr=False, compare=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        form = _form_of(args, kwargs)
        given = _SIGNATURES[form].bind(*args, **kwargs).arguments  # TypeError as a dataclass
        if form == "0.10":
            given = {"checkpoint_id": given["checkpoint_id"], "session_id": given["session_id"], "run_id": "",
                     "created_at": given["timestamp"], "node": given["node_name"], "prev_node": "",
                     "step": given["step"], "updated_fields": [], "attempt": None, "dispatch_id": None}  # fmt: skip
        for name, value in given.items():
            setattr(self, name, value)
        self.form = form

    @property
    def timestamp(self) -> datetime:
        """0.10's name of ``created_at``."""
        return self.created_at

    @timestamp.setter
    def timestamp(self, value: datetime) -> None:
        self.created_at = value

    @property
    def node_name(self) -> str:
        """0.10's name of ``node``."""
        return self.node

    @node_name.setter
    def node_name(self, value: str) -> None:
        self.node = value


def _legacy_default(obj: Any) -> Any:
    # llmfy 0.10's JSON of an object: its attributes, under its class and module names.
    if hasattr(obj, "__dict__"):
        return {"__type__": type(obj).__name__, "__module__": type(obj).__module__, "data": obj.__dict__}
    raise TypeError(f"Object of type {type(obj)} is not JSON serializable")


@dataclass
class Checkpoint:
    """llmfy's checkpoint: ``metadata`` and the whole ``state``."""

    metadata: CheckpointMetadata
    state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """llmfy's dict of the metadata's form: 0.11 keeps ``state`` as it is; 0.10 writes it
        as a JSON string (objects as their attributes), as llmfy 0.10 did."""
        md = self.metadata
        if getattr(md, "form", "0.11") == "0.10":
            return {"checkpoint_id": md.checkpoint_id, "session_id": md.session_id,
                    "timestamp": md.created_at.isoformat(), "node_name": md.node, "step": md.step,
                    "state": json.dumps(self.state, default=_legacy_default)}  # fmt: skip
        return {"checkpoint_id": md.checkpoint_id, "session_id": md.session_id, "run_id": md.run_id,
                "created_at": md.created_at.isoformat(), "node": md.node, "prev_node": md.prev_node,
                "step": md.step, "updated_fields": md.updated_fields, "attempt": md.attempt,
                "dispatch_id": md.dispatch_id, "state": self.state}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """The inverse of ``to_dict``, of either form (0.10's has ``timestamp``). A 0.10
        state's objects stay dicts (``{"__type__", "__module__", "data"}``): stateline never
        imports a class a stored value names."""
        if "timestamp" in data:
            state = data["state"]
            md = CheckpointMetadata(data["checkpoint_id"], data["session_id"], datetime.fromisoformat(data["timestamp"]),
                                    data["node_name"], data["step"])  # fmt: skip
            return cls(metadata=md, state=json.loads(state) if isinstance(state, str) else state)
        md = CheckpointMetadata(**{k: data[k] for k in _V11 if k != "created_at"},
                                created_at=datetime.fromisoformat(data["created_at"]))  # fmt: skip
        return cls(metadata=md, state=data["state"])


# Where a llmfy checkpoint's fields live in a stateline checkpoint: the metadata dict holds
# the form, a created_at that is not in UTC (naive, or another offset) to give it back, and
# the run id again (a filtered list decides on the metadata alone: list_by_run).
_FORM, _AS_GIVEN, _RUN = "llmfy", "llmfy_created_at", "llmfy_run_id"


def _to_native(cp: Any) -> native.Checkpoint:
    """A stateline Checkpoint from a llmfy checkpoint (this module's, or llmfy's own: the
    FlowEngine saves its own class), read by attribute in either form."""
    md = getattr(cp, "metadata", None)
    if md is None or not isinstance(getattr(cp, "state", None), dict):
        raise InvalidInput(f"save() takes a llmfy Checkpoint (metadata, state), got {type(cp).__name__}")
    legacy = not hasattr(md, "created_at")
    created = md.timestamp if legacy else md.created_at
    if not isinstance(created, datetime):
        raise InvalidInput(f"checkpoint {md.checkpoint_id!r}: created_at must be a datetime, got {created!r}")
    # A naive time is local time, as llmfy's timestamp() reads it.
    aware = created if created.utcoffset() is not None else created.astimezone()
    meta: dict[str, Any] = {_FORM: "0.10" if legacy or getattr(md, "form", "") == "0.10" else "0.11"}
    if created.tzinfo is not timezone.utc:
        meta[_AS_GIVEN] = created
    if getattr(md, "run_id", None):
        meta[_RUN] = md.run_id
    return native.Checkpoint(
        session_id=md.session_id, checkpoint_id=md.checkpoint_id, state=cp.state, metadata=meta,
        created_at=aware, run_id=getattr(md, "run_id", None) or None, node=md.node_name if legacy else md.node,
        prev_node=getattr(md, "prev_node", None) or None, step=md.step,
        updated_fields=list(getattr(md, "updated_fields", None) or []),
        attempt=getattr(md, "attempt", None), dispatch_id=getattr(md, "dispatch_id", None),
    )  # fmt: skip


def _from_native(cp: native.Checkpoint) -> Checkpoint:
    created = cp.metadata.get(_AS_GIVEN, cp.created_at)
    if cp.metadata.get(_FORM) == "0.10":
        md = CheckpointMetadata(cp.checkpoint_id, cp.session_id, created, cp.node or "", cp.step)
    else:
        md = CheckpointMetadata(cp.checkpoint_id, cp.session_id, cp.run_id or "", created, cp.node or "",
                                cp.prev_node or "", cp.step, list(cp.updated_fields), cp.attempt, cp.dispatch_id)  # fmt: skip
    return Checkpoint(metadata=md, state=cp.state)


# -- the protocol -------------------------------------------------------------------------


class BaseCheckpointer(ABC):
    """llmfy's checkpointer protocol: the five methods are the abstract ones, so a backend
    written for llmfy subclasses this unchanged. ``requires_serialization``: the FlowEngine
    turns registered objects into JSON-safe data before ``save`` (True, as llmfy's default)."""

    requires_serialization: bool = True

    @abstractmethod
    async def save(self, checkpoint: Checkpoint) -> None: ...

    @abstractmethod
    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Checkpoint | None: ...

    @abstractmethod
    async def list(self, session_id: str, limit: int = 10) -> builtins.list[Checkpoint]: ...

    @abstractmethod
    async def delete(self, session_id: str, checkpoint_id: str | None = None) -> None: ...

    @abstractmethod
    async def clear_all(self) -> None: ...

    async def list_sessions(self) -> builtins.list[str]:
        """The ids of the sessions holding checkpoints (stateline's; optional elsewhere)."""
        raise NotImplementedError(f"{type(self).__name__} does not list sessions")

    async def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Releases what the checkpointer opened."""

    async def __aenter__(self) -> BaseCheckpointer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- encryption ----------------------------------------------------------------------------


def _encryption(key: bytes | str) -> Encryption:
    """stateline's AES-256-GCM keyed by the 32 bytes of llmfy's Fernet key."""
    try:
        raw = base64.urlsafe_b64decode(key.encode() if isinstance(key, str) else bytes(key))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("encryption_key is not a Fernet key (Fernet.generate_key() makes one)") from exc
    if len(raw) != 32:
        raise InvalidInput("encryption_key is not a Fernet key (Fernet.generate_key() makes one)")
    return Encryption({"llmfy": raw})


# -- Redis --------------------------------------------------------------------------------


class _Heads:
    """Per session, the order id this checkpointer last loaded as the newest or saved after
    it: later saves are ordered after it. Bounded: the least recently used sessions go."""

    def __init__(self, most: int = 10_000) -> None:
        self._last: OrderedDict[str, str] = OrderedDict()
        self._most = most
        self._lock = threading.Lock()

    def get(self, session_id: str) -> str | None:
        with self._lock:
            return self._last.get(session_id)

    def set(self, session_id: str, order: str | None) -> None:
        with self._lock:
            self._last.pop(session_id, None)
            if order is not None:
                self._last[session_id] = order
                while len(self._last) > self._most:
                    self._last.popitem(last=False)


def _ttl(ttl: float | None) -> float | None:
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0):
        raise InvalidInput(f"ttl must be a number of seconds >= 0 or None (0 and None: no expiry), got {ttl!r}")
    return ttl or None  # llmfy: `if self.ttl:`, so 0 is no expiry


def _state_size(state: dict[str, Any]) -> int:
    """The state's size as llmfy measures it: its JSON (an object counted by its attributes)."""
    try:
        return len(json.dumps(state, default=_legacy_default).encode())
    except (TypeError, ValueError):  # keys or values JSON cannot hold: their repr counts
        return len(repr(state).encode())


class RedisCheckpointer(BaseCheckpointer):
    """llmfy's ``RedisCheckpointer`` on stateline (see the module docstring).

    ``RedisCheckpointer(redis_url="redis://localhost:6379/0", prefix="llmfy_checkpoint:",
    ttl=None, compress=False, encryption_key=None, max_state_bytes=25 MiB,
    max_checkpoints_per_session=None, *, client=None, types=(), **redis_options)``.
    ``redis_url``: any URL stateline takes (Cluster, Sentinel, TLS, unix) or a redis-py
    client; ``client=`` a client to use instead. ``ttl``: seconds, sliding over the whole
    session (0 or None: no expiry). ``types``: dataclasses and pydantic models a state may
    hold (llmfy 0.11's FlowEngine turns its registered types into JSON before ``save``).
    ``max_checkpoints_per_session`` keeps the newest N of each session. ``compress``:
    stateline compresses values worth it (zstd) either way. ``encryption_key``: a Fernet
    key, whose 32 bytes key stateline's AES-256-GCM encryption (``stateline.Encryption``).
    """

    def __init__(
        self,
        redis_url: Any = "redis://localhost:6379/0",
        prefix: str = "llmfy_checkpoint:",
        ttl: int | None = None,
        compress: bool = False,
        encryption_key: bytes | str | None = None,
        max_state_bytes: int | None = DEFAULT_MAX_STATE_BYTES,
        max_checkpoints_per_session: int | None = None,
        *,
        client: Any = None,
        types: Iterable[type] = (),
        **redis_options: Any,
    ) -> None:
        if redis_url is None and client is None:
            raise InvalidInput(
                "redis_url is None: pass a URL (llmfy's default is redis://localhost:6379/0); "
                "stateline.RedisCheckpointer() is the one with an embedded server"
            )
        if max_state_bytes is not None and (type(max_state_bytes) is not int or max_state_bytes < 1):
            raise InvalidInput(f"max_state_bytes must be a positive int or None, got {max_state_bytes!r}")
        self.redis_url = redis_url
        self.prefix = prefix
        self.ttl = ttl
        self.max_state_bytes = max_state_bytes
        self.max_checkpoints_per_session = max_checkpoints_per_session
        # stateline compresses every value worth it (zstd) whatever `compress` says.
        self._store = native.RedisCheckpointer(
            None if client is not None else redis_url, prefix, _ttl(ttl), max_checkpoints_per_session, client, types,
            encryption=_encryption(encryption_key) if encryption_key else None, **redis_options,
        )  # fmt: skip
        self._heads = _Heads()

    @property
    def engine(self) -> Any:
        return self._store.engine

    def _save(self, checkpoint: Any) -> Plan[None]:
        cp = _to_native(checkpoint)
        if self.max_state_bytes is not None:
            size = _state_size(cp.state)
            if size > self.max_state_bytes:
                raise CheckpointPayloadTooLargeException(
                    f"Checkpoint state for session '{cp.session_id}' is {size} bytes, exceeding the configured "
                    f"limit of {self.max_state_bytes} bytes.",
                    session_id=cp.session_id, size_bytes=size, max_bytes=self.max_state_bytes,
                )  # fmt: skip
        snap, _ = self._store._snapshot(cp, False)
        floor = self._heads.get(cp.session_id)
        if floor is not None and snap.checkpoint_id <= floor:  # our clock is behind what we saw
            snap.checkpoint_id = native._order_after(floor, cp)
        yield from self._store.engine.put(snap)
        if floor is not None:
            self._heads.set(cp.session_id, snap.checkpoint_id)

    def _load(self, session_id: str, checkpoint_id: str | None) -> Plan[Checkpoint | None]:
        if checkpoint_id is not None and (not isinstance(checkpoint_id, str) or not checkpoint_id):
            raise InvalidInput(f"checkpoint_id must be a non-empty str or None (the newest), got {checkpoint_id!r}")
        stored = yield from self._store.engine.get(session_id, "", checkpoint_id)
        if stored is None:
            return None
        if checkpoint_id is None:
            self._heads.set(session_id, stored.checkpoint_id)
        return _from_native(native._from_stored(stored))

    async def save(self, checkpoint: Checkpoint) -> None:
        """Saves ``checkpoint`` (this module's, or llmfy's own) in one atomic round trip."""
        await runner.arun(self._store._conn.aio, self._save(checkpoint))

    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Checkpoint | None:
        """The session's checkpoint ``checkpoint_id`` (None: the newest), or None."""
        return await runner.arun(self._store._conn.aio, self._load(session_id, checkpoint_id))

    async def list(self, session_id: str, limit: int = 10) -> builtins.list[Checkpoint]:
        """The session's newest ``limit`` checkpoints, newest first, in one round trip."""
        return [_from_native(cp) for cp in await self._store.list(session_id, limit)]

    async def list_by_run(self, session_id: str, run_id: str, limit: int = 100) -> builtins.list[Checkpoint]:
        """The checkpoints of one run (one invoke() or stream() call), newest first."""
        plan = self._store.engine.list(session_id, "", select=lambda s: s.metadata.get(_RUN) == run_id, limit=limit)
        found = [native._from_stored(s) async for s in runner.aiterate(self._store._conn.aio, plan)]
        return [_from_native(cp) for cp in found]

    async def delete(self, session_id: str, checkpoint_id: str | None = None) -> None:
        """Deletes that checkpoint of the session, or with None the whole session."""
        await self._store.delete(session_id, checkpoint_id)
        if checkpoint_id is None:
            self._heads.set(session_id, None)

    async def list_sessions(self) -> builtins.list[str]:
        return await self._store.list_sessions()

    async def clear_all(self) -> None:
        """Deletes every session under ``prefix`` (exactly this prefix's keys)."""
        await self._store.clear_all()
        self._heads = _Heads()

    async def close(self) -> None:
        await self._store.close()
