"""Background work re-reads its key: a revoked key stops it, an unreadable one is retried later."""

import pytest

from shared.errors import AuthenticationError, ServiceUnavailableError
from shared.services.auth import Principal
from shared.services.owners import KeyOwners
from tests.fakes import FakeClock


class Keys:
    def __init__(self):
        self.reads = 0
        self.state = "live"

    async def lookup(self, key_id):
        self.reads += 1
        if self.state == "revoked":
            raise AuthenticationError("This API key has been revoked.")
        if self.state == "down":
            raise ServiceUnavailableError("Cirrus cannot check API keys right now; retry shortly.")
        return Principal(key_id=key_id, is_master=False)


async def test_the_key_is_read_at_most_once_per_ttl():
    keys, clock = Keys(), FakeClock()
    owners = KeyOwners(keys.lookup, clock=clock)
    for _ in range(100):
        assert (await owners.current("key_1")).key_id == "key_1"
    assert keys.reads == 1
    clock.now += 5
    await owners.current("key_1")
    assert keys.reads == 2


async def test_a_revocation_reaches_running_work_within_the_ttl():
    keys, clock = Keys(), FakeClock()
    owners = KeyOwners(keys.lookup, clock=clock)
    await owners.current("key_1")
    keys.state = "revoked"
    await owners.current("key_1")  # still within the ttl
    clock.now += 5
    with pytest.raises(AuthenticationError):
        await owners.current("key_1")


async def test_an_unreadable_key_is_transient_not_revoked_and_not_remembered():
    keys, clock = Keys(), FakeClock()
    owners = KeyOwners(keys.lookup, clock=clock)
    keys.state = "down"
    with pytest.raises(ServiceUnavailableError):
        await owners.current("key_1")
    keys.state = "live"
    assert (await owners.current("key_1")).key_id == "key_1"  # tried again at once


async def test_the_ttl_is_never_more_than_five_seconds():
    keys, clock = Keys(), FakeClock()
    owners = KeyOwners(keys.lookup, ttl=60, clock=clock)
    await owners.current("key_1")
    clock.now += 5
    await owners.current("key_1")
    assert keys.reads == 2
