"""Prometheus metrics of the model server, served at /monitoring/prometheus/metrics on the REST port.

| metric | type | labels |
|---|---|---|
| mlops_serving_requests_total | counter | model, version, method (predict/classify/regress/metadata/status), code (HTTP status; gRPC mapped to it), api (rest/grpc) |
| mlops_serving_request_latency_seconds | histogram | model, version, method, api |
| mlops_serving_loaded_version | gauge | model: newest loaded version (0: none) |
| mlops_serving_loaded_versions | gauge | model: how many versions are loaded |
| mlops_serving_model_load_failures_total | counter | model |
| mlops_serving_model_loads_total | counter | model |
| mlops_serving_model_load_seconds | histogram | model |
| mlops_serving_batch_requests | histogram | model: requests (REST and gRPC alike) answered by one model call |

With `mlops serve --workers N` every worker counts in prometheus_client's multiprocess mode (one
file per worker and kind in the server's metrics directory) and a scrape, whichever worker answers
it, sums the counters and histograms of all of them, dead ones included, so totals never go back.
The two gauges are per live worker: `loaded_version` the smallest (the newest version every worker
serves), `loaded_versions` the largest.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServingMetrics:
    def __init__(self, known_models=(), multiprocess_dir: Optional[Path] = None):
        disable_created_metrics()  # no `*_created` series: half the exposition, no information we need
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            use_multiprocess_mode(multiprocess_dir)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlops_serving_requests", "Model server requests by model, version, method and status code",
            ("model", "version", "method", "code", "api"), registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_serving_request_latency_seconds", "Model server request latency (body read to response)",
            ("model", "version", "method", "api"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.loaded_version = Gauge(
            "mlops_serving_loaded_version", "Newest loaded version of the model (0: none)", ("model",),
            registry=self.registry, multiprocess_mode="livemin",
        )
        self.loaded_versions = Gauge(
            "mlops_serving_loaded_versions", "Number of loaded versions of the model", ("model",),
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.load_failures = Counter(
            "mlops_serving_model_load_failures", "Model versions that failed to load", ("model",),
            registry=self.registry,
        )
        self.loads = Counter(
            "mlops_serving_model_loads", "Model versions loaded", ("model",), registry=self.registry,
        )
        self.load_seconds = Histogram(
            "mlops_serving_model_load_seconds", "Time to load and warm up a version", ("model",),
            buckets=(0.5, 1, 2, 5, 10, 20, 40, 80), registry=self.registry,
        )
        self.batch_requests = Histogram(
            "mlops_serving_batch_requests", "Requests answered by one model call (1 = not batched with others)",
            ("model",), buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self._known = set(known_models)
        self._children: Dict[Tuple, Tuple] = {}
        self._lock = threading.Lock()
        for name in self._known:
            self.loaded_version.labels(name).set(0)
            self.loaded_versions.labels(name).set(0)
            self.load_failures.labels(name)
            self.loads.labels(name)

    def known(self, model: str) -> bool:
        return model in self._known

    def add_model(self, model: str) -> None:
        self._known.add(model)

    def observe(self, model: str, version: Optional[int], method: str, code: int, seconds: float, api: str) -> None:
        # Names that are not served (typos, fuzzing) share one label value: bounded cardinality.
        model = model if model in self._known else "unknown"
        key = (model, version, method, code, api)
        children = self._children.get(key)
        if children is None:
            with self._lock:
                children = (
                    self.requests.labels(model, "" if version is None else str(version), method, str(code), api),
                    self.latency.labels(model, "" if version is None else str(version), method, api),
                )
                if len(self._children) < 10000:
                    self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def set_loaded(self, model: str, latest: Optional[int], versions: List[int]) -> None:
        self.add_model(model)
        self.loaded_version.labels(model).set(latest or 0)
        self.loaded_versions.labels(model).set(len(versions))

    def load_failed(self, model: str) -> None:
        self.add_model(model)
        self.load_failures.labels(model).inc()

    def load_succeeded(self, model: str, seconds: float) -> None:
        self.add_model(model)
        self.loads.labels(model).inc()
        self.load_seconds.labels(model).observe(seconds)

    def batch_ran(self, model: str, requests: int) -> None:
        self.batch_requests.labels(model).observe(requests)

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker, path=str(self.multiprocess_dir))
        return generate_latest(every_worker)


def use_multiprocess_mode(directory: Path) -> None:
    """Makes this process's metrics values live in `directory` (a worker of `mlops serve --workers N`).

    prometheus_client picks its value class when it is first imported, from $PROMETHEUS_MULTIPROC_DIR,
    which its value files also read: set both (a worker is a process of its own; the parent never
    counts anything)."""
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def mark_worker_dead(directory: Path, pid: int) -> None:
    """The parent, when a worker has exited: its live gauges stop counting (its counters stay)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, str(directory))
