"""The ``stateline`` command line: a thin layer over the public API."""

from __future__ import annotations

from typing import Optional

import typer

from ._exit import DEBUG_KEY, Group

# A traceback's local variables would show a --url with its password (typer 0.12 shows them
# by default).
app = typer.Typer(
    cls=Group,
    help="Durable state for LLM agent workflows, in Redis or Valkey. "
    "Exit status: 0 done, 1 failed, 2 bad usage, 3 not found, 4 not confirmed (nothing changed).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(
        False, "--debug", envvar="STATELINE_DEBUG", help="Show the traceback of an error (never its variables)."
    ),
) -> None:
    ctx.meta[DEBUG_KEY] = debug


server_app = typer.Typer(help="The embedded Valkey server.", no_args_is_help=True)
app.add_typer(server_app, name="server")

URL = typer.Option(None, "--url", "-u", envvar="STATELINE_URL", help="Server URL (default: the embedded server).")
DATA_DIR = typer.Option(
    None, "--data-dir", envvar="STATELINE_DATA_DIR", help="Embedded server data directory (default ./.stateline)."
)


@app.command()
def demo(
    url: Optional[str] = URL,  # noqa: UP045 - typer reads the annotation at runtime
    data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    resume: Optional[str] = typer.Option(None, help="Resume this demo thread (the second process does this)."),  # noqa: UP045
) -> None:
    """Run an agent that pauses for approval, and resume it from a second process."""
    from .. import demo as agent

    if resume:
        agent.resume(resume, url, data_dir)
        return
    agent.run(url, data_dir)
    if url is None:
        from ..embedded import EmbeddedServer

        idle = EmbeddedServer(data_dir or ".stateline").idle_timeout
        when = f"by itself after {idle:g} s with no client" if idle > 0 else "only when asked"
        typer.echo(f"The embedded server stops {when}, its data kept on disk; to stop it now: stateline server stop")


@server_app.command("start")
def server_start(
    data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    idle_timeout: float = typer.Option(
        0, "--idle-timeout", min=0, help="Stop by itself after this many seconds with no client (0: never)."
    ),
) -> None:
    """Start the embedded server (or report the one already running); it runs until stopped,
    or until idle for --idle-timeout seconds (this applies to a running server too)."""
    from ..embedded import EmbeddedServer

    server = EmbeddedServer(data_dir or ".stateline", idle_timeout=idle_timeout)
    typer.echo(server.url)


@server_app.command("stop")
def server_stop(data_dir: Optional[str] = DATA_DIR) -> None:  # noqa: UP045
    """Stop the embedded server; its data stays on disk."""
    from ..embedded import EmbeddedServer

    stopped = EmbeddedServer(data_dir or ".stateline").stop()
    typer.echo("stopped" if stopped else "not running")


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Everything tiny, in under a minute (what CI runs)."),
    output: str = typer.Option(
        "benchmarks/results/latest.json",
        "--output",
        "-o",
        help="JSON result file; the PNG chart is written next to it.",
    ),
    workloads: str = typer.Option(
        "micro,agent,concurrent",
        "--workloads",
        "-w",
        help="Comma-separated, of micro, agent, concurrent, long (long threads: many minutes at full size).",
    ),
    long_turns: Optional[int] = typer.Option(  # noqa: UP045 - typer reads the annotation at runtime
        None, "--long-turns", help="Long threads: chat turns on one thread (1,000; 12 with --quick)."
    ),
    long_checkpoints: Optional[int] = typer.Option(  # noqa: UP045
        None, "--long-checkpoints", help="Long threads: checkpoints of the built thread (10,000; 40 with --quick)."
    ),
) -> None:
    """Benchmark stateline against langgraph-checkpoint-redis, InMemorySaver, SqliteSaver and the floor (needs the bench extra)."""
    chosen = tuple(w.strip() for w in workloads.split(",") if w.strip())
    unknown = set(chosen) - {"micro", "agent", "concurrent", "long"}
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown workloads {sorted(unknown)}: use micro, agent, concurrent, long")
    try:
        from ..bench import main as run_bench
    except ImportError as exc:
        typer.echo(f"stateline bench needs the bench extra: pip install 'stateline[bench]' ({exc})", err=True)
        raise typer.Exit(2) from exc
    run_bench(quick=quick, output=output, workloads=chosen, long_turns=long_turns, long_checkpoints=long_checkpoints)


from . import ops  # noqa: E402 - the operator commands register on the app above

ops.register(app)

from . import ui  # noqa: E402 - `stateline ui`; starlette and uvicorn are imported when it runs

ui.register(app)

from . import migrate, transfer  # noqa: E402 - migrate, export and import

migrate.register(app)
transfer.register(app)


def main() -> None:
    """The console script (errors and exit statuses: ``_exit.Group``)."""
    app()
