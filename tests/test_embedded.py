"""The embedded server's lifecycle: logging, readiness, ownership checks, stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stateline import EmbeddedServerError
from stateline.embedded import EmbeddedServer, _wait_gone

from .waiting import DEADLINE


def _kill_leftover(data_dir: Path) -> None:
    """Teardown for a test that failed midway: end the server this test started, by its pid."""
    try:
        pid = json.loads((data_dir / "server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(tmp_path / "data")
    try:
        yield srv
    finally:
        _kill_leftover(srv.data_dir)


def test_a_server_that_logs_a_lot_keeps_answering_and_stops(server: EmbeddedServer) -> None:
    # The server used to log into a pipe nobody read: past 64 KiB every log write blocked
    # and the server stopped answering (and stop() hung). Verbose logging writes ~600
    # bytes per client connection, so 400 connections are well past that.
    port = server.start()
    admin = redis.Redis(port=port, socket_timeout=5)
    admin.config_set("loglevel", "verbose")
    for _ in range(400):
        c = redis.Redis(port=port, socket_timeout=5)
        assert c.ping()
        c.close()
    assert admin.ping()  # the server logged the closes before it answered this
    admin.close()
    log = server.log_file
    assert log.stat().st_size > 64 * 1024
    assert b"Ready to accept connections" in log.read_bytes()
    assert server.stop()
    assert not server.running
    assert not server.stop()


def test_a_server_that_cannot_start_reports_its_log(server: EmbeddedServer) -> None:
    aof = server.data_dir / "appendonlydir"
    aof.mkdir(parents=True)
    (aof / "appendonly.aof.manifest").write_text("this is not a manifest\n")
    with pytest.raises(EmbeddedServerError, match="exited .* before it was ready") as info:
        server.start()
    assert "manifest" in str(info.value).lower()  # the server's own reason, from valkey.log
    assert server.log_file.is_file()
    assert not server.running


def test_a_recorded_port_answered_by_another_server_is_not_ours(tmp_path: Path) -> None:
    # server.json names a port and a pid: a server answering on that port is ours only if
    # that pid is alive and is the one the server reports. Otherwise start() must not
    # reuse it, and stop() must not shut the other server down.
    other = EmbeddedServer(tmp_path / "other")
    port = other.start()
    try:
        exited = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        )
        dead_pid = int(exited.stdout)
        mine = EmbeddedServer(tmp_path / "mine")
        mine.data_dir.mkdir()
        for pid in (dead_pid, os.getpid()):  # a pid that is gone; a live one that is not the server
            (mine.data_dir / "server.json").write_text(json.dumps({"port": port, "pid": pid}))
            assert not mine.running
            assert not mine.stop()
            assert other.running  # untouched
        assert redis.Redis(port=port, socket_timeout=5).ping()
    finally:
        other.stop()
        _kill_leftover(other.data_dir)


def test_waiting_for_a_process_that_does_not_exit_is_an_error_not_silence() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with pytest.raises(EmbeddedServerError, match=f"pid {proc.pid}.*did not exit"):
            _wait_gone(proc.pid, timeout=0.2)
        assert proc.poll() is None
        proc.stdin.close()  # now it exits
        _wait_gone(proc.pid, timeout=30)
        assert proc.wait(timeout=30) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_recorded_server_that_does_not_answer_is_never_doubled(tmp_path) -> None:
    """Two servers on one data directory would corrupt its files: a live but silent one
    (here: stopped with SIGSTOP, as a long script or swap would) makes start() refuse."""
    import json
    import os
    import signal

    import pytest

    from stateline import EmbeddedServerError
    from stateline.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path)
    port = server.start()
    pid = json.loads((tmp_path / "server.json").read_text())["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(EmbeddedServerError, match="running but does not answer"):
            EmbeddedServer(tmp_path).start()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert EmbeddedServer(tmp_path).start() == port
    server.stop()


def test_a_server_busy_with_a_long_script_is_neither_doubled_nor_forgotten(tmp_path) -> None:
    """While a script runs past busy-reply-threshold the server answers -BUSY: start()
    must not start a second server on the same files, and stop() must not drop its record."""
    import threading
    import time

    import pytest
    import redis

    from stateline import EmbeddedServerError
    from stateline.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path)
    port = server.start()
    busy = redis.Redis(port=port)
    busy.config_set("busy-reply-threshold", 50)
    started = threading.Event()
    ended: list[str] = []

    def long_script() -> None:
        started.set()
        # spins on the server's clock until the test ends it with SCRIPT KILL (a minute at most)
        try:
            busy.eval("local t0 = redis.call('TIME')[1] while tonumber(redis.call('TIME')[1]) < t0 + 60 do end", 0)
            ended.append("ran out its minute")
        except redis.ResponseError as exc:
            ended.append(str(exc))

    worker = threading.Thread(target=long_script)
    worker.start()
    started.wait(DEADLINE)
    try:
        _until_busy(port, time.monotonic() + DEADLINE)
        with pytest.raises(EmbeddedServerError, match="does not answer"):
            EmbeddedServer(tmp_path).start()
        with pytest.raises(EmbeddedServerError, match="does not answer"):
            EmbeddedServer(tmp_path).stop()
        assert (tmp_path / "server.json").exists()
    finally:
        redis.Redis(port=port).script_kill()
        worker.join(DEADLINE)
    assert len(ended) == 1 and "SCRIPT KILL" in ended[0], ended  # busy throughout, until killed
    assert EmbeddedServer(tmp_path).start() == port
    server.stop()


def _until_busy(port: int, deadline: float) -> None:
    """Waits (bounded) until the server answers -BUSY, i.e. the script is past the threshold."""
    import socket
    import time

    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"-BUSY"):
                return
        time.sleep(0.02)
    raise AssertionError("the server never became busy")
