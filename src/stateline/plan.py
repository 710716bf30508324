"""What an operation yields to a runner: script calls, raw commands, batches, results.

An operation is a plan: a generator that yields steps and receives their replies. It does
no I/O, so one plan serves the sync and the async runner alike (see runner.py).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from hashlib import sha1
from importlib.resources import files
from typing import Any, TypeVar

__all__ = ["Script", "Call", "Command", "Batch", "Scan", "Emit", "Plan", "SCRIPTS", "named", "together"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    body: str

    @property
    def sha(self) -> str:
        return _sha(self.body)


@lru_cache(maxsize=64)
def _sha(body: str) -> str:
    return sha1(body.encode()).hexdigest()


# Steps are made on every operation and never changed; Call and Command are not frozen only
# because a frozen dataclass's __init__ costs three times as much (so they, and a Batch of
# them, are not hashable: nothing hashes a step).
@dataclass(slots=True)
class Call:
    """One EVALSHA of a script on the keys of one thread (all in one hash slot)."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[Any, ...]


@dataclass(slots=True)
class Command:
    """One plain command, e.g. on a discovery index. ``route``: on a cluster, send it to
    the node holding this key (for key-less commands such as WAITAOF)."""

    args: tuple[Any, ...]
    route: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """Steps sent in one pipeline (not a transaction); replies come back in order."""

    steps: tuple[Call | Command, ...]


@dataclass(frozen=True, slots=True)
class Scan:
    """One SCAN page of the keys matching ``match``, over every primary of a cluster.
    ``cursor`` is the runner's own (None = start); the reply is ``(cursor, keys)``, with
    cursor None once every node is done."""

    match: str
    cursor: Any = None
    count: int = 1000


@dataclass(frozen=True, slots=True)
class Emit:
    """Hands results to the caller of a streaming plan (list) without a round trip."""

    items: tuple[Any, ...]


Step = Call | Command | Batch | Scan | Emit
Plan = Generator[Step, Any, T]


class _Scripts:
    """The Lua scripts of scripts/, each with the helpers of _lib.lua it uses prepended.

    Only those: Redis runs a script's whole text on every call, so each helper defined is
    a closure made (and collected) again each time."""

    @cached_property
    def _lib(self) -> tuple[str, list[tuple[str, str]]]:
        """_lib.lua as its preamble and its helpers in order: (name, text with its comment)."""
        text = (files(__package__) / "scripts" / "_lib.lua").read_text()
        starts = list(re.finditer(r"(?m)^(?:--[^\n]*\n)*local function (\w+)", text))
        ends = [m.start() for m in starts[1:]] + [len(text)]
        return text[: starts[0].start()], [
            (m.group(1), text[m.start() : end]) for m, end in zip(starts, ends, strict=True)
        ]

    def __getattr__(self, name: str) -> Script:
        if name.startswith("_"):
            raise AttributeError(name)
        body = (files(__package__) / "scripts" / f"{name}.lua").read_text()
        preamble, helpers = self._lib
        used, text = set(), body
        for helper, chunk in reversed(helpers):  # a helper only calls helpers defined before it
            if re.search(rf"(?<![\w.]){helper}\(", text):
                used.add(helper)
                text += chunk
        script = Script(name, preamble + "".join(c for h, c in helpers if h in used) + "\n" + body)
        setattr(self, name, script)
        return script


SCRIPTS = _Scripts()


def _waits(step: Any) -> bool:
    """A batch with a command aimed at its thread's node (a durability wait): the runner
    sends it through that node's own connection, so it cannot share a pipeline."""
    return isinstance(step, Batch) and any(isinstance(s, Command) and s.route for s in step.steps)


def named(plan: Plan[T], name: str) -> Plan[T]:
    """``plan`` under another operation name (telemetry names a span after the plan's
    generator function: ``together`` says nothing of what the plans do)."""
    plan.__name__ = name  # type: ignore[attr-defined]  # (a generator's name is writable)
    return plan


def together(plans: list[Plan[Any]]) -> Plan[list[Any]]:
    """Drives ``plans`` side by side: each round, the next step of every unfinished plan goes
    in one pipeline, so N independent operations (on different threads) cost the round trips
    of the longest one. Returns their results in order. Steps that wait for durability go one
    by one; a plan that emits (a listing) does not belong here."""
    results: list[Any] = [None] * len(plans)
    replies: dict[int, Any] = dict.fromkeys(range(len(plans)))
    pending = dict(enumerate(plans))
    while pending:
        steps: dict[int, Any] = {}
        for i, plan in list(pending.items()):
            try:
                steps[i] = plan.send(replies[i])
            except StopIteration as stop:
                results[i] = stop.value
                del pending[i]
        if any(_waits(s) for s in steps.values()):
            for i, step in steps.items():
                replies[i] = yield step
            continue
        flat: list[Call | Command] = []
        spans: dict[int, tuple[int, int, bool]] = {}
        for i, step in steps.items():
            if isinstance(step, Batch):
                spans[i] = (len(flat), len(step.steps), True)
                flat += step.steps
            elif isinstance(step, (Call, Command)):
                spans[i] = (len(flat), 1, False)
                flat.append(step)
            else:
                raise TypeError(f"together() drives calls and batches, not {type(step).__name__}")
        if not flat:
            break
        reply = yield Batch(tuple(flat))
        for i, (start, n, batched) in spans.items():
            replies[i] = reply[start : start + n] if batched else reply[start]
    return results
