"""A 2-worker MultiWorkerMirroredStrategy run on localhost: two processes, each with TF_CONFIG.

Uses the raw Examples and the transform graph of a real pipeline run (the e2e fixture's first
span) and the same training code as the Trainer (`pipelines.taxi.model`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _free_ports(count: int):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _oldest(pattern_root: Path) -> Path:
    candidates = sorted((p for p in pattern_root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return candidates[0]


def test_two_worker_training_exports_a_model_that_predicts_on_raw_examples(runs, tmp_path):
    root = runs["home"] / "var" / "pipeline_root"
    graph = _oldest(root / "Transform" / "transform_graph")
    examples = _oldest(root / "CsvExampleGen" / "examples")
    train_files = sorted(str(p) for p in (examples / "Split-train").glob("*.gz"))
    eval_files = sorted(str(p) for p in (examples / "Split-eval").glob("*.gz"))
    assert train_files and eval_files

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    export_dir = tmp_path / "model"
    worker_tmp = tmp_path / "tmp"
    worker_tmp.mkdir()
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "TMPDIR": str(worker_tmp),
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "pipelines.taxi.model",
             "--train-files", *train_files, "--eval-files", *eval_files,
             "--transform-output", str(graph), "--serving-model-dir", str(export_dir),
             "--train-steps", "20", "--eval-steps", "4"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-4000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["replicas"] for r in reports] == [2, 2]  # both workers trained in one 2-replica group
    assert all(0.0 <= r["auc"] <= 1.0 for r in reports)
    assert (export_dir / "saved_model.pb").is_file()
    # the non-chief worker's copy of the save is discarded, not left in the temp directory
    assert not list(worker_tmp.glob("worker-model-*")), list(worker_tmp.iterdir())

    code = r'''
import sys, tensorflow as tf
example = tf.train.Example(features=tf.train.Features(feature={
    "fare": tf.train.Feature(float_list=tf.train.FloatList(value=[12.5])),
    "trip_miles": tf.train.Feature(float_list=tf.train.FloatList(value=[2.0])),
    "trip_start_hour": tf.train.Feature(int64_list=tf.train.Int64List(value=[19])),
    "trip_start_day": tf.train.Feature(int64_list=tf.train.Int64List(value=[5])),
    "trip_start_month": tf.train.Feature(int64_list=tf.train.Int64List(value=[5])),
    "trip_start_timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=[1400269500])),
    "payment_type": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"Credit Card"])),
}))
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](examples=tf.constant([example.SerializeToString()]))
print(float(out["probabilities"].numpy()[0][0]))
'''
    result = subprocess.run([sys.executable, "-c", code, str(export_dir)], capture_output=True, text=True,
                            env={**os.environ, "TF_USE_LEGACY_KERAS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 0.0 <= float(result.stdout.strip().splitlines()[-1]) <= 1.0
