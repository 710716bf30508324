"""The CLI's exit statuses (the README lists them) and how an error becomes one line.

A traceback is shown only with ``--debug``, and never with its local variables: a local
may hold a URL with its password.
"""

from __future__ import annotations

import re
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import InvalidInput, StatelineError

OK = 0
FAILED = 1  # the operation failed: server, stored data, conflict, anything unexpected
USAGE = 2  # a bad option, argument or id (also click's own status for usage errors)
NOT_FOUND = 3  # a thread or checkpoint that does not exist
DECLINED = 4  # a destructive command was not confirmed: nothing changed
INTERRUPTED = 130  # Ctrl-C

DEBUG_KEY = "stateline.debug"


class NotFound(StatelineError):
    """What a command was asked about does not exist."""


# 'scheme://user:password@' and 'password=...' in a message: the secret part goes.
_SECRETS = (
    (re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@"), r"\1***@"),
    (re.compile(r"((?:password|token)=)[^&\s]+", re.IGNORECASE), r"\1***"),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _status(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, NotFound):
        return NOT_FOUND, str(exc)
    if isinstance(exc, InvalidInput):
        return USAGE, str(exc)
    if isinstance(exc, StatelineError):
        return FAILED, str(exc)
    if isinstance(exc, _ABORTS):
        return DECLINED, "not confirmed: nothing changed (--yes answers for you)"
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    return FAILED, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"


# typer.Abort is click's own Abort in older typer releases and typer's in newer ones (which
# carry click inside): either way a declined prompt.
_ABORTS = tuple({typer.Abort, *(c for c in typer.Abort.__mro__ if c.__name__ == "Abort")})


def _passes(exc: BaseException) -> bool:
    """typer's and click's own exits and usage errors (they carry their exit status), which
    click reports itself."""
    return hasattr(exc, "exit_code") and not isinstance(exc, _ABORTS)


class Group(TyperGroup):
    """Every command's errors: one line on stderr and a documented exit status."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every error becomes one line and a status
            if _passes(exc):
                raise
            code, message = _status(exc)
            if ctx.meta.get(DEBUG_KEY) and code not in (DECLINED, INTERRUPTED):
                typer.echo(redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))), err=True)
            typer.secho(f"error: {redact(message)}", fg="red", err=True)
            ctx.exit(code)
