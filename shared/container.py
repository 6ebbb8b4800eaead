"""The typed container: settings, clients and services, built once per worker process.

Functions get it with `await get_container()`. Building it reads the app settings and the model
file, builds the model router and creates the Azure clients (no network I/O), then in local mode
creates any missing database, containers and queues. The router is cheap to build; only a model
file with deployments LiteLLM serves starts LiteLLM's import, in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared import telemetry
from shared.clients.protocols import BlobStore, DocumentStore, LLMRouter, QueueStore
from shared.config import ConfigError, ModelConfig, Settings, get_settings, load_model_config
from shared.errors import ServiceUnavailableError
from shared.logs import configure_logging
from shared.services.audio import SpeechService, TranscriptionService
from shared.services.audit import AuditLog
from shared.services.auth import AuthService
from shared.services.background import Background
from shared.services.batches import BatchService, live_gateway
from shared.services.cache import ResponseCache
from shared.services.calls import Metering
from shared.services.chat import ChatService
from shared.services.completions import CompletionService, EmbeddingService
from shared.services.console_sessions import ConsoleSessions
from shared.services.console_sessions import signing_key as console_signing_key
from shared.services.files import FileService
from shared.services.health import HealthService
from shared.services.images import ImageService
from shared.services.jobs import AnalysisRunner, JobService, WebhookSender, live_chat
from shared.services.keys import KeyService
from shared.services.limits import KeyLimiter
from shared.services.messages import MessagesService
from shared.services.model_catalog import ModelCatalog
from shared.services.moderations import ModerationService
from shared.services.owners import KeyOwners
from shared.services.policies import PolicyService
from shared.services.provisioning import provision, required_resources
from shared.services.rerank import RerankService
from shared.services.responses import ResponsesService
from shared.services.sessions import SessionService
from shared.services.stream_tokens import StreamTokens
from shared.services.stream_tokens import signing_key as stream_signing_key
from shared.services.sweeper import Sweeper
from shared.services.tools import ToolSettings
from shared.services.usage import UsageService

if TYPE_CHECKING:
    from shared.services.identities import EntraIdentities

log = logging.getLogger("cirrus.container")

LLMFactory = Callable[[ModelConfig], LLMRouter]


@dataclass
class Clients:
    documents: DocumentStore
    blobs: BlobStore
    queues: QueueStore

    async def aclose(self) -> None:
        for client in (self.documents, self.blobs, self.queues):
            await client.aclose()


class Container:
    """Everything a function needs, wired once. Services get their clients from here."""

    def __init__(
        self,
        settings: Settings,
        models: ModelConfig,
        clients: Clients,
        llm: LLMRouter,
        *,
        models_created: int = 0,
    ) -> None:
        self.settings = settings
        self.models = models
        self.clients = clients
        self.llm = llm
        self.catalog = ModelCatalog(models, created=models_created)
        self.limiter = KeyLimiter(clients.documents)
        self.audit = AuditLog(clients.documents)
        self.policies = PolicyService(clients.documents, self.limiter, self.audit)
        self.auth = AuthService(
            settings.master_key,  # type: ignore[arg-type]  # set by Settings' validator
            settings.key_hash_secret,  # type: ignore[arg-type]
            lookup=lambda key_id: self.keys.lookup(key_id),  # noqa: PLW0108 - self.keys comes next
            master_enabled=settings.master_key_enabled,
            identities=entra_identities(settings, self.policies, clients.documents),
        )
        self.keys = KeyService(clients.documents, self.auth, self.limiter, self.audit)
        self.console = ConsoleSessions(
            clients.documents,
            self.auth,
            console_signing_key(settings.key_hash_secret.get_secret_value().encode()),  # type: ignore[union-attr]
        )
        # `?token=` on a job's event stream, for browsers' EventSource (stream_tokens.py).
        self.stream_tokens = StreamTokens(
            stream_signing_key(settings.key_hash_secret.get_secret_value().encode())  # type: ignore[union-attr]
        )
        # Who queued work runs as, re-read at most every 5 s while it runs.
        self.owners = KeyOwners(self.auth.principal_for)
        self.background = Background()
        self.usage = UsageService(clients.documents, clients.queues, settings.usage_queue, self.background)
        self.sessions = SessionService(clients.documents, clients.blobs, settings.outputs_container)
        self.cache = ResponseCache(clients.documents)
        self.files = FileService(clients.documents, clients.blobs, settings.uploads_container)
        self.batches = BatchService(
            clients.documents,
            clients.blobs,
            clients.queues,
            self.files,
            self.catalog,
            queue=settings.batch_queue,
            outputs_container=settings.outputs_container,
            chunk_size=settings.batch_chunk_size,
            concurrency=settings.batch_concurrency,
            window_seconds=settings.batch_window_seconds,
            max_line_bytes=settings.max_body_bytes,  # an input line is one request body
            gateway=live_gateway(self.chat, self.completions, self.embeddings),
            owner=self.owners.current,
            limiter=self.limiter,
        )
        tools = ToolSettings(
            http_allowlist=tuple(h.strip() for h in settings.http_allowlist.split(",") if h.strip()),
            http_max_bytes=settings.http_max_bytes,
            http_timeout_s=settings.http_timeout_s,
        )
        hash_secret = settings.key_hash_secret.get_secret_value().encode()  # type: ignore[union-attr]
        self.responses = ResponsesService(
            clients.documents,
            clients.blobs,
            self.catalog,
            llm,
            chat=self.chat,
            metering=self.metering,
            jobs=lambda: self.jobs,  # background responses run on the job runner, which runs them back
            blob_container=settings.outputs_container,
            max_cost_usd=settings.response_max_cost_usd or None,
        )
        self.jobs = JobService(
            clients.documents,
            clients.queues,
            self.files,
            self.catalog,
            queue=settings.jobs_queue,
            own_queues=settings.own_queues,
            chat=live_chat(self.chat, self._cost),
            owner=self.owners.current,
            tool_settings=tools,
            webhook_secret=hmac.new(hash_secret, b"cirrus-webhooks", hashlib.sha256).digest(),
            deliver_webhook=WebhookSender(tools),
            lease_seconds=settings.job_lease_seconds,
            analysis=AnalysisRunner(
                self.files, self._max_input_tokens, max_file_bytes=settings.max_upload_bytes
            ),
            responses=self.responses.runner,
        )

        self.sweeper = Sweeper(batches=self.batches.sweep, jobs=self.jobs.sweep)

    async def _cost(self, served_by: Any, input_tokens: int, output_tokens: int) -> float | None:
        return self.llm.cost_usd(served_by, input_tokens, output_tokens)

    async def _max_input_tokens(self, model: str) -> int | None:
        return self.llm.limits(model).max_input_tokens

    async def metering(self) -> Metering:
        return Metering(
            self.llm,
            self.usage,
            self.background,
            self.limiter,
            trace_content=self.settings.trace_content,
        )

    async def chat(self) -> ChatService:
        return ChatService(
            await self.metering(),
            self.catalog,
            self.sessions,
            self.cache,
            max_messages=self.settings.max_messages,
        )

    async def messages(self) -> MessagesService:
        return MessagesService(
            await self.chat(), await self.metering(), self.catalog, max_messages=self.settings.max_messages
        )

    async def completions(self) -> CompletionService:
        return CompletionService(await self.metering(), self.catalog)

    async def embeddings(self) -> EmbeddingService:
        return EmbeddingService(await self.metering(), self.catalog)

    async def moderations(self) -> ModerationService:
        return ModerationService(await self.metering(), self.catalog)

    async def images(self) -> ImageService:
        return ImageService(await self.metering(), self.catalog)

    async def transcriptions(self) -> TranscriptionService:
        return TranscriptionService(await self.metering(), self.catalog)

    async def speech(self) -> SpeechService:
        return SpeechService(await self.metering(), self.catalog)

    async def rerank(self) -> RerankService:
        return RerankService(await self.metering(), self.catalog)

    def health(self) -> HealthService:
        settings, clients = self.settings, self.clients

        async def models() -> dict[str, Any]:
            await self.llm.warm()
            return {"models": len(self.catalog.list_models())}

        return HealthService(
            {
                "cosmos": clients.documents.ping,
                "blob": lambda: clients.blobs.ping(settings.uploads_container),
                "queue": lambda: clients.queues.ping(settings.jobs_queue),
                "models": models,
            }
        )

    async def aclose(self) -> None:
        await self.background.drain()
        if self.auth.identities is not None:
            await self.auth.identities.aclose()
        await self.clients.aclose()
        await self.llm.aclose()


def entra_identities(
    settings: Settings, policies: PolicyService, documents: DocumentStore
) -> EntraIdentities | None:
    """Entra ID callers, when issuers are configured (the JWT library is imported only then)."""
    if not settings.entra_enabled:
        return None
    from shared.services.entra import EntraVerifier  # noqa: PLC0415 - off /health's path
    from shared.services.identities import EntraIdentities  # noqa: PLC0415

    verifier = EntraVerifier(settings.entra_issuers, settings.entra_audience)
    return EntraIdentities(verifier, policies, documents)


def azure_clients(settings: Settings) -> Clients:
    """Adapters for Cosmos, Blob and Queue: keys locally, the managed identity in Azure."""
    from shared.clients.blob_store import AzureBlobStore  # noqa: PLC0415 - keeps SDK imports off /health
    from shared.clients.cosmos_store import CosmosDocumentStore  # noqa: PLC0415
    from shared.clients.queue_store import AzureQueueStore  # noqa: PLC0415

    credential: Any = None
    if settings.storage_connection_string is None or settings.cosmos_key is None:
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

        credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
    if settings.storage_connection_string is not None:
        conn = settings.storage_connection_string.get_secret_value()
        blobs = AzureBlobStore.from_connection_string(conn)
        queues = AzureQueueStore.from_connection_string(conn)
    else:
        account = settings.storage_account_name
        blobs = AzureBlobStore.from_identity(
            settings.storage_blob_uri or f"https://{account}.blob.core.windows.net", credential
        )
        queues = AzureQueueStore.from_identity(
            settings.storage_queue_uri or f"https://{account}.queue.core.windows.net", credential
        )
    cosmos_credential = settings.cosmos_key.get_secret_value() if settings.cosmos_key else credential
    documents = CosmosDocumentStore(
        settings.cosmos_endpoint, cosmos_credential, settings.cosmos_database, local=settings.is_local
    )
    return Clients(documents=documents, blobs=blobs, queues=queues)


def resilient(clients: Clients) -> Clients:
    """The clients with their passing faults retried (shared/clients/resilient.py)."""
    from shared.clients.resilient import (  # noqa: PLC0415 - keeps azure-core off /health's path
        ResilientBlobStore,
        ResilientDocumentStore,
        ResilientQueueStore,
    )

    return Clients(
        documents=ResilientDocumentStore(clients.documents),
        blobs=ResilientBlobStore(clients.blobs),
        queues=ResilientQueueStore(clients.queues),
    )


def model_router(models: ModelConfig, settings: Settings) -> LLMRouter:
    """Cirrus's router over the model file, its provider connections sized by the settings."""
    from shared.clients.llm import ModelRouter  # noqa: PLC0415 - keeps aiohttp off /health's path

    def azure_credential() -> Any:
        # Keyless Azure OpenAI: the app's identity (managed identity in Azure, `az login` locally).
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

        return DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)

    return ModelRouter(
        models,
        max_connections=settings.provider_max_connections,
        keepalive_seconds=settings.provider_keepalive_seconds,
        azure_credential=azure_credential,
    )


def configure_telemetry(settings: Settings | None = None) -> None:
    """Install the exporters the app settings name (once per process; later calls return at once).

    Functions call it before starting their first span, not only when the container is built: a
    span started before the exporters are installed is never exported, so the worker's first
    request would be missing from Application Insights. Called that way (without `settings`) it
    never raises: invalid settings, or an exporter that cannot be set up, fail the container build,
    which reports them."""
    if settings is None:
        with contextlib.suppress(Exception):  # reported by the container build just after
            configure_telemetry(get_settings())
        return
    secret = settings.appinsights_connection_string
    telemetry.configure_exporters(
        secret.get_secret_value() if secret else None, settings.otlp_endpoint, settings.export_options()
    )


async def build_container(
    settings: Settings | None = None,
    *,
    clients: Callable[[Settings], Clients] = azure_clients,
    llm_factory: LLMFactory | None = None,
) -> Container:
    """Read settings and the model file, build the router and clients and, in local mode, create
    missing resources."""
    try:
        settings = settings or get_settings()
        path = settings.resolved_models_file()
        models = load_model_config(path)
        llm = (llm_factory or functools.partial(model_router, settings=settings))(models)
    except ConfigError as exc:
        log.error("%s", exc)
        raise ServiceUnavailableError("Cirrus is not configured correctly; see the server log.") from exc
    configure_logging(settings.log_format == "json", settings.log_level)
    configure_telemetry(settings)
    built = resilient(clients(settings))
    if settings.is_local:
        try:
            await provision(required_resources(settings), built.documents, built.blobs, built.queues)
        except Exception as exc:
            await built.aclose()
            await llm.aclose()
            log.error("local provisioning failed: %s", type(exc).__name__)
            raise ServiceUnavailableError("A storage dependency of Cirrus is unreachable.") from exc
    return Container(settings, models, built, llm, models_created=int(path.stat().st_mtime))


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    container: Container | None = None


class _PerLoop:
    """One container per event loop: async SDK clients must not cross loops."""

    def __init__(self) -> None:
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slot] = weakref.WeakKeyDictionary()

    async def get(self, factory: Callable[[], Awaitable[Container]]) -> Container:
        slot = self._slots.setdefault(asyncio.get_running_loop(), _Slot())
        if slot.container is None:
            async with slot.lock:
                if slot.container is None:  # a failed build is not cached: the next call retries
                    slot.container = await factory()
        return slot.container


_containers = _PerLoop()


async def get_container() -> Container:
    """The worker's container, built on first use."""
    return await _containers.get(build_container)
