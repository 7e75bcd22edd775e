"""Errors. `MlopsError` and `ConfigError`: what every layer raises to the user (the problem, then the
fix). `ServingError` and its kinds: what the model server answers, each with the HTTP status and
gRPC code TF Serving uses for it."""

from __future__ import annotations


class MlopsError(Exception):
    """A user-facing failure. `str(err)` is one line: the problem, then the fix in parentheses."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem} ({fix})")
        self.problem = problem
        self.fix = fix


class ConfigError(MlopsError):
    """The configuration cannot work; nothing was run."""


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
