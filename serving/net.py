"""Small HTTP-client and port helpers (standard library only) for talking to the local services:
Airflow's REST API, the model server, the monitoring stack, the alert webhook.

Layer 0 (docs/architecture.md), so every layer uses the same ones: pipelines/http.py re-exports
them for the pipeline code; monitoring/stack.py and monitoring/webhook.py import them from here.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any, Optional, Tuple

HOST = "127.0.0.1"


def port_free(port: int) -> bool:
    """True when nothing listens on `port` on any interface.

    SO_REUSEADDR, as the servers themselves set it: connections of a server stopped a moment ago
    linger in TIME_WAIT for a minute and must not make a restart move to another port (a socket
    that listens still refuses the bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http(url: str, method: str = "GET", body: Any = None, token: Optional[str] = None,
         timeout: float = 10.0) -> Tuple[int, Any]:
    """(status, parsed JSON or text); status 0 when nothing answers. `token`: a Bearer token."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")
