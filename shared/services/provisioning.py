"""The Azure resources Cirrus uses, and creating them when running locally.

In Azure, Bicep creates all of these (infra/); a test compares the two lists. Locally, the app
creates whatever is missing the first time a worker starts, so a fresh emulator just works.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.clients.protocols import BlobStore, CosmosContainerSpec, DocumentStore, QueueStore
from shared.config import Settings

COSMOS_CONTAINERS: tuple[CosmosContainerSpec, ...] = (
    CosmosContainerSpec("sessions"),
    CosmosContainerSpec("usage"),
    CosmosContainerSpec("keys"),
    CosmosContainerSpec("audit"),
    CosmosContainerSpec("files"),
    CosmosContainerSpec("batches"),
    CosmosContainerSpec("jobs"),
    CosmosContainerSpec("cache"),
    CosmosContainerSpec("responses"),
)


@dataclass(frozen=True)
class Resources:
    cosmos_containers: tuple[CosmosContainerSpec, ...]
    blob_containers: tuple[str, ...]
    queues: tuple[str, ...]


def required_resources(settings: Settings) -> Resources:
    return Resources(
        cosmos_containers=COSMOS_CONTAINERS,
        blob_containers=(settings.uploads_container, settings.outputs_container),
        # Poison queues with a trigger of their own must exist from the start.
        queues=(
            settings.jobs_queue,
            f"{settings.jobs_queue}-poison",
            settings.batch_queue,
            f"{settings.batch_queue}-poison",
            settings.usage_queue,
        ),
    )


async def provision(
    resources: Resources, documents: DocumentStore, blobs: BlobStore, queues: QueueStore
) -> None:
    """Create every missing database, container and queue; existing ones are left as they are."""
    await documents.ensure_database()
    await asyncio.gather(
        *(documents.ensure_container(spec) for spec in resources.cosmos_containers),
        *(blobs.ensure_container(name) for name in resources.blob_containers),
        *(queues.ensure_queue(name) for name in resources.queues),
    )
