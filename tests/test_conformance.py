"""The official LangGraph conformance suite (langgraph-checkpoint-conformance), as its docs say."""

from __future__ import annotations

import uuid

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from stateline.langgraph import AsyncRedisSaver, AsyncShallowRedisSaver

# Tests that need more than one checkpoint of history in a namespace: a shallow saver
# keeps only the newest, by design.
SHALLOW_NEEDS_HISTORY = {
    "put": {"test_put_multiple_checkpoints_same_thread", "test_put_parent_config", "test_put_incremental_channel_update", "test_put_new_channel_added", "test_put_channel_removed"},
}


def _factory(cls, url: str):
    @checkpointer_test(name=cls.__name__)
    async def saver():
        s = cls.from_url(url, prefix=f"conf{uuid.uuid4().hex[:6]}:")
        await s.asetup()
        yield s
        await s.aclose()

    return saver


async def test_full_saver_passes_every_conformance_test(url: str) -> None:
    report = await validate(_factory(AsyncRedisSaver, url), progress=ProgressCallbacks.quiet())
    report.print_report()
    counts = {cap: (r.tests_passed, r.tests_failed) for cap, r in report.results.items()}
    failures = {cap: r.failures for cap, r in report.results.items() if r.failures}
    assert report.passed_all_base(), failures
    assert report.passed_all(), failures
    assert sum(p for p, _ in counts.values()) == 81, counts
