"""A do-nothing server for bench/serving_latency.py: the Python HTTP and gRPC stacks' own cost.

    .venv/bin/python bench/echo_server.py REST_PORT GRPC_PORT

Same stacks as `mlops serve` (the standard library's threading HTTP server, grpcio's sync server
with 8 workers); every :predict / Predict gets one fixed answer without touching a model. Latency
measured against it is the floor that no change to the model server's own code can go under.
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

BODY = b'{"predictions":[[0.5]]}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(BODY), BODY))


class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self):
        self.reply = predict_pb2.PredictResponse()
        self.reply.model_spec.name = "taxi"
        self.reply.model_spec.version.value = 1

    def Predict(self, request, context):
        return self.reply


def main() -> int:
    rest_port, grpc_port = int(sys.argv[1]), int(sys.argv[2])
    rest = ThreadingHTTPServer(("127.0.0.1", rest_port), Handler)
    rest.daemon_threads = True
    threading.Thread(target=rest.serve_forever, daemon=True).start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0)
    rest.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
