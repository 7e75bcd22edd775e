"""Spans by date: one folder a day is one TFX span, numbered in days since the Unix epoch."""

from __future__ import annotations

import datetime as dt

EPOCH = dt.date(1970, 1, 1)


def span_number(day: dt.date) -> int:
    """TFX's span number for a date: days since the Unix epoch
    (as `tfx.components.example_gen.utils.date_to_span_number`)."""
    return (day - EPOCH).days


def span_date(span: int) -> str:
    """The date (ISO) of a TFX span number: the inverse of `span_number`."""
    return (EPOCH + dt.timedelta(days=span)).isoformat()


def span_date_of(artifact) -> str:
    """The date (ISO) of an artifact's `span` property, or "?" when it has none."""
    span = artifact.span if artifact.has_property("span") else -1
    return span_date(span) if span >= 0 else "?"


def span_of(artifact) -> int:
    """The span number of a TFX artifact: its `span` property, else its `span` custom property
    (ExampleGen records it there when the Examples type in ML Metadata has no such property)."""
    if artifact.has_property("span") and artifact.span > 0:
        return artifact.span
    return artifact.get_int_custom_property("span")
