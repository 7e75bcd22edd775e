"""TF Serving's REST API on the standard library's threading HTTP server (HTTP/1.1, keep-alive).

Routes (exactly TF Serving's):
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model_version_status
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    {"instances"|"inputs": ...}
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify   {"examples": [...], "context": {...}}
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress
  GET  /monitoring/prometheus/metrics                          Prometheus text format
Errors are `{"error": message}` with TF Serving's status codes. Inference answers carry an
`X-Model-Version` header naming the version that computed them (an addition; TF Serving has none).
An `X-Request-Id` request header pins the version a canary window picks (serving/canary.py).
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Tuple
from urllib.parse import unquote

import orjson

from serving import responses
from serving.api import Api, metadata_json, proto_json, status_proto
from serving.errors import BadRequest, MethodNotAllowed, NotFound, ServingError, TooLarge
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger("serving")

MODEL_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$"
)
METRICS_PATH = "/monitoring/prometheus/metrics"
VERBS = ("predict", "classify", "regress")
MAX_LINE = 65536
_REASONS = {s.value: s.phrase for s in HTTPStatus}


MAX_HEADERS = 100


_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_DIGIT_RUN = b"0" * 19  # 2**63 has 19 digits


_json_bytes = responses.json_bytes


class _HeaderError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Headers(dict):
    """Request headers by lower-cased name (repeated headers joined with ", ")."""

    def get(self, name: str, default=None):  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str):
        return dict.get(self, name.lower())

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name.lower())


def read_headers(rfile) -> Headers:
    """The header block of a request. The standard library's parser (http.client.parse_headers)
    runs the email package's feed parser: ~70 us a request, more than the rest of the routing."""
    headers = Headers()
    last = None
    for _ in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise _HeaderError(431, "Line too long")
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):  # obsolete line folding: continues the previous value
            if last is None:
                raise _HeaderError(400, "malformed header: continuation line first")
            headers[last] = (dict.get(headers, last) + " " + text.strip()).strip()
            continue
        name, sep, value = text.partition(":")
        name = name.strip().lower()
        if not sep or not name or " " in name:
            raise _HeaderError(400, f"malformed header line: {text[:80]!r}")
        value = value.strip()
        previous = dict.get(headers, name)
        headers[name] = value if previous is None else previous + ", " + value
        last = name
    raise _HeaderError(431, "Too many headers")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mlops-model-server"
    sys_version = ""
    disable_nagle_algorithm = True
    server: "RestServer"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout
        super().setup()
        self.busy = False
        self._linger = False
        self.server.register(self)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.unregister(self)

    def log_message(self, format, *args) -> None:  # noqa: A002 -- no access log on the hot path
        pass

    def parse_request(self) -> bool:
        """BaseHTTPRequestHandler.parse_request with `read_headers` instead of the email parser."""
        self.command = None
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) != 3:
            self.send_error(400, f"Bad request syntax ({requestline[:200]!r})")
            return False
        command, path, version = words
        try:
            if not version.startswith("HTTP/"):
                raise ValueError
            major, minor = version[5:].split(".")
            number = int(major), int(minor)
        except ValueError:
            self.send_error(400, f"Bad request version ({version[:40]!r})")
            return False
        if number >= (2, 0):
            self.send_error(505, f"Invalid HTTP version ({version[5:][:20]})")
            return False
        self.close_connection = number < (1, 1)
        self.request_version = version
        self.command, self.path = command, ("/" + path.lstrip("/") if path.startswith("//") else path)
        try:
            self.headers = read_headers(self.rfile)
        except _HeaderError as err:
            self.send_error(err.status, err.message)
            return False
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if self.headers.get("Expect", "").lower() == "100-continue" and number >= (1, 1):
            return self.handle_expect_100()
        return True

    def handle_expect_100(self) -> bool:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if length > self.server.max_body_bytes:
            return True  # answer 413 without inviting the body
        return super().handle_expect_100()

    def send_error(self, code, message=None, explain=None) -> None:
        # Used by parse_request for malformed request lines and headers: answer JSON, always 4xx.
        if code >= 500:
            code = 400
        self.close_connection = True
        self._respond(code, _json_bytes({"error": message or _REASONS.get(code, "bad request")}))

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
            if len(self.raw_requestline) > MAX_LINE:
                self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
                self.send_error(414, "Request-URI Too Long")
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            self.busy = True  # from the first byte on, a drain waits for this request
            self.server.begin()
            try:
                if self.parse_request():
                    self._dispatch()
            finally:
                self.busy = False
                self.server.end()
            if self.server.draining:
                self.close_connection = True
            if self._linger:
                self._lingering_close()
        except (socket.timeout, TimeoutError):
            self.close_connection = True
        except (ConnectionError, OSError):
            self.close_connection = True

    def _lingering_close(self) -> None:
        """After answering early (413), read and drop what the client still sends for a moment, so that
        closing a socket with unread data does not reset the connection before the client reads the answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            dropped = 0
            while time.monotonic() < deadline and dropped < (64 << 20):
                chunk = self.connection.recv(1 << 16)
                if not chunk:
                    break
                dropped += len(chunk)
        except OSError:
            pass

    # -- plumbing -------------------------------------------------------------------------------

    def _respond(self, code: int, body: bytes, content_type: str = "application/json",
                 extra: str = "") -> None:
        head = (
            f"HTTP/1.1 {code} {_REASONS.get(code, '')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}{self.server.identity_header}"
            + ("Connection: close\r\n" if self.close_connection else "")
            + "\r\n"
        )
        self.wfile.write(head.encode("latin-1") + (b"" if self.command == "HEAD" else body))

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        deadline = time.monotonic() + self.server.request_timeout
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit, deadline)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            self.close_connection = True
            raise BadRequest(f"invalid Content-Length: {raw[:40]!r}")
        if length < 0:
            self.close_connection = True
            raise BadRequest("invalid Content-Length")
        if length > limit:
            self.close_connection = True  # the unread body would be parsed as the next request
            self._linger = True
            raise TooLarge(f"request body of {length} bytes is over the limit of {limit} bytes")
        chunks, remaining = [], length
        while remaining:
            if time.monotonic() > deadline:
                self.close_connection = True
                raise BadRequest("request body not received within the request timeout")
            chunk = self.rfile.read1(min(remaining, 1 << 16)) if hasattr(self.rfile, "read1") else self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                self.close_connection = True
                raise BadRequest("connection closed before the whole body arrived")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _read_chunked(self, limit: int, deadline: float) -> bytes:
        chunks, total = [], 0
        while True:
            if time.monotonic() > deadline:
                self.close_connection = True
                raise BadRequest("request body not received within the request timeout")
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise BadRequest("malformed chunked body")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                self.close_connection = True
                self._linger = True
                raise TooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _dispatch(self) -> None:
        started = time.perf_counter()
        model, version_label, method, code = "", None, "other", 500
        record = True
        try:
            path = self.path.split("?", 1)[0]
            body = self._read_body()  # whatever the method: an unread body would corrupt the next request
            if path == METRICS_PATH:
                if self.command != "GET":
                    raise MethodNotAllowed(f"{self.command} is not allowed on {METRICS_PATH}; use GET")
                code, record = 200, False
                self._respond(200, self.server.metrics.exposition(), METRICS_CONTENT_TYPE)
                return
            match = MODEL_ROUTE.match(path)
            if match is None:
                raise NotFound(f"Malformed request: {self.command} {path[:200]}")
            model = unquote(match["name"])
            version, label = self._version_label(match)
            verb = match["verb"]
            if verb is not None:
                if verb not in VERBS:
                    raise NotFound(f"Malformed request: {self.command} {path[:200]} (unknown verb :{verb[:40]})")
                method = verb
                if self.command != "POST":
                    raise MethodNotAllowed(f"{self.command} is not allowed on :{verb}; use POST")
                servable = self.server.api.resolve(model, version, label, self.headers.get("X-Request-Id"))
                version_label = servable.version
                with self.server.api.inference_slot(self.server.request_timeout):
                    request = self._parse_json(body)
                    if verb == "predict":
                        payload = self.server.api.predict_json(servable, request)
                    else:
                        payload = _json_bytes(self.server.api.classify_regress_json(servable, request, verb))
                code = 200
                self._respond(200, payload, extra=f"X-Model-Version: {servable.version}\r\n")
                return
            method = "metadata" if match["metadata"] else "status"
            if self.command != "GET":
                raise MethodNotAllowed(f"{self.command} is not allowed on this path; use GET")
            if method == "metadata":
                servable = self.server.api.resolve(model, version, label)
                version_label = servable.version
                answer = metadata_json(servable)
            else:
                answer = proto_json(status_proto(self.server.api.statuses(model, version, label)))
            code = 200
            self._respond(200, _json_bytes(answer))
        except ServingError as err:
            code = err.http_status
            extra = "Allow: POST\r\n" if code == 405 and method in VERBS else ("Allow: GET\r\n" if code == 405 else "")
            if version_label is not None and method in VERBS:  # the version that failed it (canaries are judged by it)
                extra += f"X-Model-Version: {version_label}\r\n"
            self._respond(code, _json_bytes({"error": err.message}), extra=extra)
        except (ConnectionError, socket.timeout, TimeoutError):
            raise
        except Exception as err:  # noqa: BLE001 -- a bug: answer 500, log it, keep serving
            log.exception("internal error on %s %s", self.command, self.path[:200])
            code = 500
            self.close_connection = True
            self._respond(500, _json_bytes({"error": f"internal error: {type(err).__name__}"}))
        finally:
            if record:
                self.server.metrics.observe(model, version_label, method, code, time.perf_counter() - started,
                                            "rest")

    @staticmethod
    def _version_label(match) -> Tuple[Optional[int], Optional[str]]:
        version = match["version"]
        if version is not None:
            if not version.isdigit() or len(version) > 18:
                raise NotFound(f"Malformed request: version {version[:40]!r} is not an integer")
            return int(version), None
        label = match["label"]
        return None, (unquote(label) if label is not None else None)

    @staticmethod
    def _parse_json(body: bytes):
        if not body.strip():
            raise BadRequest("JSON Parse error: The document is empty")
        # orjson parses 100 feature dicts in 95 us where json takes 380. It refuses what is not
        # strict JSON (NaN, lone surrogates, BOMs, ...) and turns integers past 64 bits into floats;
        # those bodies (any run of 19+ digits, found in 35 us) go to the standard parser, so every
        # body parses to exactly what json.loads gives or fails with its message
        # (tests/serving/test_rest_json.py).
        if _LONG_DIGIT_RUN not in body.translate(_DIGITS_AS_ZERO):
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
        try:
            return json.loads(body)
        except RecursionError as err:
            raise BadRequest("JSON Parse error: nested too deeply") from err
        except UnicodeDecodeError as err:
            raise BadRequest(f"JSON Parse error: invalid UTF-8 at offset {err.start}") from err
        except ValueError as err:  # JSONDecodeError, and ints over Python's digit limit
            raise BadRequest(f"JSON Parse error: {err}") from err


def _readable(sock) -> bool:
    """True when a request's bytes are waiting: its thread is about to pick it up, leave it be."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(ready)


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, api: Api, metrics, max_body_bytes: int, request_timeout: float,
                 max_connections: int = 256, reuse_port: bool = False, worker_id: str = ""):
        self.api, self.metrics = api, metrics
        # The workers of `mlops serve --workers N` share the port (the kernel spreads the connections)
        # and name themselves in every answer.
        self.reuse_port = reuse_port
        self.identity_header = f"X-Mlops-Worker: {worker_id}\r\n" if worker_id else ""
        self.max_body_bytes, self.request_timeout = max_body_bytes, request_timeout
        self.max_connections = max_connections
        self.draining = False
        self._handlers = set()
        self._inflight = 0
        self._cond = threading.Condition()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can block on DNS for seconds.
        import socketserver

        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def verify_request(self, request, client_address) -> bool:
        with self._cond:
            if len(self._handlers) >= self.max_connections:
                try:
                    request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                    b"Content-Length: 38\r\nConnection: close\r\n\r\n"
                                    b'{"error":"too many open connections"}\n')
                except OSError:
                    pass
                return False
        return not self.draining

    def register(self, handler) -> None:
        with self._cond:
            self._handlers.add(handler)

    def unregister(self, handler) -> None:
        with self._cond:
            self._handlers.discard(handler)
            self._cond.notify_all()

    def begin(self) -> None:
        with self._cond:
            self._inflight += 1

    def end(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    @property
    def inflight(self) -> int:
        return self._inflight

    def drain(self, grace_seconds: float) -> bool:
        """Stops accepting, lets in-flight requests finish, closes idle keep-alive connections.
        Returns True when everything finished within the grace period."""
        self.draining = True
        self.shutdown()  # serve_forever returns: no more accepts
        self.socket.close()
        deadline = time.monotonic() + grace_seconds
        with self._cond:
            while True:
                for handler in list(self._handlers):
                    if not handler.busy and not _readable(handler.connection):
                        try:  # idle keep-alive connection: wake its thread, which then exits
                            handler.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                if self._inflight == 0 and not self._handlers:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._inflight == 0
                self._cond.wait(min(remaining, 0.1))
