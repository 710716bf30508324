"""``stateline export`` / ``import``: whole threads in a versioned, streamed file.

The file (``docs/export-format.md``) is JSON Lines, gzip-compressed when its name ends in
``.gz``: a header line with the format's name and version, one line per checkpoint (each
thread's checkpoints together, oldest first, with their pending writes), and an end line
with the counts. It is made through LangGraph's public saver API, checkpoints and writes as
LangGraph returns them, values serialized by LangGraph's ``JsonPlusSerializer``: it does not
depend on how any saver stores them, stateline's own included.

Import reads the file twice: once to check it whole (header, version, every line, the end
line's counts: a truncated or foreign file is refused before anything is written), once to
write. It keeps per-thread marks at the destination like ``migrate``, so an import that was
killed resumes when run again, and refuses threads the destination holds that an import of
this file did not write. Values are loaded by the destination saver's serde, with its
allowlist of types.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import sys
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from . import migrate as mg
from .errors import InvalidInput
from .langgraph import RedisSaver

__all__ = ["FORMAT", "VERSION", "Counts", "export", "import_file", "read"]

FORMAT = "stateline-export"
VERSION = 1
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Counts:
    threads: int = 0
    checkpoints: int = 0
    writes: int = 0


# -- values ------------------------------------------------------------------------------------


def _typed(serde: Any, value: Any) -> list[str]:
    kind, data = serde.dumps_typed(value)
    return [kind, base64.b64encode(data).decode("ascii")]


def _untyped(serde: Any, pair: Any, where: str) -> Any:
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
        raise InvalidInput(f"{where}: a value must be [type, base64], got {pair!r:.80}")
    return serde.loads_typed((pair[0], base64.b64decode(pair[1], validate=True)))


def record(t: CheckpointTuple, serde: Any) -> dict[str, Any]:
    """One checkpoint line: ids in the clear, everything else serialized."""
    conf = t.config["configurable"]
    header = {k: v for k, v in t.checkpoint.items() if k != "channel_values"}
    return {
        "type": "checkpoint",
        "thread_id": str(conf["thread_id"]),
        "checkpoint_ns": conf.get("checkpoint_ns") or "",
        "checkpoint_id": conf["checkpoint_id"],
        "parent_checkpoint_id": t.parent_config["configurable"].get("checkpoint_id") if t.parent_config else None,
        "checkpoint": _typed(serde, header),
        "channel_values": {ch: _typed(serde, v) for ch, v in t.checkpoint.get("channel_values", {}).items()},
        "metadata": _typed(serde, t.metadata or {}),
        "pending_writes": [[task, ch, _typed(serde, v)] for task, ch, v in t.pending_writes or ()],
    }


def checkpoint_tuple(rec: dict[str, Any], serde: Any, where: str) -> CheckpointTuple:
    thread, ns, cid, parent = rec["thread_id"], rec["checkpoint_ns"], rec["checkpoint_id"], rec["parent_checkpoint_id"]
    checkpoint = _untyped(serde, rec["checkpoint"], where)
    checkpoint["channel_values"] = {ch: _untyped(serde, v, where) for ch, v in rec["channel_values"].items()}
    writes = [(task, ch, _untyped(serde, v, where)) for task, ch, v in rec["pending_writes"]]

    def config(checkpoint_id: str) -> Any:
        return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}

    return CheckpointTuple(
        config(cid), checkpoint, _untyped(serde, rec["metadata"], where), config(parent) if parent else None, writes
    )


# -- files -------------------------------------------------------------------------------------


@contextmanager
def _writing(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    tmp = f"{path}.partial"  # renamed once whole: a file named `path` is never a torn export
    raw: IO[str] = gzip.open(tmp, "wt", encoding="utf-8") if path.endswith(".gz") else open(tmp, "w", encoding="utf-8")
    try:
        with raw:
            yield raw
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, path)


@contextmanager
def _reading(path: str) -> Iterator[IO[str]]:
    try:
        with open(path, "rb") as probe:
            zipped = probe.read(2) == _GZIP_MAGIC
    except OSError as exc:
        raise InvalidInput(f"cannot read {path!r}: {exc.strerror}") from None
    with gzip.open(path, "rt", encoding="utf-8") if zipped else open(path, encoding="utf-8") as f:
        yield f


def _lines(f: IO[str], path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        for n, line in enumerate(f, 1):
            try:
                obj = json.loads(line)
            except ValueError:
                raise InvalidInput(f"{path}:{n}: not a JSON line: is this a stateline export?") from None
            if not isinstance(obj, dict):
                raise InvalidInput(f"{path}:{n}: not a record: is this a stateline export?")
            yield n, obj
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise InvalidInput(f"{path}: cannot be read whole ({exc}): truncated or damaged?") from None


def check_header(obj: dict[str, Any], path: str) -> dict[str, Any]:
    if obj.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not a stateline export (its first line names no format {FORMAT!r})")
    version = obj.get("version")
    if version != VERSION:
        raise InvalidInput(
            f"{path} is a stateline export of format version {version!r}; this stateline reads version "
            f"{VERSION} (docs/export-format.md): use a stateline release that reads it"
        )
    if not isinstance(obj.get("export_id"), str):
        raise InvalidInput(f"{path}: the header has no export_id")
    return obj


# -- export ------------------------------------------------------------------------------------


def export(
    source: mg.Source,
    path: str,
    threads: Collection[str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    found: dict[str, list[mg.Entry]] | None = None,
) -> Counts:
    """Writes every thread of ``source`` (or ``threads``) to ``path`` ('-' for stdout),
    each thread's checkpoints oldest first. Returns what it wrote. ``found``: the source's
    ``inventory``, when the caller has it already."""
    if found is None:
        found = mg.inventory(source, threads)
    serde = JsonPlusSerializer()
    counts = Counts()
    header = {
        "format": FORMAT,
        "version": VERSION,
        "export_id": uuid.uuid4().hex,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "source": source.name,
        "serializer": "langgraph JsonPlusSerializer",
    }
    with _writing(path) as out:
        out.write(json.dumps(header) + "\n")
        for thread in sorted(found):
            counts.threads += 1
            for entry in found[thread]:
                t = source.get(thread, entry.ns, entry.checkpoint_id)
                if t is not None:  # (gone from the source meanwhile)
                    out.write(json.dumps(record(t, serde), ensure_ascii=False) + "\n")
                    counts.checkpoints += 1
                    counts.writes += len(t.pending_writes or ())
                if on_progress is not None:
                    on_progress(1)
        out.write(json.dumps({"type": "end", **counts.__dict__}) + "\n")
    return counts


# -- import ------------------------------------------------------------------------------------


@dataclass
class Contents:
    header: dict[str, Any]
    threads: dict[str, list[mg.Entry]]
    counts: Counts


def read(path: str) -> Contents:
    """Checks the whole file (header, version, each line, the end line's counts) and lists
    its checkpoints by thread; loads no value."""
    threads: dict[str, list[mg.Entry]] = {}
    header: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    with _reading(path) as f:
        for n, obj in _lines(f, path):
            if header is None:
                header = check_header(obj, path)
            elif end is not None:
                raise InvalidInput(f"{path}:{n}: a line after the end line")
            elif obj.get("type") == "end":
                end = obj
            elif obj.get("type") == "checkpoint":
                _add(threads, obj["thread_id"], _entry(obj, path, n), f"{path}:{n}")
            else:
                raise InvalidInput(f"{path}:{n}: unknown record type {obj.get('type')!r}")
    if header is None:
        raise InvalidInput(f"{path} is empty: not a stateline export")
    counts = Counts(len(threads), sum(map(len, threads.values())), sum(e.writes for v in threads.values() for e in v))
    if end is None:
        raise InvalidInput(f"{path} ends before its end line: truncated (an export that did not finish?)")
    if [end.get("threads"), end.get("checkpoints"), end.get("writes")] != [
        counts.threads,
        counts.checkpoints,
        counts.writes,
    ]:
        raise InvalidInput(f"{path}: the end line counts {end} but the file holds {counts.__dict__}")
    return Contents(header, threads, counts)


def _add(threads: dict[str, list[mg.Entry]], thread: str, entry: mg.Entry, where: str) -> None:
    """Each thread's lines together, oldest first (as export writes them): an import that
    resumes skips what is before its mark."""
    entries = threads.get(thread)
    if entries is None:
        threads[thread] = [entry]
    elif thread != next(reversed(threads)):
        raise InvalidInput(f"{where}: thread {thread!r} comes back after another thread's lines")
    elif entry <= entries[-1]:
        raise InvalidInput(f"{where}: checkpoint {entry.checkpoint_id!r} is out of order in thread {thread!r}")
    else:
        entries.append(entry)


_FIELDS = ("thread_id", "checkpoint_ns", "checkpoint_id")


def _entry(obj: dict[str, Any], path: str, n: int) -> mg.Entry:
    if not all(isinstance(obj.get(k), str) for k in _FIELDS) or not isinstance(obj.get("pending_writes"), list):
        raise InvalidInput(f"{path}:{n}: a checkpoint line needs {', '.join(_FIELDS)} and pending_writes")
    return mg.Entry(obj["checkpoint_id"], obj["checkpoint_ns"], len(obj["pending_writes"]))


def import_file(
    path: str, dest: RedisSaver, on_progress: Callable[[int], None] | None = None
) -> tuple[mg.Report, list[mg.Mismatch]]:
    """Writes the threads of the export ``path`` into ``dest`` (see the module's docstring);
    returns what it wrote and the threads with fewer checkpoints or writes than the file."""
    contents = read(path)
    found = mg.survey_of(contents.threads, dest, mg.migration_name("import", contents.header["export_id"]))
    mg.refuse_conflicts(found)
    report = mg.Report()
    writer, current, done = None, None, 0
    with _reading(path) as f:
        for n, obj in _lines(f, path):
            if obj.get("type") != "checkpoint":
                continue
            thread, entry = obj["thread_id"], _entry(obj, path, n)
            mark = found.marks.get(thread)
            if mark is not None and (entry.checkpoint_id, entry.ns) <= mark.last:
                continue  # written by an earlier run of this import
            if writer is None or thread != current:
                writer, current, done = mg.ThreadWriter(dest), thread, mark.done if mark else 0
                if mark is None:  # marked before its first checkpoint, as migrate does
                    mg.mark(dest, found, thread, 0, ("", ""))
                report.threads += 1
            report.writes += writer.write(checkpoint_tuple(obj, dest.serde, f"{path}:{n}"))
            report.checkpoints += 1
            done += 1
            if done % mg.MARK_EVERY == 0 or entry == found.threads[thread][-1]:
                mg.mark(dest, found, thread, done, (entry.checkpoint_id, entry.ns))
            if on_progress is not None:
                on_progress(1)
    return report, mg.verify(dest, found)
