"""What changed between two schemas, in words: `mlops schema diff` and `accept --dry-run` print it.

Protobuf only (tensorflow_metadata's schema_pb2): importing this imports no TensorFlow.
"""

from __future__ import annotations

from typing import List, Optional

# Comparator names written by the drift validator -> field of the schema's drift_comparator.
COMPARATOR_FIELDS = {"jensen_shannon_divergence": "jensen_shannon_divergence", "l_infinity": "infinity_norm"}


def parse_schema(text: str):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    return text_format.Parse(text, schema_pb2.Schema())


def _number(value) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def _type_name(feature) -> str:
    from tensorflow_metadata.proto.v0 import schema_pb2

    return schema_pb2.FeatureType.Name(feature.type)


def _string_values(schema, feature) -> Optional[set]:
    if feature.HasField("string_domain"):
        return set(feature.string_domain.value)
    if feature.HasField("domain"):
        return next((set(d.value) for d in schema.string_domain if d.name == feature.domain), set())
    return None


def drift_threshold(feature) -> Optional[float]:
    for field in COMPARATOR_FIELDS.values():
        if feature.drift_comparator.HasField(field):
            return getattr(feature.drift_comparator, field).threshold
    return None


def _range(domain, kind: str) -> Optional[str]:
    if domain is None:
        return None
    low = _number(domain.min) if domain.HasField("min") else "-inf"
    high = _number(domain.max) if domain.HasField("max") else "inf"
    return f"{kind} range [{low}, {high}]"


def _domain_range(feature) -> Optional[str]:
    if feature.HasField("int_domain"):
        return _range(feature.int_domain, "int")
    if feature.HasField("float_domain"):
        return _range(feature.float_domain, "float")
    return None


def _feature_changes(old_schema, new_schema, old, new) -> List[str]:
    name, lines = new.name, []
    if old.type != new.type:
        lines.append(f"{name}: type {_type_name(old)} -> {_type_name(new)}")
    for field in ("min_fraction", "min_count"):
        before, after = getattr(old.presence, field), getattr(new.presence, field)
        if before != after:
            lines.append(f"{name}: presence {field} {_number(before)} -> {_number(after)}")
    if _domain_range(old) != _domain_range(new):
        lines.append(f"{name}: {_domain_range(old) or 'no range'} -> {_domain_range(new) or 'no range'}")
    before_values, after_values = _string_values(old_schema, old), _string_values(new_schema, new)
    added = sorted((after_values or set()) - (before_values or set()))
    removed = sorted((before_values or set()) - (after_values or set()))
    if added:
        lines.append(f"{name}: {len(added)} new domain value{'s' * (len(added) != 1)} added ({_few(added)})")
    if removed:
        lines.append(f"{name}: {len(removed)} domain value{'s' * (len(removed) != 1)} removed ({_few(removed)})")
    if drift_threshold(old) != drift_threshold(new):
        before, after = drift_threshold(old), drift_threshold(new)
        lines.append(f"{name}: drift threshold {'none' if before is None else _number(before)} -> "
                     f"{'none' if after is None else _number(after)}")
    if old.lifecycle_stage != new.lifecycle_stage:
        lines.append(f"{name}: {_lifecycle(new)}")
    if not lines and old != new:
        lines.append(f"{name}: other settings changed")
    return lines


def _lifecycle(feature) -> str:
    from tensorflow_metadata.proto.v0 import schema_pb2

    stage = schema_pb2.LifecycleStage.Name(feature.lifecycle_stage)
    if stage == "DEPRECATED":
        return "deprecated (no longer validated: the span lacks it or its values do not fit)"
    return f"lifecycle stage now {stage}"


def _few(values: List[str], limit: int = 3) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... {len(values) - limit} more" if len(values) > limit else "")


def describe_changes(old_schema, new_schema) -> List[str]:
    """One human-readable line per change, e.g. `tips: drift threshold 0.30 -> 0.47`."""
    old_features = {f.name: f for f in old_schema.feature}
    new_features = {f.name: f for f in new_schema.feature}
    lines = []
    for name, feature in new_features.items():
        if name not in old_features:
            lines.append(f"{name}: new feature ({_type_name(feature)})")
        else:
            lines.extend(_feature_changes(old_schema, new_schema, old_features[name], feature))
    lines += [f"{name}: feature removed (was {_type_name(f)})" for name, f in old_features.items()
              if name not in new_features]
    if not lines and old_schema != new_schema:
        lines.append("schema: other settings changed")
    return lines
