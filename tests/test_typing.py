"""A typed application sees stateline's types: the installed package ships ``py.typed``.

mypy checks a small application in a process of its own, in an empty directory and without
PYTHONPATH, so it finds stateline the way an application does: as an installed package. Without
the marker it reports "missing library stubs or py.typed marker" and stateline is ``Any``; the
application's one deliberate mistake shows that stateline's signatures are really read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

APP = """\
from stateline import Checkpoint, StatelineError, SyncRedisCheckpointer, new_id
from stateline.langgraph import RedisSaver


def latest(store: SyncRedisCheckpointer, session: str) -> Checkpoint | None:
    try:
        return store.load(session)
    except StatelineError:
        return None


def saver(url: str) -> RedisSaver:
    return RedisSaver.from_url(url)


ident: str = new_id()
wrong: int = new_id()
"""

# Strict, as a typed application runs it. Only stateline is followed: the other libraries'
# types are not what is tested, and reading them would take half a minute.
CONFIG = """\
[mypy]
strict = True
follow_imports = skip

[mypy-stateline,stateline.*]
follow_imports = normal
"""


def test_a_typed_application_type_checks(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "mypy.ini").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", "cache", "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert out.splitlines() == [
        'app.py:17: error: Incompatible types in assignment (expression has type "str", '
        'variable has type "int")  [assignment]',
        "Found 1 error in 1 file (checked 1 source file)",
    ], out
