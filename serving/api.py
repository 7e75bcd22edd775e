"""The operations both front ends (REST and gRPC) share: status, metadata, predict, classify, regress."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Dict, List, Optional

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving import batching, codec, responses
from serving.errors import BadRequest, Unavailable
from serving.store import Registry, VersionStatus

_STATE = get_model_status_pb2.ModelVersionStatus.State


def status_proto(statuses: List[VersionStatus]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in statuses:
        entry = response.model_version_status.add()
        entry.version = s.version
        entry.state = _STATE.Value(s.state)
        entry.status.error_code = _error_code_value(s.error_code)
        entry.status.error_message = s.error_message
    return response


def _error_code_value(name: str) -> int:
    codes = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "UNAVAILABLE": 14}
    return codes.get(name, 2)


def proto_json(message) -> dict:
    """TF Serving prints protos with field names as in the .proto and default values included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


def signature_def_map(servable) -> get_model_metadata_pb2.SignatureDefMap:
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sdef in servable.signature_defs.items():
        sig_map.signature_def[name].CopyFrom(sdef)
    return sig_map


def metadata_json(servable) -> dict:
    return {
        "model_spec": {"name": servable.model_name, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": proto_json(signature_def_map(servable))},
    }


def default_concurrency() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


class Api:
    def __init__(self, registry: Registry, max_concurrent: int = 0, status_view=None):
        self.registry = registry
        # One of several workers answers for the whole server (serving/worker_state.py ServerWideStatus).
        self.status_view = status_view
        # At most this many requests run inference (JSON -> tensors -> model -> JSON) at once; the
        # others wait without holding the GIL. More only queue on the GIL and starve the watcher
        # thread that loads a new version. Measured with 8 saturating clients on 2 cores: loading a
        # version took 18 s with no limit, 6.9 s with 2 slots, 5.3 s with 1 slot (3 s idle), and
        # throughput was 267, 273 and 298 requests/s.
        # A request gives its slot back while its model call runs (`infer`): the call itself is
        # TensorFlow's (no GIL), and requests waiting on one batch must not hold the slots that the
        # requests forming the next batch need.
        self.slots = threading.BoundedSemaphore(max_concurrent or default_concurrency())
        self._holds = threading.local()

    @contextlib.contextmanager
    def inference_slot(self, timeout: float):
        """Waits (without the GIL) for a free slot; 503 when none frees up within the request timeout."""
        if not self.slots.acquire(timeout=max(0.001, timeout)):
            raise Unavailable(f"server busy: no capacity for this request within {timeout:.1f}s")
        self._holds.slot = True
        try:
            yield
        finally:
            if self._holds.slot:
                self.slots.release()
            self._holds.slot = False

    def infer(self, sig, feeds) -> Dict[str, np.ndarray]:
        """The model's outputs for one request's inputs, batched with concurrent requests when the
        signature has a Batcher; the caller's inference slot is free while the model runs."""
        held = getattr(self._holds, "slot", False)
        if held:
            self.slots.release()
            self._holds.slot = False
        try:
            return batching.infer(sig, feeds)
        finally:
            if held:
                self.slots.acquire()
                self._holds.slot = True

    def resolve(self, name: str, version: Optional[int], label: Optional[str], request_id: Optional[str] = None):
        """`request_id` (the client's, if it sent one) pins a canary window's choice (serving/canary.py)."""
        return self.registry.get(name).resolve(version, label, request_id)

    def statuses(self, name: str, version: Optional[int], label: Optional[str]) -> List[VersionStatus]:
        if self.status_view is not None:
            return self.status_view(name, version, label)
        return self.registry.get(name).status_of(version, label)

    # -- inference ---------------------------------------------------------------------------

    def run_examples(self, sig, serialized: List[bytes]) -> Dict[str, np.ndarray]:
        return self.infer(sig, {sig.example_input: list(serialized)})

    def predict_json(self, servable, body) -> bytes:
        """The response body of a REST :predict request (its parsed JSON `body`)."""
        if isinstance(body, dict) and "signature_name" in body and not isinstance(body["signature_name"], str):
            raise BadRequest("'signature_name' key must be a string value.")
        sig = servable.signature(body.get("signature_name", "") if isinstance(body, dict) else "")
        feeds, row_format = codec.predict_feeds(body, sig)
        outputs = self.infer(sig, feeds)
        return responses.predict_body(outputs, row_format)

    def classify_regress_json(self, servable, body, verb: str) -> dict:
        if not isinstance(body, dict):
            raise BadRequest("JSON Value is not an object")
        signame = body.get("signature_name", "")
        if not isinstance(signame, str):
            raise BadRequest("'signature_name' key must be a string value.")
        sig = servable.signature(signame)
        responses.example_input_of(sig, verb)
        serialized = codec.examples_from_classify_request(body, sig.feature_spec, verb, sig.encoder)
        outputs = self.run_examples(sig, serialized)
        if verb == "classify":
            results = responses.classify_results(sig, outputs, len(serialized))
            return {"results": [[[label, score] for label, score in row] for row in results]}
        return {"results": responses.regress_results(sig, outputs, len(serialized))}
