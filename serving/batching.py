"""Server-side batching: concurrent requests to one signature run as one model call.

What TF Serving's `--enable_batching` does, without its extra thread: the first request to find
no batch running becomes the leader, runs every request queued at that moment (up to
`max_batch_rows` rows) as one call, hands each request its rows of the outputs, and passes the
lead to the oldest request still waiting. Nobody waits for a timer (TF Serving's
`batch_timeout_micros` defaults to 0 too): at concurrency 1 a request runs alone, at once;
under load, requests that arrive while a batch runs form the next one.

One model call on a batch of 8 examples costs about what a call on 1 costs, so under load
this turns N calls into about one (bench/RESULTS.md, "Model serving latency").

Only signatures whose every input and output is batch-major (first dimension unknown) are
batched; a request whose combined batch fails with a bad-input error is rerun alone, so one
bad request never fails the requests it was batched with.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Sequence, Union

import numpy as np

from serving.errors import BadRequest

log = logging.getLogger("serving")

Feed = Union[np.ndarray, List[bytes]]

DEFAULT_MAX_BATCH_ROWS = 256
DEFAULT_MAX_CONCURRENT_BATCHES = 1


def to_tensor(value: Feed):
    import tensorflow as tf

    if isinstance(value, list):
        return tf.constant(value, dtype=tf.string)
    if value.dtype == object:
        return tf.constant(value.tolist(), dtype=tf.string)
    return tf.constant(value)


def run_now(sig, feeds: Dict[str, Feed]) -> Dict[str, np.ndarray]:
    """One model call for one request's inputs (no batching)."""
    tensors = {}
    for name, value in feeds.items():
        try:
            tensors[name] = to_tensor(value)
        except (TypeError, ValueError) as err:  # ragged lists, mixed types
            raise BadRequest(f"input {name}: cannot make a tensor of it: {' '.join(str(err).split())[:500]}") from err
    return sig.run(tensors)


def batchable(sig) -> bool:
    """Every input and output has a known rank >= 1 and an unknown first dimension."""
    specs = list(sig.inputs.values()) + list(sig.outputs.values())
    return bool(sig.inputs) and all(s.shape is not None and len(s.shape) >= 1 and s.shape[0] is None for s in specs)


def _rows(feeds: Dict[str, Feed]) -> int:
    sizes = {len(value) for value in feeds.values()}
    return sizes.pop() if len(sizes) == 1 else -1


def _concatenate(parts: Sequence[Feed]) -> Feed:
    if all(isinstance(p, list) for p in parts):
        return [item for part in parts for item in part]
    arrays = [np.asarray(p, dtype=object) if isinstance(p, list) else p for p in parts]
    return np.concatenate(arrays, axis=0)


class _Request:
    __slots__ = ("feeds", "rows", "wake", "state", "leads", "outputs", "error")

    def __init__(self, feeds: Dict[str, Feed], rows: int):
        self.feeds, self.rows = feeds, rows
        self.wake = threading.Event()
        self.state = "queued"  # -> "done" once its outputs (or error) are in
        self.leads = False  # this request's thread runs batches (set under the Batcher's lock)
        self.outputs: Optional[Dict[str, np.ndarray]] = None
        self.error: Optional[BaseException] = None

    def finish(self, outputs=None, error=None) -> None:
        self.outputs, self.error, self.state = outputs, error, "done"
        self.wake.set()


class Batcher:
    """Batches the requests of one signature of one loaded version."""

    def __init__(self, sig, max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
                 max_concurrent_batches: int = DEFAULT_MAX_CONCURRENT_BATCHES,
                 on_batch: Optional[Callable[[int], None]] = None):
        self.sig = sig
        self.on_batch = on_batch  # called with the number of requests in each batch (metrics)
        self.max_batch_rows = max(1, max_batch_rows)
        self.max_concurrent_batches = max(1, max_concurrent_batches)
        self._lock = threading.Lock()
        self._queue: Deque[_Request] = deque()
        self._leaders = 0

    def run(self, feeds: Dict[str, Feed]) -> Dict[str, np.ndarray]:
        rows = _rows(feeds)
        if rows <= 0:
            return run_now(self.sig, feeds)  # inputs of different lengths: let the model say what is wrong
        request = _Request(feeds, rows)
        with self._lock:
            self._queue.append(request)
            if self._leaders < self.max_concurrent_batches:
                self._leaders += 1
                request.leads = True
        while request.state != "done" or request.leads:
            if request.leads:
                self._lead(request)
                continue
            request.wake.wait()
            request.wake.clear()  # the loop condition rereads why it woke (done, or handed the lead)
        if request.error is not None:
            raise request.error
        return request.outputs

    def _take(self) -> List[_Request]:
        batch, rows = [], 0
        while self._queue and (not batch or rows + self._queue[0].rows <= self.max_batch_rows):
            item = self._queue.popleft()
            batch.append(item)
            rows += item.rows
        return batch

    def _lead(self, me: _Request) -> None:
        """Runs batches until this thread's own request is done (or taken by another leader), then
        hands the lead to the oldest waiting request, or gives it up when none waits."""
        try:
            while me.state != "done":
                with self._lock:
                    batch = self._take()
                if not batch:
                    break  # another leader has `me` in its batch: wait for it as a follower
                self._execute(batch)
        finally:
            with self._lock:
                me.leads = False
                successor = next((r for r in self._queue if not r.leads), None)
                if successor is not None:
                    successor.leads = True  # the leader count stays: the lead passes on
                    successor.wake.set()
                else:
                    self._leaders -= 1

    def _execute(self, batch: List[_Request]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch))
        for request, result in zip(batch, run_batch(self.sig, [r.feeds for r in batch])):
            if isinstance(result, BaseException):
                request.finish(error=result)
            else:
                request.finish(result)


Outcome = Union[Dict[str, np.ndarray], BaseException]


def _alone(sig, feeds: Dict[str, Feed]) -> Outcome:
    try:
        return run_now(sig, feeds)
    except BaseException as err:  # noqa: BLE001 -- handed to the request it belongs to
        return err


def run_batch(sig, requests: List[Dict[str, Feed]]) -> List[Outcome]:
    """One model call for several requests' inputs; each request's outputs (its rows) or error.

    Falls back to one call per request when the inputs do not concatenate, when the combined
    call fails on bad input (so only the culprit gets the error) or when the outputs are not
    batch-major after all."""
    if len(requests) == 1:
        return [_alone(sig, requests[0])]
    names = list(requests[0])
    if any(list(feeds) != names for feeds in requests):
        return [_alone(sig, feeds) for feeds in requests]
    try:
        combined = {n: _concatenate([feeds[n] for feeds in requests]) for n in names}
    except (TypeError, ValueError):  # trailing shapes differ: not one tensor
        return [_alone(sig, feeds) for feeds in requests]
    try:
        outputs = run_now(sig, combined)
    except BadRequest:
        return [_alone(sig, feeds) for feeds in requests]
    except BaseException as err:  # noqa: BLE001 -- every request of the batch gets the error
        return [err] * len(requests)
    sizes = [_rows(feeds) for feeds in requests]
    if any(value.ndim == 0 or value.shape[0] != sum(sizes) for value in outputs.values()):
        log.warning("signature %s: outputs are not batch-major; running its requests one by one", sig.name)
        return [_alone(sig, feeds) for feeds in requests]
    results: List[Outcome] = []
    start = 0
    for size in sizes:
        results.append({name: value[start:start + size] for name, value in outputs.items()})
        start += size
    return results


def attach_batchers(servable, max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
                    max_concurrent_batches: int = DEFAULT_MAX_CONCURRENT_BATCHES,
                    on_batch: Optional[Callable[[int], None]] = None) -> int:
    """Gives every batchable signature of a loaded version a Batcher; returns how many."""
    count = 0
    for sig in servable.signatures.values():
        if batchable(sig):
            sig.batcher = Batcher(sig, max_batch_rows, max_concurrent_batches, on_batch)
            count += 1
    return count


def infer(sig, feeds: Dict[str, Feed]) -> Dict[str, np.ndarray]:
    """The signature's outputs for one request: through its Batcher when it has one."""
    batcher = sig.batcher
    if batcher is not None:
        return batcher.run(feeds)
    return run_now(sig, feeds)
