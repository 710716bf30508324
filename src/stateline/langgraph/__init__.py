"""Drop-in LangGraph checkpoint savers on plain Redis, Valkey, Cluster and Sentinel."""

from .saver import AsyncRedisSaver, AsyncShallowRedisSaver, RedisSaver, ShallowRedisSaver

__all__ = ["RedisSaver", "AsyncRedisSaver", "ShallowRedisSaver", "AsyncShallowRedisSaver"]
