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
