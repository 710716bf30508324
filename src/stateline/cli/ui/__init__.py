"""``stateline ui``: the local web inspector (needs the ``ui`` extra: starlette, uvicorn)."""

from __future__ import annotations

import ipaddress
import os
from typing import Optional

import typer

from ...errors import InvalidInput
from .._exit import redact

TOKEN_ENV = "STATELINE_UI_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    from ..ops import DATA_DIR, PREFIX, URL

    @app.command()
    def ui(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (not loopback: needs a token)."),
        port: int = typer.Option(8765, "--port", min=0, max=65535),
        allow_writes: bool = typer.Option(
            False, "--allow-writes", help="Offer prune, delete and copy (each confirmed)."
        ),
        url: Optional[str] = URL,  # noqa: UP045 - typer reads the annotation at runtime
        prefix: str = PREFIX,
        data_dir: Optional[str] = DATA_DIR,  # noqa: UP045
    ) -> None:
        """A local web inspector: threads, checkpoint trees, state, conversations, diffs.
        Listening beyond localhost needs a token in STATELINE_UI_TOKEN, which the page asks for."""
        try:
            import uvicorn

            from .app import create_app
        except ImportError as exc:
            raise InvalidInput(f"stateline ui needs the ui extra: pip install 'stateline[ui]' ({exc})") from None
        from ...langgraph import RedisSaver

        token = os.environ.get(TOKEN_ENV) or None
        loopback = is_loopback(host)
        if not loopback and not token:
            raise InvalidInput(f"--host {host} is reachable from other machines: set {TOKEN_ENV} to a secret first")
        saver = RedisSaver(url, prefix=prefix, data_dir=data_dir)
        about = {"prefix": prefix, "server": redact(url) if url else "embedded server"}
        web = create_app(saver, allow_writes=allow_writes, token=token, loopback=loopback, about=about)
        shown = f"[{host}]" if ":" in host else host
        typer.echo(
            f"stateline inspector: http://{shown}:{port}/  (writes {'allowed' if allow_writes else 'off'}"
            f"{', token required' if token else ''}; Ctrl-C stops it)"
        )
        uvicorn.run(web, host=host.strip("[]"), port=port, log_level="warning", access_log=False)
