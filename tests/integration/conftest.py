"""Fixtures of the integration tier (the session-wide servers are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def provider(fake_provider_url: str) -> Iterator[httpx.Client]:
    """The fake provider's control API, its script and request log reset before each test."""
    client = httpx.Client(base_url=fake_provider_url)
    client.post("/_control/reset").raise_for_status()
    yield client
    client.close()
