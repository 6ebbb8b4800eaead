"""HTTP to providers, shared by the native adapters (openai_wire, anthropic_wire).

One pooled aiohttp session per adapter (see openai_wire's docstring for why aiohttp), created on
first use because aiohttp binds a session to the running event loop. A request either reads the
whole answer (`post`) or returns once the provider has accepted it, leaving the body to be read as
it arrives (`open_post`). Either way a provider failure becomes `errors.AttemptFailed`: a timeout,
an unreachable provider, or an error status read from the provider's error body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from shared.clients.llm import errors
from shared.sse import DataDecoder


class Pool:
    """The adapter's one session, with its connection limits."""

    def __init__(self, *, max_connections: int, keepalive_seconds: float) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: str, data: Any, headers: Mapping[str, str], limits: aiohttp.ClientTimeout
    ) -> tuple[bytes, CIMultiDictProxy[str]]:
        """The whole answer to a POST, and its headers; `limits` are aiohttp's timeouts for it."""
        try:
            async with self.session().post(url, data=data, headers=headers, timeout=limits) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise errors.from_response(response.status, raw, response.headers)
                return raw, response.headers
        except TimeoutError:
            raise errors.timed_out() from None
        except aiohttp.ClientError:
            raise errors.unreachable() from None

    async def open_post(
        self, url: str, data: Any, headers: Mapping[str, str], limits: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """A POST the provider has accepted, its body not yet read: the caller reads and releases it."""
        try:
            response = await self.session().post(url, data=data, headers=headers, timeout=limits)
        except TimeoutError:
            raise errors.timed_out() from None
        except aiohttp.ClientError:
            raise errors.unreachable() from None
        if response.status >= 400:
            try:
                raw = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                response.release()
            raise errors.from_response(response.status, raw, response.headers)
        return response


def json_object(raw: bytes, what: str = "JSON") -> dict[str, Any]:
    """The answer parsed once, which must be a JSON object (`what` names it in the error)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise errors.AttemptFailed(
            errors.UpstreamError(f"The model provider returned an answer that is not {what}.")
        )
    return body


async def sse_events(
    response: aiohttp.ClientResponse, accept: Callable[[Any], dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """A provider's server-sent events as they arrive, each `data:` parsed once and passed through
    `accept` (which returns the event, or raises for one that is not the wire's or is an error),
    until `[DONE]` or the end. Blocks are decoded as they come (`shared.sse.DataDecoder`), so an
    event is relayed as soon as its blank line is in. The response goes back to the pool when read
    to the end, else its connection is closed."""
    decoder = DataDecoder()
    try:
        async for block in response.content.iter_any():
            for payload in decoder.feed(block):
                if payload == b"[DONE]":
                    return
                yield accept(orjson.loads(payload))
    except TimeoutError:
        raise errors.timed_out() from None
    except aiohttp.ClientError:
        raise errors.cut_short() from None
    except orjson.JSONDecodeError:
        raise errors.AttemptFailed(
            errors.UpstreamError("The model provider sent an event that is not JSON.")
        ) from None
    finally:
        response.release()
