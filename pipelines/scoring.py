"""Batch scoring: a day's span scored by a pushed model, in this process, recorded in ML Metadata.

`mlops score --date D [--version V]` (and the `batch_scoring` DAG) score span D with the version the
home's model server serves to requests that name no version (or pushed version V) and write one
prediction per input row to `var/scores/<D>/v<V>.parquet`, keyed by the row's id columns:

- `span_date` (the span, YYYY-MM-DD), `file` (the CSV file's name in the span folder) and `row` (the
  row's position among that file's data rows, from 0; the header and blank lines are not counted,
  so it is the index `pandas.read_csv` gives the row). The taxi rows have no id column of their own
  (no trip id; `trip_start_timestamp` repeats), so the key is where the row is;
- one column per output of the model's `serving_default` signature (the taxi model: `probabilities`,
  float32), a [n, 1] output as a plain column.

What is scored is what was gated: the span must have passed the data gates (its newest verdict is
DriftValidator's pass; a blocked span is refused with the gate's words, exit 3), and its files must be
the ones ExampleGen ingested (the same size and mtime fingerprint TFX recorded on the Examples).

Why not TFX's BulkInferrer or Beam's RunInference: both push each example through Beam's per-element
machinery and write PredictionLog protos, which then still have to be joined back to row ids. The
scorer here calls the SavedModel's signature in batches of 8192 rows, built straight from the CSV
with ExampleGen's own wire encoder (components/util/batch_predict.py), and streams a Parquet file:
bench/batch_scoring.py measures it against the SavedModel called alone (the ceiling) and against
scripted REST requests.

ML Metadata: each call is an execution of type `BatchScorer` (node context `taxi.BatchScorer`, its
own `pipeline_run` context `score__<span>__<UTC time>-<hex>`, so `mlops lineage --run` shows it) with
the pushed model's Model artifact (`model`), the PushedModel of the version asked for
(`pushed_model`) and the span's Examples (`examples`) as inputs and a `BatchScores` artifact (the
Parquet file) as output. Like TFX's cache, a call whose model, span Examples and output format are
those of an earlier result whose file is still there unchanged reuses it: the execution is
recorded as CACHED with the earlier artifact as its output, and the file is not written again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from pipelines.errors import ConfigError, DataError

SCORES_TYPE = "BatchScores"
SCORER_TYPE = "BatchScorer"
SCORER_NODE = "BatchScorer"
RUN_PREFIX = "score"
SIGNATURE = "serving_default"
FEATURES_SIGNATURE = "serving_features"  # pipelines/taxi/model.py: raw features as columns
FORMAT = "parquet-1"  # the file's layout: a new layout is scored again instead of reused
KEY_COLUMNS = ("span_date", "file", "row")
PROGRESS_SECONDS = 2.0
SPAN_CHECK_GATE = "span_check"  # components/span_check/executor.py GATE
DRIFT_GATE = "drift_validator"  # components/drift_validator/executor.py GATE


def scores_dir(var: Path, day: dt.date) -> Path:
    return Path(var) / "scores" / day.isoformat()


@dataclasses.dataclass
class ScoreResult:
    span: str
    version: int
    model_id: int
    examples_id: int
    path: str
    rows: int
    reused: bool
    reused_version: Optional[int]  # the version whose call wrote the reused file (the same model)
    execution_id: int
    run_id: str
    seconds: float  # scoring this call: the model's load, reading, encoding, the model's calls, writing
    load_seconds: float = 0.0  # of which importing TensorFlow, loading the model and its first call

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def lines(self) -> List[str]:
        if self.reused:
            same = (f" (version {self.reused_version} serves the same model {self.model_id})"
                    if self.reused_version not in (None, self.version) else "")
            head = (f"reused: span {self.span} was already scored by model {self.model_id}{same}; "
                    f"{self.rows} rows in {self.path} (not written again)")
        else:
            work = self.seconds - self.load_seconds
            rate = f", {self.rows / work:,.0f} rows/s" if work > 0 else ""
            head = (f"scored span {self.span} with version {self.version}: {self.rows} rows in {self.seconds:.1f}s "
                    f"(model loaded in {self.load_seconds:.1f}s, then {work:.1f}s{rate})")
        return [head, f"  scores:  {self.path}", f"  key:     {', '.join(KEY_COLUMNS)}",
                f"  lineage: mlops lineage --run {self.run_id}  (execution {self.execution_id})"]


# --------------------------------------------------------------------------- what to score


def _string(artifact, key: str) -> str:
    props = artifact.custom_properties
    return props[key].string_value if key in props else ""


def _int(artifact, key: str) -> int:
    props = artifact.custom_properties
    return props[key].int_value if key in props else 0


def gated_examples(store, day: dt.date):
    """(the span's Examples artifact, its SpanCheck report or None) once the span passed every data
    gate; DataError when its newest verdict blocked it, ConfigError when it was never gated."""
    from ml_metadata.metadata_store import metadata_store

    from components.util.spans import span_number

    span = day.isoformat()
    reports = [r for r in store.get_artifacts(list_options=metadata_store.ListOptions(
        filter_query=f"type = 'ExampleAnomalies' AND custom_properties.span_date.string_value = '{span}'"))
        if _string(r, "gate")]
    validate = f"`mlops validate --date {span}` (or `mlops run --date {span}`)"
    if not reports:
        raise ConfigError(f"span {span} was never ingested: ML Metadata holds no data-gate verdict on it",
                          f"gate and ingest it first with {validate}, then score it")
    newest = max(reports, key=lambda r: r.id)
    gate = _string(newest, "gate")
    if _int(newest, "blocked") == 1:
        raise DataError(f"span {span} is not scored: its data gates blocked it ({gate}: "
                        f"{_string(newest, 'problem') or 'see its report'})",
                        _string(newest, "fix") or f"fix the data and gate it again with {validate}")
    if gate != DRIFT_GATE:
        raise ConfigError(f"span {span} passed {gate} but its later data gates did not finish",
                          f"gate it again with {validate}, then score it")
    examples = [a for a in store.get_artifacts(list_options=metadata_store.ListOptions(
        filter_query=f"type = 'Examples' AND custom_properties.span.int_value = {span_number(day)}"))
        if a.id < newest.id and _string(a, "input_fingerprint")]
    if not examples:
        raise ConfigError(f"span {span} passed its data gates but ML Metadata has no Examples ExampleGen wrote for it",
                          f"ingest it again with {validate}")
    checks = [r for r in reports if _string(r, "gate") == SPAN_CHECK_GATE and r.id < newest.id]
    return max(examples, key=lambda a: a.id), (max(checks, key=lambda r: r.id) if checks else None)


def input_fingerprint(folder: Path, pattern: str = "*.csv") -> str:
    """TFX's fingerprint of an input split (tfx.utils.io_utils.generate_fingerprint: file count, bytes,
    mtimes to the second), which ExampleGen records on its Examples."""
    files = sorted(folder.glob(pattern))
    total = xor = added = 0
    for path in files:
        stat = path.stat()
        total += stat.st_size
        mtime = int(stat.st_mtime_ns // 1_000_000_000)
        xor ^= mtime
        added += mtime
    return f"split:single_split,num_files:{len(files)},total_bytes:{total},xor_checksum:{xor},sum_checksum:{added}"


def check_unchanged(examples, folder: Path, day: dt.date) -> None:
    """ConfigError when the span's files are not the ones ExampleGen ingested (and the gates judged)."""
    recorded = _string(examples, "input_fingerprint")
    now = input_fingerprint(folder)
    if recorded and recorded != now:
        raise ConfigError(f"the files of span {day} changed since they were ingested and gated (ExampleGen recorded "
                          f"{recorded}; now {now})",
                          f"gate the new files with `mlops validate --date {day}`, then score again")


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    version: int
    path: Path
    push: object  # pipelines.rollback.PushRecord
    pushed_artifact: object  # the PushedModel (MLMD proto)
    model: object  # the Model (MLMD proto)


def choose_model(store, base: Path, version: Optional[int], served: Optional[int], on_disk: List[int]) -> ModelChoice:
    """Pushed version `version`, or (None) the one served to requests that name no version."""
    from pipelines.rollback import PushRecord

    pushed = [a for a in store.get_artifacts_by_type("PushedModel") if _int(a, "pushed") == 1]
    records = sorted((PushRecord.from_artifact(a) for a in pushed), key=lambda p: p.artifact_id)
    known = ", ".join(str(v) for v in on_disk if v in {p.version for p in records}) or "none"
    if version is None:
        if served is None:
            raise ConfigError(f"no model is served from {base}: nothing is pushed yet",
                              "run the pipeline until a model is pushed (`make run`), or name one with --version")
        version = served
    matches = [p for p in records if p.version == version]
    if not matches:
        if version in on_disk:
            raise ConfigError(f"version {version} is in {base} but no push in ML Metadata records it (copied in by "
                              "hand?), so its model and lineage are unknown",
                              f"score a pushed version: --version one of {known} (`mlops models list`)")
        raise ConfigError(f"version {version} was never pushed", f"pick a pushed version on disk: {known} "
                          "(`mlops models list`)")
    push = matches[-1]
    path = Path(base) / str(version)
    if version not in on_disk or not (path / "saved_model.pb").is_file():
        raise ConfigError(f"version {version} was pushed but is no longer in {base} (deleted by retention?)",
                          f"pick a version on disk: {known} (`mlops models list`)")
    [artifact] = [a for a in pushed if a.id == push.artifact_id]
    models = store.get_artifacts_by_id([push.model_id]) if push.model_id else []
    if not models:
        raise ConfigError(f"the push of version {version} names model {push.model_id}, which ML Metadata does not hold",
                          "score another version (`mlops models list`)")
    return ModelChoice(version, path, push, artifact, models[0])


# --------------------------------------------------------------------------- reuse


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reusable(store, model_id: int, examples_id: int, progress: Callable[[str], None]):
    """The newest BatchScores artifact of this model and these Examples whose file is still there,
    unchanged; None when there is none (a changed or missing file is said and scored again)."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    try:
        found = store.get_artifacts(list_options=metadata_store.ListOptions(filter_query=(
            f"type = '{SCORES_TYPE}' AND custom_properties.model_id.int_value = {int(model_id)} AND "
            f"custom_properties.examples_id.int_value = {int(examples_id)} AND "
            f"custom_properties.format.string_value = '{FORMAT}'")))
    except Exception:  # noqa: BLE001 -- no BatchScores type yet: nothing to reuse
        return None
    for artifact in sorted(found, key=lambda a: -a.id):
        if artifact.state != pb.Artifact.LIVE:
            continue
        path = Path(artifact.uri)
        if not path.is_file():
            why = "is gone"
        elif path.stat().st_size != _int(artifact, "bytes") or sha256_of(path) != _string(artifact, "sha256"):
            why = "changed since it was written"
        else:
            return artifact
        progress(f"the earlier result {path} (artifact {artifact.id}) {why}: scoring again")
        artifact.state = pb.Artifact.DELETED  # ML Metadata's word for an artifact whose bytes are gone
        store.put_artifacts([artifact])
    return None


# --------------------------------------------------------------------------- scoring


def _reader(model, model_path: Path, folder: Path, day: dt.date):
    """(signature name, its function, the batches of the span's rows it takes, how to call it on one):
    the model's `serving_features` on typed columns when it has one whose inputs the span's files all
    have (the taxi model's: pipelines/taxi/model.py; same answers, about twice the rows/s), else
    `serving_default` on ExampleGen's tf.Examples."""
    import tensorflow as tf

    from components.util.batch_predict import CsvColumns, CsvExamples, tensors
    from serving.servable import feature_spec_of

    if FEATURES_SIGNATURE in model.signatures:
        fn = model.signatures[FEATURES_SIGNATURE]
        inputs = fn.structured_input_signature[1]
        dtypes = {name: spec.dtype.name for name, spec in inputs.items()}
        if all(spec.shape.rank == 1 for spec in inputs.values()) and set(dtypes.values()) <= {"int64", "float32", "string"}:
            rows = CsvColumns(str(folder), dtypes)
            if not rows.missing:
                return FEATURES_SIGNATURE, fn, rows, lambda arrays: fn(**tensors(arrays))
    if SIGNATURE not in model.signatures:
        raise ConfigError(f"{model_path} has no {SIGNATURE} signature (it has {sorted(model.signatures)})",
                          "score a version the pipeline pushed (`mlops models list`)")
    fn = model.signatures[SIGNATURE]
    spec = feature_spec_of(fn)
    if spec is None:
        raise ConfigError(f"the {SIGNATURE} signature of {model_path} does not parse tf.Examples",
                          "score a version the pipeline pushed (`mlops models list`)")
    rows = CsvExamples(str(folder), spec.kinds)
    lacking = sorted(set(rows.missing) & set(spec.required))
    if lacking:
        raise DataError(f"the files of span {day} lack the column(s) {', '.join(lacking)} the model needs",
                        "score the span with a model trained on its columns")
    return SIGNATURE, fn, rows, lambda serialized: fn(examples=tf.constant(serialized))


def write_scores(model_path: Path, folder: Path, day: dt.date, target: Path, metadata: Dict[str, str],
                 expected_rows: int = 0, progress: Callable[[str], None] = print,
                 batch_size: Optional[int] = None) -> Tuple[int, float, str]:
    """Scores every row of the span's CSV files with the model and writes the Parquet file `target`
    atomically (a temporary file renamed); returns (rows, seconds to import TensorFlow and load the
    model, the signature called). The next batch is read on a thread while the model scores this one,
    and two calls run at once (components/util/batch_predict.called)."""
    loading = time.monotonic()
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tensorflow as tf

    from components.util.batch_predict import BATCH_SIZE, called, prefetched

    model = tf.saved_model.load(str(model_path), tags=["serve"])
    signature, _, rows_in, call = _reader(model, model_path, folder, day)
    batches = prefetched(rows_in.batches(batch_size or BATCH_SIZE))
    first = next(batches, None)
    if first is None:
        raise DataError(f"span {day} has no rows to score in {folder}", "gate the span again: it should not pass")
    # The first call of a loaded signature builds and optimizes its graph (0.5-0.7 s here, whatever
    # the batch): done on one row as part of loading, as the model server warms a version up.
    call({k: v[:1] for k, v in first[1].items()} if isinstance(first[1], dict) else first[1][:1])
    load_seconds = time.monotonic() - loading
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    writer = None
    done, started, last = 0, time.monotonic(), time.monotonic()
    span = day.isoformat()
    try:
        for spans, outputs in called(call, itertools.chain([first], batches)):
            n = sum(count for _, _, count in spans)
            names = np.repeat(np.array([name for name, _, _ in spans], dtype=object), [c for _, _, c in spans])
            rows = np.concatenate([np.arange(first, first + c, dtype=np.int64) for _, first, c in spans])
            columns = {"span_date": pa.array([span] * n, pa.string()), "file": pa.array(names, pa.string()),
                       "row": pa.array(rows, pa.int64())}
            for key in sorted(outputs):
                value = outputs[key]
                if value.ndim == 2 and value.shape[1] == 1:
                    value = value[:, 0]
                if len(value) != n:
                    raise RuntimeError(f"{model_path}: output {key} has {len(value)} rows for {n} inputs")
                columns[key] = pa.array(value) if value.ndim == 1 else pa.array(list(value))
            table = pa.table(columns)
            if writer is None:
                schema = table.schema.with_metadata({f"mlops.{k}": str(v) for k, v in
                                                     {**metadata, "signature": signature}.items()})
                writer = pq.ParquetWriter(str(tmp), schema)
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
            done += n
            if time.monotonic() - last >= PROGRESS_SECONDS:
                last = time.monotonic()
                of = f" of {expected_rows:,} ({100 * done / expected_rows:.0f}%)" if expected_rows else ""
                progress(f"  scored {done:,} rows{of}, {done / (last - started):,.0f} rows/s")
        writer.close()
        writer = None
        if expected_rows and done != expected_rows:
            raise RuntimeError(f"scored {done} rows but SpanCheck counted {expected_rows} in span {day}; a file "
                               "changed while it was read: write span files atomically and score again")
        os.replace(tmp, target)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return done, load_seconds, signature


# --------------------------------------------------------------------------- ML Metadata


def _type_id(store, name: str, kind: str) -> int:
    from ml_metadata import errors
    from ml_metadata.proto import metadata_store_pb2 as pb

    get, put, cls = {"artifact": (store.get_artifact_type, store.put_artifact_type, pb.ArtifactType),
                     "execution": (store.get_execution_type, store.put_execution_type, pb.ExecutionType),
                     "context": (store.get_context_type, store.put_context_type, pb.ContextType)}[kind]
    try:
        return get(name).id
    except errors.NotFoundError:
        return put(cls(name=name))


def _context(store, type_name: str, name: str, props: Optional[Dict[str, str]] = None):
    from ml_metadata.proto import metadata_store_pb2 as pb

    found = store.get_context_by_type_and_name(type_name, name)
    if found is not None:
        return found
    context = pb.Context(type_id=_type_id(store, type_name, "context"), name=name)
    for key, value in (props or {}).items():
        context.custom_properties[key].string_value = value
    return context


def record(store, pipeline: str, run_id: str, inputs: Dict[str, object], output, state: str,
           props: Dict[str, object]) -> int:
    """One BatchScorer execution (COMPLETE or CACHED) with its input and output events, in the
    pipeline's, the run's and the node's contexts; returns its id."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    from pipelines.run_context import CODE_VERSION, RUN_CONFIG, airflow_context, code_version

    execution = pb.Execution(type_id=_type_id(store, SCORER_TYPE, "execution"),
                             last_known_state=getattr(pb.Execution, state))
    for key, value in {**props, **airflow_context(dict(os.environ)), CODE_VERSION: code_version()}.items():
        if isinstance(value, int):
            execution.custom_properties[key].int_value = value
        elif isinstance(value, float):
            execution.custom_properties[key].double_value = value
        else:
            execution.custom_properties[key].string_value = str(value)
    pairs = []
    for key, artifact in [*inputs.items(), ("scores", output)]:
        event = pb.Event(type=pb.Event.OUTPUT if key == "scores" else pb.Event.INPUT)
        event.path.steps.add().key = key
        event.path.steps.add().index = 0
        pairs.append((artifact, event))
    run_config = json.dumps({"kind": "batch_scoring", **{k: props[k] for k in ("span", "pushed_version") if k in props}},
                            sort_keys=True)
    contexts = [_context(store, "pipeline", pipeline),
                _context(store, "pipeline_run", run_id, {CODE_VERSION: code_version(), RUN_CONFIG: run_config}),
                _context(store, "node", f"{pipeline}.{SCORER_NODE}")]
    execution_id, _, _ = store.put_execution(execution, pairs, contexts, reuse_context_if_already_exist=True)
    return execution_id


def scores_artifact(store, path: Path, props: Dict[str, object]):
    from ml_metadata.proto import metadata_store_pb2 as pb

    artifact = pb.Artifact(type_id=_type_id(store, SCORES_TYPE, "artifact"), uri=str(path), state=pb.Artifact.LIVE)
    for key, value in props.items():
        if isinstance(value, int):
            artifact.custom_properties[key].int_value = value
        else:
            artifact.custom_properties[key].string_value = str(value)
    return artifact


def new_run_id(day: dt.date) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{RUN_PREFIX}__{day.isoformat()}__{stamp}-{uuid.uuid4().hex[:6]}"


def score(store, *, pipeline: str, var: Path, data_root: Path, base: Path, day: dt.date, version: Optional[int],
          served: Optional[int], on_disk: List[int], progress: Callable[[str], None] = print,
          batch_size: Optional[int] = None) -> ScoreResult:
    """Scores span `day` with pushed version `version` (None: the served one), or reuses the result of
    an earlier call with the same model and span; records the call in ML Metadata."""
    from pipelines.config import check_span_dir

    folder = check_span_dir(Path(data_root), day)
    examples, span_check = gated_examples(store, day)
    check_unchanged(examples, folder, day)
    choice = choose_model(store, Path(base), version, served, on_disk)
    model_id, span = choice.model.id, day.isoformat()
    inputs = {"model": choice.model, "pushed_model": choice.pushed_artifact, "examples": examples}
    run_id = new_run_id(day)
    props = {"span": span, "pushed_version": choice.version, "model_id": model_id, "examples_id": examples.id}
    earlier = reusable(store, model_id, examples.id, progress)
    if earlier is not None:
        execution_id = record(store, pipeline, run_id, inputs, earlier, "CACHED",
                              {**props, "reused_artifact_id": earlier.id})
        return ScoreResult(span, choice.version, model_id, examples.id, earlier.uri, _int(earlier, "rows"), True,
                           _int(earlier, "pushed_version") or None, execution_id, run_id, 0.0)
    target = scores_dir(var, day) / f"v{choice.version}.parquet"
    expected = _int(span_check, "rows") if span_check is not None else 0
    progress(f"scoring span {span} ({expected:,} rows) with version {choice.version} (model {model_id}) "
             f"into {target}" if expected else f"scoring span {span} with version {choice.version} into {target}")
    started = time.monotonic()
    about = {"span": span, "pushed_version": choice.version, "model_id": model_id, "examples_id": examples.id,
             "key": ",".join(KEY_COLUMNS)}
    rows, load_seconds, signature = write_scores(choice.path, folder, day, target, about, expected, progress, batch_size)
    seconds = time.monotonic() - started
    output = scores_artifact(store, target, {**props, "rows": rows, "format": FORMAT, "bytes": target.stat().st_size,
                                             "sha256": sha256_of(target), "key_columns": ",".join(KEY_COLUMNS),
                                             "signature": signature})
    execution_id = record(store, pipeline, run_id, inputs, output, "COMPLETE",
                          {**props, "rows": rows, "seconds": round(seconds, 3)})
    return ScoreResult(span, choice.version, model_id, examples.id, str(target), rows, False, None, execution_id,
                       run_id, seconds, load_seconds)
