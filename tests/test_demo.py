"""The README's first command: the demo, on an embedded server of its own."""

from __future__ import annotations

import subprocess
import sys

from stateline.embedded import EmbeddedServer


def test_demo_pauses_for_approval_and_a_second_process_resumes_it(tmp_path) -> None:
    data = tmp_path / "data"
    try:
        out = subprocess.run(
            [sys.executable, "-m", "stateline", "demo", "--data-dir", str(data)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        assert "[process 1]" in out and "paused for approval" in out
        assert "[process 2] resuming" in out and "('approve',)" in out
        assert "final answer: Here is the forecast: It is 21°C and sunny in Lisbon." in out
        assert "step  4  loop    next=[]  messages=4" in out and "step -1  input" in out
        assert (data / "appendonlydir").is_dir()  # the data is on disk
        server = EmbeddedServer(data)
        assert server.running  # shared, still up for the next process
        first_port = server.start()
        assert EmbeddedServer(data).start() == first_port  # reused, not a second server
    finally:
        EmbeddedServer(data).stop()
    assert not EmbeddedServer(data).running


def test_embedded_server_keeps_data_across_a_restart(tmp_path) -> None:
    from langgraph.checkpoint.base import empty_checkpoint

    from stateline.langgraph import RedisSaver

    server = EmbeddedServer(tmp_path)
    try:
        with RedisSaver(data_dir=str(tmp_path)) as saver:
            cp = empty_checkpoint()
            cp["channel_values"] = {"kept": [1, 2, 3, 4, 5]}
            cp["channel_versions"] = {"kept": 1}
            saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, {}, {"kept": 1})
        assert server.stop()
        with RedisSaver(data_dir=str(tmp_path)) as saver:  # starts it again, from the AOF
            got = saver.get_tuple({"configurable": {"thread_id": "t"}})
            assert got.checkpoint["channel_values"] == {"kept": [1, 2, 3, 4, 5]}
    finally:
        server.stop()
