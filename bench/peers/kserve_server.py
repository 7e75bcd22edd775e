"""A peer for bench/serving_latency.py: KServe's Python model server (V1 protocol = TF Serving's `:predict`).

    PEER_MODEL_DIR=DIR [PEER_MODEL_NAME=taxi] [PEER_READY_DIR=DIR] .venv-kserve/bin/python \\
        bench/peers/kserve_server.py --http_port PORT --workers 2 --enable_grpc false \\
        --enable_latency_logging false

Runs in its own environment (.venv-kserve: Python 3.11, kserve and tensorflow-cpu pinned in
constraints/kserve-py311.txt, built by `make bench`), because no kserve release resolves inside the
TFX constraints (../shared/design.md, section 9). A `kserve.Model` whose `load` is
`tf.saved_model.load` and whose `predict` is bench/peers/tf_serving_json.py, the model work the
FastAPI peer does too, served by `kserve.ModelServer` on KServe's own flags (above): `--workers`
one process per core as for the FastAPI peer; gRPC off (KServe's gRPC is the V2 protocol, not TF
Serving's PredictionService, so the benchmark has nothing to send it); the per-request latency log
line off (our server writes none). Everything else is KServe's default (a synchronous `predict`,
which KServe calls on its event loop).

Four changes to KServe 0.15's defaults, none in the request path: uvicorn binds 127.0.0.1 instead
of the 0.0.0.0 KServe hard-codes (the benchmark talks only over loopback); the bound socket is
declared TCP, so that Nagle's algorithm does not hold answers back with `--workers` > 1 (a known
KServe bug, below: without this the peer measured 52 ms p50 instead of 2); no log line per request
(KServe's timing lines and uvicorn's access line at WARNING; `--enable_latency_logging false`
covers only KServe's latency line); and with `--workers` > 1 each worker process (KServe starts
them with multiprocessing's spawn and pickles the model registry into them) loads the SavedModel
itself, in the background, since a loaded TensorFlow model does not pickle and a worker that has
not answered KServe's liveness ping within 5 s of its start is killed and restarted (measured
here: with the load in the unpickling, every worker was restarted every ~5.5 s and none served).
A process that has loaded the model writes a file named by its pid to PEER_READY_DIR.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import kserve
import kserve.logging
import uvicorn
from kserve.errors import InvalidInput
from kserve.protocol.rest import server as rest_server

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tf_serving_json

_rest_server_init = rest_server.RESTServer.__init__
_bind_socket = uvicorn.Config.bind_socket


def _loopback_rest_server(self, *args, **kwargs) -> None:
    _rest_server_init(self, *args, **kwargs)
    self.config.host = "127.0.0.1"


def _bind_tcp_socket(self: uvicorn.Config) -> socket.socket:
    # kserve/kserve#6050 (fix: kserve/kserve#6054; uvicorn: Kludex/uvicorn#3149, all open): the socket
    # uvicorn binds for the worker processes has proto 0, accepted sockets inherit it, and asyncio's
    # event loop (KServe hard-codes it, not uvloop) then leaves TCP_NODELAY off: every response on a
    # keep-alive connection waited ~40 ms for the client's delayed ACK (measured here: p50 52 ms
    # instead of 2 ms for one row). The same socket, declared TCP.
    sock = _bind_socket(self)
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


rest_server.RESTServer.__init__ = _loopback_rest_server
uvicorn.Config.bind_socket = _bind_tcp_socket
# No line per request (our server writes none; the FastAPI peer runs with --no-access-log):
# KServe's per-request timing lines and uvicorn's access line, configured in every worker process
# from this dict (the worker processes import this module first, so they see the change).
for _name in ("kserve.trace", "uvicorn.access"):
    kserve.logging.KSERVE_LOG_CONFIG["loggers"][_name]["level"] = "WARNING"


class SavedModel(kserve.Model):
    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.model = None
        self._loaded = threading.Event()
        self.load()

    def load(self) -> bool:
        # TensorFlow is imported here, not at the top: a worker process must answer KServe's
        # liveness ping within 5 s of its start, and importing TensorFlow can take longer here.
        import tf_serving_json

        self.model = tf_serving_json.load(self.model_dir)
        self.ready = True
        self._loaded.set()
        ready_dir = os.environ.get("PEER_READY_DIR")
        if ready_dir:
            (Path(ready_dir) / str(os.getpid())).touch()
        return self.ready

    # KServe pickles the model registry into each worker process (--workers > 1); a loaded
    # TensorFlow model does not pickle, so each worker loads its own, in the background.
    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in ("model", "_loaded")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, model=None, _loaded=threading.Event())
        threading.Thread(target=self.load, name="load-savedmodel", daemon=True).start()

    def predict(self, payload: dict, headers: dict = None) -> dict:
        import tf_serving_json

        self._loaded.wait()
        try:
            return tf_serving_json.predict(self.model, payload)
        except tf_serving_json.BadRequest as err:
            raise InvalidInput(str(err)) from err


if __name__ == "__main__":
    model = SavedModel(os.environ.get("PEER_MODEL_NAME", "taxi"), os.environ["PEER_MODEL_DIR"])
    kserve.ModelServer().start([model])
