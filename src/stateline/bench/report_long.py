"""Tables and chart of (e), long threads (longthread.py), beside report.py's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .longthread import READS, WRITES
from .report import SHORT, _num, _ratio

__all__ = ["SECTIONS", "long_rows", "notes_rows", "chart"]

SERVER_BACKENDS = ("stateline", "lcr")  # their server is measured; the others only their client
CLIENT_ONLY = ("inmemory",)
LABEL = {
    "get_state": "get_state",
    "get_tuple": "get_tuple",
    "list_filter_1": "list(filter=..., limit=1)",
    "history_10": "get_state_history(limit=10)",
    "list_10": "list(limit=10)",
    "list_100": "list(limit=100), a page of 100",
    "delete_for_runs": "delete_for_runs(one run)",
    "copy_thread": "copy_thread",
    "cold_put": "put from a process that never saw the thread",
    "delete_thread": "delete_thread",
    "prune": "prune(keep_last=10)",
}
STEP_LABEL = {"agent": "a whole turn (~5 checkpoints)", "built": "a step (put_writes + put)"}
PUT_LABEL = {"agent": "put (in a turn)", "built": "put (in a step)"}


def _ops(kind: str) -> list[str]:
    return ["steps", "put", *READS[kind], *WRITES]


def _cell(entry: dict | None, op: str) -> dict | None:
    """One operation's figures at one mark; ``put`` is the client time of the window's puts."""
    if entry is None:
        return None
    if op == "put":
        steps = entry.get("steps")
        return steps and {"n": steps.get("puts", 0), "client_ms": steps.get("put_ms")}
    return entry.get(op)


def _longest(m: dict | None) -> str:
    if not m or "max_ms" not in m:
        return "–"
    return f"{_num(m['max_ms'])} {m.get('max_command', '')}".strip()


def _kb(m: dict | None, field: str) -> str:
    return "–" if not m or m.get(field) is None else _num(m[field] / 1e3)


def _client(m: dict | None) -> str:
    if m is None:
        return "–"
    if "error" in m:
        return m["error"].split(":")[0]
    return _num(m.get("client_ms"))


def _marks(results: dict, kind: str) -> list[int]:
    return sorted({int(k) for e in results.get("long", {}).get(kind, {}).values() for k in e.get("at", {})})


def long_rows(results: dict, kind: str) -> tuple[list[str], list[list[str]]]:
    runs = results.get("long", {}).get(kind, {})
    head = ["op", "turns" if kind == "agent" else "checkpoints"]
    servers = [k for k in SERVER_BACKENDS if k in runs]
    clients = [k for k in CLIENT_ONLY if k in runs]
    for key in servers:
        name = SHORT.get(key, key)
        head += [f"{name}: longest command ms", "KB in", "KB AOF", "client ms"]
    head += [f"{SHORT.get(k, k)}: client ms" for k in clients]
    if "stateline" in runs and "inmemory" in runs:
        head.append("stateline ×InMemory")
    rows: list[list[str]] = []
    for op in _ops(kind):
        label = STEP_LABEL[kind] if op == "steps" else PUT_LABEL[kind] if op == "put" else LABEL[op]
        for mark in _marks(results, kind):
            cells = {k: _cell(runs[k].get("at", {}).get(str(mark)), op) for k in servers + clients}
            if not any(cells.values()):
                continue
            row = [label, f"{mark:,}"]
            for key in servers:
                m = cells[key]
                row += [_longest(m), _kb(m, "bytes_in"), _kb(m, "aof_bytes"), _client(m)]
            row += [_client(cells[k]) for k in clients]
            if "stateline" in runs and "inmemory" in runs:
                a, b = cells["stateline"], cells["inmemory"]
                row.append(_ratio((a or {}).get("client_ms"), (b or {}).get("client_ms")))
            rows.append(row)
            label = ""
    return head, rows


def notes_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = ["thread", "backend", "measured at", "client RSS Δ MB at each mark", "peak RSS Δ MB", "notes"]
    rows = []
    for kind, runs in results.get("long", {}).items():
        for key, e in runs.items():
            at = e.get("at", {})
            notes = [x for x in (e.get("capped"), e.get("stopped"), e.get("error")) if x]
            notes += sorted(
                {m["note"] for entry in at.values() for m in entry.values() if isinstance(m, dict) and m.get("note")}
            )
            errors = {op for entry in at.values() for op, m in entry.items() if isinstance(m, dict) and "error" in m}
            notes += [f"{op}: {_first_error(at, op)}" for op in sorted(errors)]
            rows.append(
                [
                    kind,
                    SHORT.get(key, key),
                    ", ".join(f"{int(k):,}" for k in at),
                    ", ".join(_num(entry.get("rss_mb")) for entry in at.values()),
                    _num(e.get("peak_rss_mb")),
                    "; ".join(notes),
                ]
            )
    return head, rows


def _first_error(at: dict, op: str) -> str:
    for mark, entry in at.items():
        m = entry.get(op)
        if isinstance(m, dict) and "error" in m:
            return f"at {int(mark):,}: {m['error'][:120]}"
    return ""


SECTIONS = (
    (
        "(e) long thread, the chat agent (4 messages and ~5 checkpoints a turn): the longest single server "
        "command of each operation (SLOWLOG), bytes the server received and appended to its AOF per call "
        "(per turn for a turn), client time (median)",
        lambda r: long_rows(r, "agent"),
    ),
    (
        "(e) long thread, built through put_writes / put (4 messages a checkpoint): the same measures "
        "(per step for a step)",
        lambda r: long_rows(r, "built"),
    ),
    ("(e) long threads: where each was measured, the client's memory, notes", notes_rows),
)


def chart(results: dict, path: Path) -> Path:
    """Per thread: the longest server command of each operation (stateline and lcr, at each
    mark), and the client time of each backend at the largest size all of them reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    for col, kind in enumerate(("agent", "built")):
        runs = results.get("long", {}).get(kind, {})
        ops = [op for op in _ops(kind) if op != "put"]
        _bars(axes[0][col], runs, ops, "max_ms", [k for k in SERVER_BACKENDS if k in runs], kind)
        axes[0][col].axhline(10, color="black", lw=0.8, ls=":")
        axes[0][col].set_title(f"(e) {kind}: longest single server command (ms; dotted: 10 ms)")
        _bars(axes[1][col], runs, ops, "client_ms", list(runs), kind)
        axes[1][col].set_title(f"(e) {kind}: client time (ms, median)")
    fig.suptitle("stateline bench: long threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(ax: Any, runs: dict, ops: list[str], field: str, keys: list[str], kind: str) -> None:
    series = [(key, mark) for key in keys for mark in runs[key].get("at", {})]
    width = 0.8 / max(1, len(series))
    for i, (key, mark) in enumerate(series):
        entry = runs[key]["at"][mark]
        values = [(_cell(entry, op) or {}).get(field) or 0 for op in ops]
        ax.bar([x + i * width for x in range(len(ops))], values, width, label=f"{SHORT.get(key, key)} @{int(mark):,}")
    ax.set_yscale("log")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(ops))])
    ax.set_xticklabels(
        [(STEP_LABEL[kind] if op == "steps" else LABEL[op]) for op in ops], rotation=35, ha="right", fontsize=7
    )
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7)
