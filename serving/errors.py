"""Errors of the model server, each with the HTTP status and gRPC code TF Serving uses for it."""

from __future__ import annotations


class ServingError(Exception):
    """An error answered to the client as `{"error": message}` with `http_status` (REST) or `grpc_code`."""

    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class Unavailable(ServingError):
    http_status = 503
    grpc_code = "UNAVAILABLE"


class TooLarge(ServingError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class MethodNotAllowed(ServingError):
    http_status = 405
    grpc_code = "UNIMPLEMENTED"
