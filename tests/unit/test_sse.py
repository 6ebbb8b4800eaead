"""The SSE encoder, as exact bytes."""

import pytest

from shared import sse


def test_mapping_is_compact_json_on_one_data_line():
    assert sse.encode({"a": 1, "b": [True, None]}) == b'data: {"a":1,"b":[true,null]}\n\n'


def test_data_event_is_the_same_bytes_as_encode():
    chunk = {"id": "c1", "choices": [{"delta": {"content": "héllo ☁"}, "finish_reason": None}], "n": 1.5}
    assert sse.data_event(chunk) == sse.encode(chunk)
    expected = (
        'data: {"id":"c1","choices":[{"delta":{"content":"héllo ☁"},"finish_reason":null}],"n":1.5}\n\n'
    )
    assert sse.data_event(chunk) == expected.encode()


def test_non_ascii_is_sent_as_utf8_not_escaped():
    assert sse.encode({"t": "héllo ☁"}) == 'data: {"t":"héllo ☁"}\n\n'.encode()


def test_multiline_string_becomes_one_data_line_per_line():
    assert sse.encode("one\ntwo") == b"data: one\ndata: two\n\n"


def test_id_and_event_come_before_data():
    assert sse.encode({"x": 1}, event="step", id="42") == b'id: 42\nevent: step\ndata: {"x":1}\n\n'


def test_done_and_comment():
    assert sse.DONE == b"data: [DONE]\n\n"
    assert sse.comment("keep-alive") == b": keep-alive\n\n"


@pytest.mark.parametrize("field", ["id", "event"])
def test_fields_cannot_inject_lines(field):
    with pytest.raises(ValueError, match="single line"):
        sse.encode({}, **{field: "a\ndata: injected"})


def test_typed_event_is_named_by_its_type_as_anthropic_streams():
    event = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo"}}
    expected = (
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        '"delta":{"type":"text_delta","text":"héllo"}}\n\n'
    )
    assert sse.typed_event(event) == expected.encode()
    assert sse.typed_event(event) == sse.encode(event, event="content_block_delta")


def test_typed_event_type_cannot_inject_lines():
    with pytest.raises(ValueError, match="single line"):
        sse.typed_event({"type": "ping\ndata: injected"})


def test_decoder_gives_each_events_data_once_its_blank_line_is_in():
    decoder = sse.DataDecoder()
    assert decoder.feed(b'data: {"a":1}\n\ndata: {"b"') == [b'{"a":1}']
    assert decoder.feed(b":2}\n") == []
    assert decoder.feed(b"\n") == [b'{"b":2}']
    assert decoder.feed(b"data: [DONE]\n\n") == [b"[DONE]"]


def test_decoder_follows_the_spec_for_crlf_comments_fields_and_several_data_lines():
    decoder = sse.DataDecoder()
    stream = b": keep-alive\r\nevent: chunk\r\nid: 7\r\ndata:first\r\ndata:  second\r\n\r\n\r\n"
    assert decoder.feed(stream) == [b"first\n second"]


def test_decoder_takes_events_larger_than_any_line_limit_in_small_blocks():
    payload = b'{"delta":"' + b"x" * 300_000 + b'"}'
    stream = b"data: " + payload + b"\n\n"
    decoder = sse.DataDecoder()
    events = [e for i in range(0, len(stream), 4096) for e in decoder.feed(stream[i : i + 4096])]
    assert events == [payload]


def test_decoder_keeps_an_unfinished_event_back():
    assert sse.DataDecoder().feed(b"data: cut off mid-") == []
