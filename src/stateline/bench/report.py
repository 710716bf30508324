"""Tables (rich and Markdown), the JSON result file and the chart of a run's results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = [
    "print_tables",
    "markdown",
    "write_json",
    "chart",
    "micro_rows",
    "added_rows",
    "agent_rows",
    "memory_rows",
    "conc_rows",
]

OP_LABEL = {
    "put": "put",
    "put_writes": "put_writes",
    "get_tuple_latest": "get_tuple (latest)",
    "get_tuple_by_id": "get_tuple (by id)",
    "list_10": "list(limit=10)",
}
FLOOR_OP = {"put": "put", "put_writes": "put_writes"}  # the others compare with the floor's GET
PEERS = ("lcr", "lcr-shallow", "inmemory", "sqlite")
PEER_LABEL = {"lcr": "×lcr", "lcr-shallow": "×lcr-shallow", "inmemory": "×InMemory", "sqlite": "×Sqlite"}
SHORT = {
    "stateline": "stateline",
    "stateline-plain": "stateline, compression off",
    "stateline-encrypted": "stateline, encrypted",
    "stateline-shallow": "stateline shallow",
    "stateline-async": "stateline async",
    "stateline-shallow-async": "stateline shallow async",
    "lcr": "lcr RedisSaver",
    "lcr-shallow": "lcr ShallowRedisSaver",
    "lcr-async": "lcr AsyncRedisSaver",
    "lcr-shallow-async": "lcr AsyncShallowRedisSaver",
    "inmemory": "InMemorySaver",
    "inmemory-async": "InMemorySaver (async)",
    "sqlite": "SqliteSaver",
    "sqlite-async": "AsyncSqliteSaver",
    "floor": "floor (EVALSHA / GET)",
    "floor-async": "floor async",
}


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "–"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def _num(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x < 0:
        return "−" + _num(-x, unit)
    if x >= 100:
        return f"{x:,.0f}{unit}"
    if x >= 10:
        return f"{x:.1f}{unit}"
    return f"{x:.2f}{unit}"


def _op(results: dict, key: str, size: str, op: str) -> dict | None:
    entry = results["micro"].get(key, {}).get("sizes", {}).get(size, {})
    return entry.get("ops", {}).get(op)


def _floor_of(key: str) -> str:
    return "floor-async" if key.endswith("async") else "floor"


# -- rows (shared by the rich and the Markdown tables) ---------------------------------------


def _ref(results: dict, sizes: list[str], key: str, op: str, other: str, other_op: str) -> str:
    """key's median / other's median, at the longest thread both have measured."""
    for s in reversed(sizes):
        a, b = _op(results, key, s, op), _op(results, other, s, other_op)
        if a and b:
            return _ratio(a["median_us"], b["median_us"])
    return "–"


def micro_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    sizes = [str(s) for s in results["meta"]["config"]["micro_sizes"]]
    big = sizes[-1]
    head = [
        "op",
        "backend",
        *[f"median µs @{int(s):,}" for s in sizes],
        f"p99 µs @{int(big):,}",
        "RTT",
        "×floor (paired)",
        "+µs over floor",
    ]
    head += [PEER_LABEL[p] for p in PEERS]
    rows: list[list[str]] = []
    for op in OP_LABEL:
        for key, entry in results["micro"].items():
            if "error" in entry:
                rows.append(
                    [OP_LABEL[op], SHORT.get(key, key), f"error: {entry['error'][:60]}"] + [""] * (len(head) - 3)
                )
                continue
            meds = []
            for s in sizes:
                m = _op(results, key, s, op)
                skipped = entry["sizes"].get(s, {}).get("skipped")
                wrong = " (WRONG RESULT)" if m and m.get("valid") is False else ""
                meds.append("too slow" if skipped else _num(m["median_us"] if m else None) + wrong)
            last = _op(results, key, big, op)
            if key.startswith("floor"):
                floor = "1.00×"
            elif last and "floor_median_us" in last:  # the floor timed alongside each sample
                floor = _ratio(last["median_us"], last["floor_median_us"])
            else:
                floor = _ref(results, sizes, key, op, _floor_of(key), FLOOR_OP.get(op, "get_tuple_latest"))
            rts = "–"
            for s in reversed(sizes):
                m = _op(results, key, s, op)
                if m:
                    rts = f"{m['round_trips']:g}"
                    break
            peers = ["–" if key == p else _ref(results, sizes, key, op, p, op) for p in PEERS]
            over = _num(last["median_us"] - last["floor_median_us"]) if last and "floor_median_us" in last else "–"
            p99 = _num(last["p99_us"] if last else None)
            rows.append([OP_LABEL[op], SHORT.get(key, key), *meds, p99, rts, floor, over, *peers])
    return head, rows


ADDED_OPS = ("put", "put_writes", "get_tuple_latest", "get_tuple_by_id")


def added_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """What stateline adds to redis-py's own call of the same size on the same client: its
    median minus the paired floor's (an EVALSHA sending as many bytes for a write, a GET
    receiving as many for a read), per thread length."""
    sizes = [str(s) for s in results["meta"]["config"]["micro_sizes"]]
    big = sizes[-1]
    head = ["op", "backend", *[f"+µs @{int(s):,}" for s in sizes], f"µs @{int(big):,}", "floor µs", "×floor"]
    head.append("bytes sent / received")
    rows: list[list[str]] = []
    for op in ADDED_OPS:
        for key, entry in results["micro"].items():
            if not key.startswith("stateline") or "error" in entry:
                continue
            cells = [_op(results, key, s, op) for s in sizes]
            over = [_num(m["median_us"] - m["floor_median_us"]) if m and "floor_median_us" in m else "–" for m in cells]
            last = cells[-1] or {}
            size = last.get("bytes")
            shown = f"{size['sent']:,} / {size['received']:,}" if size else "floor's own"
            floor = last.get("floor_median_us")
            rows.append(
                [OP_LABEL[op], SHORT.get(key, key), *over, _num(last.get("median_us")), _num(floor)]
                + [_ratio(last.get("median_us"), floor), shown]
            )
    return head, rows


def _agent_at(entry: dict, mark: str, field: str) -> float | None:
    v = entry.get("at", {}).get(mark, {}).get(field)
    return v


def agent_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    marks = [str(m) for m in results["meta"]["config"]["agent_marks"]]
    mid, last = marks[len(marks) // 2], marks[-1]
    head = ["backend", "saver ms/turn median", "p99", *[f"@{m}" for m in marks]]
    head += [f"Σ calls ms @{last}", f"CPU ms @{last}", f"put ms @{last}", f"turn wall ms @{last}"]
    head += [
        f"×InMemory @{mid}",
        f"×InMemory @{last}",
        f"×lcr @{mid}",
        f"×lcr @{last}",
        f"wall ×InMemory @{last}",
        "state ok",
    ]
    rows = []
    ag = results["agent"]
    for key, e in ag.items():
        if "error" in e:
            rows.append([SHORT.get(key, key), f"error: {e['error'][:60]}"] + [""] * (len(head) - 2))
            continue
        s = e["saver_ms_per_turn"]
        peer = "lcr-shallow" if "shallow" in key else "lcr"
        row = [SHORT.get(key, key), _num(s["median"]), _num(s["p99"])]
        row += [_num(_agent_at(e, m, "saver_ms_per_turn")) for m in marks]
        row += [
            _num(_agent_at(e, last, f))
            for f in ("saver_sum_ms_per_turn", "saver_cpu_ms_per_turn", "put_ms", "wall_ms_per_turn")
        ]
        for ref in ("inmemory", peer):
            for m in (mid, last):
                other = ag.get(ref, {})
                row.append(
                    _ratio(_agent_at(e, m, "saver_ms_per_turn"), _agent_at(other, m, "saver_ms_per_turn"))
                    if other
                    else "–"
                )
        row.append(
            _ratio(_agent_at(e, last, "wall_ms_per_turn"), _agent_at(ag.get("inmemory", {}), last, "wall_ms_per_turn"))
        )
        ok = e.get("messages_read_back") == e.get("messages_expected")
        row.append(
            ("yes" if ok else f"NO ({e.get('messages_read_back')}/{e.get('messages_expected')})")
            + (" (stopped)" if e.get("stopped") else "")
        )
        rows.append(row)
    return head, rows


def memory_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    marks = [str(m) for m in results["meta"]["config"]["agent_marks"]]
    mid, last = marks[len(marks) // 2], marks[-1]
    head = [
        "backend",
        "measure",
        *[f"MB @{m}" for m in marks],
        *[f"KB/turn @{m}" for m in marks],
        f"ratio {last}/{mid}",
        "×lcr @" + last,
        "warm-up Δ KB",
    ]
    rows = []
    ag = results["agent"]

    def value(e: dict, m: str) -> float | None:
        s = e.get("memory", {}).get(m)
        if not s:
            return None
        return s.get("used_memory_delta", s.get("stored_bytes"))

    for key, e in ag.items():
        if "error" in e or not e.get("memory"):
            continue
        first = e["memory"].get(marks[-1]) or next(iter(e["memory"].values()))
        measure = "Redis used_memory Δ" if "used_memory_delta" in first else first.get("what", "")
        vals = [value(e, m) for m in marks]
        peer = "lcr-shallow" if "shallow" in key else "lcr"
        row = [SHORT.get(key, key), measure]
        row += [_num(v / 1e6) if v is not None else "–" for v in vals]
        row += [_num(v / 1e3 / int(m)) if v is not None else "–" for v, m in zip(vals, marks, strict=True)]
        row.append(_ratio(value(e, last), value(e, mid)))
        row.append(_ratio(value(e, last), value(ag.get(peer, {}), last)) if "used_memory_delta" in first else "–")
        warm = e.get("warmup_used_memory_delta", e.get("warmup_stored_bytes_delta"))
        row.append(_num(warm / 1e3) if warm is not None else "–")
        rows.append(row)
        keysum = [e["memory"].get(m, {}).get("memory_usage_sum") for m in marks]
        if any(k is not None for k in keysum):
            row2 = ["", "Σ MEMORY USAGE of keys"]
            row2 += [_num(v / 1e6) if v is not None else "–" for v in keysum]
            row2 += [_num(v / 1e3 / int(m)) if v is not None else "–" for v, m in zip(keysum, marks, strict=True)]
            row2 += [_ratio(keysum[-1], keysum[len(marks) // 2]), "", ""]
            rows.append(row2)
    return head, rows


def conc_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = [
        "backend",
        "threads",
        "wall s",
        "ops/s",
        "put median µs",
        "put p99 µs",
        "get_tuple median µs",
        "RTT/op",
        "×floor wall",
        "×lcr wall",
    ]
    rows = []
    cc = results["concurrent"]
    for key, e in cc.items():
        if "error" in e or "skipped" in e:
            rows.append([SHORT.get(key, key), e.get("error", e.get("skipped", ""))[:80]] + [""] * (len(head) - 2))
            continue
        peer = "lcr-shallow-async" if "shallow" in key else "lcr-async"
        lat = e["ops_latency"]
        rows.append(
            [
                SHORT.get(key, key),
                str(e["threads"]),
                _num(e["wall_s"]),
                _num(e["ops_per_s"]),
                _num(lat["put"]["median_us"]),
                _num(lat["put"]["p99_us"]),
                _num(lat["get_tuple"]["median_us"]),
                f"{e['round_trips_per_op']:g}",
                _ratio(e["wall_s"], cc.get("floor-async", {}).get("wall_s")),
                _ratio(e["wall_s"], cc.get(peer, {}).get("wall_s")),
            ]
        )
    return head, rows


SECTIONS = (
    (
        "(a) micro: latency per operation on threads of growing length (×floor: against the floor timed right after "
        "each sample, at the longest thread; the other ratios at the longest thread both measured)",
        micro_rows,
    ),
    (
        "(a) what stateline adds to redis-py: each call against redis-py's own EVALSHA (writes) or GET (reads) of "
        "the same size, on the same client, timed right after it",
        added_rows,
    ),
    (
        "(b) agent: saver time per chat turn (model -> tool -> model; saver ms = time any saver call was running, "
        "medians over the 10 turns ending at each mark)",
        agent_rows,
    ),
    (
        "(d) memory of the agent's thread: growth from a baseline taken after a one-turn warm-up on another thread "
        "with the same saver, so KB/turn is the marginal cost; warm-up Δ = what that turn added (one-time server "
        "state: Lua VM and scripts, a peer's search indexes; plus the warm-up thread's one turn). Σ MEMORY USAGE: "
        "the measured thread's keys only. InMemorySaver: the measured thread's bytes; SQLite: file growth since "
        "the warm-up",
        memory_rows,
    ),
    ("(c) concurrent threads (asyncio)", conc_rows),
)


def print_tables(results: dict, console: Any, sections: tuple = SECTIONS) -> None:
    from rich.table import Table

    for title, fn in sections:
        head, rows = fn(results)
        if not rows:
            continue
        table = Table(title=title, title_justify="left", show_lines=False)
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i < 2 else "right", no_wrap=i < 2)
        prev = None
        for r in rows:
            if title.startswith(("(a)", "(e)")) and prev is not None and r[0] and r[0] != prev:
                table.add_section()
            prev = r[0]
            table.add_row(*r)
        console.print(table)


def markdown(results: dict, sections: tuple = SECTIONS) -> str:
    out = []
    for title, fn in sections:
        head, rows = fn(results)
        if not rows:
            continue
        out.append(f"**{title}**\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---" for _ in head) + "|")
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))


def _log_axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def chart(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    style = {
        "stateline": ("tab:blue", "-"),
        "stateline-plain": ("tab:olive", "-"),
        "stateline-encrypted": ("tab:orange", "-"),
        "stateline-shallow": ("tab:blue", "--"),
        "stateline-async": ("tab:cyan", "-"),
        "stateline-shallow-async": ("tab:cyan", "--"),
        "lcr": ("tab:red", "-"),
        "lcr-shallow": ("tab:red", "--"),
        "inmemory": ("tab:green", "-"),
        "sqlite": ("tab:purple", "-"),
        "floor": ("black", ":"),
        "floor-async": ("gray", ":"),
    }
    sizes = results["meta"]["config"]["micro_sizes"]
    for ax, op in ((axes[0][0], "put"), (axes[0][1], "list_10")):
        for key, entry in results["micro"].items():
            if "error" in entry or key not in style:
                continue
            fop = op if (op in FLOOR_OP or not key.startswith("floor")) else "get_tuple_latest"
            pts = [(s, _op(results, key, str(s), fop)) for s in sizes]
            pts = [(s, m["median_us"]) for s, m in pts if m]
            if pts:
                c, ls = style[key]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, color=c, marker="o", label=SHORT[key])
        ax.set_xscale("log")
        title = f"(a) {OP_LABEL[op]}" + (" (floor: GET)" if op == "list_10" else " (floor: EVALSHA)")
        _log_axes(ax, "checkpoints in the thread", "median latency (µs)", title)
    axes[0][0].legend(fontsize=7)
    ax = axes[1][0]
    for key, e in results["agent"].items():
        if "error" in e or key not in style:
            continue
        c, ls = style[key]
        ax.plot([r["turn"] for r in e["rows"]], [r["saver_ms"] for r in e["rows"]], ls, color=c, label=SHORT[key], lw=1)
    _log_axes(
        ax,
        "chat turns in the thread (5 checkpoints each)",
        "saver time per turn (ms)",
        "(b) agent: saver time per turn",
    )
    ax.legend(fontsize=7)
    ax = axes[1][1]
    for key, e in results["agent"].items():
        if "error" in e or key not in style or not e.get("memory"):
            continue
        used = [(int(t), s.get("used_memory_delta", s.get("stored_bytes"))) for t, s in e["memory"].items()]
        c, ls = style[key]
        what = "" if "used_memory_delta" in next(iter(e["memory"].values())) else " (stored bytes, not Redis)"
        ax.plot(
            [p[0] for p in used], [max(p[1], 1) / 1e6 for p in used], ls, color=c, marker=".", label=SHORT[key] + what
        )
    _log_axes(
        ax, "chat turns in the thread", "MB", "(d) memory of the agent's thread (Redis used_memory Δ after a warm-up)"
    )
    ax.legend(fontsize=7)
    fig.suptitle("stateline bench: " + ("quick mode" if results["meta"]["config"]["quick"] else "full run"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
