"""stateline: durable state for LLM agent workflows, in Redis or Valkey."""

from .embedded import EmbeddedServer
from .errors import (
    AuthenticationFailed,
    ConflictError,
    DurabilityError,
    EmbeddedServerError,
    InvalidInput,
    PermissionDenied,
    SerializationError,
    ServerError,
    ServerUnavailable,
    StatelineError,
    StoredDataError,
)

__version__ = "0.1.0"

__all__ = [
    "EmbeddedServer",
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
