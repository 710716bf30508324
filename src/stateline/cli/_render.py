"""Checkpoint contents as plain data (for --json and the inspector) and as text.

Values come back from the saver as whatever the serde revived: LangChain messages,
pydantic models, dataclasses, LangGraph's Interrupt and Send. ``plain`` turns any of
them into JSON-ready data without importing anything; ``message_text`` reads a message
the way a conversation does, tool calls included.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["plain", "is_message", "message_text", "write_text", "short", "table", "diff", "size", "tuple_json"]


def is_message(value: Any) -> bool:
    """A LangChain message (or anything shaped like one: a type and a content)."""
    return isinstance(getattr(value, "type", None), str) and hasattr(value, "content")


def _message(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": m.type, "content": plain(m.content)}
    for attr in ("id", "name", "tool_call_id", "status"):
        if getattr(m, attr, None):
            out[attr] = plain(getattr(m, attr))
    calls = getattr(m, "tool_calls", None)
    if calls:
        out["tool_calls"] = [{"name": c.get("name"), "args": plain(c.get("args")), "id": c.get("id")} for c in calls]
    return out


def _interrupt(value: Any) -> dict[str, Any] | None:
    """LangGraph's Interrupt (a value and an id), by its shape."""
    if type(value).__name__ == "Interrupt" and hasattr(value, "value") and hasattr(value, "id"):
        return {"interrupt": plain(value.value), "id": value.id}
    return None


def plain(value: Any) -> Any:
    """JSON-ready data for any stored value; what has no plain form becomes its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if is_message(value):
        return _message(value)
    found = _interrupt(value)
    if found is not None:
        return found
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID,)):
        return str(value)
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return plain(dump())
        except Exception as exc:  # noqa: BLE001 - a model that cannot dump itself is still shown
            return f"{value!r} (model_dump failed: {exc})"
    if type(value).__name__ == "Send" and hasattr(value, "node"):
        return {"send": value.node, "arg": plain(getattr(value, "arg", None))}
    return repr(value)


def message_text(m: Any) -> str:
    """'type: content', and each tool call as name(args) with its id."""
    d = m if isinstance(m, dict) else _message(m)
    content = d.get("content")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if d.get("tool_call_id"):
        text = f"[{d['tool_call_id']}] {text}"
    for call in d.get("tool_calls") or ():
        args = json.dumps(call.get("args"), ensure_ascii=False, default=repr)
        text = (text + " " if text else "") + f"-> {call.get('name')}({args}) [{call.get('id')}]"
    return f"{d.get('type')}: {text}"


def write_text(channel: str, value: Any, width: int = 100) -> str:
    """A pending write: an interrupt reads as what it asks, anything else as a value."""
    if channel == "__interrupt__":
        found = [_interrupt(v) or {"interrupt": plain(v)} for v in (value if isinstance(value, list) else [value])]
        text = " | ".join("interrupt: " + short(i["interrupt"], width) for i in found)
        return text if len(text) <= width else text[: width - 1] + "…"
    return short(value, width)


def short(value: Any, width: int = 100) -> str:
    """One line for a value (a message reads as a conversation line), cut at ``width``.
    Only values are cut, never ids."""
    if is_message(value):
        text = message_text(value)
    else:
        text = json.dumps(plain(value), ensure_ascii=False, default=repr)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    amount = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GB"


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """Columns padded to their widest cell and never cut, whatever the terminal's width, so
    every id can be copied into the next command (a long line wraps in the terminal)."""
    head = [str(h) for h in headers]
    body = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    return "\n".join(lines)


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """What changed from ``before`` to ``after`` (plain data): entries with a path, an op
    ('+' added, '-' removed, '~' changed) and the old and new values. Mappings are compared
    key by key, lists item by item; anything else as a whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[dict[str, Any]] = []
        for k in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in before:
                out.append({"path": sub, "op": "+", "new": after[k]})
            elif k not in after:
                out.append({"path": sub, "op": "-", "old": before[k]})
            else:
                out += diff(before[k], after[k], sub)
        return out
    if isinstance(before, list) and isinstance(after, list):
        out = []
        for i in range(max(len(before), len(after))):
            sub = f"{path}[{i}]"
            if i >= len(before):
                out.append({"path": sub, "op": "+", "new": after[i]})
            elif i >= len(after):
                out.append({"path": sub, "op": "-", "old": before[i]})
            else:
                out += diff(before[i], after[i], sub)
        return out
    return [] if before == after else [{"path": path, "op": "~", "old": before, "new": after}]


def tuple_json(t: Any, *, values: bool = True) -> dict[str, Any]:
    """A CheckpointTuple as plain data: ids, parent, metadata, and with ``values`` the
    channel values and pending writes."""
    conf = t.config["configurable"]
    out: dict[str, Any] = {
        "thread_id": conf["thread_id"],
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf["checkpoint_id"],
        "parent_id": t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None,
        "ts": t.checkpoint.get("ts"),
        "metadata": plain(t.metadata or {}),
    }
    if values:
        out["values"] = plain(t.checkpoint.get("channel_values", {}))
        out["pending_writes"] = [
            {"task_id": task, "channel": ch, "value": plain(v)} for task, ch, v in t.pending_writes or ()
        ]
    return out
