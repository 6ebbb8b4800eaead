"""Fixtures of the integration tier (the session-wide servers are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def provider(fake_provider_url: str) -> Iterator[httpx.Client]:
    """The fake provider's control API, its script and request log reset before and after each test
    (a test that queues more faults than it uses must not leave them to tests without this fixture)."""
    client = httpx.Client(base_url=fake_provider_url)
    client.post("/_control/reset").raise_for_status()
    yield client
    client.post("/_control/reset").raise_for_status()
    client.close()
