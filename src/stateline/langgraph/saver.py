"""The LangGraph savers: one class; sync/async and retention are parameters, not copies.

Every method is one line over the engine: it builds a plan and hands it to the sync or
the async runner. ``ShallowRedisSaver`` is ``keep_last=1``; ``AsyncRedisSaver`` differs
only in which client it is usually given.
"""

from __future__ import annotations

import builtins  # `builtins.list` in classes whose `list` method hides the type
import random
from collections.abc import AsyncIterator, Awaitable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    SerializerProtocol,
)
from langgraph.checkpoint.serde.base import maybe_add_typed_methods
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from .. import runner, survey
from ..codec import FINGERPRINT_PYDANTIC, MAX_VALUE_BYTES, ValueCodec
from ..compression import Compression, compression_of
from ..connection import Connection
from ..crypto import Encryption
from ..engine import Engine
from ..errors import InvalidInput
from ..plan import Plan
from ..records import ThreadStats, ttl_ms
from . import _convert as cv
from . import _safety
from ._safety import allowed_names, safe_serde

_RANDOM_NAMES = (
    "stateline: with an EncryptedSerializer and no digest_key, list items get random names (a digest of "
    "the plaintext would let anyone who reads the server test guesses of a message), so a message is "
    "stored again by each process that writes it: pass digest_key=<16+ secret bytes> to store it once, "
    "or use encryption=stateline.Encryption(...), which keys the digests itself"
)

__all__ = ["RedisSaver", "AsyncRedisSaver", "ShallowRedisSaver", "AsyncShallowRedisSaver"]


def _ttl_ms(ttl: float | Mapping[str, Any] | None) -> tuple[int, bool]:
    """``ttl`` in seconds, or langgraph-checkpoint-redis' dict (``default_ttl`` in minutes)."""
    if isinstance(ttl, Mapping):
        minutes = ttl.get("default_ttl")
        seconds = float(minutes) * 60 if minutes else None  # 0 or None: no TTL, as the peer
        return ttl_ms(seconds), bool(ttl.get("refresh_on_read"))
    return ttl_ms(ttl), False


def _prefix(prefix: str | None, checkpoint_prefix: Any, checkpoint_write_prefix: Any) -> str:
    """stateline's one key prefix, from its own ``prefix`` or langgraph-checkpoint-redis'
    ``checkpoint_prefix`` ("app" is ``prefix="app:"``). A thread's writes are kept in the
    thread's own keys, so ``checkpoint_write_prefix`` names no key of its own."""
    for name, value in (("checkpoint_prefix", checkpoint_prefix), ("checkpoint_write_prefix", checkpoint_write_prefix)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidInput(f"{name} must be a non-empty str, got {value!r}")
    if checkpoint_prefix is None:
        return "stateline:" if prefix is None else prefix
    if prefix is not None:
        raise InvalidInput(
            f"pass prefix= or checkpoint_prefix=, not both (checkpoint_prefix={checkpoint_prefix!r} "
            f"is prefix={checkpoint_prefix + ':'!r})"
        )
    return checkpoint_prefix + ":"


def _config(thread_id: str, ns: str, checkpoint_id: str | None) -> RunnableConfig:
    ids = {"thread_id": _one_id(thread_id, "thread_id"), "checkpoint_ns": ns}
    return {"configurable": ids if checkpoint_id is None else {**ids, "checkpoint_id": checkpoint_id}}


class _Done:
    """An awaitable that has finished already: the async savers' ``setup()`` may be awaited
    (langgraph-checkpoint-redis' is a coroutine) or called and ignored."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, None]:
        return
        yield  # (a generator that finishes at once)


class _Settings(TypedDict):
    """The Engine's settings, kept to build it again when the serde changes."""

    prefix: str
    keep_last: int | None
    ttl_ms: int
    refresh_on_read: bool
    durability: str
    durability_timeout_ms: int


_one_id = cv.one_id  # (the id rule lives with the other conversions)
_many_ids = cv.many_ids


class RedisSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpoint saver storing full history in Redis or Valkey.

    ``RedisSaver(url_or_client=None, *, prefix="stateline:", ttl=None, refresh_on_read=False,
    keep_last=None, serde=None, allowed_types=(), unsafe_allow_any_type=False, data_dir=None,
    durability="ack", max_value_bytes=256 MiB)``
    (``redis_url=``, ``redis_client=``, ``connection_args=``, ``checkpoint_prefix=`` and
    ``checkpoint_write_prefix=`` are accepted too, as in langgraph-checkpoint-redis:
    ``checkpoint_prefix="app"`` is ``prefix="app:"``; writes live in their thread's keys, so
    ``checkpoint_write_prefix`` changes no key). With no URL or client
    it uses the embedded Valkey server in ``data_dir`` (default ``./.stateline``).
    ``durability``: "ack" (the primary has it), "aof" (fsynced to its append-only file,
    WAITAOF), "replica" (a replica has it, WAIT) or "aof+replica"; a write the server
    cannot confirm in ``durability_timeout_ms`` raises ``stateline.DurabilityError``. Both the sync and
    the async methods work on every saver; each kind of client is made when first needed.

    Safe by default: stored bytes never make a reader import or call what they name. The
    serde (LangGraph's ``JsonPlusSerializer`` unless ``serde=`` is given, also inside an
    ``EncryptedSerializer``) is strict whatever ``LANGGRAPH_STRICT_MSGPACK`` says: it
    rebuilds LangGraph's own types (LangChain messages among them), the types a compiled
    graph allows (``with_allowlist``) and ``allowed_types`` (classes or ``(module, name)``);
    any other type loads as its plain data, with LangGraph's warning.
    ``unsafe_allow_any_type=True`` loads every type (it warns once per process). A serde
    that loads pickle is refused.

    Guarantees: ``put``, ``put_writes`` and ``get_tuple`` are one round trip and atomic;
    writes may arrive before their checkpoint; ``ttl`` (seconds) expires whole threads.
    Raises ``stateline.InvalidInput`` for malformed configs and ids,
    ``stateline.SerializationError`` for values the serde cannot encode (nothing is
    written), ``stateline.ServerError`` and subclasses when the server fails.
    """

    default_keep_last: int | None = None

    def __init__(
        self,
        url_or_client: Any = None,
        *,
        prefix: str | None = None,
        ttl: float | Mapping[str, Any] | None = None,
        refresh_on_read: bool = False,
        keep_last: int | None = None,
        serde: SerializerProtocol | None = None,
        allowed_types: Iterable[Any] = (),
        unsafe_allow_any_type: bool = False,
        compression: bool | Compression = True,
        encryption: Encryption | None = None,
        digest_key: bytes | None = None,
        data_dir: str | None = None,
        durability: str = "ack",
        durability_timeout_ms: int = 1000,
        max_value_bytes: int = MAX_VALUE_BYTES,
        client: Any = None,
        aclient: Any = None,
        redis_url: str | None = None,
        redis_client: Any = None,
        connection_args: Mapping[str, Any] | None = None,
        checkpoint_prefix: str | None = None,
        checkpoint_write_prefix: str | None = None,
        **redis_options: Any,
    ) -> None:
        # redis_url / redis_client / connection_args / checkpoint_prefix /
        # checkpoint_write_prefix: the names langgraph-checkpoint-redis uses.
        prefix = _prefix(prefix, checkpoint_prefix, checkpoint_write_prefix)
        url_or_client = next((x for x in (url_or_client, redis_url, redis_client) if x is not None), None)
        redis_options = {**(connection_args or {}), **redis_options}
        url = None
        if isinstance(url_or_client, str):
            url = url_or_client
        elif url_or_client is not None and hasattr(url_or_client, "__aenter__") and client is None:
            aclient = aclient or url_or_client
        elif url_or_client is not None:
            client = url_or_client
        self._conn = Connection(url, client=client, aclient=aclient, data_dir=data_dir, **redis_options)
        ttl_ms, refresh = _ttl_ms(ttl)
        self._settings: _Settings = {
            "prefix": prefix,
            "keep_last": keep_last if keep_last is not None else self.default_keep_last,
            "ttl_ms": ttl_ms,
            "refresh_on_read": refresh or refresh_on_read,
            "durability": durability,
            "durability_timeout_ms": durability_timeout_ms,
        }
        if not isinstance(max_value_bytes, int) or max_value_bytes < 1:
            raise InvalidInput(f"max_value_bytes must be a positive int, got {max_value_bytes!r}")
        self._max_value_bytes = max_value_bytes
        self._allowed_types = allowed_names(allowed_types)
        self._unsafe = bool(unsafe_allow_any_type)
        self._compression = compression_of(compression)
        if encryption is not None and not isinstance(encryption, Encryption):
            raise InvalidInput(f"encryption must be a stateline.Encryption, got {type(encryption).__name__}")
        self._encryption = encryption
        if digest_key is not None and not (isinstance(digest_key, bytes) and 16 <= len(digest_key) <= 64):
            raise InvalidInput("digest_key must be 16 to 64 bytes")
        self._digest_key = digest_key
        Engine(ValueCodec(self._serde), **self._settings)  # validate the settings now
        super().__init__(serde=serde)

    # The engine holds the codec: rebuild it when LangGraph swaps the serde (with_allowlist).
    @property
    def serde(self) -> SerializerProtocol:  # type: ignore[override]
        return self._serde

    @serde.setter
    def serde(self, value: SerializerProtocol) -> None:
        self._serde = maybe_add_typed_methods(safe_serde(value, self._allowed_types, self._unsafe))
        # JsonPlusSerializer stores a pydantic model as its model_dump(): a function of its
        # fields, so list items (messages) can be recognised by them (elements.ItemCache).
        # An EncryptedSerializer's cipher seals values below its serde (after compression),
        # so items are still named by (a keyed digest of) their plaintext.
        inner, cipher = (
            (self._serde.serde, self._serde.cipher)
            if isinstance(self._serde, EncryptedSerializer)
            else (self._serde, None)
        )
        fingerprint = FINGERPRINT_PYDANTIC if type(inner) is JsonPlusSerializer else None
        codec = ValueCodec(
            inner,
            self._max_value_bytes,
            fingerprint=fingerprint,
            compression=self._compression,
            encryption=self._encryption,
            serde_cipher=cipher,
            digest_key=self._digest_key,
        )
        if cipher is not None and self._digest_key is None:
            _safety.warn_once("random-names", _RANDOM_NAMES)
        self._engine = Engine(codec, **self._settings)

    _serde: SerializerProtocol = BaseCheckpointSaver.serde  # the class default
    _max_value_bytes: int = MAX_VALUE_BYTES
    _allowed_types: frozenset[tuple[str, ...]] = frozenset()
    _unsafe: bool = False
    _compression: Compression | None = None
    _encryption: Encryption | None = None
    _digest_key: bytes | None = None

    @classmethod
    def from_url(cls, url: str | None = None, **kwargs: Any) -> RedisSaver:
        """A saver on ``url`` (None = the embedded server); also a (async) context manager."""
        return cls(url, **kwargs)

    from_conn_string = from_url

    @property
    def engine(self) -> Engine:
        return self._engine

    def _run(self, plan: Plan[Any]) -> Any:
        return runner.run(self._conn.sync, plan)

    def _arun(self, plan: Plan[Any]) -> Awaitable[Any]:
        # (not itself a coroutine: one frame less on every awaited call; called from one,
        # so the event loop _conn.aio needs is running)
        return runner.arun(self._conn.aio, plan)

    # -- lifecycle ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Nothing to create: no indexes or modules are needed. Kept for drop-in use."""

    async def asetup(self) -> None:
        """Nothing to create (see ``setup``)."""

    def create_indexes(self) -> None:
        """Nothing to create (see ``setup``); langgraph-checkpoint-redis' name."""

    def set_client_info(self) -> None:
        """Nothing to set; langgraph-checkpoint-redis' name, kept for drop-in use."""

    async def aset_client_info(self) -> None:
        """Nothing to set (see ``set_client_info``)."""

    def close(self) -> None:
        self._conn.close()

    async def aclose(self) -> None:
        await self._conn.aclose()

    def __enter__(self) -> RedisSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plans -------------------------------------------------------------------------------
    # Each is named after the public method it serves, plus a leading underscore: telemetry
    # names an operation's span after the plan's generator function.

    def _put(self, config, checkpoint, metadata, new_versions) -> Plan[RunnableConfig]:  # type: ignore[no-untyped-def]
        snap = cv.snapshot(config, checkpoint, metadata, new_versions)
        yield from self._engine.put(snap)
        return cv.config_of(snap.thread_id, snap.ns, snap.checkpoint_id)

    def _put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Plan[None]:
        thread_id, ns, cid = cv.ids(config)
        if cid is None:
            raise InvalidInput(f"put_writes needs config['configurable']['checkpoint_id'], got {config!r}")
        batch = cv.writes(writes, task_id, task_path)
        return self._engine.put_writes(thread_id, ns or "", cid, batch, cv.SPECIAL_CHANNELS)

    def _get_tuple(self, config: RunnableConfig) -> Plan[CheckpointTuple | None]:
        thread_id, ns, cid = cv.ids(config)
        stored = yield from self._engine.get(thread_id, ns or "", cid)
        return None if stored is None else cv.checkpoint_tuple(stored)

    def _list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Plan[None]:
        before_id = cv.before_id(before)
        if config is None:  # every thread, a page of the discovery index at a time
            select, remaining = cv.matcher(filter, None), limit
            bound: str | None = "-"
            while bound is not None:
                threads, bound = yield from self._engine.thread_page(bound)
                for thread_id in threads:
                    n = yield from self._engine.list(thread_id, None, before=before_id, select=select, limit=remaining)
                    if remaining is not None:
                        remaining -= n
                        if remaining <= 0:
                            return
            return
        thread_id, ns, cid = cv.ids(config)
        yield from self._engine.list(thread_id, ns, before=before_id, select=cv.matcher(filter, cid), limit=limit)

    def _get_delta_channel_history(
        self, config: RunnableConfig, channels: Sequence[str]
    ) -> Plan[Mapping[str, DeltaChannelHistory]]:
        if not channels:
            return {}
        thread_id, ns, cid = cv.ids(config)
        found = yield from self._engine.delta_history(thread_id, ns or "", cid, channels)
        out: dict[str, DeltaChannelHistory] = {}
        for ch, (writes, seed, seeded) in found.items():
            entry: DeltaChannelHistory = {"writes": [(w.task_id, w.channel, w.value) for w in writes]}
            if seeded:
                entry["seed"] = cv.unwrapped(seed)
            out[ch] = entry
        return out

    def _delete_thread(self, thread_id: str) -> Plan[None]:
        yield from self._engine.delete_thread(_one_id(thread_id, "thread_id"))

    def _prune(self, thread_ids: Sequence[str], strategy: str, keep_last: int | None) -> Plan[None]:
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInput(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        if keep_last is None:  # langgraph-checkpoint-redis' default: the strategy decides
            keep_last = 0 if strategy == "delete" else 1
        if type(keep_last) is not int or keep_last < 0:
            raise InvalidInput(f"keep_last must be an int >= 0 (0 deletes the threads), got {keep_last!r}")
        for thread_id in _many_ids(thread_ids, "thread_ids"):  # all checked before any is touched
            if strategy == "delete" or keep_last == 0:
                yield from self._engine.delete_thread(thread_id)
            else:
                yield from self._engine.prune(thread_id, keep_last)

    def _delete_for_runs(self, run_ids: Sequence[str]) -> Plan[None]:
        yield from self._engine.delete_runs(_many_ids(run_ids, "run_ids"))

    def _copy_thread(self, source: str, target: str) -> Plan[None]:
        yield from self._engine.copy_thread(_one_id(source, "source_thread_id"), _one_id(target, "target_thread_id"))

    # -- BaseCheckpointSaver, sync -------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        for stored in runner.iterate(self._conn.sync, self._list(config, filter, before, limit)):
            yield cv.checkpoint_tuple(stored)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self._put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._run(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self._delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._copy_thread(source_thread_id, target_thread_id))

    def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = 1,
        max_results: int | None = None,
    ) -> None:
        """``keep_latest`` keeps the ``keep_last`` newest checkpoints per namespace (and the
        ancestors DeltaChannel values need); ``delete`` (or ``keep_last=0``) removes the
        threads. ``keep_last=None`` is 1, or 0 with ``delete``. ``max_results`` (of
        langgraph-checkpoint-redis, a cap on its search) changes nothing: every checkpoint
        of the threads is considered, a page at a time."""
        self._run(self._prune(thread_ids, strategy, keep_last))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self._run(self._get_delta_channel_history(config, channels))

    # -- BaseCheckpointSaver, async ------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(self._get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for stored in runner.aiterate(self._conn.aio, self._list(config, filter, before, limit)):
            yield cv.checkpoint_tuple(stored)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._arun(self._put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self._arun(self._put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(self._delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(self._delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(self._copy_thread(source_thread_id, target_thread_id))

    async def aprune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = 1,
        max_results: int | None = None,
    ) -> None:
        await self._arun(self._prune(thread_ids, strategy, keep_last))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self._arun(self._get_delta_channel_history(config, channels))

    # -- langgraph-checkpoint-redis' extra reads ------------------------------------------

    def get_channel_values(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        checkpoint_id: str | None = None,
        channel_versions: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The channel values of a checkpoint (the newest with ``checkpoint_id=None``), {} if
        there is none. ``channel_versions`` is accepted and unused, as in the peer."""
        found = self.get_tuple(_config(thread_id, checkpoint_ns, checkpoint_id))
        return {} if found is None else dict(found.checkpoint["channel_values"])

    async def aget_channel_values(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        checkpoint_id: str | None = None,
        channel_versions: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        found = await self.aget_tuple(_config(thread_id, checkpoint_ns, checkpoint_id))
        return {} if found is None else dict(found.checkpoint["channel_values"])

    # -- beyond BaseCheckpointSaver: what operators need ----------------------------------

    def thread_stats(
        self, thread_ids: Sequence[str] | None = None, *, memory: bool = True
    ) -> builtins.list[ThreadStats]:
        """Checkpoint and write counts, TTL and (with ``memory``) bytes in Redis of each
        thread (default: every thread); a thread that does not exist has ``exists`` False.
        One round trip per 100 threads; bytes are the server's sampled MEMORY USAGE."""
        ids = None if thread_ids is None else _many_ids(thread_ids, "thread_ids")
        return self._run(survey.thread_stats(self._engine, ids, memory=memory))

    def thread_page(
        self, cursor: str | None = None, *, limit: int = 100, match: str | None = None
    ) -> tuple[builtins.list[str], str | None]:
        """Up to ``limit`` thread ids (containing ``match``, if given) from ``cursor`` (None:
        the first page), in the discovery index's order (not sorted), and the cursor of the
        next page (None after the last). Bounded work: a search that finds few threads
        returns early, with a cursor to go on from."""
        return self._run(survey.thread_page(self._engine, cursor, limit, match))

    def thread_heads(self, thread_ids: Sequence[str]) -> builtins.list[CheckpointTuple | None]:
        """The newest root checkpoint of each thread (None where there is none), with its
        metadata and header but no channel values or pending writes. One round trip per
        100 threads."""
        found = self._run(survey.heads(self._engine, _many_ids(thread_ids, "thread_ids")))
        return [None if s is None else cv.checkpoint_tuple(s) for s in found]

    def checkpoint_counts(self, thread_ids: Sequence[str]) -> builtins.list[dict[str, int]]:
        """Per thread, how many checkpoints each namespace holds ({} for no thread)."""
        return self._run(survey.checkpoint_counts(self._engine, _many_ids(thread_ids, "thread_ids")))

    def list_records(
        self, config: RunnableConfig, *, before: RunnableConfig | None = None, limit: int | None = None
    ) -> Iterator[CheckpointTuple]:
        """Like ``list`` (every namespace unless the config names one), newest first, but
        without channel values or pending writes: ids, parents, metadata. Cheap on long
        threads (a page of 200 records per round trip)."""
        thread_id, ns, _cid = cv.ids(config)
        plan = survey.records(self._engine, thread_id, ns, before=cv.before_id(before), limit=limit)
        for stored in runner.iterate(self._conn.sync, plan):
            yield cv.checkpoint_tuple(stored)

    def copy_thread_to(self, source_thread_id: str, target: RedisSaver, target_thread_id: str) -> int:
        """Copies a thread to another saver (another prefix or server): a migration."""
        source = _one_id(source_thread_id, "source_thread_id")
        dumped = self._run(self._engine.dump(source))
        restore = target._engine.restore(
            _one_id(target_thread_id, "target_thread_id"), dumped, source, self._engine.codec
        )
        return target._run(restore)

    def get_next_version(self, current: str | int | float | None, channel: None = None) -> str:
        """Zero-padded counter plus a random suffix: increasing, and unique per branch, so a
        fork never aliases another branch's stored values."""
        if current is None:
            n = 0
        elif isinstance(current, (int, float)):
            n = int(current)
        else:
            n = int(str(current).split(".", 1)[0])
        return f"{n + 1:010d}.{random.getrandbits(32):08x}"


class AsyncRedisSaver(RedisSaver):
    """``RedisSaver`` for asyncio code: pass it a ``redis.asyncio`` client or a URL."""

    def setup(self) -> Awaitable[None]:  # type: ignore[override]
        """Nothing to create; awaitable, as langgraph-checkpoint-redis' async ``setup``."""
        return _Done()


class ShallowRedisSaver(RedisSaver):
    """Keeps only the newest checkpoint of each thread and namespace (``keep_last=1``)."""

    default_keep_last = 1


class AsyncShallowRedisSaver(AsyncRedisSaver):
    """``ShallowRedisSaver`` for asyncio code."""

    default_keep_last = 1
