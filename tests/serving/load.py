"""Client load for the serving tests: threads sending requests to a real server until stopped.

    with Load(port, request) as load:
        ...  # the server reloads, a worker dies, a canary is decided ...
    assert load.failures == [] and ...load.answers...

`request(http)` sends one request on the client's `tests.serving.helpers.Http` and returns what to
record of its answer (a time stamp included, when the test needs one: taken before sending or after
the answer, as the test means). An exception it raises is a failure (a dropped connection is one
too); `Failed(what)` records `what` as the failure (`predict_ok` raises it for an answer that is not
a 200).
"""

from __future__ import annotations

import threading
from typing import Callable, List, Optional, Tuple

from tests.serving.helpers import Http

PREDICT = "/v1/models/taxi:predict"


class Failed(Exception):
    """Raised by a request function: the request failed; `what` is recorded in `Load.failures`."""

    def __init__(self, what: object):
        super().__init__(what)
        self.what = what


def predict_ok(http: Http, body: dict, path: str = PREDICT) -> Tuple[dict, object]:
    """POST :predict; (headers, answer) of a 200, else Failed((status, answer))."""
    code, headers, answer = http.post(path, body)
    if code != 200:
        raise Failed((code, answer))
    return headers, answer


class Load:
    """`threads` clients calling `request(http)` until stopped.

    - `answers`: every recorded answer (whatever `request` returned), of all clients;
      `by_client[i]`: client i's, in the order it got them.
    - `failures`: what `request` raised: `repr(err)`, or `Failed.what`.
    - `pause`: seconds a client waits after each answer (0: none).
    - `requests_per_connection`: None (default): each client keeps one keep-alive connection
      (`Http` reconnects by itself after an error) and stops before its next request. N: each
      client opens a new connection every N requests (so a server with several workers sees them
      all), ends a connection early when a request raised, and stops after the connection's N.
    - `join_seconds`: how long leaving the `with` block waits for each client.
    """

    def __init__(self, port: int, request: Callable[[Http], object], threads: int = 8, pause: float = 0.0,
                 requests_per_connection: Optional[int] = None, join_seconds: float = 30.0):
        self.port, self.request, self.pause = port, request, pause
        self.requests_per_connection, self.join_seconds = requests_per_connection, join_seconds
        self.stop = threading.Event()
        self.answers: List[object] = []
        self.by_client: List[List[object]] = [[] for _ in range(threads)]
        self.failures: List[object] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        while not self.stop.is_set():
            http = Http(self.port)
            if self.requests_per_connection is None:
                while not self.stop.is_set():
                    self._send(http, i)
            else:
                for _ in range(self.requests_per_connection):
                    if not self._send(http, i):
                        break
            http.close()

    def _send(self, http: Http, i: int) -> bool:
        """One request; False when it raised (its connection is gone)."""
        try:
            record = self.request(http)
        except Failed as failed:
            with self._lock:
                self.failures.append(failed.what)
            return True
        except Exception as err:  # noqa: BLE001 -- a dropped connection is a failure too
            with self._lock:
                self.failures.append(repr(err))
            return False
        with self._lock:
            self.answers.append(record)
            self.by_client[i].append(record)
        if self.pause:
            self.stop.wait(self.pause)
        return True

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(self.join_seconds)
