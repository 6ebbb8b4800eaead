"""Batches: OpenAI's Batch API for every model Cirrus serves, run on the batch queue.

A batch moves through OpenAI's statuses, driven by small queue messages (the requests stay in
Blob, the messages name them):

1. `start` (`validate`): the input file is streamed and checked line by line; any error fails the
   batch, each naming its line. Otherwise the requests are written as chunk blobs, one `chunk`
   message per blob is sent, and the batch is `in_progress`.
2. `chunk` (`chunk_runner`): the chunk's requests run through the same services as live traffic,
   a few at a time, their results saved to result blobs every few seconds; a redelivered message
   skips the requests that already have a result. The last chunk to finish sends `finalize`.
3. `finalize` (`finalize`): the result blobs become the output and error files (each `custom_id`
   exactly once: the first result written for it wins), and the batch ends `completed`,
   `cancelled` or `expired`.

Every step is idempotent: messages can be delivered twice, workers can die anywhere, and two
workers can hold the same message. State changes are ETag-guarded (`state`); counts per chunk are
set, not added. A message that keeps failing reaches the poison queue, whose handler marks its
requests as failed so the batch still ends, and a sweeper (`sweep`, run by a timer) sends again
the messages of batches that stopped moving. Blob names are in `blob_layout`, the line formats
in `lines`, the HTTP side in `api`, and `service` wires it all into `BatchService`.
"""

from shared.models.batches import RequestCounts
from shared.services.batches.chunk_runner import BatchTimings, Gateway, OwnerLookup, live_gateway
from shared.services.batches.service import BatchService
from shared.services.batches.sweep import SweepPolicy

__all__ = [
    "BatchService",
    "BatchTimings",
    "Gateway",
    "OwnerLookup",
    "RequestCounts",
    "SweepPolicy",
    "live_gateway",
]
