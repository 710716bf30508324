"""Authenticated encryption (AES-GCM) and compression of stored values: what is stored holds
no plaintext, a changed, moved or foreign value fails clearly, keys rotate, item dedup
survives encryption, LangGraph's EncryptedSerializer works, and data written with either
setting reads after it is turned on or off."""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from stateline import Compression, Encryption, StoredDataError
from stateline.bench.agent import build_graph, text
from stateline.elements import ITEMS
from stateline.langgraph import RedisSaver, _safety

K1, K2 = os.urandom(32), os.urandom(32)
SECRET = "the launch code is"


def _chat(saver: RedisSaver, thread: str, turns: int, start: int = 0) -> Any:
    app = build_graph(saver)
    cfg = {"configurable": {"thread_id": thread}}
    for t in range(start, start + turns):
        app.invoke({"messages": [HumanMessage(content=f"{SECRET} {t}: " + text(f"u{t}"), id=f"u{t}")]}, cfg)
    return app, cfg


def _messages(saver: RedisSaver, thread: str) -> list:
    ITEMS.drop(lambda k: True)  # read from the server, not from this process's item cache
    return saver.get_tuple({"configurable": {"thread_id": thread}}).checkpoint["channel_values"]["messages"]


def _fields(client: redis.Redis, saver: RedisSaver, thread: str) -> dict[bytes, bytes]:
    return client.hgetall(saver.engine.keys(thread).data)


def test_an_encrypted_thread_stores_no_plaintext_and_reads_back(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix, encryption=Encryption({"k1": K1}))
    _chat(saver, "t", 3)
    stored = b"".join(_fields(client, saver, "t").values())
    assert SECRET.encode() not in stored and b"HumanMessage" not in stored
    plain = RedisSaver(url, prefix=prefix + "p:", compression=False)
    _chat(plain, "t", 3)
    assert SECRET.encode() in b"".join(_fields(client, plain, "t").values())  # (the check can see it)
    assert _messages(saver, "t") == _messages(plain, "t")


def test_tampered_foreign_moved_and_truncated_values_fail_clearly(url: str, prefix: str, client: redis.Redis) -> None:
    saver = RedisSaver(url, prefix=prefix, encryption=Encryption({"k1": K1}))
    _chat(saver, "a", 2)
    _chat(saver, "b", 2)
    key = saver.engine.keys("a").data
    item = next(f for f in client.hkeys(key) if f.startswith(b"e:"))
    value = client.hget(key, item)
    for bad, message in (
        (value[:-1] + bytes([value[-1] ^ 1]), "fails authentication"),
        (value[: len(value) // 2], "fails authentication|truncated"),
    ):
        client.hset(key, item, bad)
        with pytest.raises(StoredDataError, match=message) as err:
            _messages(saver, "a")
        assert "thread 'a'" in str(err.value)
        client.hset(key, item, value)
    # the same item moved into another thread, under the same name
    other = saver.engine.keys("b").data
    target = next(f for f in client.hkeys(other) if f.startswith(b"e:"))
    original = client.hget(other, target)
    client.hset(other, target, client.hget(key, item))
    with pytest.raises(StoredDataError, match="thread 'b'.*fails authentication"):
        _messages(saver, "b")
    client.hset(other, target, original)
    with pytest.raises(StoredDataError, match="key 'k1', which is not among the keys"):
        _messages(RedisSaver(url, prefix=prefix, encryption=Encryption({"k2": K2})), "a")
    with pytest.raises(StoredDataError, match="encrypted .*pass its keys"):
        _messages(RedisSaver(url, prefix=prefix), "a")
    with pytest.raises(StoredDataError, match="fails authentication"):
        _messages(RedisSaver(url, prefix=prefix, encryption=Encryption({"k1": K2})), "a")  # same id, other key
    assert len(_messages(saver, "a")) == 8


def _kid(envelope: bytes) -> bytes:
    at = 3 if envelope[1] & 3 == 2 else 2  # (after the dictionary id, when there is one)
    return envelope[at + 1 : at + 1 + envelope[at]]


def test_keys_rotate_and_old_data_still_reads(url: str, prefix: str, client: redis.Redis) -> None:
    old = RedisSaver(url, prefix=prefix, encryption=Encryption({"k1": K1}))
    _chat(old, "t", 2)
    rotated = RedisSaver(url, prefix=prefix, encryption=Encryption({"k1": K1, "k2": K2}, primary="k2"))
    _chat(rotated, "t", 2, start=2)
    kids = {_kid(v) for f, v in _fields(client, rotated, "t").items() if f.startswith(b"e:")}
    assert kids == {b"k1", b"k2"}
    humans = [m.content for m in _messages(rotated, "t") if m.type == "human"]
    assert [h.split(":")[0] for h in humans] == [f"{SECRET} {t}" for t in range(4)]
    assert len(list(rotated.list({"configurable": {"thread_id": "t"}}))) == 4 * 5  # every checkpoint reads
    ITEMS.drop(lambda k: True)
    with pytest.raises(StoredDataError, match="'k1'"):  # (the older checkpoints hold items sealed with k1)
        list(
            RedisSaver(url, prefix=prefix, encryption=Encryption({"k2": K2})).list({"configurable": {"thread_id": "t"}})
        )


def test_an_encrypted_chat_keeps_each_message_once(url: str, prefix: str, client: redis.Redis) -> None:
    plain = RedisSaver(url, prefix=prefix + "p:")
    sealed = RedisSaver(url, prefix=prefix + "e:", encryption=Encryption({"k1": K1}))
    for saver in (plain, sealed):
        _chat(saver, "t", 6)
    counts = [sum(f.startswith(b"e:") for f in _fields(client, s, "t")) for s in (plain, sealed)]
    assert counts[0] == counts[1] == 6 * 4  # one item per message, however many checkpoints list it
    # the digests are keyed: the same message has another name in the encrypted thread
    assert not set(_fields(client, plain, "t")) & {f for f in _fields(client, sealed, "t") if f.startswith(b"e:")}


class _Cipher:
    """A CipherProtocol, as users of EncryptedSerializer write them."""

    def __init__(self, key: bytes) -> None:
        self.aead = AESGCM(key)

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(12)
        return "aesgcm", nonce + self.aead.encrypt(nonce, plaintext, None)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "aesgcm"
        return self.aead.decrypt(ciphertext[:12], ciphertext[12:], None)


def test_langgraphs_encrypted_serializer_works_and_keeps_dedup_with_a_digest_key(
    url: str, prefix: str, client: redis.Redis
) -> None:
    serde = EncryptedSerializer(_Cipher(K1), JsonPlusSerializer())
    keyed = RedisSaver(url, prefix=prefix, serde=serde, digest_key=os.urandom(32))
    _chat(keyed, "t", 4)
    assert SECRET.encode() not in b"".join(_fields(client, keyed, "t").values())
    assert sum(f.startswith(b"e:") for f in _fields(client, keyed, "t")) == 16
    assert len(_messages(keyed, "t")) == 16
    _safety._warned.discard("random-names")
    with pytest.warns(RuntimeWarning, match="digest_key"):
        unkeyed = RedisSaver(url, prefix=prefix + "u:", serde=serde)
    _chat(unkeyed, "t", 2)
    assert [m.content for m in _messages(unkeyed, "t")] == [m.content for m in _messages(keyed, "t")][:8]
    with pytest.raises(StoredDataError, match="EncryptedSerializer"):
        _messages(RedisSaver(url, prefix=prefix), "t")


def test_copies_are_sealed_again_for_their_thread_and_their_saver(url: str, prefix: str) -> None:
    saver = RedisSaver(url, prefix=prefix, encryption=Encryption({"k1": K1}))
    _chat(saver, "t", 2)
    saver.copy_thread("t", "copy")
    assert _messages(saver, "copy") == _messages(saver, "t")
    other = RedisSaver(url, prefix=prefix + "o:", encryption=Encryption({"k2": K2}), compression=False)
    saver.copy_thread_to("t", other, "moved")
    assert _messages(other, "moved") == _messages(saver, "t")
    plain = RedisSaver(url, prefix=prefix + "p:", compression=False)
    saver.copy_thread_to("t", plain, "clear")  # a migration out of encryption
    assert _messages(plain, "clear") == _messages(saver, "t")


@pytest.mark.parametrize(
    "first,then",
    [
        ({"compression": False}, {"compression": True}),
        ({"compression": Compression(threshold=0)}, {"compression": False}),
        ({"compression": False}, {"encryption": Encryption({"k1": K1})}),
        ({"encryption": Encryption({"k1": K1})}, {"encryption": Encryption({"k1": K1}, encrypt=False)}),
        ({"encryption": Encryption({"k1": K1}), "compression": False}, {"encryption": Encryption({"k1": K1})}),
    ],
    ids=["compression-on", "compression-off", "encryption-on", "encryption-off", "compressed-encrypted"],
)
def test_data_written_with_one_setting_reads_with_the_other(
    url: str, prefix: str, client: redis.Redis, first: dict, then: dict
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no setting change warns
        before = RedisSaver(url, prefix=prefix, **first)
        _chat(before, "t", 2)
        after = RedisSaver(url, prefix=prefix, **then)
        assert len(_messages(after, "t")) == 8
        _chat(after, "t", 2, start=2)  # and goes on writing with the new setting
        assert len(_messages(after, "t")) == 16
        if then.get("encryption") is not None and not then["encryption"].encrypts:
            items = [v for f, v in _fields(client, after, "t").items() if f.startswith(b"e:")]
            assert {v[1] & 0x04 for v in items} == {0, 0x04}  # the new items are not encrypted


def test_compression_shrinks_messages_and_leaves_tiny_values_alone(url: str, prefix: str, client: redis.Redis) -> None:
    on = RedisSaver(url, prefix=prefix + "on:")
    off = RedisSaver(url, prefix=prefix + "off:", compression=False)
    for saver in (on, off):
        _chat(saver, "t", 3)
    sizes = [sum(len(v) for f, v in _fields(client, s, "t").items() if f.startswith(b"e:")) for s in (on, off)]
    assert sizes[0] * 2 < sizes[1]
    flags = {v[1] & 3 for f, v in _fields(client, on, "t").items() if f.startswith(b"e:")}
    assert flags == {2}  # zstd with dictionary 1
    tiny = [v for f, v in _fields(client, on, "t").items() if f.startswith(b"b:") and v[:1] == b"v" and len(v) < 40]
    assert tiny and all(v[2] & 3 == 0 for v in tiny)
