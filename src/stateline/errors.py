"""stateline's errors: each says whose fault it is and names the bad value."""

from __future__ import annotations

__all__ = [
    "StatelineError",
    "InvalidInput",
    "SerializationError",
    "StoredDataError",
    "ConflictError",
    "ServerError",
    "ServerUnavailable",
    "AuthenticationFailed",
    "PermissionDenied",
    "DurabilityError",
    "EmbeddedServerError",
]


class StatelineError(Exception):
    """Base class of every error stateline raises."""


class InvalidInput(StatelineError, ValueError):
    """The caller passed a value stateline cannot use (an id, a limit, a URL...)."""


class SerializationError(InvalidInput, TypeError):
    """A value cannot be serialized (an unregistered class, an oversized value)."""


class StoredDataError(StatelineError):
    """Data read back from the server is missing a part or cannot be decoded."""


class ConflictError(StatelineError):
    """A write expected a different head: another writer saved first. Nothing was written."""


class ServerError(StatelineError):
    """The server refused or failed an operation."""


class ServerUnavailable(ServerError, ConnectionError):
    """The server cannot be reached, or the connection dropped mid-operation."""


class AuthenticationFailed(ServerError):
    """The server rejected the username or password."""


class PermissionDenied(ServerError):
    """The ACL user lacks rights on stateline's keys or commands."""


class DurabilityError(ServerError):
    """The server could not confirm the durability level that was asked for."""


class EmbeddedServerError(StatelineError):
    """The embedded Valkey server cannot be started or reached."""
