"""The official LangGraph conformance suite (langgraph-checkpoint-conformance), as its docs say."""

from __future__ import annotations

import uuid

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from stateline.langgraph import AsyncRedisSaver, AsyncShallowRedisSaver, RedisSaver

# A shallow saver keeps one checkpoint per thread and namespace, by design. These tests
# read a checkpoint after a newer one was saved in the same namespace, or count more than one.
HISTORY = "reads a checkpoint older than the newest of its namespace"
COUNTS = "expects more than one checkpoint per namespace to be kept"
SHALLOW_OUT_OF_SCOPE = {
    "test_put_multiple_checkpoints_same_thread": COUNTS,
    "test_put_incremental_channel_update": HISTORY,
    "test_get_tuple_specific_checkpoint_id": HISTORY,
    "test_list_all": COUNTS,
    "test_list_by_thread": COUNTS,
    "test_list_ordering": COUNTS,
    "test_list_metadata_filter_single_key": COUNTS,
    "test_list_metadata_filter_step": COUNTS,
    "test_list_metadata_custom_keys": COUNTS,
    "test_list_before": COUNTS,
    "test_list_limit": COUNTS,
    "test_list_limit_plus_before": COUNTS,
    "test_list_combined_thread_and_filter": COUNTS,
    "test_delete_for_runs_single": HISTORY + " (runs share a namespace)",
    "test_delete_for_runs_multiple": HISTORY + " (runs share a namespace)",
    "test_delete_for_runs_preserves_other_runs": HISTORY + " (runs share a namespace)",
    "test_copy_thread_basic": COUNTS,
}


def _factory(cls, url: str):
    @checkpointer_test(name=cls.__name__)
    async def saver():
        s = cls.from_url(url, prefix=f"conf{uuid.uuid4().hex[:6]}:")
        await s.asetup()
        yield s
        await s.aclose()

    return saver


async def assert_full_conformance(factory) -> None:
    """Every base and extended test of the suite passes (81 of them) for the saver ``factory`` makes."""
    report = await validate(factory, progress=ProgressCallbacks.quiet())
    counts = {cap: (r.tests_passed, r.tests_failed) for cap, r in report.results.items()}
    failures = {cap: r.failures for cap, r in report.results.items() if r.failures}
    assert report.passed_all_base(), failures
    assert report.passed_all(), failures
    assert sum(p for p, _ in counts.values()) == 81, counts


async def test_full_saver_passes_every_conformance_test(url: str) -> None:
    await assert_full_conformance(_factory(AsyncRedisSaver, url))


async def test_shallow_saver_passes_every_test_that_needs_no_history(url: str) -> None:
    report = await validate(_factory(AsyncShallowRedisSaver, url), progress=ProgressCallbacks.quiet())
    failed = {f.split(":")[0].strip() for r in report.results.values() for f in r.failures}
    assert failed == set(SHALLOW_OUT_OF_SCOPE), failed ^ set(SHALLOW_OUT_OF_SCOPE)
    passed = sum(r.tests_passed for r in report.results.values())
    assert passed == 81 - len(SHALLOW_OUT_OF_SCOPE)


class SyncDriven(RedisSaver):
    """Sends the suite's async calls to the sync methods, so the suite checks the sync API."""

    async def aput(self, *args, **kwargs):
        return self.put(*args, **kwargs)

    async def aput_writes(self, *args, **kwargs):
        return self.put_writes(*args, **kwargs)

    async def aget_tuple(self, *args, **kwargs):
        return self.get_tuple(*args, **kwargs)

    async def alist(self, *args, **kwargs):
        for item in self.list(*args, **kwargs):
            yield item

    async def adelete_thread(self, *args, **kwargs):
        return self.delete_thread(*args, **kwargs)

    async def adelete_for_runs(self, *args, **kwargs):
        return self.delete_for_runs(*args, **kwargs)

    async def acopy_thread(self, *args, **kwargs):
        return self.copy_thread(*args, **kwargs)

    async def aprune(self, *args, **kwargs):
        return self.prune(*args, **kwargs)


async def test_sync_methods_pass_every_conformance_test(url: str) -> None:
    await assert_full_conformance(_factory(SyncDriven, url))
