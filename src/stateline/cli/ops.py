"""Operator commands: see, diff, prune, delete, copy and measure threads.

Everything goes through the public saver API (``stateline.langgraph.RedisSaver``) and
the engine's ``thread_stats``/``dump``/``restore`` plans; nothing here builds a key.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer
from langchain_core.runnables import RunnableConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..langgraph import RedisSaver

console = Console()

URL = typer.Option(None, "--url", "-u", envvar="STATELINE_URL", help="Server URL (default: the embedded server).")
PREFIX = typer.Option("stateline:", "--prefix", "-p", envvar="STATELINE_PREFIX", help="Key prefix of the savers.")
DATA_DIR = typer.Option(None, "--data-dir", envvar="STATELINE_DATA_DIR", help="Embedded server data directory.")
NS = typer.Option(None, "--ns", help="Checkpoint namespace ('' = root; default: every namespace).")
YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
THREADS = typer.Argument(None, help="Threads to prune (default: every thread).")


def _saver(url: str | None, prefix: str, data_dir: str | None) -> RedisSaver:
    return RedisSaver(url, prefix=prefix, data_dir=data_dir)


def _plain(value: Any) -> Any:
    """Messages as 'type: content', so a history reads like the conversation."""
    if hasattr(value, "content") and hasattr(value, "type"):
        calls = getattr(value, "tool_calls", None)
        return f"{value.type}: {value.content}" + (f" [calls {', '.join(c['name'] for c in calls)}]" if calls else "")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _short(value: Any, width: int = 90) -> str:
    try:
        text = json.dumps(_plain(value), default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _config(thread: str, ns: str | None, checkpoint: str | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread}
    if ns is not None:
        conf["checkpoint_ns"] = ns
    if checkpoint:
        conf["checkpoint_id"] = checkpoint
    return {"configurable": conf}


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def threads(url: Optional[str] = URL, prefix: str = PREFIX, data_dir: Optional[str] = DATA_DIR) -> None:  # noqa: UP045
        """List every thread: checkpoints, namespaces, last step, size in Redis, TTL."""
        saver = _saver(url, prefix, data_dir)
        stats = saver.thread_stats()
        table = Table(title=f"threads under {prefix!r}")
        for col in ("thread_id", "checkpoints", "writes", "latest step", "updated", "memory", "ttl"):
            table.add_column(col, justify="right" if col not in ("thread_id", "updated") else "left")
        for s in stats:
            latest = saver.get_tuple(_config(s.thread_id, ""))
            step = latest.metadata.get("step") if latest else None
            ts = latest.checkpoint.get("ts", "")[:19] if latest else ""
            ttl = "-" if s.ttl_ms < 0 else f"{s.ttl_ms / 1000:.0f} s"
            table.add_row(s.thread_id, str(s.checkpoints), str(s.writes), str(step), ts, _size(s.memory), ttl)
        console.print(table)

    @app.command()
    def history(
        thread: str,
        ns: Optional[str] = NS,  # noqa: UP045
        limit: int = typer.Option(20, "--limit", "-n"),
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """A thread's checkpoints, newest first."""
        saver = _saver(url, prefix, data_dir)
        table = Table(title=f"history of {thread!r}")
        for col in ("checkpoint_id", "ns", "step", "source", "ts", "parent", "writes"):
            table.add_column(col)
        for t in saver.list(_config(thread, ns), limit=limit):
            md = t.metadata or {}
            parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else ""
            table.add_row(
                t.config["configurable"]["checkpoint_id"], t.config["configurable"]["checkpoint_ns"] or "''",
                str(md.get("step")), str(md.get("source")), t.checkpoint.get("ts", "")[:19], parent[-12:],
                str(len(t.pending_writes or [])),
            )  # fmt: skip
        console.print(table)

    @app.command()
    def show(
        thread: str,
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Default: the latest."),  # noqa: UP045
        ns: str = typer.Option("", "--ns"),
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """One checkpoint: its channel values, metadata and pending writes."""
        t = _saver(url, prefix, data_dir).get_tuple(_config(thread, ns, checkpoint))
        if t is None:
            console.print(f"[red]no checkpoint for thread {thread!r}[/red]")
            raise typer.Exit(1)
        console.print(f"[bold]{t.config['configurable']['checkpoint_id']}[/bold]  metadata {_short(t.metadata, 200)}")
        table = Table("channel", "value")
        for ch, value in sorted(t.checkpoint["channel_values"].items()):
            if isinstance(value, list) and len(value) > 1:  # one row per item, the last ten
                table.add_row(ch, f"{len(value)} items")
                for i in range(max(0, len(value) - 10), len(value)):
                    table.add_row(f"  [{i}]", _short(value[i]))
            else:
                table.add_row(ch, _short(value))
        console.print(table)
        if t.pending_writes:
            writes = Table("task", "channel", "value", title="pending writes")
            for task, ch, value in t.pending_writes:
                writes.add_row(task[-12:], ch, _short(value, 70))
            console.print(writes)

    @app.command()
    def diff(
        thread: str,
        old: Optional[str] = typer.Option(None, "--from", help="Default: the parent of --to."),  # noqa: UP045
        new: Optional[str] = typer.Option(None, "--to", help="Default: the latest."),  # noqa: UP045
        ns: str = typer.Option("", "--ns"),
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """What changed between two checkpoints (+ added, - removed, ~ changed)."""
        saver = _saver(url, prefix, data_dir)
        after = saver.get_tuple(_config(thread, ns, new))
        if after is None:
            console.print(f"[red]no checkpoint {new or 'latest'} in thread {thread!r}[/red]")
            raise typer.Exit(1)
        before_cfg = _config(thread, ns, old) if old else after.parent_config
        before = saver.get_tuple(before_cfg) if before_cfg else None
        a = before.checkpoint["channel_values"] if before else {}
        b = after.checkpoint["channel_values"]
        for ch in sorted(set(a) | set(b)):
            if ch not in a:
                console.print(f"[green]+ {ch}: {_short(b[ch])}[/green]")
            elif ch not in b:
                console.print(f"[red]- {ch}: {_short(a[ch])}[/red]")
            elif a[ch] != b[ch]:
                extra = ""
                if isinstance(a[ch], list) and isinstance(b[ch], list):
                    extra = f" ({len(a[ch])} -> {len(b[ch])} items)"
                console.print(f"[yellow]~ {ch}{extra}: {_short(b[ch])}[/yellow]")

    @app.command()
    def prune(
        thread_ids: list[str] = THREADS,
        keep: int = typer.Option(1, "--keep", help="Checkpoints to keep per namespace."),
        yes: bool = YES,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """Keep the newest checkpoints of each namespace; delete the rest and what only they used."""
        saver = _saver(url, prefix, data_dir)
        targets = thread_ids or [s.thread_id for s in saver.thread_stats()]
        if not yes:
            typer.confirm(f"prune {len(targets)} thread(s) to {keep} checkpoint(s) per namespace?", abort=True)
        with _progress() as bar:
            task = bar.add_task("pruning", total=len(targets))
            for t in targets:
                saver.prune([t], keep_last=keep)
                bar.advance(task)

    @app.command()
    def delete(
        thread_ids: list[str],
        yes: bool = YES,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """Delete threads with every checkpoint and write."""
        saver = _saver(url, prefix, data_dir)
        if not yes:
            typer.confirm(f"delete {len(thread_ids)} thread(s)?", abort=True)
        for t in thread_ids:
            saver.delete_thread(t)
        console.print(f"deleted {len(thread_ids)} thread(s)")

    @app.command()
    def copy(
        source: str,
        target: str,
        to_url: Optional[str] = typer.Option(None, "--to-url", help="Copy to another server (migrate)."),  # noqa: UP045
        to_prefix: Optional[str] = typer.Option(None, "--to-prefix", help="Copy under another prefix."),  # noqa: UP045
        move: bool = typer.Option(False, "--move", help="Delete the source once copied."),
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """Copy (or with --move, migrate) a thread, to another thread id, prefix or server."""
        src = _saver(url, prefix, data_dir)
        dst = _saver(to_url or url, to_prefix or prefix, data_dir) if (to_url or to_prefix) else src
        n = src.copy_thread_to(source, dst, target)
        if move:
            src.delete_thread(source)
        console.print(f"{'moved' if move else 'copied'} {source!r} to {target!r} ({n} stored fields)")

    @app.command()
    def stats(url: Optional[str] = URL, prefix: str = PREFIX, data_dir: Optional[str] = DATA_DIR) -> None:  # noqa: UP045
        """Totals for the prefix: threads, checkpoints, writes, memory."""
        s = _saver(url, prefix, data_dir).thread_stats()
        n = len(s)
        memory = sum(x.memory or 0 for x in s)
        table = Table("metric", "value", title=f"stateline under {prefix!r}")
        table.add_row("threads", str(n))
        table.add_row("checkpoints", str(sum(x.checkpoints for x in s)))
        table.add_row("pending writes", str(sum(x.writes for x in s)))
        table.add_row("memory (MEMORY USAGE)", _size(memory))
        table.add_row("memory per thread", _size(memory // n if n else 0))
        biggest = max(s, key=lambda x: x.memory or 0, default=None)
        if biggest is not None:
            table.add_row("largest thread", f"{biggest.thread_id} ({_size(biggest.memory)})")
        console.print(table)
