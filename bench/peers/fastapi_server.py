"""A peer for bench/serving_latency.py: TF Serving's `:predict` in FastAPI, as teams write it by hand.

    PEER_MODEL_DIR=DIR [PEER_MODEL_NAME=taxi] [PEER_READY_DIR=DIR] \\
        .venv/bin/python -m uvicorn fastapi_server:app --app-dir bench/peers \\
        --host 127.0.0.1 --port PORT --workers 2 --no-access-log

The usual shape: a pydantic request model, a plain `def` endpoint (FastAPI runs it in its thread
pool, so a model call does not block the event loop), the SavedModel loaded once per worker
process in the lifespan hook, the dict answer serialized by FastAPI's default JSON response. The
model work is bench/peers/tf_serving_json.py, shared with the KServe peer.

Uvicorn's production settings (its deployment docs): `--workers` = one process per core (the
GIL keeps one process's Python on one core; the benchmark passes `os.cpu_count()`), uvloop and
httptools picked by uvicorn's defaults (`--loop auto --http auto`) when installed, which `make
bench` does (bench/requirements-peers.txt); no `--reload`, no access log (our server writes no
line per request either). When a worker has loaded the model it writes a file named by its pid
to PEER_READY_DIR, so that the benchmark starts measuring only when every worker serves.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Optional, Union

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import tf_serving_json

MODEL_NAME = os.environ.get("PEER_MODEL_NAME", "taxi")
state: dict = {}


class PredictRequest(BaseModel):
    signature_name: Optional[str] = None
    instances: Optional[list] = None
    inputs: Optional[Union[dict, list]] = None


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI):
    state["model"] = tf_serving_json.load(os.environ["PEER_MODEL_DIR"])
    ready_dir = os.environ.get("PEER_READY_DIR")
    if ready_dir:
        (Path(ready_dir) / str(os.getpid())).touch()
    yield
    state.clear()


app = FastAPI(lifespan=lifespan)


def _check_name(name: str) -> None:
    if name != MODEL_NAME:
        raise HTTPException(status_code=404, detail=f"model {name!r} not found")


@app.get("/v1/models/{name}")
def model_status(name: str) -> dict:
    _check_name(name)
    return {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]}


@app.post("/v1/models/{name}:predict")
def predict(name: str, request: PredictRequest) -> Any:
    _check_name(name)
    try:
        return tf_serving_json.predict(state["model"], request.model_dump(exclude_none=True))
    except tf_serving_json.BadRequest as err:
        raise HTTPException(status_code=400, detail=str(err)) from err
