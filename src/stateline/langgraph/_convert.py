"""Translation between LangGraph's types and the engine's Snapshot/Stored/Write."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.types import _DeltaSnapshot  # DeltaChannel's snapshot (beta)

from ..engine import LIST_MIN_ITEMS
from ..errors import InvalidInput
from ..records import Snapshot, Stored, TaggedList, Write

SPECIAL_CHANNELS = frozenset(WRITES_IDX_MAP)


def one_id(value: Any, what: str) -> str:
    """The id rule of every saver method, LangGraph's own: a str is the id, anything else
    becomes ``str(value)`` (so ``1`` and ``"1"`` are one thread, as Pregel makes them).
    Refused with InvalidInput: None, bytes (whose str() is "b'...'", never what was meant)
    and collections (one id is expected, not several)."""
    if type(value) is str:
        return value
    if (
        value is None
        or isinstance(value, (bytes, bytearray, memoryview, Mapping))
        or (not isinstance(value, str) and isinstance(value, Iterable))
    ):
        raise InvalidInput(f"{what} must be one id (a str), got {type(value).__name__}: {value!r}")
    return str(value)


def many_ids(values: Any, what: str) -> list[str]:
    """A sequence of ids, each by ``one_id``: a bare str would be iterated character by character."""
    if isinstance(values, (str, bytes, bytearray)):
        raise InvalidInput(
            f"{what} must be a sequence of ids, got the single {type(values).__name__} {values!r}: wrap it in a list"
        )
    if isinstance(values, Mapping) or not isinstance(values, Iterable):
        raise InvalidInput(f"{what} must be a sequence of ids, got {type(values).__name__}: {values!r}")
    return [one_id(v, f"each of {what}") for v in values]


def _checkpoint_id(cid: Any, what: str) -> str | None:
    """None or "" (the newest checkpoint), else an id by ``one_id``: 0 is checkpoint "0"."""
    if cid is None or cid == "":
        return None
    return one_id(cid, what)


def ids(config: RunnableConfig) -> tuple[str, str | None, str | None]:
    """thread_id, checkpoint_ns (None when absent) and checkpoint_id of a config."""
    conf = config.get("configurable") if isinstance(config, Mapping) else None
    if not conf or conf.get("thread_id") is None:
        raise InvalidInput(f"config['configurable']['thread_id'] is required, got {config!r}")
    ns = conf.get("checkpoint_ns")
    if ns is not None and not isinstance(ns, str):
        raise InvalidInput(f"checkpoint_ns must be str, got {ns!r}")
    thread_id = one_id(conf["thread_id"], "config['configurable']['thread_id']")
    return thread_id, ns, _checkpoint_id(conf.get("checkpoint_id"), "config['configurable']['checkpoint_id']")


def before_id(before: Any) -> str | None:
    """The checkpoint id of ``list(before=...)``: a config, like LangGraph's own savers take."""
    if before is None or (isinstance(before, Mapping) and not before):
        return None
    conf = before.get("configurable") if isinstance(before, Mapping) else None
    if not isinstance(conf, Mapping):
        raise InvalidInput(
            f"before must be a config such as {{'configurable': {{'checkpoint_id': ...}}}}, got {before!r}"
        )
    return _checkpoint_id(conf.get("checkpoint_id"), "before's checkpoint_id")


def _mapping(value: Any, what: str, *, none_ok: bool = False) -> Mapping[str, Any]:
    if type(value) is dict:  # nearly always: skips the slower Mapping check
        return value
    if value is None and none_ok:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a mapping, got {type(value).__name__}: {value!r}")
    return value


def config_of(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


def snapshot(
    config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
) -> Snapshot:
    thread_id, ns, parent = ids(config)
    _mapping(checkpoint, "checkpoint")
    if not isinstance(checkpoint.get("id"), str) or not checkpoint["id"]:
        raise InvalidInput(f"checkpoint['id'] must be a non-empty str, got {checkpoint.get('id')!r}")
    md = get_checkpoint_metadata(config, _mapping(metadata, "metadata", none_ok=True))  # type: ignore[arg-type]
    values = _mapping(checkpoint.get("channel_values"), "checkpoint['channel_values']", none_ok=True)
    versions = _mapping(checkpoint.get("channel_versions"), "checkpoint['channel_versions']", none_ok=True)
    new_versions = _mapping(new_versions, "new_versions", none_ok=True)  # type: ignore[assignment]
    if new_versions:
        to_write = {ch: values[ch] for ch in new_versions if ch in values}
    else:  # a fork or a copy: the values are stored already, or must be stored now
        to_write = dict(values)
    for ch, value in to_write.items():
        if isinstance(value, _DeltaSnapshot):
            to_write[ch] = _wrapped(value)  # (replacing a key's value while iterating is safe)
    header = dict(checkpoint)  # everything but the values, which are stored apart
    header.pop("channel_values", None)
    run_id = md.get("run_id")
    return Snapshot(
        thread_id=thread_id,
        ns=ns or "",
        checkpoint_id=checkpoint["id"],
        parent_id=parent,
        header=header,
        metadata=md,
        versions=versions,
        values=to_write,
        keep_existing=not new_versions,
        run_id=None if run_id is None else one_id(run_id, "metadata['run_id']"),
        delta_channels=tuple(md.get("counters_since_delta_snapshot") or ()),
        all_values=values,
    )


_DELTA = "delta"


def _wrapped(value: _DeltaSnapshot) -> Any:
    """A DeltaChannel snapshot's list is stored by item, like any list (so a snapshot costs
    16 bytes per message already stored, not the whole history again)."""
    if type(value.value) is list and len(value.value) >= LIST_MIN_ITEMS:
        return TaggedList(_DELTA, value.value)
    return value


def unwrapped(value: Any) -> Any:
    if isinstance(value, TaggedList) and value.kind == _DELTA:
        return _DeltaSnapshot(value.items)
    return value


def writes(writes: Sequence[tuple[str, Any]], task_id: str, task_path: str) -> list[Write]:
    if not isinstance(task_id, str):
        raise InvalidInput(f"task_id must be str, got {type(task_id).__name__}: {task_id!r}")
    # task_path orders the pending writes of every later read: a non-str one would be
    # stored and then break each get_tuple, so it is refused here.
    if not isinstance(task_path, str):
        raise InvalidInput(f"task_path must be str, got {type(task_path).__name__}: {task_path!r}")
    if isinstance(writes, (str, bytes, bytearray, Mapping)) or not isinstance(writes, Iterable):
        raise InvalidInput(f"writes must be a sequence of (channel, value) pairs, got {writes!r}")
    out = []
    for idx, item in enumerate(writes):
        if isinstance(item, (str, bytes, bytearray)) or not isinstance(item, Sequence) or len(item) != 2:
            raise InvalidInput(f"writes[{idx}] must be a (channel, value) pair, got {item!r}")
        channel, value = item
        if not isinstance(channel, str):
            raise InvalidInput(f"writes[{idx}]: the channel must be str, got {type(channel).__name__}: {channel!r}")
        out.append(Write(task_id, channel, value, task_path, WRITES_IDX_MAP.get(channel, idx)))
    return out


def sorted_writes(stored: list[Write]) -> list[Write]:
    return sorted(stored, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))


def checkpoint_tuple(s: Stored) -> CheckpointTuple:
    checkpoint: Any = {**s.header, "channel_values": {ch: unwrapped(v) for ch, v in s.values.items()}}
    parent = config_of(s.thread_id, s.ns, s.parent_id) if s.parent_id else None
    pending = [(w.task_id, w.channel, w.value) for w in sorted_writes(s.writes)]
    return CheckpointTuple(config_of(s.thread_id, s.ns, s.checkpoint_id), checkpoint, s.metadata, parent, pending)


def matcher(filter: Mapping[str, Any] | None, checkpoint_id: str | None) -> Any:
    if filter is not None and not isinstance(filter, Mapping):
        raise InvalidInput(f"filter must be a mapping of metadata keys to values, got {filter!r}")
    if not filter and checkpoint_id is None:
        return None
    items = list((filter or {}).items())

    def select(s: Stored) -> bool:
        if checkpoint_id is not None and s.checkpoint_id != checkpoint_id:
            return False
        # As InMemorySaver: a key the metadata lacks matches None (LangGraph drops None values).
        return all(s.metadata.get(k) == v for k, v in items)

    return select
