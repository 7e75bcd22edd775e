"""`mlops schema lint`: what guards each feature of the schema (and each column of a span).

A feature with neither a value range/domain nor a drift comparator is a gap a bad producer can slip
through: any value passes ExampleValidator, and no distribution change blocks DriftValidator.

Protobuf only (tensorflow_metadata's schema_pb2, imported lazily): importing this imports no
TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import List, Optional

from pipelines.schema_diff import COMPARATOR_FIELDS, parse_schema

GUARDED = "guarded"
UNGUARDED = "unguarded"
NOT_IN_SCHEMA = "not in the schema"


@dataclasses.dataclass(frozen=True)
class LintRow:
    name: str
    type: str  # INT, FLOAT, BYTES, ... or "" for a span column the schema does not know
    presence: str  # "required", "optional" or NOT_IN_SCHEMA
    domain: Optional[str]  # "int [1, 77]", "float [0, inf]", "string domain company (61 values, min mass 0.98)"
    drift: Optional[str]  # "jensen_shannon_divergence 0.02", "infinity_norm 0.1"
    verdict: str  # GUARDED or UNGUARDED

    @property
    def guarded(self) -> bool:
        return self.verdict == GUARDED


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range(domain, kind: str) -> Optional[str]:
    if not domain.HasField("min") and not domain.HasField("max"):
        return None  # a range with no bound checks nothing
    low = _number(domain.min) if domain.HasField("min") else "-inf"
    high = _number(domain.max) if domain.HasField("max") else "inf"
    return f"{kind} [{low}, {high}]"


def _domain(schema, feature) -> Optional[str]:
    if feature.HasField("int_domain"):
        return _range(feature.int_domain, "int")
    if feature.HasField("float_domain"):
        return _range(feature.float_domain, "float")
    if feature.HasField("string_domain"):
        name, values = feature.string_domain.name or feature.name, len(feature.string_domain.value)
    elif feature.HasField("domain"):
        found = next((d for d in schema.string_domain if d.name == feature.domain), None)
        if found is None:
            return None  # names a domain the schema does not define
        name, values = feature.domain, len(found.value)
    elif feature.HasField("bool_domain"):
        return "bool"
    else:
        return None
    mass = ""
    if feature.distribution_constraints.HasField("min_domain_mass"):
        mass = f", min mass {_number(feature.distribution_constraints.min_domain_mass)}"
    return f"string domain {name} ({values} values{mass})"


def _drift(feature) -> Optional[str]:
    for field in COMPARATOR_FIELDS.values():
        if feature.drift_comparator.HasField(field):
            return f"{field} {_number(getattr(feature.drift_comparator, field).threshold)}"
    return None


def lint(schema) -> List[LintRow]:
    """One row per feature of a tensorflow_metadata Schema proto, in the schema's order."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    rows = []
    for feature in schema.feature:
        domain, drift = _domain(schema, feature), _drift(feature)
        required = feature.presence.min_fraction >= 1.0
        rows.append(LintRow(feature.name, schema_pb2.FeatureType.Name(feature.type),
                            "required" if required else "optional", domain, drift,
                            GUARDED if (domain or drift) else UNGUARDED))
    return rows


def span_columns(data_root: Path, date: str) -> List[str]:
    """The header columns of the span's CSV files (data/incoming/DATE/*.csv), first seen first."""
    columns: List[str] = []
    for path in sorted((data_root / date).glob("*.csv")):
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            header = next(csv.reader(handle), [])
        columns += [column for column in header if column not in columns]
    return columns


def unknown_columns(rows: List[LintRow], columns: List[str]) -> List[LintRow]:
    """Rows for the span's columns that the schema does not know: unguarded."""
    known = {row.name for row in rows}
    return [LintRow(column, "", NOT_IN_SCHEMA, None, None, UNGUARDED) for column in columns if column not in known]


def lint_file(schema_path: Path) -> List[LintRow]:
    return lint(parse_schema(Path(schema_path).read_text()))


def table(rows: List[LintRow]) -> str:
    """The rows as an aligned text table."""
    header = ("feature", "type", "presence", "range/domain", "drift comparator", "verdict")
    cells = [header] + [(r.name, r.type or "-", r.presence, r.domain or "none", r.drift or "none", r.verdict)
                        for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]
                     for line in cells)
