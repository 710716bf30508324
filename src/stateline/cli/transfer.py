"""``stateline export`` / ``import``: whole threads to and from a file (see ``stateline.exchange``)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import exchange
from .. import migrate as mg
from ..langgraph import RedisSaver

URL = typer.Option(None, "--url", "-u", envvar="STATELINE_URL", help="Server URL (default: the embedded server).")
PREFIX = typer.Option("stateline:", "--prefix", "-p", envvar="STATELINE_PREFIX", help="Key prefix of the savers.")
DATA_DIR = typer.Option(None, "--data-dir", envvar="STATELINE_DATA_DIR", help="Embedded server data directory.")
THREADS = typer.Option(None, "--thread", "-t", help="Only this thread (repeat for more; default: every thread).")
FROM = typer.Option(
    None, "--from", help="Export another saver instead (as `stateline migrate --from`; --prefix is its prefix)."
)
JSON = typer.Option(False, "--json", help="The counts as JSON (on stderr when the export goes to stdout).")

err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )


def _say(summary: dict[str, object], as_json: bool, to_stderr: bool) -> None:
    text = json.dumps(summary) if as_json else ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items())
    typer.echo(text, err=to_stderr)


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        output: str = typer.Argument(..., help="The file to write ('-': stdout; a name ending in .gz is compressed)."),
        threads: Optional[list[str]] = THREADS,  # noqa: UP045 - typer reads the annotation at runtime
        source: Optional[str] = FROM,  # noqa: UP045
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
        as_json: bool = JSON,
    ) -> None:
        """Write whole threads (checkpoints and pending writes) to a file: a backup, or a move to
        another environment with `stateline import`. Format: docs/export-format.md."""
        with mg.open_source(source or url, prefix=prefix, data_dir=data_dir) as src:
            with err.status(f"counting the checkpoints of {src.name}"):
                found = mg.inventory(src, threads or None)
            with _progress() as bar:
                task = bar.add_task("exporting", total=sum(map(len, found.values())))
                counts = exchange.export(src, output, None, lambda n: bar.advance(task, n), found)
        _say({"file": output, **counts.__dict__}, as_json, to_stderr=output == "-")

    @app.command("import")
    def import_(
        path: str = typer.Argument(..., help="A file `stateline export` wrote (gzip-compressed or not)."),
        url: Optional[str] = URL,  # noqa: UP045
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
        as_json: bool = JSON,
    ) -> None:
        """Write the threads of an export file into stateline, ids and parents kept. Checks the
        whole file first; refuses threads the destination has already; resumes when run again
        after a kill."""
        with RedisSaver(url, prefix=prefix, data_dir=data_dir) as dest:
            with err.status(f"checking {path}"):
                contents = exchange.read(path)
            with _progress() as bar:
                task = bar.add_task("importing", total=contents.counts.checkpoints)
                report, mismatches = exchange.import_file(path, dest, lambda n: bar.advance(task, n))
        summary = {
            "file": path,
            "threads": contents.counts.threads,
            "checkpoints": contents.counts.checkpoints,
            "writes": contents.counts.writes,
            "written_checkpoints": report.checkpoints,
            "written_writes": report.writes,
            "mismatches": [m.thread for m in mismatches],
        }
        _say(summary, as_json, to_stderr=False)
        if mismatches:
            err.print(f"[red]error:[/red] {len(mismatches)} thread(s) have fewer checkpoints or writes than the file")
            raise typer.Exit(1)
