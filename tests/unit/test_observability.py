"""What a request's or a queue message's span says about the model calls made for it, and which
traces are sampled."""

import time

from shared import observability
from shared.observability import ModelCallTotals, consuming, counting_model_calls, model_call_totals


def test_totals_sum_tokens_and_cost_and_name_each_model_and_deployment_once():
    totals = ModelCallTotals()
    assert totals.attributes() == {}  # no model call: nothing to say
    totals.add("gpt-4o", deployment="d1", input_tokens=10, output_tokens=5, cost_usd=None)
    assert "cirrus.cost_usd" not in totals.attributes()  # unpriced is not free
    totals.add("gpt-4o", deployment="d2", input_tokens=1, output_tokens=2, cost_usd=0.25)
    totals.add("claude", deployment="d1", input_tokens=0, output_tokens=0, cost_usd=0.5)
    totals.add("claude", deployment=None, input_tokens=0, output_tokens=0, cost_usd=0.0)  # cache hit
    assert totals.attributes() == {
        "cirrus.model_calls": 4,
        "cirrus.model": "gpt-4o,claude",
        "cirrus.deployment": "d1,d2",
        "cirrus.input_tokens": 11,
        "cirrus.output_tokens": 7,
        "cirrus.cost_usd": 0.75,
    }


def test_model_calls_add_to_the_totals_of_the_block_they_start_in():
    assert model_call_totals() is None
    totals = ModelCallTotals()
    with counting_model_calls(totals):
        assert model_call_totals() is totals
    assert model_call_totals() is None


def test_a_consumer_span_carries_the_model_calls_of_its_message(spans):
    with consuming("cirrus-batches", {}, message_id="m1"):
        totals = observability.model_call_totals()
        assert totals is not None
        totals.add("cirrus-local", deployment="local-1", input_tokens=3, output_tokens=4, cost_usd=0.01)
    (span,) = spans.get_finished_spans()
    assert span.name == "process cirrus-batches"
    assert span.attributes["cirrus.model_calls"] == 1
    assert span.attributes["cirrus.model"] == "cirrus-local"
    assert span.attributes["cirrus.cost_usd"] == 0.01


def test_a_timer_invocation_is_a_server_span_its_storage_calls_belong_to(spans):
    from opentelemetry import trace

    with (
        observability.timer_invocation("sweep"),
        trace.get_tracer("test").start_as_current_span("ContainerProxy.query_items"),
    ):
        pass
    child, invocation = spans.get_finished_spans()
    assert invocation.name == "sweep" and invocation.kind.name == "SERVER"
    assert invocation.attributes["faas.trigger"] == "timer"
    assert child.parent.span_id == invocation.context.span_id


def test_a_rate_limit_keeps_or_drops_traces_whole():
    """The exporter's rate-limited sampler alone decides each span of a trace on its own; Cirrus's
    wrapper lets only a trace's first span in this process decide, and its spans share its rate."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from shared.telemetry import SAMPLE_RATE, Sampling

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=Sampling(per_second=5).sampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    time.sleep(0.5)  # the first trace after a quiet spell is kept at 100 %, with no sampleRate at all
    for _ in range(200):  # then 100 times the rate: most are dropped, the kept ones at a low share
        with (
            tracer.start_as_current_span("POST /v1/chat/completions", kind=SpanKind.SERVER),
            tracer.start_as_current_span("chat cirrus-local"),
            tracer.start_as_current_span("provider openai", kind=SpanKind.CLIENT),
        ):
            time.sleep(0.002)
    traces: dict[int, dict[str, object]] = {}
    for span in exporter.get_finished_spans():
        traces.setdefault(span.context.trace_id, {})[span.name] = span.attributes.get(SAMPLE_RATE)
    assert 0 < len(traces) < 200
    for spans_of_trace in traces.values():
        assert len(spans_of_trace) == 3 and len(set(spans_of_trace.values())) == 1
