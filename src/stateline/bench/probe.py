"""What a block of client calls costs the server, read from the server itself.

For one window of calls: the longest single command (SLOWLOG at a threshold of 0), the
bytes the server received (``total_net_input_bytes``) and the bytes appended to its AOF
(``aof_current_size``, on a server started with ``Server(aof=True)``). The probe's own
commands are left out: its SLOWLOG entries by its client name, its own input bytes by
a calibration window with nothing in it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

__all__ = ["Probe", "Window", "stateline_scripts"]

NAME = "stateline-bench-probe"
SLOWLOG_MAX = 1_000_000
BUSY_WAIT_S = 3600.0


def stateline_scripts() -> dict[str, Any]:
    """stateline's Lua scripts by file name (what an EVALSHA in the slow log runs)."""
    from importlib.resources import files

    from ..plan import SCRIPTS

    names = [p.name[:-4] for p in (files("stateline") / "scripts").iterdir() if p.name.endswith(".lua")]
    return {f"{n}.lua": getattr(SCRIPTS, n) for n in sorted(names) if not n.startswith("_")}


@dataclass
class Window:
    """What one window measured; filled in when the window closes."""

    max_ms: float = 0.0
    max_command: str = ""
    bytes_in: int = 0
    aof_bytes: int | None = None
    note: str = ""

    def as_dict(self, per: int = 1) -> dict:
        """The figures, bytes divided by ``per`` (calls or turns in the window)."""
        return {
            "max_ms": round(self.max_ms, 3),
            "max_command": self.max_command,
            "bytes_in": round(self.bytes_in / per),
            "aof_bytes": None if self.aof_bytes is None else round(self.aof_bytes / per),
            **({"note": self.note} if self.note else {}),
        }


class Probe:
    """One client of its own on the server under test."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, client_name=NAME)
        self.client.config_set("slowlog-max-len", SLOWLOG_MAX)
        self.client.config_set("slowlog-log-slower-than", -1)  # off outside windows
        scripts = stateline_scripts()
        self.names = {script.sha: name for name, script in scripts.items()}
        for script in scripts.values():  # loaded now: a first call's NOSCRIPT is not what is measured
            self.client.script_load(script.body)
        self.own_bytes = 0
        with self.window() as empty:
            pass
        self.own_bytes = empty.bytes_in

    def _counters(self) -> tuple[int, int | None, int]:
        stats, persistence = self.client.info("stats"), self.client.info("persistence")
        aof = persistence.get("aof_current_size") if persistence.get("aof_enabled") else None
        return int(stats["total_net_input_bytes"]), aof, int(persistence.get("aof_rewrites", 0))

    def _wait_idle(self) -> bool:
        """Returns once the server answers, and whether it was busy: a script running past
        ``busy-reply-threshold`` makes every other client (this one too) wait, answered BUSY,
        until it ends; its slow-log entry is written then."""
        deadline = time.monotonic() + BUSY_WAIT_S
        busy = False
        while True:
            try:
                self.client.ping()
                return busy
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSY") or time.monotonic() > deadline:
                    raise
                busy = True
            time.sleep(0.2)  # (polling a server that cannot answer before the script ends)

    @contextmanager
    def window(self) -> Iterator[Window]:
        out = Window()
        self._wait_idle()
        self.client.config_set("slowlog-log-slower-than", 0)
        self.client.slowlog_reset()
        net0, aof0, rewrites0 = self._counters()
        try:
            yield out
        finally:
            busy = self._wait_idle()
            net1, aof1, rewrites1 = self._counters()
            entries = self.client.slowlog_get(SLOWLOG_MAX)
            self.client.config_set("slowlog-log-slower-than", -1)
            self._fill(out, net1 - net0, aof0, aof1, rewrites1 != rewrites0, entries)
            if busy:
                out.note = "a script ran past busy-reply-threshold: the server answered BUSY to every other client"

    def _fill(self, out: Window, net: int, aof0: int | None, aof1: int | None, rewrote: bool, entries: list) -> None:
        out.bytes_in = net - self.own_bytes
        if aof0 is not None and aof1 is not None:
            out.aof_bytes = aof1 - aof0
        if rewrote:
            out.note = "the AOF was rewritten during the window: its bytes are not comparable"
        if len(entries) >= SLOWLOG_MAX:
            out.note = f"the slow log overflowed ({SLOWLOG_MAX} entries): the longest command may be missing"
        theirs = [e for e in entries if e.get("client_name") != NAME.encode()]
        if theirs:
            top = max(theirs, key=lambda e: e["duration"])
            out.max_ms = top["duration"] / 1e3
            out.max_command = self._label(top["command"])

    def _label(self, command: Any) -> str:
        """The command's name; an EVALSHA named by its script."""
        words = (command.decode(errors="replace") if isinstance(command, bytes) else str(command)).split()
        if words[:1] == ["EVALSHA"] and len(words) > 1:
            return self.names.get(words[1], f"EVALSHA {words[1][:8]}")
        return words[0] if words else ""

    def close(self) -> None:
        self.client.close()
