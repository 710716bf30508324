"""Waiting for a condition, bounded: how a test waits for something to happen, never by a
fixed sleep. Deadlines are generous on purpose: on an idle machine a wait ends as soon as
its condition holds, and on a loaded one it still does, later."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis

T = TypeVar("T")

DEADLINE = 60.0  # seconds; what a busy two-core machine may need for an election or a TTL
POLL = 0.05  # seconds between two looks at the condition


def until(condition: Callable[[], T], timeout: float = DEADLINE, what: str = "the condition did not hold") -> T:
    """Polls ``condition`` until it returns a true value (returned), bounded by ``timeout``.
    A server that refuses connections meanwhile (restarting, failing over) counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = condition()
        except (redis.ConnectionError, redis.TimeoutError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        time.sleep(POLL)


async def auntil(
    condition: Callable[[], Awaitable[T]], timeout: float = DEADLINE, what: str = "the condition did not hold"
) -> T:
    """``until`` for a coroutine condition, without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        got = await condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        await asyncio.sleep(POLL)
