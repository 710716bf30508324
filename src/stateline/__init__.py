"""stateline: durable state for LLM agent workflows, in Redis or Valkey."""

import logging

from .checkpointer import (
    BaseCheckpointer,
    Checkpoint,
    MemoryCheckpointer,
    RedisCheckpointer,
    SyncRedisCheckpointer,
    new_id,
)
from .compression import Compression
from .crypto import Encryption
from .elements import cache_usage, configure_caches
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
from .serde import Serde, register

__version__ = "0.1.0"

# Retries and server errors are logged to "stateline"; the application decides where they go.
logging.getLogger("stateline").addHandler(logging.NullHandler())

__all__ = [
    "Compression",
    "Encryption",
    "Checkpoint",
    "BaseCheckpointer",
    "RedisCheckpointer",
    "SyncRedisCheckpointer",
    "MemoryCheckpointer",
    "new_id",
    "configure_caches",
    "cache_usage",
    "Serde",
    "register",
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
