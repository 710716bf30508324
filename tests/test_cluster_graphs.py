"""Every LangGraph scenario of test_graphs.py again, on the 3-master cluster."""

from __future__ import annotations

import pytest

from .test_graphs import *  # noqa: F403 - the same scenarios (and their fixtures), collected here


@pytest.fixture
def url(cluster_url: str) -> str:
    return cluster_url
