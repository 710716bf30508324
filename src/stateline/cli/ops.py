"""Operator commands: see, diff, prune, delete, copy and measure threads.

Everything goes through the public saver API (``stateline.langgraph.RedisSaver``:
``thread_page``, ``thread_stats``, ``thread_heads``, ``checkpoint_counts``, ``list``,
``get_tuple``, ``prune``, ``delete_thread``, ``copy_thread_to``); nothing here builds a
key. Listing commands take ``--json``; ids are never cut; errors go to stderr (see
``_exit``); destructive commands ask unless ``--yes``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import typer
from langchain_core.runnables import RunnableConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..langgraph import RedisSaver
from . import _render as r
from ._exit import NotFound, redact

out = Console(highlight=False, soft_wrap=True)  # soft_wrap: long lines are never cut
err = Console(stderr=True, highlight=False, soft_wrap=True)

URL = typer.Option(None, "--url", "-u", envvar="STATELINE_URL", help="Server URL (default: the embedded server).")
PREFIX = typer.Option("stateline:", "--prefix", "-p", envvar="STATELINE_PREFIX", help="Key prefix of the savers.")
DATA_DIR = typer.Option(None, "--data-dir", envvar="STATELINE_DATA_DIR", help="Embedded server data directory.")
NS = typer.Option(None, "--ns", help="Checkpoint namespace ('' = root; default: every namespace).")
YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
JSON = typer.Option(False, "--json", help="Print JSON (one document) instead of a table.")
PRUNED = typer.Argument(None, help="Threads to prune (default: every thread).")
DELETED = typer.Argument(..., help="Threads to delete.")
STEP = 100  # threads per call of the saver's bulk methods (one round trip each)


def _saver(url: str | None, prefix: str, data_dir: str | None) -> RedisSaver:
    return RedisSaver(url, prefix=prefix, data_dir=data_dir)


def _config(thread: str, ns: str | None, checkpoint: str | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread}
    if ns is not None:
        conf["checkpoint_ns"] = ns
    if checkpoint:
        conf["checkpoint_id"] = checkpoint
    return {"configurable": conf}


def _progress() -> Progress:
    """A progress bar on stderr, shown only on a terminal (never in a pipe or a test)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(ids), STEP):
        yield ids[i : i + STEP]


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=repr))


def _ttl(ms: int) -> str:
    return "-" if ms < 0 else f"{ms / 1000:.0f} s"


def _existing(saver: RedisSaver, ids: Sequence[str]) -> tuple[list[Any], list[str]]:
    """The stats of the threads that exist, and the ids of those that do not."""
    stats = [s for chunk in _chunks(ids) for s in saver.thread_stats(chunk, memory=False)]
    return [s for s in stats if s.exists], [s.thread_id for s in stats if not s.exists]


def _all_threads(saver: RedisSaver, what: str) -> list[str]:
    """Every thread id of the prefix, a page at a time (a counter on a terminal)."""
    ids: list[str] = []
    cursor: str | None = None
    with _progress() as bar:
        task = bar.add_task(what, total=None)
        while True:
            page, cursor = saver.thread_page(cursor, limit=1000)
            ids += page
            bar.update(task, completed=len(ids))
            if cursor is None:
                return ids


def _checkpoint(saver: RedisSaver, thread: str, ns: str, checkpoint: str | None, flag: str) -> Any:
    t = saver.get_tuple(_config(thread, ns, checkpoint))
    if t is None:
        what = f"checkpoint {checkpoint!r} ({flag})" if checkpoint else "checkpoint"
        raise NotFound(f"no {what} in thread {thread!r}" + (f", namespace {ns!r}" if ns else ""))
    return t


def _say(line: str, style: str | None = None) -> None:
    out.print(Text(line, style=style or ""))


def _changed(ch: str, old: Any, new: Any, inner: list[dict[str, Any]], most: int = 20) -> None:
    """A changed channel: its new value, or for a list or mapping, what changed inside."""
    if not inner:
        _say(f"~ {ch}: {r.short(new)}", "yellow")
        return
    extra = f" ({len(old)} -> {len(new)} items)" if isinstance(old, list) and isinstance(new, list) else ""
    _say(f"~ {ch}{extra}", "yellow")
    for c in inner[:most]:
        value = c.get("new", c.get("old"))
        is_msg = isinstance(value, dict) and "type" in value and "content" in value
        _say(f"    {c['op']} {c['path']}: {r.message_text(value) if is_msg else r.short(value)}")
    if len(inner) > most:
        _say(f"    ... {len(inner) - most} more (--json shows all)")


def _would_go(saver: RedisSaver, targets: Sequence[str], keep: int) -> list[tuple[str, int, int]]:
    """(thread, checkpoints, how many a prune to ``keep`` per namespace drops) of each
    thread that has some to drop: counted, nothing read."""
    going = []
    with _progress() as bar:
        task = bar.add_task("counting checkpoints", total=len(targets))
        for chunk in _chunks(targets):
            for t, counts in zip(chunk, saver.checkpoint_counts(chunk), strict=True):
                n = sum(max(0, c - keep) for c in counts.values())
                if n:
                    going.append((t, sum(counts.values()), n))
            bar.advance(task, len(chunk))
    return going


def register(app: typer.Typer) -> None:
    @app.command()
    def threads(
        limit: int = typer.Option(50, "--limit", "-n", min=1, help="Threads per page."),
        after: Optional[str] = typer.Option(None, "--after", help="The cursor a previous page printed."),  # noqa: UP045
        match: Optional[str] = typer.Option(None, "--match", "-m", help="Only thread ids containing this."),  # noqa: UP045
        as_json: bool = JSON,
        url: Optional[str] = URL,  # noqa: UP045 - typer reads the annotation at runtime
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """A page of threads: checkpoints, writes, last step, size in Redis, TTL (index order)."""
        saver = _saver(url, prefix, data_dir)
        ids, cursor = saver.thread_page(after, limit=limit, match=match)
        rows: list[dict[str, Any]] = []
        with _progress() as bar:
            task = bar.add_task("reading threads", total=len(ids))
            for chunk in _chunks(ids):
                for s, head in zip(saver.thread_stats(chunk), saver.thread_heads(chunk), strict=True):
                    md = head.metadata if head else {}
                    ts = head.checkpoint.get("ts") if head else None
                    rows.append(
                        {"thread_id": s.thread_id, "checkpoints": s.checkpoints, "writes": s.writes,
                         "step": md.get("step"), "updated": ts, "memory_bytes": s.memory, "ttl_ms": s.ttl_ms}
                    )  # fmt: skip
                bar.advance(task, len(chunk))
        if as_json:
            _print_json({"threads": rows, "next": cursor})
            return
        headers = ("thread_id", "checkpoints", "writes", "step", "updated", "memory", "ttl")
        cells = [
            (x["thread_id"], x["checkpoints"], x["writes"], x["step"], (x["updated"] or "")[:19],
             r.size(x["memory_bytes"]), _ttl(x["ttl_ms"]))
            for x in rows
        ]  # fmt: skip
        typer.echo(r.table(headers, cells) if rows else "no threads")
        if cursor is not None:
            err.print(f"more threads: stateline threads --after {json.dumps(cursor)}")

    @app.command()
    def history(
        thread: str,
        ns: Optional[str] = NS,  # noqa: UP045
        limit: int = typer.Option(20, "--limit", "-n", min=1),
        as_json: bool = JSON,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """A thread's checkpoints, newest first."""
        saver = _saver(url, prefix, data_dir)
        found = list(saver.list(_config(thread, ns), limit=limit))
        if not found:
            raise NotFound(f"no checkpoint in thread {thread!r}" + (f", namespace {ns!r}" if ns is not None else ""))
        rows = [{**r.tuple_json(t, values=False), "writes": len(t.pending_writes or [])} for t in found]
        if as_json:
            _print_json(rows)
            return
        headers = ("checkpoint_id", "ns", "step", "source", "ts", "parent_id", "writes")
        cells = [
            (x["checkpoint_id"], x["checkpoint_ns"] or "''", x["metadata"].get("step"), x["metadata"].get("source"),
             (x["ts"] or "")[:19], x["parent_id"] or "-", x["writes"])
            for x in rows
        ]  # fmt: skip
        typer.echo(r.table(headers, cells))

    @app.command()
    def show(
        thread: str,
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Default: the latest."),  # noqa: UP045
        ns: str = typer.Option("", "--ns"),
        as_json: bool = JSON,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """One checkpoint: its channel values, metadata and pending writes (interrupts too)."""
        t = _checkpoint(_saver(url, prefix, data_dir), thread, ns, checkpoint, "--checkpoint")
        if as_json:
            _print_json(r.tuple_json(t))
            return
        out.print(f"checkpoint {t.config['configurable']['checkpoint_id']}", markup=False)
        out.print(f"metadata   {r.short(t.metadata, 200)}", markup=False)
        rows: list[tuple[str, str]] = []
        for ch, value in sorted(t.checkpoint["channel_values"].items()):
            if isinstance(value, list) and len(value) > 1:  # one row per item, the last ten
                rows.append((ch, f"{len(value)} items"))
                rows += [(f"  [{i}]", r.short(value[i])) for i in range(max(0, len(value) - 10), len(value))]
            else:
                rows.append((ch, r.short(value)))
        typer.echo(r.table(("channel", "value"), rows))
        if t.pending_writes:
            typer.echo("\npending writes")
            typer.echo(
                r.table(
                    ("task", "channel", "value"),
                    [(task, ch, r.write_text(ch, v, 80)) for task, ch, v in t.pending_writes],
                )
            )

    @app.command()
    def diff(
        thread: str,
        old: Optional[str] = typer.Option(None, "--from", help="Default: the parent of --to."),  # noqa: UP045
        new: Optional[str] = typer.Option(None, "--to", help="Default: the latest."),  # noqa: UP045
        ns: str = typer.Option("", "--ns"),
        as_json: bool = JSON,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """What changed between two checkpoints (+ added, - removed, ~ changed)."""
        saver = _saver(url, prefix, data_dir)
        after = _checkpoint(saver, thread, ns, new, "--to")
        if old:
            before = _checkpoint(saver, thread, ns, old, "--from")
        else:
            before = saver.get_tuple(after.parent_config) if after.parent_config else None
        a = r.plain(before.checkpoint["channel_values"]) if before else {}
        b = r.plain(after.checkpoint["channel_values"])
        changes = r.diff(a, b)
        if as_json:
            ids = {"from": r.tuple_json(before, values=False)["checkpoint_id"] if before else None,
                   "to": after.config["configurable"]["checkpoint_id"]}  # fmt: skip
            _print_json({**ids, "changes": changes})
            return
        for ch in sorted(set(a) | set(b)):
            if ch not in a:
                _say(f"+ {ch}: {r.short(b[ch])}", "green")
            elif ch not in b:
                _say(f"- {ch}: {r.short(a[ch])}", "red")
            elif a[ch] != b[ch]:
                _changed(ch, a[ch], b[ch], [c for c in changes if c["path"][len(ch) : len(ch) + 1] in (".", "[")
                                            and c["path"].startswith(ch)])  # fmt: skip

    @app.command()
    def prune(
        thread_ids: list[str] = PRUNED,
        keep: int = typer.Option(1, "--keep", min=1, help="Checkpoints to keep per namespace."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would go."),
        yes: bool = YES,
        as_json: bool = JSON,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """Keep the newest checkpoints of each namespace; delete the rest and what only they
        used. Shows what would go, then asks."""
        saver = _saver(url, prefix, data_dir)
        if thread_ids:
            found, missing = _existing(saver, thread_ids)
            if missing:
                raise NotFound("no thread " + ", ".join(repr(t) for t in missing) + ": nothing pruned")
            targets = [s.thread_id for s in found]
        else:
            targets = _all_threads(saver, "listing threads")
        going = _would_go(saver, targets, keep)
        total = sum(n for _t, _c, n in going)
        if as_json:
            rows = [{"thread_id": t, "checkpoints": c, "would_go": n} for t, c, n in going]
            report = {"keep": keep, "threads": rows, "would_go": total, "pruned": False}
        elif not going:
            typer.echo(f"nothing to prune: no namespace holds more than {keep} checkpoint(s)")
        else:
            typer.echo(r.table(("thread_id", "checkpoints", "would go"), going))
            typer.echo(
                f"{total} checkpoint(s) of {len(going)} thread(s) would go, with their writes and the values only "
                "they use (fewer where a DeltaChannel value needs its ancestors)"
            )
        if going and not dry_run:
            if not yes:
                question = f"prune {len(going)} thread(s) to {keep} checkpoint(s) per namespace?"
                typer.confirm(question, abort=True, err=True)
            with _progress() as bar:
                task = bar.add_task("pruning", total=len(going))
                for t, _c, _n in going:
                    saver.prune([t], keep_last=keep)
                    bar.advance(task)
            if not as_json:
                typer.echo(f"pruned {len(going)} thread(s)")
        if as_json:
            _print_json({**report, "pruned": bool(going) and not dry_run})

    @app.command()
    def delete(
        thread_ids: list[str] = DELETED,
        yes: bool = YES,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """Delete threads with every checkpoint and write (asks first)."""
        saver = _saver(url, prefix, data_dir)
        found, missing = _existing(saver, list(dict.fromkeys(thread_ids)))
        for t in missing:
            err.print(f"no thread {t!r}", markup=False)
        if found:
            typer.echo(
                r.table(("thread_id", "checkpoints", "writes"), [(s.thread_id, s.checkpoints, s.writes) for s in found])
            )
            if not yes:
                typer.confirm(f"delete {len(found)} thread(s)?", abort=True, err=True)
            for s in found:
                saver.delete_thread(s.thread_id)
            typer.echo(f"deleted {len(found)} thread(s)")
        if missing:
            raise NotFound(f"{len(missing)} of the threads did not exist")

    @app.command()
    def copy(
        source: str,
        target: str,
        to_url: Optional[str] = typer.Option(None, "--to-url", help="Copy to another server (migrate)."),  # noqa: UP045
        to_prefix: Optional[str] = typer.Option(None, "--to-prefix", help="Copy under another prefix."),  # noqa: UP045
        move: bool = typer.Option(False, "--move", help="Delete the source once copied (asks first)."),
        yes: bool = YES,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """Copy (or with --move, migrate) a thread, to another thread id, prefix or server."""
        src = _saver(url, prefix, data_dir)
        found, _missing = _existing(src, [source])
        if not found:
            raise NotFound(f"no thread {source!r}: nothing copied")
        dst = _saver(to_url or url, to_prefix or prefix, data_dir) if (to_url or to_prefix) else src
        where = " ".join(x for x in (f"prefix {to_prefix!r}" if to_prefix else "", redact(to_url or "")) if x)
        if move and not yes:
            typer.confirm(
                f"move {source!r} to {target!r}{' at ' + where if where else ''}, deleting the source?",
                abort=True,
                err=True,
            )
        n = src.copy_thread_to(source, dst, target)
        if move:
            src.delete_thread(source)
        typer.echo(f"{'moved' if move else 'copied'} {source!r} to {target!r} ({n} stored fields)")

    @app.command()
    def stats(
        sample: int = typer.Option(200, "--sample", min=1, help="Threads to measure (picked at random)."),
        every: bool = typer.Option(False, "--all", help="Measure every thread (exact counts; a round trip per 100)."),
        as_json: bool = JSON,
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """Totals for the prefix: threads (counted), checkpoints, writes and memory (measured
        on a random sample of threads and scaled up, unless --all)."""
        saver = _saver(url, prefix, data_dir)
        ids = _all_threads(saver, "counting threads")
        chosen = ids if every or len(ids) <= sample else random.sample(ids, sample)
        measured = []
        with _progress() as bar:
            task = bar.add_task("measuring", total=len(chosen))
            for chunk in _chunks(chosen):
                measured += [s for s in saver.thread_stats(chunk) if s.exists]
                bar.advance(task, len(chunk))
        n, k = len(ids), len(measured)
        scale = n / k if k else 0.0

        def total(values: list[int]) -> int:
            return round(sum(values) * scale)

        biggest = max(measured, key=lambda s: s.memory or 0, default=None)
        report: dict[str, Any] = {
            "threads": n,
            "measured": k,
            "exact": k == n,
            "checkpoints": total([s.checkpoints for s in measured]),
            "pending_writes": total([s.writes for s in measured]),
            "memory_bytes": total([s.memory or 0 for s in measured]),
            "memory_per_thread_bytes": round(sum(s.memory or 0 for s in measured) / k) if k else 0,
            "largest_measured": {"thread_id": biggest.thread_id, "memory_bytes": biggest.memory} if biggest else None,
        }
        if as_json:
            _print_json(report)
            return
        approx = "" if report["exact"] else "~"
        rows = [
            ("threads", n),
            ("measured", f"{k} ({'every thread' if report['exact'] else 'a random sample, scaled up'})"),
            ("checkpoints", f"{approx}{report['checkpoints']}"),
            ("pending writes", f"{approx}{report['pending_writes']}"),
            ("memory (MEMORY USAGE)", f"{approx}{r.size(report['memory_bytes'])}"),
            ("memory per thread", r.size(report["memory_per_thread_bytes"])),
        ]
        if biggest is not None:
            rows.append(("largest thread measured", f"{biggest.thread_id} ({r.size(biggest.memory)})"))
        typer.echo(f"stateline under {prefix!r}")
        typer.echo(r.table(("metric", "value"), rows))
