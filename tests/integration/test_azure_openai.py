"""Azure OpenAI deployments against the fake provider's Azure paths: URL shapes and both ways of
authenticating (an `api-key`, or an Entra ID bearer token from the app's identity)."""

from __future__ import annotations

import time

import pytest
from azure.core.credentials import AccessToken

from shared.clients.llm import ModelRouter
from shared.clients.llm.openai_wire import AZURE_SCOPE
from shared.config import ModelConfig
from shared.errors import UpstreamError
from tests.factories import message
from tests.integration.routers import ADAPTERS, text_of, upstream_requests
from tests.openapi import assert_matches


class StaticTokenCredential:
    """An AsyncTokenCredential as azure-identity's are: counts how often a token was fetched."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


def azure(base: str, profile: str, *, adapter: str = "native", **params: object) -> dict:
    entry = {
        "model_name": "gpt-4o-azure",
        "litellm_params": {"model": "azure/my-gpt4o", "api_base": f"{base}/profile/{profile}", **params},
        "model_info": {"id": "azure-1", **({"adapter": "litellm"} if adapter == "litellm" else {})},
    }
    entry["litellm_params"].setdefault("api_version", "2024-10-21")
    return entry


def router(*entries: dict, **kwargs: object) -> ModelRouter:
    return ModelRouter(
        ModelConfig.model_validate({"model_list": list(entries), "router_settings": {"num_retries": 0}}),
        **kwargs,
    )


def chat(**extra: object) -> dict:
    return {"model": "gpt-4o-azure", "messages": [message("Hello Azure")], **extra}


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_an_api_key_deployment_uses_the_deployment_url_and_the_api_key_header(
    fake_provider_url, provider, adapter
):
    gateway = router(
        azure(fake_provider_url, "require_api_key=az-key-1", adapter=adapter, api_key="az-key-1")
    )
    try:
        result = await gateway.chat(chat())
        assert_matches("CreateChatCompletionResponse", result.body)
        assert result.body["model"] == "gpt-4o-azure" and result.served_by.provider == "azure"
        stream = await gateway.chat_stream(chat(stream=True))
        assert text_of([c async for c in stream]) == result.body["choices"][0]["message"]["content"]
        embedded = await gateway.embed({"model": "gpt-4o-azure", "input": "vector me"})
        assert embedded.body["data"][0]["embedding"]
    finally:
        await gateway.aclose()
    sent = upstream_requests(provider)
    assert [r["path"].rsplit("/", 1)[-1] for r in sent] == ["completions", "completions", "embeddings"]
    for record in sent:
        assert "/openai/deployments/my-gpt4o/" in record["path"]
        assert record["deployment"] == "my-gpt4o" and record["api_version"] == "2024-10-21"
        headers = {k.lower(): v for k, v in record["headers"].items()}
        assert headers["api-key"] == "az-key-1" and "authorization" not in headers


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_a_wrong_key_is_cirruss_problem_not_the_clients(fake_provider_url, provider, adapter):
    gateway = router(azure(fake_provider_url, "require_api_key=right", adapter=adapter, api_key="wrong"))
    try:
        with pytest.raises(UpstreamError) as info:
            await gateway.chat(chat())
    finally:
        await gateway.aclose()
    assert info.value.status == 502 and "credentials" in info.value.message
    assert "wrong" not in info.value.message


async def test_without_a_key_cirrus_authenticates_with_entra_id_tokens(fake_provider_url, provider):
    credential = StaticTokenCredential("entra-token-1")
    gateway = router(
        azure(fake_provider_url, "require_bearer=entra-token-1"), azure_credential=lambda: credential
    )
    try:
        for _ in range(3):
            await gateway.chat(chat())
        stream = await gateway.chat_stream(chat(stream=True))
        assert [c async for c in stream]
    finally:
        await gateway.aclose()
    assert credential.scopes == [(AZURE_SCOPE,)]  # one token, cached by azure-identity's policy
    for record in upstream_requests(provider):
        headers = {k.lower(): v for k, v in record["headers"].items()}
        assert headers["authorization"] == "Bearer entra-token-1" and "api-key" not in headers


async def test_an_entra_token_the_service_refuses_is_a_502(fake_provider_url, provider):
    gateway = router(
        azure(fake_provider_url, "require_bearer=expected"),
        azure_credential=lambda: StaticTokenCredential("other"),
    )
    try:
        with pytest.raises(UpstreamError) as info:
            await gateway.chat(chat())
    finally:
        await gateway.aclose()
    assert info.value.status == 502


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_a_fixed_azure_ad_token_is_sent_as_a_bearer_token(fake_provider_url, provider, adapter):
    gateway = router(
        azure(fake_provider_url, "require_bearer=fixed-token", adapter=adapter, azure_ad_token="fixed-token")
    )
    try:
        await gateway.chat(chat())
    finally:
        await gateway.aclose()
    (record,) = upstream_requests(provider)
    assert {k.lower(): v for k, v in record["headers"].items()}["authorization"] == "Bearer fixed-token"


async def test_the_v1_api_takes_the_deployment_as_the_model(fake_provider_url, provider):
    gateway = router(azure(fake_provider_url, "require_api_key=k", api_key="k", api_version="v1"))
    try:
        result = await gateway.text_completion({"model": "gpt-4o-azure", "prompt": "Say hi", "max_tokens": 4})
    finally:
        await gateway.aclose()
    assert result.body["choices"][0]["text"]
    (record,) = upstream_requests(provider)
    assert record["path"].endswith("/openai/v1/completions") and record["body"]["model"] == "my-gpt4o"
