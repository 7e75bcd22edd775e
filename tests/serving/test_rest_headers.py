"""The REST server's own header parser (the standard library's costs ~70 us a request)."""

from __future__ import annotations

import io

import pytest

from serving.rest import MAX_HEADERS, MAX_LINE, _HeaderError, read_headers


def parse(raw: bytes):
    stream = io.BytesIO(raw)
    headers = read_headers(stream)
    return headers, stream.read()


def test_names_are_case_insensitive_and_the_body_is_left_unread():
    headers, rest = parse(b"Host: x\r\ncontent-LENGTH:  12 \r\nContent-Type: application/json\r\n\r\n{\"a\": 1}")
    assert headers.get("Content-Length") == "12" and headers["content-length"] == "12"
    assert "CONTENT-TYPE" in headers and headers.get("Expect", "") == ""
    assert rest == b'{"a": 1}'


def test_repeated_headers_are_joined_and_folded_lines_continue_the_value():
    headers, _ = parse(b"Accept: a\r\nAccept: b\r\nX-Long: one\r\n  two\r\n\r\n")
    assert headers.get("accept") == "a, b"
    assert headers.get("x-long") == "one two"


def test_bare_newlines_and_end_of_stream_end_the_block():
    assert parse(b"A: 1\nB: 2\n\nrest")[0].get("b") == "2"
    assert parse(b"A: 1\r\n")[0].get("a") == "1"


@pytest.mark.parametrize("raw, status", [
    (b"no colon here\r\n\r\n", 400),
    (b": empty name\r\n\r\n", 400),
    (b"bad name: x\r\n\r\n", 400),
    (b" folded first\r\n\r\n", 400),
    (b"X: " + b"a" * (MAX_LINE + 10) + b"\r\n\r\n", 431),
    (b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n", 431),
])
def test_malformed_blocks_are_refused_with_the_status_to_answer(raw, status):
    with pytest.raises(_HeaderError) as raised:
        read_headers(io.BytesIO(raw))
    assert raised.value.status == status and raised.value.message
