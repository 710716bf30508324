"""``stateline migrate``: every thread of another saver into stateline (see ``stateline.migrate``)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import migrate as mg
from ..errors import InvalidInput
from ..langgraph import RedisSaver
from ..urls import redact

DATA_DIR = typer.Option(None, "--data-dir", envvar="STATELINE_DATA_DIR", help="Embedded server data directory.")
THREADS = typer.Option(None, "--thread", "-t", help="Only this thread (repeat for more; default: every thread).")

err = Console(stderr=True)
out = Console()


def _same_place(source: str, from_prefix: str, to: str | None, to_prefix: str) -> bool:
    return (
        mg.source_kind(source) == "stateline"
        and to is not None
        and redact(source) == redact(to)
        and from_prefix == to_prefix
    )


def _summary(found: mg.Survey, source: mg.Source) -> dict[str, object]:
    return {
        "source": source.name,
        "threads": len(found.threads),
        "checkpoints": found.checkpoints,
        "writes": found.writes,
        "migrated_before": found.checkpoints - found.remaining,
        "remaining": found.remaining,
        "conflicts": found.conflicts,
    }


def _print_summary(summary: dict[str, object], title: str) -> None:
    table = Table("", "", title=title, show_header=False)
    for key, value in summary.items():
        shown = ", ".join(map(repr, value)) or "none" if isinstance(value, list) else str(value)
        table.add_row(key.replace("_", " "), shown)
    out.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def migrate(
        source: str = typer.Option(..., "--from", help="The saver to read (the kinds are listed above)."),
        from_prefix: str = typer.Option("stateline:", "--from-prefix", help="Key prefix of a stateline source."),
        to: Optional[str] = typer.Option(  # noqa: UP045 - typer reads the annotation at runtime
            None, "--to", envvar="STATELINE_URL", help="Destination server URL (default: the embedded server)."
        ),
        to_prefix: str = typer.Option(
            "stateline:", "--to-prefix", envvar="STATELINE_PREFIX", help="Destination key prefix."
        ),
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
        threads: Optional[list[str]] = THREADS,  # noqa: UP045
        dry_run: bool = typer.Option(False, "--dry-run", help="Count what would move, write nothing."),
        as_json: bool = typer.Option(False, "--json", help="The counts as JSON on stdout."),
    ) -> None:
        """Copy every thread of another saver into stateline, checkpoint ids, parents, metadata
        and pending writes kept. Runs again where a killed run stopped; checks counts at the end.

        --from is one of:

        \b
          sqlite:///path/to/file.db (or the path of an existing file)   langgraph-checkpoint-sqlite
          postgresql://user:password@host:5432/db                       langgraph-checkpoint-postgres
          lcr+redis://host:6379/0 (lcr+rediss:// for TLS)               langgraph-checkpoint-redis
          redis://host:6379/0 (any stateline URL) with --from-prefix    another stateline prefix or server
        """
        if _same_place(source, from_prefix, to, to_prefix):
            raise InvalidInput("the source and the destination are the same server and prefix")
        with (
            mg.open_source(source, prefix=from_prefix, data_dir=data_dir) as src,
            RedisSaver(to, prefix=to_prefix, data_dir=data_dir) as dest,
        ):
            with err.status(f"counting the checkpoints of {src.name}"):
                found = mg.survey(src, dest, threads or None)
            summary = _summary(found, src)
            if dry_run:
                _emit(summary, as_json, "would migrate (dry run)")
                return
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
            ) as bar:
                task = bar.add_task("migrating", total=found.remaining)
                report = mg.migrate(src, dest, found, lambda n: bar.advance(task, n))
            mismatches = mg.verify(dest, found)
        summary.update(
            written_checkpoints=report.checkpoints,
            written_writes=report.writes,
            vanished=[f"{t} {ns} {cid}" for t, ns, cid in report.vanished],
            mismatches=[{"thread": m.thread, "expected": m.expected, "found": m.found} for m in mismatches],
        )
        _emit(summary, as_json, "migrated")
        if mismatches or report.vanished:
            err.print(
                f"[red]error:[/red] {len(mismatches)} thread(s) have fewer checkpoints or writes at the "
                f"destination than at the source, {len(report.vanished)} checkpoint(s) vanished from the "
                "source meanwhile: stop the source's writers and run the same command again"
            )
            raise typer.Exit(1)


def _emit(summary: dict[str, object], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_summary({k: v for k, v in summary.items() if v != []}, title)
