"""TF Serving's gRPC API: PredictionService (Predict, Classify, Regress, GetModelMetadata) and
ModelService.GetModelStatus, on the protos and stubs of the `tensorflow-serving-api` package."""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from typing import Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import responses
from serving.api import Api, signature_def_map, status_proto
from serving.errors import BadRequest, ServingError

log = logging.getLogger("serving")

_PROTO_DTYPES = {np.dtype(np.float32): types_pb2.DT_FLOAT, np.dtype(np.float64): types_pb2.DT_DOUBLE,
                 np.dtype(np.int32): types_pb2.DT_INT32, np.dtype(np.int64): types_pb2.DT_INT64}

_GRPC_TO_HTTP = {"OK": 200, "INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503,
                 "RESOURCE_EXHAUSTED": 413, "UNIMPLEMENTED": 405, "INTERNAL": 500}


def _version_of(spec) -> Tuple[Optional[int], Optional[str]]:
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return int(spec.version.value), None
    if which == "version_label":
        return None, spec.version_label
    return None, None


def _request_id(context) -> Optional[str]:
    """The client's `x-request-id` metadata: it pins the version a canary window picks (serving/canary.py)."""
    try:
        metadata = context.invocation_metadata() or ()
    except Exception:  # noqa: BLE001 -- no metadata: no id
        return None
    for key, value in metadata:
        if key == "x-request-id":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class _Calls:
    """Runs one RPC with error mapping and metrics."""

    def __init__(self, api: Api, metrics):
        self.api, self.metrics = api, metrics
        # The version a call resolved, so an error answered after resolving is counted against it
        # (the serving alerts roll back by version). One call runs on one thread.
        self.resolved = threading.local()

    def run(self, context, method: str, model: str, fn):
        started = time.perf_counter()
        version = None
        self.resolved.version = None
        self.resolved.request_id = _request_id(context)
        code = "INTERNAL"
        try:
            if method in ("predict", "classify", "regress"):
                remaining = context.time_remaining()
                with self.api.inference_slot(min(remaining, 30.0) if remaining is not None else 30.0):
                    response, version = fn()
            else:
                response, version = fn()
            code = "OK"
            return response
        except ServingError as err:
            code = err.grpc_code
            context.abort(getattr(grpc.StatusCode, code), err.message)
        except Exception as err:  # noqa: BLE001 -- a bug: INTERNAL, and the server keeps serving
            code = "INTERNAL"
            log.exception("internal error in gRPC %s", method)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}")
        finally:
            version = version if version is not None else self.resolved.version
            self.metrics.observe(model, version, method, _GRPC_TO_HTTP.get(code, 500),
                                 time.perf_counter() - started, "grpc")


def _feed_from_proto(tensor):
    """A request input as the Batcher takes it: a list of bytes (a batch of serialized tf.Examples,
    the common case, without make_ndarray's ~40 us) or a numpy array."""
    if tensor.dtype == types_pb2.DT_STRING and len(tensor.tensor_shape.dim) == 1 and not tensor.tensor_content:
        values = list(tensor.string_val)
        if len(values) == tensor.tensor_shape.dim[0].size:
            return values
    return tf.make_ndarray(tensor)


def _fill_tensor_proto(proto, array: np.ndarray) -> None:
    # Numeric arrays: shape + raw bytes (what make_tensor_proto produces, in a tenth of its time).
    dtype = _PROTO_DTYPES.get(array.dtype)
    if dtype is None:
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = dtype
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    proto.tensor_content = np.ascontiguousarray(array).tobytes()


def _serialized_examples(request_input) -> list:
    which = request_input.WhichOneof("kind")
    if which == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if which == "example_list_with_context":
        ctx = request_input.example_list_with_context.context
        out = []
        for e in request_input.example_list_with_context.examples:
            merged = type(e)()
            merged.CopyFrom(ctx)
            merged.MergeFrom(e)
            out.append(merged.SerializeToString())
        return out
    raise BadRequest("Input is empty")


def _spec_reply(reply_spec, servable, signature_name: str) -> None:
    reply_spec.name = servable.model_name
    reply_spec.version.value = servable.version
    reply_spec.signature_name = signature_name


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, api: Api, metrics):
        self.api, self.calls = api, _Calls(api, metrics)

    def _servable(self, spec):
        version, label = _version_of(spec)
        servable = self.api.resolve(spec.name, version, label, getattr(self.calls.resolved, "request_id", None))
        self.calls.resolved.version = servable.version
        return servable

    def Predict(self, request, context):
        def call():
            servable = self._servable(request.model_spec)
            sig = servable.signature(request.model_spec.signature_name)
            feeds = {}
            for name, tensor in request.inputs.items():
                if name not in sig.inputs:
                    raise BadRequest(f"input tensor alias not found in signature: {name}. Inputs expected to be "
                                     f"in the set {{{','.join(sorted(sig.inputs))}}}.")
                try:
                    feeds[name] = _feed_from_proto(tensor)
                except Exception as err:  # noqa: BLE001 -- malformed TensorProto
                    raise BadRequest(f"input {name}: not a valid tensor: {err}") from err
            missing = sorted(set(sig.inputs) - set(feeds))
            if missing:
                raise BadRequest(f"input tensors missing from the request: {','.join(missing)}")
            outputs = self.api.infer(sig, feeds)
            wanted = list(request.output_filter) or list(outputs)
            response = predict_pb2.PredictResponse()
            for name in wanted:
                if name not in outputs:
                    raise BadRequest(f"output tensor alias not found in signature: {name}")
                _fill_tensor_proto(response.outputs[name], outputs[name])
            _spec_reply(response.model_spec, servable, sig.name)
            return response, servable.version

        return self.calls.run(context, "predict", request.model_spec.name, call)

    def _example_request(self, request, method: str):
        """Servable, signature and serialized tf.Examples of a Classify/Regress request."""
        servable = self._servable(request.model_spec)
        sig = servable.signature(request.model_spec.signature_name)
        responses.example_input_of(sig, method)
        serialized = _serialized_examples(request.input)
        if not serialized:
            raise BadRequest("Input is empty")
        return servable, sig, serialized

    def Classify(self, request, context):
        def call():
            servable, sig, serialized = self._example_request(request, "classify")
            results = responses.classify_results(sig, self.api.run_examples(sig, serialized), len(serialized))
            response = classification_pb2.ClassificationResponse()
            for row in results:
                classifications = response.result.classifications.add()
                for label, score in row:
                    cls = classifications.classes.add()
                    cls.label, cls.score = label, score
            _spec_reply(response.model_spec, servable, sig.name)
            return response, servable.version

        return self.calls.run(context, "classify", request.model_spec.name, call)

    def Regress(self, request, context):
        def call():
            servable, sig, serialized = self._example_request(request, "regress")
            values = responses.regress_results(sig, self.api.run_examples(sig, serialized), len(serialized))
            response = regression_pb2.RegressionResponse()
            for value in values:
                response.result.regressions.add().value = value
            _spec_reply(response.model_spec, servable, sig.name)
            return response, servable.version

        return self.calls.run(context, "regress", request.model_spec.name, call)

    def GetModelMetadata(self, request, context):
        def call():
            fields = list(request.metadata_field)
            if not fields:
                raise BadRequest("GetModelMetadataRequest must specify at least one metadata_field")
            for field in fields:
                if field != "signature_def":
                    raise BadRequest(f"Metadata field {field} is not supported")
            servable = self._servable(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.metadata["signature_def"].Pack(signature_def_map(servable))
            _spec_reply(response.model_spec, servable, "")
            return response, servable.version

        return self.calls.run(context, "metadata", request.model_spec.name, call)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, api: Api, metrics):
        self.api, self.calls = api, _Calls(api, metrics)

    def GetModelStatus(self, request, context):
        def call():
            version, label = _version_of(request.model_spec)
            return status_proto(self.api.statuses(request.model_spec.name, version, label)), None

        return self.calls.run(context, "status", request.model_spec.name, call)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "config reloads come from the models.config file (edit it; the server rereads it)")


def make_grpc_server(api: Api, metrics, address: str, max_message_bytes: int, workers: int = 8,
                     reuse_port: bool = False):
    """`reuse_port`: SO_REUSEPORT, so that the worker processes of `mlops serve --workers N` share the port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max(max_message_bytes, 64 << 20)),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
        maximum_concurrent_rpcs=256,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(api, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(api, metrics), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as err:  # grpc raises this when the port is taken
        raise OSError(f"cannot bind gRPC to {address}: {err}") from err
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server, port

