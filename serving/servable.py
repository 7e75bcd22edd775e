"""One loaded model version: its SavedModel, signatures, the tf.Example features it parses, warm-up.

Imports TensorFlow: used only inside the server process.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow.python.eager import context, record

from serving.errors import BadRequest
from serving.example_encoder import BYTES, FLOAT, INT

log = logging.getLogger("serving")

DEFAULT_SIGNATURE = "serving_default"
SINGLE_THREADED_EXECUTOR = "SINGLE_THREADED_EXECUTOR"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

_KIND_OF_DTYPE = {types_pb2.DT_INT64: INT, types_pb2.DT_FLOAT: FLOAT, types_pb2.DT_STRING: BYTES}


class LoadError(Exception):
    """A version that cannot serve: missing files, corrupt protos, failing restore or warm-up."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The tf.Example features a signature parses (read from its ParseExample op)."""

    kinds: Mapping[str, str]  # feature name -> INT / FLOAT / BYTES
    required: frozenset  # dense features without a default value

    def describe(self) -> str:
        return ", ".join(f"{k}:{v}" for k, v in sorted(self.kinds.items()))


@dataclasses.dataclass
class TensorSpec:
    dtype: int  # types_pb2 enum
    shape: Optional[Tuple[Optional[int], ...]]  # None: unknown rank; None dims: any size


@dataclasses.dataclass
class Signature:
    name: str
    method_name: str
    fn: object  # the concrete function (one per signature, built once per loaded version)
    inputs: Dict[str, TensorSpec]
    outputs: Dict[str, TensorSpec]
    feature_spec: Optional[FeatureSpec]
    encoder: Optional[object] = None  # example_encoder.ExampleEncoder for feature_spec, when there is one
    batcher: Optional[object] = None  # batching.Batcher, when the server batches this signature
    direct: Optional["DirectCall"] = None  # the fast path, once warm-up has shown it answers like `fn`

    @property
    def example_input(self) -> Optional[str]:
        """The single DT_STRING input that takes serialized tf.Examples, if this signature has one."""
        if len(self.inputs) == 1:
            (name, spec), = self.inputs.items()
            if spec.dtype == types_pb2.DT_STRING and (spec.shape is None or len(spec.shape) == 1):
                return name
        return None

    def run(self, feeds: Dict[str, object]) -> Dict[str, np.ndarray]:
        direct = self.direct
        try:
            if direct is not None and direct.takes(feeds):
                result = direct(feeds)
            else:
                result = self.fn(**feeds)
        except tf.errors.InvalidArgumentError as err:
            raise BadRequest(_tf_message(err)) from err
        except (TypeError, ValueError) as err:  # shapes or dtypes the concrete function rejects
            raise BadRequest(" ".join(str(err).split())[:2000]) from err
        return {name: value.numpy() for name, value in result.items()}


class DirectCall:
    """Runs a loaded signature's function without `ConcreteFunction.__call__`'s per-call Python.

    The public call binds keyword arguments to the structured signature, maps the captured
    inputs (41 variable and table handles for the taxi model) through the distribution-strategy
    check one by one, and scans all of them for a gradient tape, on every request: 0.4 ms of a
    1.1 ms call for one row here (in-process p50 of 1800 calls, 1.14 ms public vs 0.74 ms this
    way; 1.55 vs 1.20 ms for 100 rows). With no tape recording (the server never opens one) it
    ends in `_inference_function.call_preflattened(inputs + captured)`, which is what this calls,
    with the captured handles listed once at load.

    Uses TensorFlow internals (checked against TF 2.16, the pinned version), so it is built only
    when they are there (`build` returns None otherwise) and a signature uses it only after its
    warm-up answered the same through both paths. Each call still takes the public path when an
    input's dtype or shape does not fit the signature, so bad input gets TensorFlow's own error.
    """

    def __init__(self, run, names, captured, specs):
        self._run, self._names, self._captured, self._specs = run, names, captured, specs
        self.executor: Optional[str] = None  # None: TensorFlow's default function executor

    @classmethod
    def build(cls, fn, inputs: Dict[str, TensorSpec]) -> Optional["DirectCall"]:
        try:
            run = fn._inference_function.call_preflattened  # noqa: SLF001 -- see the class docstring
            names = list(fn._arg_keywords)  # noqa: SLF001 -- the flat order of the inputs
            captured = list(fn.captured_inputs)
        except AttributeError:
            return None
        if sorted(names) != sorted(inputs) or not all(isinstance(c, tf.Tensor) for c in captured):
            return None  # e.g. captured variables of a distribution strategy: keep the public path
        specs = [(name, tf.dtypes.as_dtype(inputs[name].dtype), inputs[name].shape) for name in names]
        return cls(run, names, captured, specs)

    def takes(self, feeds: Dict[str, object]) -> bool:
        if len(feeds) != len(self._specs) or record.could_possibly_record():
            return False
        for name, dtype, shape in self._specs:
            tensor = feeds.get(name)
            if not isinstance(tensor, tf.Tensor) or tensor.dtype != dtype:
                return False
            if shape is not None:
                got = tensor.shape
                if len(got) != len(shape) or any(want is not None and want != have for want, have in zip(shape, got)):
                    return False
        return True

    def __call__(self, feeds: Dict[str, object]):
        args = [feeds[name] for name in self._names] + self._captured
        if self.executor is None:
            return self._run(args)
        options = context.context().function_call_options  # this thread's, read by the call below
        previous = options.executor_type
        options.executor_type = self.executor
        try:
            return self._run(args)
        finally:
            options.executor_type = previous


def _tf_message(err: tf.errors.OpError) -> str:
    text = err.message or str(err)
    # Keep what TF says about the input; drop where in the graph it happened ("Graph execution error:
    # Detected at node ... (most recent call last): <stack>", "[[{{node ...}}]]").
    if "Detected at node" in text:
        marker = text.rfind("<stack traces unavailable>")
        if marker >= 0:
            text = text[marker + len("<stack traces unavailable>"):]
        else:
            lines = [l for l in text.splitlines() if l.strip() and not l.startswith((" ", "\t"))]
            text = lines[-1] if lines else text
    text = " ".join(text.split())
    cut = text.find("[[")
    return (text[:cut].strip() if cut > 0 else text)[:2000]


class Servable:
    """A fully loaded, warmed-up version. Immutable after load; shared by all request threads."""

    def __init__(self, model_name: str, version: int, path: Path, loaded, meta_graph, signatures):
        self.model_name = model_name
        self.version = version
        self.path = path
        self._loaded = loaded  # keeps the variables alive as long as a request holds this object
        self.signature_defs = meta_graph.signature_def
        self.signatures: Dict[str, Signature] = signatures
        self.loaded_at = time.time()

    def call_paths(self) -> str:
        """How each signature is called, for the load log line."""
        groups: Dict[str, List[str]] = {}
        for name, sig in sorted(self.signatures.items()):
            if sig.direct is None:
                how = "public call"
            else:
                how = "direct call, " + ("single-threaded executor" if sig.direct.executor else "default executor")
            groups.setdefault(how, []).append(name)
        return "; ".join(f"{', '.join(names)}: {how}" for how, names in groups.items())

    def signature(self, name: str) -> Signature:
        sig = self.signatures.get(name or DEFAULT_SIGNATURE)
        if sig is None:
            raise BadRequest(f'Serving signature name: "{name or DEFAULT_SIGNATURE}" not found in signature def')
        return sig


def _read_meta_graph(path: Path) -> meta_graph_pb2.MetaGraphDef:
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise LoadError(f"no saved_model.pb in {path}")
    if not (path / "variables").is_dir():
        raise LoadError(f"no variables/ directory in {path} (incomplete SavedModel)")
    try:
        saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    except Exception as err:  # noqa: BLE001 -- DecodeError and friends: a corrupt file
        raise LoadError(f"corrupt saved_model.pb in {path}: {type(err).__name__}: {err}") from err
    for meta in saved.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return meta
    raise LoadError(f"{path} has no MetaGraph tagged 'serve'")


def _tensor_spec(info) -> TensorSpec:
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(info.dtype, shape)


def _parse_ops(graph_def) -> List[Tuple[object, Dict[str, object]]]:
    """(ParseExampleV2 node, {const node name: NodeDef}) for every parse op in the function library."""
    found = []
    scopes = [list(graph_def.node)] + [list(fn.node_def) for fn in graph_def.library.function]
    for nodes in scopes:
        consts = {n.name: n for n in nodes if n.op == "Const"}
        for node in nodes:
            if node.op == "ParseExampleV2":
                found.append((node, consts))
    return found


def _const_value(consts, ref: str):
    node = consts.get(ref.split(":")[0])
    if node is None:
        return None
    return tf.make_ndarray(node.attr["value"].tensor)


def feature_spec_of(fn) -> Optional[FeatureSpec]:
    """Reads the features (name, kind, required) of the ParseExampleV2 op inside a signature."""
    try:
        ops = _parse_ops(fn.graph.as_graph_def())
    except Exception:  # noqa: BLE001 -- no graph to read: fall back to JSON typing
        return None
    specs = []
    for node, consts in ops:
        inputs = list(node.input)
        sparse_keys = _const_value(consts, inputs[2])
        dense_keys = _const_value(consts, inputs[3])
        if sparse_keys is None or dense_keys is None:
            continue
        sparse_types = list(node.attr["sparse_types"].list.type)
        dense_types = list(node.attr["Tdense"].list.type)
        kinds, required = {}, set()
        for key, dtype in zip(sparse_keys.tolist(), sparse_types):
            kinds[key.decode()] = _KIND_OF_DTYPE.get(dtype, BYTES)
        for i, (key, dtype) in enumerate(zip(dense_keys.tolist(), dense_types)):
            name = key.decode()
            kinds[name] = _KIND_OF_DTYPE.get(dtype, BYTES)
            default = _const_value(consts, inputs[5 + i]) if 5 + i < len(inputs) else None
            if default is None or default.size == 0:
                required.add(name)
        specs.append(FeatureSpec(kinds, frozenset(required)))
    if len(specs) != 1:
        return None  # none, or several parse ops: do not guess
    return specs[0]


def warmup_example(spec: FeatureSpec) -> bytes:
    example = example_pb2.Example()
    for name in spec.required:
        feature = example.features.feature[name]
        kind = spec.kinds[name]
        if kind == INT:
            feature.int64_list.value.append(0)
        elif kind == FLOAT:
            feature.float_list.value.append(0.0)
        else:
            feature.bytes_list.value.append(b"")
    return example.SerializeToString()


def _files_present(path: Path) -> None:
    index = path / "variables" / "variables.index"
    data = list((path / "variables").glob("variables.data-*"))
    if not index.is_file() or not data:
        raise LoadError(f"{path}/variables is missing variables.index or variables.data-* (incomplete copy)")


def load_servable(model_name: str, version: int, path: Path, single_threaded: bool = True) -> Servable:
    """Loads, checks and warms up one version. Raises LoadError with the reason."""
    path = Path(path)
    meta = _read_meta_graph(path)
    _files_present(path)
    try:
        loaded = tf.saved_model.load(str(path), tags=["serve"])
    except Exception as err:  # noqa: BLE001 -- any restore failure means: do not serve this version
        raise LoadError(f"TensorFlow cannot load {path}: {type(err).__name__}: {' '.join(str(err).split())[:500]}") from err
    signatures: Dict[str, Signature] = {}
    for name, fn in loaded.signatures.items():
        sdef = meta.signature_def.get(name)
        if sdef is None:
            continue
        signatures[name] = Signature(
            name=name,
            method_name=sdef.method_name,
            fn=fn,
            inputs={k: _tensor_spec(v) for k, v in sdef.inputs.items()},
            outputs={k: _tensor_spec(v) for k, v in sdef.outputs.items()},
            feature_spec=feature_spec_of(fn),
        )
        spec = signatures[name].feature_spec
        if spec is not None:
            from serving.example_encoder import ExampleEncoder

            signatures[name].encoder = ExampleEncoder(spec.kinds)
    if not signatures:
        raise LoadError(f"{path} has no callable signature")
    servable = Servable(model_name, version, path, loaded, meta, signatures)
    _warm_up(servable, single_threaded)
    return servable


def _zero_feeds(sig: Signature) -> Optional[Dict[str, object]]:
    """One row of zeros ("" for text) for every input, when every input has a known rank >= 1."""
    feeds = {}
    for name, spec in sig.inputs.items():
        if spec.shape is None or not spec.shape or spec.shape[0] not in (None, 1):
            return None
        try:
            feeds[name] = tf.zeros([1] + [d or 1 for d in spec.shape[1:]], tf.dtypes.as_dtype(spec.dtype))
        except (TypeError, ValueError):  # dtypes tf.zeros cannot make (resources, variants)
            return None
    return feeds


def _warm_up(servable: Servable, single_threaded: bool = True) -> None:
    """One request per signature before the version takes traffic: a tf.Example with the required
    features for example-taking signatures (the default one must answer, else LoadError), one row of
    zeros for signatures with other inputs (such as `serving_features`; their failing is not an
    error). Each signature that answers the same through `DirectCall` as through its public call
    gets the fast path."""
    default = servable.signatures.get(DEFAULT_SIGNATURE) or next(iter(servable.signatures.values()))
    for sig in servable.signatures.values():
        name = sig.example_input
        must_answer = sig is default and name is not None and sig.feature_spec is not None
        if name is not None:
            spec = sig.feature_spec
            payload = warmup_example(spec) if spec is not None else example_pb2.Example().SerializeToString()
            feeds = {name: tf.constant([payload])}
        else:
            feeds = _zero_feeds(sig)
            if feeds is None:
                continue
        try:
            outputs = sig.run(feeds)
        except BadRequest as err:
            if not must_answer:
                continue  # e.g. an empty example or zeros may legitimately be rejected
            raise LoadError(f"warm-up request failed: {err.message}") from err
        except Exception as err:  # noqa: BLE001
            if sig is not default or name is None:
                continue
            raise LoadError(f"warm-up request failed: {type(err).__name__}: {err}") from err
        unbatched = next((key for key, value in outputs.items() if value.ndim == 0 or value.shape[0] != 1), None)
        if unbatched is None:
            sig.direct = _verified_direct_call(sig, feeds, outputs, single_threaded)
        elif sig is default and name is not None:
            shape = outputs[unbatched].shape
            raise LoadError(f"warm-up: output {unbatched!r} has shape {shape}, expected a batch of 1")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":  # the same graph; allow for nondeterministic float reductions
        return bool(np.allclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True))
    return bool(np.array_equal(a, b))


def _answers_like(direct: DirectCall, feeds, expected: Dict[str, np.ndarray]) -> Optional[str]:
    """None when `direct` answers `feeds` with `expected`; else why not."""
    try:
        got = {name: value.numpy() for name, value in direct(feeds).items()}
    except Exception as err:  # noqa: BLE001 -- the fast path is optional: keep the public one
        return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    if got.keys() != expected.keys() or not all(_same(got[k], expected[k]) for k in got):
        return _DIFFERENT
    return None


_DIFFERENT = "it answered differently at warm-up"


def _verified_direct_call(sig: Signature, feeds, expected: Dict[str, np.ndarray],
                          single_threaded: bool = True) -> Optional[DirectCall]:
    direct = DirectCall.build(sig.fn, sig.inputs)
    if direct is None or not direct.takes(feeds):
        return None
    why = _answers_like(direct, feeds, expected)
    if why is not None:
        log.log(logging.WARNING if why == _DIFFERENT else logging.INFO, "signature %s: public call only (%s)",
                sig.name, why)
        return None
    if single_threaded:
        # TensorFlow's single-threaded executor runs the function's kernels in the calling thread
        # instead of handing each op to the inter-op pool: for the taxi model in-process, 0.40 vs
        # 0.65 ms CPU per 1-row call and 0.99 vs 1.14 ms per 100 rows (the same answers), and under
        # load the request threads give the parallelism. Graphs it cannot run (v1 control flow such
        # as Switch/Merge) fail here, at warm-up, and keep the default executor.
        direct.executor = SINGLE_THREADED_EXECUTOR
        why = _answers_like(direct, feeds, expected)
        if why is not None:
            log.log(logging.WARNING if why == _DIFFERENT else logging.INFO,
                    "signature %s: default executor (the single-threaded one: %s)", sig.name, why)
            direct.executor = None
    return direct
