"""What a LangGraph saver may rebuild from stored bytes: strict by default.

LangGraph's ``JsonPlusSerializer`` rebuilds a stored object by importing the module its
bytes name and calling what they name there, unless it is strict (an allowlist). It is
strict only when ``LANGGRAPH_STRICT_MSGPACK`` was set before LangGraph was imported, so
anyone able to write into Redis could otherwise make a reader run code. stateline's savers
are strict whatever the environment: they rebuild LangGraph's own types (LangChain
messages among them), the types a compiled graph names (``with_allowlist``, which
``compile()`` calls in strict mode) and the types the user allows; anything else comes
back as its plain data, with LangGraph's warning. Loading any type is an explicit opt-in
(``unsafe_allow_any_type=True``) that warns once. Pickle is never loaded.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections.abc import Iterable
from typing import Any

from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ..errors import InvalidInput

__all__ = ["safe_serde", "allowed_names"]

log = logging.getLogger("stateline")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def allowed_names(types: Iterable[Any]) -> frozenset[tuple[str, ...]]:
    """``(module, name)`` of each allowed type (a class, or such a tuple already)."""
    out = set()
    for t in types:
        if isinstance(t, type):
            out.add((t.__module__, t.__name__))
        elif isinstance(t, tuple) and len(t) >= 2 and all(isinstance(x, str) for x in t):
            out.add(t)
        else:
            raise InvalidInput(f"allowed_types takes classes or (module, name) tuples, got {t!r}")
    return frozenset(out)


def _rules(serde: JsonPlusSerializer) -> tuple[Any, Any, bool]:
    """The msgpack allowlist, the JSON allowlist and whether the ext hook is the caller's own.
    LangGraph keeps them in private attributes (no public accessor); tests/test_safety.py
    fails by name when they change."""
    return serde._allowed_msgpack_modules, serde._allowed_json_modules, serde._custom_unpack_ext_hook


def _restricted(serde: JsonPlusSerializer, msgpack: Any, json: Any) -> JsonPlusSerializer:
    """A copy of ``serde`` with these allowlists (what ``with_msgpack_allowlist`` does, which
    leaves a permissive serializer permissive)."""
    clone = copy.copy(serde)
    clone._allowed_msgpack_modules = msgpack
    clone._allowed_json_modules = json
    clone._unpack_ext_hook = jsonplus._create_msgpack_ext_hook(msgpack)
    return clone


def safe_serde(serde: Any, allowed: frozenset[tuple[str, ...]], unsafe: bool) -> Any:
    """``serde`` (None: LangGraph's JsonPlusSerializer) made strict with ``allowed`` added,
    or left permissive when ``unsafe``. Raises InvalidInput for a serde that loads pickle."""
    if getattr(serde, "pickle_fallback", False):
        raise InvalidInput("stateline never loads pickle: pass a serde with pickle_fallback=False")
    if unsafe:
        warn_once(
            "permissive",
            "stateline: unsafe_allow_any_type=True lets stored data name any module to import and any "
            "callable to run when it is read: anyone who can write to the server can run code in this process",
        )
        if serde is None:
            return JsonPlusSerializer(allowed_msgpack_modules=True)
        return serde
    if serde is None:
        return JsonPlusSerializer(allowed_msgpack_modules=tuple(allowed) or None)
    if isinstance(serde, EncryptedSerializer):
        inner = safe_serde(serde.serde, allowed, unsafe)
        return serde if inner is serde.serde else EncryptedSerializer(serde.cipher, inner)
    if isinstance(serde, JsonPlusSerializer):
        msgpack, json, own_hook = _rules(serde)
        if own_hook:
            warn_once(f"hook:{id(serde)}", _unchecked(serde, "its own msgpack ext hook"))
            return serde
        base = set(msgpack) if isinstance(msgpack, (set, frozenset)) else set()
        wanted = base | allowed
        if msgpack is not True and wanted == base and json is not True:
            return serde
        return _restricted(serde, wanted or None, None if json is True else json)
    warn_once(f"type:{type(serde).__qualname__}", _unchecked(serde, "a serializer stateline does not know"))
    return serde


def _unchecked(serde: Any, why: str) -> str:
    return (
        f"stateline cannot check which types {type(serde).__name__} rebuilds from stored data ({why}): "
        "make sure it never imports or calls what the stored bytes name"
    )
