"""The REST server parses bodies with orjson and hands anything orjson refuses to the standard
parser: every body must parse to what `json.loads` gives, or fail with the same message."""

from __future__ import annotations

import json
import random

import pytest

from serving.errors import BadRequest
from serving.rest import Handler

parse = Handler._parse_json


def standard(body: bytes):
    try:
        return ("ok", json.loads(body))
    except RecursionError:
        return ("error", "JSON Parse error: nested too deeply")
    except UnicodeDecodeError as err:
        return ("error", f"JSON Parse error: invalid UTF-8 at offset {err.start}")
    except ValueError as err:
        return ("error", f"JSON Parse error: {err}")


def ours(body: bytes):
    try:
        return ("ok", parse(body))
    except BadRequest as err:
        return ("error", err.message)


EDGE_BODIES = [
    b'{"instances": [{"fare": NaN, "trip_miles": Infinity, "x": -Infinity}]}',  # Python-only literals
    b'{"instances": [{"id": 18446744073709551616, "neg": -9223372036854775809}]}',  # past 64 bits
    b'{"instances": [{"id": 9223372036854775807, "u": 18446744073709551615}]}',  # at the edges
    b'{"instances": [{"company": "\\ud800 lone"}]}',  # lone surrogate escape
    '\ufeff{"instances": [1]}'.encode("utf-8"),  # UTF-8 byte order mark
    '{"instances": ["\u00e9\u4e2d"]}'.encode("utf-16"),  # UTF-16 with BOM
    b'{"a": 1, "a": 2}',  # duplicate keys: the last wins
    b'{"x": 1e400, "y": -1e-400, "z": 0.1, "w": 5e-324}',
    b'{"instances": [1, 2,]}',  # trailing comma
    b'{"instances": [1 2]}',
    b"[" * 5000 + b"]" * 5000,  # deeper than orjson's limit
    b'{"a": "\xff"}',  # invalid UTF-8
    b"  \n 7 ",
    b'"' + b"x" * 100 + b'"',
]


@pytest.mark.parametrize("body", EDGE_BODIES, ids=range(len(EDGE_BODIES)))
def test_edge_cases_parse_exactly_as_the_standard_parser_does(body):
    got, want = ours(body), standard(body)
    assert got[0] == want[0]
    if got[0] == "ok":
        assert repr(got[1]) == repr(want[1])  # repr: nan != nan, and types (int vs float) must match
    else:
        assert got[1] == want[1]


def test_random_documents_parse_exactly_as_the_standard_parser_does():
    rng = random.Random(11)

    def value(depth=0):
        kind = rng.randrange(8 if depth < 4 else 5)
        if kind == 0:
            return rng.choice([0, -1, 2**31, 2**63 - 1, -(2**63), 2**64, 10**30, True, False, None])
        if kind == 1:
            return rng.choice([0.1, -2.5e-8, 1e300, 123456.789, float("nan"), float("inf"), -0.0])
        if kind in (2, 3, 4):
            return "".join(rng.choice("ab\u00e9\u4e2d\"\\\n\t\ud800\U0001f600") for _ in range(rng.randrange(6)))
        if kind in (5, 6):
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice("abcd"): value(depth + 1) for _ in range(rng.randrange(4))}

    differing = 0
    for _ in range(2000):
        doc = value()
        body = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:
            body = body[: rng.randrange(1, len(body) + 1)]  # truncated
        got, want = ours(body), standard(body)
        assert got[0] == want[0], body
        assert (repr(got[1]) == repr(want[1])) if got[0] == "ok" else (got[1] == want[1]), body
        differing += got[0] == "error"
    assert differing > 0  # the truncations did produce errors to compare
