"""Safe by default: stored bytes never make a reader import or call what they name.

Every payload of the research table (shared notes, ops-and-safety part 2b) is written into a
stored thread the way anyone with write access to the server could, then read back through
a saver with its defaults.
"""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from stateline import InvalidInput, StoredDataError
from stateline.langgraph import RedisSaver, _safety

PROBE = "stateline_probe_mod"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module that leaves a file behind when it is imported and when anything in it runs."""
    calls = tmp_path / "calls"
    (tmp_path / f"{PROBE}.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            _LOG = Path({str(calls)!r})
            with _LOG.open("a") as f:
                f.write("imported\\n")

            def record(*args, **kwargs):
                with _LOG.open("a") as f:
                    f.write("called record\\n")
                return "record-was-called"

            class Marker:
                def __init__(self, *args, **kwargs):
                    with _LOG.open("a") as f:
                        f.write("built Marker\\n")

                @classmethod
                def from_str(cls, s):
                    with _LOG.open("a") as f:
                        f.write("called from_str\\n")
                    return cls()

            class PydLike:
                def __init__(self, **kw):
                    raise ValueError("refuse")

                @classmethod
                def model_construct(cls, **kw):
                    with _LOG.open("a") as f:
                        f.write("called model_construct\\n")
                    return "constructed"

                construct = model_construct
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(PROBE, None)
    yield calls
    sys.modules.pop(PROBE, None)


def _ext(code: int, *parts: Any) -> bytes:
    return ormsgpack.packb(ormsgpack.Ext(code, ormsgpack.packb(list(parts))))


# (name, type tag, bytes): every extension code LangGraph's JsonPlusSerializer knows, the JSON
# forms and pickle.
PAYLOADS = [
    ("ext0-class", "msgpack", _ext(0, PROBE, "Marker", "x")),
    ("ext0-function", "msgpack", _ext(0, PROBE, "record", "arg")),
    ("ext0-builtin", "msgpack", _ext(0, "builtins", "len", [1, 2, 3])),
    ("ext1-positional", "msgpack", _ext(1, PROBE, "record", ["a", "b"])),
    ("ext2-keywords", "msgpack", _ext(2, PROBE, "record", {"a": 1})),
    ("ext3-method", "msgpack", _ext(3, PROBE, "Marker", "s", "from_str")),
    ("ext4-pydantic-v1", "msgpack", _ext(4, PROBE, "Marker", {"b": 2})),
    ("ext5-pydantic-v2", "msgpack", _ext(5, PROBE, "PydLike", {"b": 2}, "model_dump")),
    ("ext6-numpy-object", "msgpack", _ext(6, "|O", [1], "C", b"\0" * 8)),
    ("ext7-delta-wrapping-ext0", "msgpack", ormsgpack.packb(ormsgpack.Ext(7, _ext(0, PROBE, "record", "x")))),
    ("nested-in-list", "msgpack", ormsgpack.packb([1, ormsgpack.Ext(0, ormsgpack.packb([PROBE, "record", "n"]))])),
    ("json-lc2", "json", json.dumps({"lc": 2, "type": "constructor", "id": [PROBE, "Marker"], "kwargs": {}}).encode()),
    ("json-lc1", "json", json.dumps({"lc": 1, "type": "constructor", "id": [PROBE, "Marker"], "kwargs": {}}).encode()),
    ("pickle", "pickle", b"\x80\x04\x95\x00"),
]


def _put(saver: RedisSaver, thread: str, values: dict) -> dict:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = {k: 1 for k in values}
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    return saver.put(cfg, cp, {}, dict(cp["channel_versions"]))


def _plant(client: redis.Redis, saver: RedisSaver, thread: str, channel: str, typ: str, data: bytes) -> None:
    """Overwrites the stored value of ``channel`` with ``(typ, data)``, as an attacker would."""
    key = saver.engine.keys(thread).data
    fields = [f for f in client.hkeys(key) if f.startswith(b"b:") and f.split(b":")[2] == channel.encode()]
    assert len(fields) == 1
    client.hset(key, fields[0], b"v" + saver.engine.codec.seal_value(typ, data))


@pytest.mark.parametrize("name,typ,data", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_no_stored_payload_imports_or_calls_anything_with_the_defaults(
    url: str, prefix: str, client: redis.Redis, probe: Path, name: str, typ: str, data: bytes
) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg = _put(saver, "t", {"note": "harmless"})
    _plant(client, saver, "t", "note", typ, data)
    try:
        got = saver.get_tuple(cfg)
    except StoredDataError as exc:  # refusing to load is fine too: what matters is that nothing ran
        got = exc
    assert PROBE not in sys.modules, f"{name}: the payload imported {PROBE}"
    assert not probe.exists(), f"{name}: {probe.read_text()}"
    if name == "ext0-builtin":  # blocked: the call's argument comes back, len() was not called
        assert got.checkpoint["channel_values"]["note"] == [1, 2, 3]
    if name == "pickle":
        assert "pickle" in str(got)


def test_the_permissive_opt_in_loads_any_type_and_warns_once(
    url: str, prefix: str, client: redis.Redis, probe: Path
) -> None:
    _safety._warned.discard("permissive")
    with pytest.warns(RuntimeWarning, match="unsafe_allow_any_type"):
        saver = RedisSaver(url, prefix=prefix, unsafe_allow_any_type=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        RedisSaver(url, prefix=prefix, unsafe_allow_any_type=True)  # once per process
    cfg = _put(saver, "t", {"note": "harmless"})
    _plant(client, saver, "t", "note", "msgpack", _ext(0, PROBE, "record", "from-checkpoint"))
    assert saver.get_tuple(cfg).checkpoint["channel_values"]["note"] == "record-was-called"
    assert probe.read_text() == "imported\ncalled record\n"


@dataclass
class Allowed:
    x: int


@dataclass
class NotAllowed:
    x: int


def test_allowed_types_and_langgraphs_own_types_load_others_come_back_as_data(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix, allowed_types=[Allowed])
    msgs = [HumanMessage(content="hi", id="1"), AIMessage(content="yo", id="2")]
    cfg = _put(saver, "t", {"a": Allowed(1), "n": NotAllowed(2), "m": msgs})
    values = RedisSaver(url, prefix=prefix, allowed_types=[Allowed]).get_tuple(cfg).checkpoint["channel_values"]
    assert values["a"] == Allowed(1) and values["m"] == msgs
    assert values["n"] == {"x": 2}  # blocked: its plain data, with LangGraph's warning


def test_with_allowlist_adds_the_types_a_compiled_graph_names(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix)
    cfg = _put(saver, "t", {"n": NotAllowed(2)})
    clone = saver.with_allowlist({(NotAllowed.__module__, NotAllowed.__name__)})
    assert clone is not saver
    assert clone.get_tuple(cfg).checkpoint["channel_values"]["n"] == NotAllowed(2)
    assert saver.get_tuple(cfg).checkpoint["channel_values"]["n"] == {"x": 2}


def test_a_given_serde_is_made_strict_too(url: str, prefix: str, probe: Path, client: redis.Redis) -> None:
    permissive = JsonPlusSerializer(allowed_msgpack_modules=True, allowed_json_modules=True)
    for serde in (permissive, EncryptedSerializer(cipher=None, serde=permissive)):  # type: ignore[arg-type]
        saver = RedisSaver(url, prefix=prefix, serde=serde)
        inner = saver.serde.serde if isinstance(saver.serde, EncryptedSerializer) else saver.serde
        assert _safety._rules(inner)[:2] == (None, None)
    saver = RedisSaver(url, prefix=prefix, serde=permissive)
    cfg = _put(saver, "t", {"note": "x"})
    _plant(client, saver, "t", "note", "msgpack", _ext(0, PROBE, "record", "arg"))
    assert saver.get_tuple(cfg).checkpoint["channel_values"]["note"] == "arg"
    assert PROBE not in sys.modules
    with pytest.raises(InvalidInput, match="pickle"):
        RedisSaver(url, prefix=prefix, serde=JsonPlusSerializer(pickle_fallback=True))


def test_langgraphs_private_allowlist_attributes_are_where_stateline_reads_them() -> None:
    """_safety._rules and _restricted read and set JsonPlusSerializer's private attributes:
    this fails by name when langgraph-checkpoint renames them."""
    serde = JsonPlusSerializer(allowed_msgpack_modules=[("m", "C")], allowed_json_modules=None)
    assert _safety._rules(serde) == ({("m", "C")}, None, False)
    strict = _safety._restricted(JsonPlusSerializer(allowed_msgpack_modules=True), None, None)
    assert strict.loads_typed(("msgpack", _ext(0, "builtins", "len", [1, 2]))) == [1, 2]
