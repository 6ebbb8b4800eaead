"""One CLIENT span per provider attempt (retries and fallbacks included), with the GenAI
semantic conventions: a child of the model call's span, the same for both adapters.

Application Insights makes each a dependency whose type and target come from attributes it reads
itself (azure-monitor-opentelemetry-exporter's span conversion): `gen_ai.system` gives the type
`GenAI | <provider>` (it does not read `gen_ai.provider.name`, which replaced it in the GenAI
conventions, so both are set), and `peer.service` the target: the provider's `host[:port]`, or
its name when LiteLLM picks the URL. Its application map draws a node per type and target."""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, StatusCode

from shared import telemetry
from shared.clients.llm.deployments import Deployment
from shared.clients.llm.errors import AttemptFailed
from shared.clients.llm.operations import Operation


def attempt_span(deployment: Deployment, op: Operation) -> Span:
    """Started in the caller's context: the model call's span is its parent."""
    server = deployment.server
    attributes = {
        "gen_ai.operation.name": op.genai_name,
        "gen_ai.provider.name": deployment.provider,
        "gen_ai.system": deployment.provider,
        "gen_ai.request.model": deployment.upstream_model,
        "peer.service": deployment.target,
        "server.address": server[0] if server else None,
        "server.port": server[1] if server else None,
        "cirrus.deployment": deployment.id,
        "cirrus.adapter": "anthropic_wire" if op is Operation.MESSAGES else deployment.adapter,
    }
    return telemetry.tracer.start_span(
        f"provider {deployment.provider}",
        kind=SpanKind.CLIENT,
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def end_attempt(span: Span, failure: BaseException | None = None) -> None:
    if failure is not None:
        error_type = failure.error.code if isinstance(failure, AttemptFailed) else None
        span.set_status(StatusCode.ERROR, type(failure).__name__)
        span.set_attribute("error.type", error_type or type(failure).__name__)
        if isinstance(failure, AttemptFailed) and failure.status is not None:
            span.set_attribute("http.response.status_code", failure.status)
    span.end()
