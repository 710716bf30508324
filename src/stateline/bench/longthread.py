"""(e) long threads: what one call costs the server when a thread is long.

Two threads per backend, each grown on a fresh server of its own that keeps an AOF:
``agent``, the chat agent of agent.py driven turn after turn (4 messages and about 5
checkpoints a turn), and ``built``, a thread built in a tight loop through the saver's public
``put_writes`` / ``put``, each checkpoint carrying the whole, growing messages list as
LangGraph's ``add_messages`` makes it (4 messages a step, one run every 5 steps). At each
mark the workload measures, per operation, the longest single server command, the bytes
the server received and appended to its AOF (probe.py), and the client time (median).

Each (backend, thread) runs in a child process of its own: its peak RSS is the client's
memory, an InMemorySaver's gigabytes go away with it, and an address-space limit turns a
runaway read into a MemoryError reported for that operation. A cold put runs in a
further process, which has never seen the thread, whatever a process keeps in caches.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver, copy_checkpoint, empty_checkpoint

from .agent import build_graph, text
from .backends import BACKENDS, Env, TimedSaver
from .probe import Probe, Window
from .stats import median

__all__ = ["Spec", "marks_for", "run_spec", "measure", "four_messages", "READS", "WRITES"]

# What a row of the report is called, per thread kind, in the order measured.
READS = {
    "agent": ("get_state", "list_filter_1", "history_10", "list_100"),
    "built": ("get_tuple", "list_filter_1", "list_10", "list_100"),
}
WRITES = ("delete_for_runs", "copy_thread", "cold_put", "delete_thread", "prune")
FILTER = {"source": "input"}  # the newest user input: a few checkpoints back


@dataclass(frozen=True)
class Spec:
    """What one child process measures."""

    backend: str
    kind: str  # "agent" (turns) or "built" (checkpoints)
    marks: tuple[int, ...]
    url: str | None
    tmp: str
    window: int = 5  # turns (steps) measured under the probe at each mark
    reps: int = 3  # samples of each read and of delete_for_runs
    copies: int = 2  # copies of the thread for the cold put + delete_thread, and for prune
    prune_keep: int = 10
    op_budget_s: float = 20.0  # no further samples of an operation once it took this long
    budget_s: float = 1800.0  # growing the thread stops here; it is measured where it got to
    memory_gb: float = 10.0


def marks_for(size: int, divisor: int, cap: int | None) -> tuple[tuple[int, ...], str]:
    """The sizes to measure at (``size / divisor`` shows the slope), and a note if capped."""
    top = size if cap is None else min(size, cap)
    marks = tuple(sorted({m for m in (max(1, size // divisor), size) if m <= top} | {top}))
    return marks, (f"capped at {top:,} (asked {size:,})" if top < size else "")


def four_messages(key: str) -> list[Any]:
    """A turn's messages: user, model with a tool call, tool, model (as agent.py's graph)."""
    call = {"name": "search", "args": {"query": text(f"query-{key}", 40)}, "id": f"call-{key}", "type": "tool_call"}
    return [
        HumanMessage(content=text(f"user-{key}"), id=f"human-{key}"),
        AIMessage(content=text(f"think-{key}"), id=f"ai-call-{key}", tool_calls=[call]),
        ToolMessage(content=text(f"tool-{key}"), tool_call_id=f"call-{key}", id=f"tool-{key}"),
        AIMessage(content=text(f"answer-{key}"), id=f"ai-final-{key}"),
    ]


def _config(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


# -- the two threads ---------------------------------------------------------------------------


class ChatThread:
    """The chat agent; one ``step`` is one turn (run ``run-<turn>``)."""

    def __init__(self, saver: Any, thread_id: str) -> None:
        self.saver, self.thread_id, self.size = saver, thread_id, 0
        self.timed = TimedSaver(saver)
        self.app = build_graph(self.timed)

    def step(self) -> None:
        self.size += 1
        t = self.size
        inp = {"messages": [HumanMessage(content=text(f"user-{t}"), id=f"human-{t}")]}
        self.app.invoke(inp, {"configurable": {"thread_id": self.thread_id, "run_id": f"run-{t}"}}, durability="sync")

    @property
    def runs(self) -> int:
        return self.size

    def reads(self) -> dict[str, Callable[[], Any]]:
        cfg = {"configurable": {"thread_id": self.thread_id}}
        return {
            "get_state": lambda: self.app.get_state(cfg),
            "list_filter_1": lambda: list(self.saver.list(cfg, filter=FILTER, limit=1)),
            "history_10": lambda: list(self.app.get_state_history(cfg, limit=10)),
            "list_100": lambda: list(self.saver.list(cfg, limit=100)),
        }


class BuiltThread:
    """Built in a tight loop; one ``step`` is ``put_writes`` of 4 new messages on the head,
    then ``put`` of a checkpoint carrying the whole list (run ``run-<(step-1)//5+1>``)."""

    def __init__(self, saver: Any, thread_id: str) -> None:
        self.saver, self.thread_id, self.size = saver, thread_id, 0
        self.timed = TimedSaver(saver)
        self.config: dict = _config(thread_id)
        self.messages: list[Any] = []
        self.version: Any = None

    def step(self) -> None:
        self.size += 1
        i = self.size
        new = four_messages(str(i))
        if i > 1:  # a node's writes go to the checkpoint it started from
            self.timed.put_writes(self.config, [("messages", new)], f"task-{i}")
        self.messages = self.messages + new  # a new list of the same objects, as add_messages
        version = self.saver.get_next_version(self.version, None)
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": self.messages}
        cp["channel_versions"] = {"messages": version}
        cp["versions_seen"] = {"model": {"messages": self.version or version}}
        md: dict[str, Any] = {
            "source": "input" if i % 5 == 1 else "loop",
            "step": i,
            "parents": {},
            "run_id": f"run-{(i - 1) // 5 + 1}",
        }
        self.config = self.timed.put(self.config, cp, md, {"messages": version})
        self.version = version

    @property
    def runs(self) -> int:
        return (self.size + 4) // 5

    def reads(self) -> dict[str, Callable[[], Any]]:
        cfg = _config(self.thread_id)
        return {
            "get_tuple": lambda: self.saver.get_tuple(cfg),
            "list_filter_1": lambda: list(self.saver.list(cfg, filter=FILTER, limit=1)),
            "list_10": lambda: list(self.saver.list(cfg, limit=10)),
            "list_100": lambda: list(self.saver.list(cfg, limit=100)),
        }


# -- measuring ----------------------------------------------------------------------------------


def _supports(saver: Any, name: str) -> bool:
    """Whether the saver implements ``name`` (BaseCheckpointSaver's raises NotImplementedError)."""
    return getattr(type(saver), name) is not getattr(BaseCheckpointSaver, name)


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass(frozen=True)
class Timed:
    seconds: float


class Measurer:
    """Times calls, with the probe (if the backend has a server) around each one."""

    def __init__(self, spec: Spec, probe: Probe | None) -> None:
        self.spec, self.probe = spec, probe

    @contextmanager
    def server(self) -> Iterator[Window | None]:
        with self.probe.window() if self.probe else nullcontext() as w:
            yield w

    def op(self, fn: Callable[[Any], Any], reps: int | None = None, setup: Callable[[int], Any] | None = None) -> dict:
        """Up to ``reps`` samples of ``fn(setup(i))`` (``fn(i)`` without ``setup``; fewer
        once ``op_budget_s`` is spent): client median, longest server command over all
        samples, mean bytes per call. ``setup`` is neither timed nor probed; ``fn`` may
        return ``Timed(seconds)``, the time the call took where it ran."""
        times: list[float] = []
        windows: list[Window] = []
        for i in range(self.spec.reps if reps is None else reps):
            w = error = None
            try:
                arg = setup(i) if setup else i
                with self.server() as w:
                    t0 = time.perf_counter()
                    got = fn(arg)
                    times.append(got.seconds if isinstance(got, Timed) else time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - reported in the results; the other operations go on
                error = f"{type(exc).__name__}: {exc}"[:300]
            if w is not None:  # (a failed call's window too: what the server did for it)
                windows.append(w)
            if error:
                return {**self._summary(times, windows), "error": error}
            if sum(times) > self.spec.op_budget_s:
                break
        return self._summary(times, windows)

    def _summary(self, times: list[float], windows: list[Window]) -> dict:
        out: dict[str, Any] = {"n": len(times)}
        if times:
            out["client_ms"] = round(median(times) * 1e3, 3)
        if windows:
            top = max(windows, key=lambda w: w.max_ms)
            merged = Window(
                max_ms=top.max_ms,
                max_command=top.max_command,
                bytes_in=sum(w.bytes_in for w in windows),
                aof_bytes=None if top.aof_bytes is None else sum(w.aof_bytes or 0 for w in windows),
                note="; ".join(sorted({w.note for w in windows if w.note})),
            )
            out.update(merged.as_dict(per=len(windows)))
        return out

    def steps(self, thread: ChatThread | BuiltThread) -> dict:
        """``window`` turns (steps) in one probe window: the figures are per turn (step)."""
        first, times = len(thread.timed.calls), []
        with self.server() as w:
            for _ in range(self.spec.window):
                t0 = time.perf_counter()
                thread.step()
                times.append(time.perf_counter() - t0)
        out: dict[str, Any] = {"n": len(times), "client_ms": round(median(times) * 1e3, 3)}
        if w is not None:
            out.update(w.as_dict(per=len(times)))
        puts = [c[1] for c in thread.timed.calls[first:] if c[0] == "put"]
        out["put_ms"] = round(median(puts) * 1e3, 3)
        out["puts"] = len(puts)
        return out


def _ignoring_i(fn: Callable[[], Any]) -> Callable[[int], Any]:
    return lambda _i: fn()


def _grow(thread: ChatThread | BuiltThread, target: int, deadline: float, tick: Callable[[int], None]) -> bool:
    """Steps up to ``target``; False if the deadline came first."""
    while thread.size < target:
        if time.perf_counter() > deadline:
            return False
        thread.step()
        if thread.size % 10 == 0:
            tick(thread.size)
    return True


def _next_checkpoint(saver: Any, head: Any, key: str) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The head's checkpoint, 4 messages longer, as a put's arguments (a cold put's)."""
    cp = copy_checkpoint(head.checkpoint)
    fresh = empty_checkpoint()
    cp["id"], cp["ts"] = fresh["id"], fresh["ts"]
    version = saver.get_next_version(cp["channel_versions"].get("messages"), None)
    cp["channel_values"]["messages"] = list(cp["channel_values"]["messages"]) + four_messages(key)
    cp["channel_versions"]["messages"] = version
    md = {"source": "update", "step": int(head.metadata.get("step", 0)) + 1, "parents": {}}
    return head.config, cp, md, {"messages": version}


class Destructive:
    """copy_thread, then on the copies: the cold put, delete_thread and prune, where the
    saver can copy; where it cannot, the cold put and prune (or delete_thread) on the
    thread itself, at the last mark only. Then delete_for_runs of old runs of the thread
    (never more than its older half: it goes on growing)."""

    def __init__(self, m: Measurer, saver: Any, thread: ChatThread | BuiltThread, tag: str) -> None:
        self.m, self.saver, self.thread, self.tag = m, saver, thread, tag
        self.deleted_runs = 0

    def run(self, last: bool) -> dict:
        out: dict[str, Any] = {}
        copies = _supports(self.saver, "copy_thread")
        if copies:
            out.update(self._on_copies())
        if _supports(self.saver, "delete_for_runs"):
            out.update(self._delete_runs())
        if last and not copies:
            out.update(self._on_thread())
        return out

    def _delete_runs(self) -> dict:
        runs = list(range(self.deleted_runs + 1, self.thread.runs // 2 + 1))[: self.m.spec.reps]
        if not runs:
            return {}
        self.deleted_runs = runs[-1]
        delete = self.saver.delete_for_runs
        return {
            "delete_for_runs": self.m.op(lambda run: delete([run]), setup=lambda i: f"run-{runs[i]}", reps=len(runs))
        }

    def _on_copies(self) -> dict:
        s, m, src, size = self.saver, self.m, self.thread.thread_id, self.thread.size
        n = self.m.spec.copies
        names = [f"{src}-copy{size}-{k}" for k in range(2 * n)]
        out = {"copy_thread": m.op(lambda i: s.copy_thread(src, names[i]), reps=2 * n)}
        copied = names[: out["copy_thread"]["n"]]
        a, b = copied[:n], copied[n:]
        out["cold_put"] = self._cold_puts(a)
        out["delete_thread"] = m.op(lambda i: s.delete_thread(a[i]), reps=len(a))
        if _supports(s, "prune"):
            out["prune"] = m.op(lambda i: s.prune([b[i]], keep_last=m.spec.prune_keep), reps=len(b))
        for t in b:  # (the pruned copies go before the thread grows on)
            s.delete_thread(t)
        return out

    def _on_thread(self) -> dict:
        s, m, t = self.saver, self.m, self.thread.thread_id
        out: dict[str, Any] = {}
        if self.m.probe is not None:  # (a fresh InMemorySaver has no thread to put on)
            out["cold_put"] = self._cold_puts([t] * m.spec.copies)
        if _supports(s, "prune"):
            out["prune"] = m.op(lambda i: s.prune([t], keep_last=m.spec.prune_keep), reps=1)
        elif _supports(s, "delete_thread"):
            out["delete_thread"] = m.op(lambda i: s.delete_thread(t), reps=1)
        return out

    def _cold_puts(self, threads: list[str]) -> dict:
        """One put on each thread by a process that never saw it: started, connected and
        handed the checkpoint (the head read here, 4 messages longer) before the clock starts."""

        def setup(i: int) -> _ColdProcess:
            head = self.saver.get_tuple(_config(threads[i]))
            return _ColdProcess(self.m.spec, self.tag, _next_checkpoint(self.saver, head, f"cold-{i}"))

        return self.m.op(_ColdProcess.put, setup=setup, reps=len(threads))


class _ColdProcess:
    def __init__(self, spec: Spec, tag: str, args: tuple) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_cold_child, args=(spec, tag, child), daemon=True)
        self.proc.start()
        child.close()
        self.conn.send(args)
        self._expect("ready")

    def _expect(self, what: str) -> Any:
        try:
            kind, value = self.conn.recv()
        except EOFError:
            kind, value = "error", f"it ended with exit code {self.proc.exitcode}"
        if kind != what:
            self.close()
            raise RuntimeError(f"the cold-put process failed: {value}")
        return value

    def put(self) -> Timed:
        self.conn.send("go")
        try:
            return Timed(self._expect("done"))
        finally:
            self.close()

    def close(self) -> None:
        self.conn.close()
        self.proc.join(timeout=60)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


def _cold_child(spec: Spec, tag: str, conn: Any) -> None:
    b = BACKENDS[spec.backend]
    saver = b.open(Env(spec.url or "", spec.url, spec.tmp), tag)
    try:
        config, cp, md, nv = conn.recv()
        saver.get_tuple(_config("cold-warmup"))  # connects without reading the thread
        conn.send(("ready", None))
        conn.recv()
        t0 = time.perf_counter()
        saver.put(config, cp, md, nv)
        conn.send(("done", time.perf_counter() - t0))
    except Exception as exc:  # noqa: BLE001 - handed to the measuring process, which reports it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        b.close(saver)
        conn.close()


def measure(spec: Spec, tick: Callable[[int], None]) -> dict:
    """Grows the thread mark after mark and measures every operation at each one."""
    b = BACKENDS[spec.backend]
    tag = f"long-{spec.kind}"
    saver = b.open(Env(spec.url or "", spec.url, spec.tmp), tag)
    probe = Probe(spec.url) if b.server and spec.url else None
    rss0 = _rss_mb()
    try:
        thread = (ChatThread if spec.kind == "agent" else BuiltThread)(saver, f"long{spec.kind}")
        m = Measurer(spec, probe)
        writes = Destructive(m, saver, thread, tag)
        out: dict[str, Any] = {"spec": asdict(spec) | {"url": None, "tmp": None}, "at": {}}
        deadline = time.perf_counter() + spec.budget_s
        for mark in spec.marks:
            done = _grow(thread, max(0, mark - spec.window), deadline, tick)
            entry: dict[str, Any] = {"steps": m.steps(thread)}
            entry.update({name: m.op(_ignoring_i(fn)) for name, fn in thread.reads().items()})
            last = not done or mark == spec.marks[-1]
            entry.update(writes.run(last))
            entry["rss_mb"] = None if rss0 is None else round((_rss_mb() or 0) - rss0, 1)
            out["at"][str(thread.size)] = entry
            tick(thread.size)
            if not done:
                out["stopped"] = f"stopped at {thread.size:,}: growing the thread took over {spec.budget_s:.0f} s"
                break
        out["peak_rss_mb"] = round(_peak_rss_mb() - (rss0 or 0), 1)
        return out
    finally:
        if probe is not None:
            probe.close()
        b.close(saver)


# -- one child process per (backend, thread) -----------------------------------------------------


def _limit_memory(gb: float) -> None:
    """An address-space limit: a read that would take more raises MemoryError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = int(gb * 2**30)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def _child(spec: Spec, conn: Any) -> None:
    _limit_memory(spec.memory_gb)
    try:
        result = measure(spec, lambda size: conn.send(("tick", size)))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which reports it
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
    conn.send(("done", result))
    conn.close()


def run_spec(spec: Spec, tick: Callable[[int], None]) -> dict:
    """Runs ``measure(spec)`` in a child process; returns its result (or the error)."""
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(spec, child))  # (not a daemon: it starts the cold-put processes)
    proc.start()
    child.close()
    try:
        while True:
            try:
                kind, value = conn.recv()
            except EOFError:
                proc.join()
                return {"error": f"the measuring process ended with exit code {proc.exitcode} (out of memory?)"}
            if kind == "done":
                return value
            tick(value)
    finally:
        conn.close()
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
            proc.join()
