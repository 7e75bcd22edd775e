"""The wire-format tf.Example encoder agrees with the protobuf path and declines what it cannot do."""

from __future__ import annotations

import math
import random

import pytest
from tensorflow.core.example import example_pb2

from serving import codec, example_encoder
from serving.errors import BadRequest
from serving.example_encoder import ExampleEncoder
from serving.servable import BYTES, FLOAT, INT, FeatureSpec

KINDS = {"fare": FLOAT, "trip_miles": FLOAT, "trip_seconds": INT, "trip_start_timestamp": INT,
         "company": BYTES, "payment_type": BYTES, "a_very_long_feature_name_" + "x" * 200: FLOAT}
SPEC = FeatureSpec(KINDS, frozenset())


def slow(instance) -> example_pb2.Example:
    return example_pb2.Example.FromString(codec.serialize_examples([instance], SPEC)[0])


def fast(instance) -> example_pb2.Example:
    encoded = ExampleEncoder(KINDS).encode(instance)
    assert encoded is not None, f"the encoder declined {instance!r}"
    return example_pb2.Example.FromString(encoded)


def random_instance(rng: random.Random) -> dict:
    ints = [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -128, -(2**63), rng.randrange(-2**40, 2**40)]
    floats = [0.0, -0.0, 1.5, 15.25, 3.4e38, -3.4e38, 1e-45, float("inf"), 7, -3, rng.uniform(-1e6, 1e6)]
    texts = ["", "Cash", "Blue Ribbon Taxi", "é" * 100, "x" * 300, "\u2603 snow", "\ud800 lone surrogate"]
    instance = {}
    for name, kind in KINDS.items():
        if rng.random() < 0.15:
            continue  # features may be left out
        instance[name] = rng.choice(ints if kind == INT else floats if kind == FLOAT else texts)
    return instance


def test_random_instances_encode_to_the_same_example_as_the_protobuf_path():
    rng = random.Random(7)
    for _ in range(500):
        instance = random_instance(rng)
        assert fast(instance) == slow(instance), instance


def test_nan_survives_as_nan():
    value = fast({"fare": float("nan")}).features.feature["fare"].float_list.value[0]
    assert math.isnan(value)


@pytest.mark.parametrize("instance", [
    {"fare": True},                       # bool is not a number here
    {"fare": "7.5"},                      # text in a float feature
    {"fare": [1.0, 2.0]},                 # lists go through the protobuf path
    {"fare": None},
    {"fare": 1e39},                       # beyond float32
    {"fare": 10**40},                     # an int beyond float32 (struct.error, not OverflowError)
    {"fare": 10**400},
    {"trip_seconds": 2**63},              # beyond int64
    {"trip_seconds": 3.0},                # integral float for an int feature: protobuf path accepts it
    {"trip_seconds": "12"},
    {"company": 5},
    {"company": {"b64": "QQ=="}},
    {"not_a_feature": 1.0},
    ["not", "a", "dict"],
])
def test_the_encoder_declines_and_serialize_examples_answers_like_the_protobuf_path(instance):
    encoder = ExampleEncoder(KINDS)
    assert encoder.encode(instance) is None
    try:
        expected = codec.serialize_examples([instance], SPEC)
    except BadRequest as err:
        with pytest.raises(BadRequest) as raised:
            codec.serialize_examples([instance], SPEC, encoder=encoder)
        assert raised.value.message == err.message
    else:
        assert codec.serialize_examples([instance], SPEC, encoder=encoder) == expected


def test_one_declined_instance_sends_the_whole_request_through_the_protobuf_path():
    encoder = ExampleEncoder(KINDS)
    items = [{"fare": 1.0}, {"fare": "x"}]
    assert encoder.encode_all(items) is None
    with pytest.raises(BadRequest, match="fare expects float"):
        codec.serialize_examples(items, SPEC, encoder=encoder)


def test_the_cache_of_encoded_values_is_bounded(monkeypatch):
    monkeypatch.setattr(example_encoder, "CACHE_ENTRIES_PER_FEATURE", 10)
    encoder = ExampleEncoder(KINDS)
    for stamp in range(100):
        assert fast({"trip_start_timestamp": stamp}) == slow({"trip_start_timestamp": stamp})
        encoder.encode({"trip_start_timestamp": stamp})
    assert len(encoder._cache["trip_start_timestamp"]) == 10
    # values answered from the cache and values encoded afresh are the same bytes
    assert encoder.encode({"trip_start_timestamp": 5}) == ExampleEncoder(KINDS).encode({"trip_start_timestamp": 5})
    assert encoder.encode({"trip_start_timestamp": 50}) == ExampleEncoder(KINDS).encode({"trip_start_timestamp": 50})


def test_a_cached_int_never_answers_for_an_equal_float_or_bool():
    # 1 == 1.0 == True as dict keys: the cache must not let a float or a bool through as an int64
    encoder = ExampleEncoder(KINDS)
    assert encoder.encode({"trip_seconds": 1}) is not None
    for imposter in (1.0, True):
        assert encoder.encode({"trip_seconds": imposter}) is None  # the protobuf path judges it
        assert codec.serialize_examples([{"trip_seconds": imposter}], SPEC, encoder=encoder) == \
            codec.serialize_examples([{"trip_seconds": imposter}], SPEC)


def test_every_varint_length_of_an_int64_feature_encodes_like_the_protobuf_path():
    encoder = ExampleEncoder(KINDS)
    for bits in range(0, 64):
        for value in (1 << bits, (1 << bits) - 1, -(1 << bits)):
            if -(2**63) <= value < 2**63:
                got = example_pb2.Example.FromString(encoder.encode({"trip_start_timestamp": value}))
                assert got == slow({"trip_start_timestamp": value}), value
