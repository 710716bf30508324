"""The process that runs the embedded Valkey server and shuts it down once it is idle.

``embedded.py`` starts it as ``python -I _supervisor.py DIR PORT LOCK_FD IDLE_TIMEOUT -- VALKEY ARGS``
(by path and standard library only, so it depends on nothing the starting process had on
``sys.path``). It starts ``valkey-server`` as its child, handing it the data directory's
server lock (``LOCK_FD``, which valkey then holds for as long as it runs), and exits with it.

Idle means no client but this one and no new connection for ``idle_timeout`` seconds, a
value read again from ``server.json`` at each look (0: never), so that ``stateline server
start`` can keep a running server up. Before it sends SHUTDOWN, which makes valkey flush and
fsync its append-only file and exit, it takes the start lock (``server.lock``) and looks once
more: a process that starts or adopts the server holds that lock and keeps a connection open
(``embedded._hold``), so no process is handed a server that is going away.

Also the small RESP client ``embedded.py`` uses to ask a server what it is.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
import traceback
from typing import Any, BinaryIO

_LOOK_MAX = 30.0  # seconds between looks at most (the shutdown comes within 10 % of the timeout)
_ANSWER_TIMEOUT = 60.0  # seconds a server may take to answer INFO before we connect anew


class ReplyError(Exception):
    """The server answered with an error (``-BUSY``, ``-LOADING``, ``-ERR``...)."""


def send(sock: socket.socket, *commands: tuple[bytes, ...]) -> None:
    """Sends ``commands`` (each a tuple of arguments) in one write."""
    out = bytearray()
    for args in commands:
        out += b"*%d\r\n" % len(args)
        for arg in args:
            out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    sock.sendall(out)


def read(f: BinaryIO) -> Any:
    """One reply; raises ReplyError for an error reply, ConnectionError if the server closed."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise ReplyError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else f.read(size + 2)[:size]
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [read(f) for _ in range(size)]
    raise ConnectionError(f"not a RESP reply: {line[:40]!r}")


def fields(info: bytes) -> dict[str, str]:
    """The ``name:value`` lines of an INFO reply."""
    pairs = (line.split(":", 1) for line in info.decode(errors="replace").splitlines() if ":" in line)
    return {name: value for name, value in pairs}


def _log(message: str) -> None:
    print(f"stateline supervisor (pid {os.getpid()}): {message}", file=sys.stderr, flush=True)


def _connect(port: int, server: subprocess.Popen) -> socket.socket | None:
    """A connection to the server once it listens; None if it exits first."""
    delay = 0.005
    while server.poll() is None:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=_ANSWER_TIMEOUT)
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    return None


def _recorded(state_file: str, port: int) -> dict | None:
    """server.json, if it describes the server on ``port``."""
    try:
        with open(state_file, "rb") as f:
            state = json.load(f)
        return state if int(state["port"]) == port else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # being replaced, or removed by hand


def _policy(state_file: str, port: int, current: float) -> float:
    """The idle timeout server.json gives this server; ``current`` when it gives none."""
    try:
        return float((_recorded(state_file, port) or {})["idle_timeout"])
    except (KeyError, TypeError, ValueError):
        return current


class _Activity:
    """Connected clients and connections received so far, from one INFO."""

    def __init__(self, sock: socket.socket, f: BinaryIO) -> None:
        send(sock, (b"INFO", b"clients", b"stats"))
        info = fields(read(f))
        self.clients = int(info["connected_clients"])
        self.received = int(info["total_connections_received"])

    def idle_since(self, before: _Activity | None) -> bool:
        """True when no one but this process was connected since ``before``."""
        return before is not None and self.clients <= 1 and self.received == before.received


def _take(path: str) -> int | None:
    """The start lock, if no one holds it (never waits: a starter may be waiting for us)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _shut_down_if_idle(sock: socket.socket, f: BinaryIO, data_dir: str, port: int, last: _Activity) -> bool:
    """Shuts the server down if it is still idle and still to be shut down when idle,
    holding the start lock; True if it did."""
    lock = _take(os.path.join(data_dir, "server.lock"))
    if lock is None:  # a process is starting, adopting or stopping it
        return False
    state_file = os.path.join(data_dir, "server.json")
    try:
        # Turned off meanwhile (with no record to say so, the caller's timeout stands: > 0)?
        if _policy(state_file, port, 1.0) <= 0 or not _Activity(sock, f).idle_since(last):
            return False
        send(sock, (b"SHUTDOWN",))
        try:
            refused = read(f)
        except ConnectionError:  # it closes once its files are flushed: gone
            if _recorded(state_file, port) is not None:
                os.unlink(state_file)
            return True
        except ReplyError as exc:  # e.g. it cannot write its append-only file
            refused = str(exc)
        _log(f"the server refused to shut down ({refused!r}) and keeps running")
        return False
    finally:
        os.close(lock)


def _look(sock: socket.socket, f: BinaryIO, data_dir: str, port: int, timeout: float) -> None:
    """Looks at the server every tenth of its idle timeout, and shuts it down when idle;
    returns once it closed this connection."""
    state_file = os.path.join(data_dir, "server.json")
    last, idle_from = None, time.monotonic()
    while True:
        timeout = _policy(state_file, port, timeout)
        wait = min(max(timeout / 10, 0.05), _LOOK_MAX) if timeout > 0 else 1.0
        if select.select([sock], [], [], wait)[0]:  # nothing is sent unasked: it closed
            return
        if timeout <= 0:
            last = None  # off: no command at all (not even INFO) until it is turned on
            continue
        now = _Activity(sock, f)
        if not now.idle_since(last):
            idle_from = time.monotonic()
        last = now
        if time.monotonic() - idle_from >= timeout and _shut_down_if_idle(sock, f, data_dir, port, last):
            _log(f"no client for {timeout:g} s: the server shut down, its data on disk")
            return


def watch(server: subprocess.Popen, data_dir: str, port: int, timeout: float) -> None:
    """Returns once the server has exited (shut down here when idle, or by anyone)."""
    while (sock := _connect(port, server)) is not None:
        try:
            with sock, sock.makefile("rb") as f:
                _look(sock, f, data_dir, port, timeout)
        except (ConnectionError, TimeoutError) as exc:  # killed by a client, or stopped: anew
            _log(f"lost the connection to the server ({exc}); connecting again")


def main(argv: list[str]) -> int:
    data_dir, port, lock_fd, timeout, dash, *valkey = argv
    if dash != "--":
        raise SystemExit(f"usage: _supervisor.py DATA_DIR PORT LOCK_FD IDLE_TIMEOUT -- VALKEY ARGS (got {argv})")
    server = subprocess.Popen(
        valkey,
        pass_fds=(int(lock_fd),),  # the server lock: valkey holds it as long as it runs
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(int(lock_fd))
    try:
        watch(server, data_dir, int(port), float(timeout))
    except Exception:  # noqa: BLE001 - logged; a bug here must not take the server down, it runs on
        _log("stopped watching the server:\n" + traceback.format_exc())
    return server.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
