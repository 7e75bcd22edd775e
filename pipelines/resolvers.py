"""Resolver strategies that pick baselines from ML Metadata.

- `ServedModelStrategy`: the model behind the newest successful push. That is "the model in
  production", rollbacks included (stock TFX's latest-blessed-model is not, after a rollback).
- `PreviousSpanStatisticsStrategy`: statistics of the newest span older than the one being run
  that passed the drift gate (a blocked span never becomes tomorrow's baseline).
- `ServedTrainingStatisticsStrategy`: statistics of the data that trained the model being served,
  found through lineage: newest push -> model -> Trainer -> (Transform ->) ExampleGen's examples
  -> the StatisticsGen run on those examples.
- `ModelByIdStrategy`: one model by id, with its blessing (what a rollback pushes again).
- `WindowExamplesStrategy`: the raw Examples of the newest N days that passed every data gate
  (the training window; a blocked or never-validated day is left out).
- `NewestTuningStrategy`: the newest weekly tuning result (HyperParameters), or none.
- `AnalyzerCacheStrategy`: tf.Transform's analyzer cache from an earlier night, when it was built
  for the same schema and preprocessing.
"""

import json
from typing import Dict, Iterable, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

from components.verdict import BLOCKED, GATE, SPAN_DATE
from components.util.spans import span_date, span_of
from components.window.properties import CACHE_FINGERPRINT, TRAIN_SPANS, WINDOW_END_SPAN

# Kept equal to components.pusher.executor's names; importing it here would pull TFX's
# Pusher dependencies into the compile step.
PUSHED = "pushed"
SOURCE_MODEL_ID = "source_model_id"
DRIFT_GATE = "drift_validator"  # = components.drift_validator.executor.GATE


def _served(input_dict: Dict[str, List[types.Artifact]]):
    """(model, push) of the newest successful push whose model is known, or (None, None)."""
    models = {m.id: m for m in input_dict["model"]}
    pushes = sorted(
        (p for p in input_dict["pushed_model"] if p.get_int_custom_property(PUSHED) == 1),
        key=lambda p: p.id,
        reverse=True,
    )
    for push in pushes:
        model = models.get(push.get_int_custom_property(SOURCE_MODEL_ID))
        if model is not None:
            return model, push
    return None, None


class ServedModelStrategy(resolver.ResolverStrategy):
    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        model, push = _served(input_dict)
        if model is None:
            return {"model": [], "pushed_model": []}
        return {"model": [model], "pushed_model": [push]}


class NewestTuningStrategy(resolver.ResolverStrategy):
    """The newest HyperParameters artifact (weekly tuning, pipelines/tuning.py), or none. Stock
    LatestArtifactStrategy returns None for an empty channel, which fails the resolver node: before
    the first tuning there is nothing, and the Trainer keeps its defaults."""

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        return {"hyperparameters": sorted(input_dict["hyperparameters"], key=lambda a: a.id)[-1:]}


class PreviousSpanStatisticsStrategy(resolver.ResolverStrategy):
    def __init__(self, current_span: int):
        self._current_span = current_span

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        newest_verdict: Dict[str, types.Artifact] = {}
        for anomalies in input_dict.get("verdicts") or []:
            if anomalies.get_string_custom_property(GATE) != DRIFT_GATE:
                continue
            day = anomalies.get_string_custom_property(SPAN_DATE)
            if day not in newest_verdict or anomalies.id > newest_verdict[day].id:
                newest_verdict[day] = anomalies

        def passed(statistics) -> bool:
            found = newest_verdict.get(span_date(statistics.span))
            return found is None or found.get_int_custom_property(BLOCKED) != 1

        statistics = input_dict["statistics"]
        set_statistics_spans(store, statistics)
        older = [s for s in statistics if 0 <= s.span < self._current_span and passed(s)]
        # A resolver answers for every input key; only `statistics` is read downstream.
        chosen = [max(older, key=lambda s: (s.span, s.id))] if older else []
        return {"statistics": chosen, "verdicts": []}


class ServedTrainingStatisticsStrategy(resolver.ResolverStrategy):
    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        model, _ = _served(input_dict)
        found = []
        if model is not None:
            wanted = training_statistics_ids(store, model.id)
            found = [s for s in input_dict["statistics"] if s.id in wanted]
            set_statistics_spans(store, found)
            # A window model trained on older spans and was evaluated on the newest: compare with
            # the newest span it trained on.
            trained = set(json.loads(model.get_string_custom_property(TRAIN_SPANS) or "[]"))
            if trained:
                found = [s for s in found if span_date(s.span) in trained] or found
            found = sorted(found, key=lambda s: (s.span, s.id))[-1:]
        # A resolver answers for every input key; only `statistics` is read downstream.
        return {"statistics": found, "model": [], "pushed_model": []}


def training_statistics_ids(store, model_id: int) -> set:
    """Ids of the ExampleStatistics computed on the raw examples that trained `model_id`."""
    from ml_metadata.proto import metadata_store_pb2

    event = metadata_store_pb2.Event
    examples_type = store.get_artifact_type("Examples").id
    statistics_type = store.get_artifact_type("ExampleStatistics").id

    def producers(artifact_ids):
        return {e.execution_id for e in store.get_events_by_artifact_ids(list(artifact_ids)) if e.type == event.OUTPUT}

    def inputs_of(execution_ids):
        ids = [e.artifact_id for e in store.get_events_by_execution_ids(list(execution_ids)) if e.type == event.INPUT]
        return [a for a in store.get_artifacts_by_id(ids) if a.type_id == examples_type] if ids else []

    examples = inputs_of(producers([model_id]))  # what the Trainer read
    for _ in range(4):  # walk up through Transform (or other example producers) to ExampleGen's output
        upstream = inputs_of(producers(a.id for a in examples)) if examples else []
        if not upstream:
            break
        examples = upstream
    if not examples:
        return set()
    consumers = {e.execution_id for e in store.get_events_by_artifact_ids([a.id for a in examples])
                 if e.type == event.INPUT}
    outputs = [e.artifact_id for e in store.get_events_by_execution_ids(list(consumers)) if e.type == event.OUTPUT]
    return {a.id for a in store.get_artifacts_by_id(outputs) if a.type_id == statistics_type} if outputs else set()


def set_statistics_spans(store, statistics: List[types.Artifact]) -> None:
    """StatisticsGen leaves `span` at 0; sets (and saves) the span of the examples each was computed on.

    Found through lineage: statistics <- StatisticsGen -> its input Examples (span custom property,
    set by ExampleGen's driver). Saved in ML Metadata so the DriftValidator can name the span."""
    from ml_metadata.proto import metadata_store_pb2

    event = metadata_store_pb2.Event
    todo = {s.id: s for s in statistics if s.span <= 0}
    if not todo:
        return
    producer = {e.artifact_id: e.execution_id for e in store.get_events_by_artifact_ids(list(todo))
                if e.type == event.OUTPUT}
    inputs = store.get_events_by_execution_ids(sorted(set(producer.values())))
    examples = {}
    input_ids = [e.artifact_id for e in inputs if e.type == event.INPUT]
    for artifact in store.get_artifacts_by_id(input_ids) if input_ids else []:
        value = artifact.properties.get("span") or artifact.custom_properties.get("span")
        if value is not None and value.int_value > 0:
            examples[artifact.id] = value.int_value
    span_of_execution = {e.execution_id: examples[e.artifact_id] for e in inputs
                         if e.type == event.INPUT and e.artifact_id in examples}
    changed = []
    for statistics_id, artifact in todo.items():
        span = span_of_execution.get(producer.get(statistics_id))
        if span:
            artifact.span = span
            changed.append(artifact.mlmd_artifact)
    if changed:
        store.put_artifacts(changed)


class ModelByIdStrategy(resolver.ResolverStrategy):
    """The model with one artifact id and the blessing the Evaluator gave it (rollback)."""

    def __init__(self, model_id: int):
        self._model_id = model_id

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        models = [m for m in input_dict["model"] if m.id == self._model_id]
        blessings = [
            b for b in input_dict["blessing"]
            if b.get_int_custom_property("current_model_id") == self._model_id
            and b.get_int_custom_property("blessed") == 1
        ]
        return {"model": models, "blessing": sorted(blessings, key=lambda b: b.id)[-1:]}


def newest_gate_verdicts(verdicts: Iterable[types.Artifact]) -> Dict[str, types.Artifact]:
    """{span date: the newest data-gate report on it} (SpanCheck's or DriftValidator's, whichever
    ran last): the day's standing verdict."""
    newest: Dict[str, types.Artifact] = {}
    for report in verdicts:
        if not report.get_string_custom_property(GATE):
            continue  # ExampleValidator's anomalies: DriftValidator's verdict covers them
        day = report.get_string_custom_property(SPAN_DATE)
        if day not in newest or report.id > newest[day].id:
            newest[day] = report
    return newest


def passed_gates(report: Optional[types.Artifact]) -> bool:
    """The span went through every gate and none blocked it (DriftValidator is the last gate)."""
    return (report is not None and report.get_string_custom_property(GATE) == DRIFT_GATE
            and report.get_int_custom_property(BLOCKED) != 1)


def _passed_examples_between(examples: Iterable[types.Artifact], verdicts: Iterable[types.Artifact],
                             first_span: int, last_span: Optional[int]) -> List[types.Artifact]:
    """ExampleGen's newest Examples of each span in [first_span, last_span] (no upper end: None)
    that passed the gates, oldest first. Transform's outputs are Examples too: only ExampleGen's
    carry an `input_fingerprint`."""
    standing = newest_gate_verdicts(verdicts)
    newest: Dict[int, types.Artifact] = {}
    for artifact in examples:
        span = span_of(artifact)
        if not artifact.get_string_custom_property("input_fingerprint"):
            continue
        if span < first_span or (last_span is not None and span > last_span):
            continue
        if span not in newest or artifact.id > newest[span].id:
            newest[span] = artifact
    return [newest[span] for span in sorted(newest) if passed_gates(standing.get(span_date(span)))]


def window_examples(examples: Iterable[types.Artifact], verdicts: Iterable[types.Artifact], current_span: int,
                    window_days: int) -> List[types.Artifact]:
    """ExampleGen's newest Examples of each day in [current - window + 1, current] that passed the
    gates, oldest first. Transform's outputs are Examples too: only ExampleGen's carry an
    `input_fingerprint`."""
    return _passed_examples_between(examples, verdicts, current_span - window_days + 1, current_span)


def passed_examples(examples: Iterable[types.Artifact], verdicts: Iterable[types.Artifact]) -> List[types.Artifact]:
    """ExampleGen's newest Examples of every day (span 1 onwards) that passed the gates, oldest
    first: `window_examples` without a window."""
    return _passed_examples_between(examples, verdicts, 1, None)


class WindowExamplesStrategy(resolver.ResolverStrategy):
    """Transform's input: the rolling window of good spans ending with the one this run ingested."""

    def __init__(self, current_span: int, window_days: int):
        self._current_span = current_span
        self._window_days = window_days

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        chosen = window_examples(input_dict["examples"], input_dict.get("verdicts") or [], self._current_span,
                                 self._window_days)
        if not chosen or span_of(chosen[-1]) != self._current_span:
            # Transform runs after the gates passed this span: its Examples must be here.
            raise RuntimeError(
                f"the training window has no passed Examples for span {span_date(self._current_span)} "
                "(the data gates did not record a pass for it): rerun the night, or run `mlops validate "
                f"--date {span_date(self._current_span)}` to see why")
        # A resolver answers for every input key; only `examples` is read downstream.
        return {"examples": chosen, "verdicts": []}


class AnalyzerCacheStrategy(resolver.ResolverStrategy):
    """The newest analyzer cache an earlier night's Transform wrote for the same schema and
    preprocessing (`fingerprint`), or none. Never one from this span's own runs: a rerun of the
    night then resolves the same inputs as the first try, and TFX's cache can skip it."""

    def __init__(self, current_span: int, fingerprint: str):
        self._current_span = current_span
        self._fingerprint = fingerprint

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        usable = [c for c in input_dict["cache"]
                  if c.get_string_custom_property(CACHE_FINGERPRINT) == self._fingerprint
                  and 0 < c.get_int_custom_property(WINDOW_END_SPAN) < self._current_span]
        newest = max(usable, key=lambda c: (c.get_int_custom_property(WINDOW_END_SPAN), c.id), default=None)
        return {"cache": [newest] if newest is not None else []}
