"""The node manifest the Airflow DAG files are built from (they may not import TFX).

`dags/taxi_manifest.json` lists the compiled pipeline's node ids in run order with their upstream
node ids. `mlops dags manifest` writes it; a test fails when it disagrees with the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from pipelines.errors import NO_RETRY_EXIT_CODES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO / "dags" / "taxi_manifest.json"
FORMAT_VERSION = 1


def build(config) -> dict:
    """The manifest of `create_pipeline(config)` (compiles the pipeline; imports TFX)."""
    from pipelines.node_runner import compile_for

    ir = compile_for(config, "manifest")
    return {
        "format": FORMAT_VERSION,
        "pipeline": ir.pipeline_info.id,
        "generated_by": "mlops dags manifest",
        # `mlops node run` exit codes the DAG must not retry (pipelines/errors.py is the source).
        "no_retry_exit_codes": {str(code): why for code, why in NO_RETRY_EXIT_CODES.items()},
        "nodes": [
            {
                "id": node.pipeline_node.node_info.id,
                "upstream": sorted(node.pipeline_node.upstream_nodes),
                "kind": _kind(node.pipeline_node),
            }
            for node in ir.nodes
        ],
    }


def _kind(pipeline_node) -> str:
    """`resolver` nodes only read ML Metadata; `component` nodes run an executor."""
    return "resolver" if pipeline_node.node_info.type.name.endswith("Resolver") else "component"


def render(manifest: dict) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def write(manifest: dict, path: Path = DEFAULT_PATH) -> bool:
    """Writes the manifest; returns False when the file already had exactly this content."""
    text = render(manifest)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def compare(manifest: dict, path: Path = DEFAULT_PATH) -> Optional[str]:
    """None when `path` holds `manifest`; otherwise what differs, in one line."""
    if not path.exists():
        return f"{path} does not exist"
    try:
        current = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return f"{path} is not valid JSON ({err})"
    if current == manifest:
        return None
    have = {n["id"]: n["upstream"] for n in current.get("nodes", [])}
    want = {n["id"]: n["upstream"] for n in manifest["nodes"]}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    rewired = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    parts = []
    if missing:
        parts.append(f"missing nodes {missing}")
    if extra:
        parts.append(f"nodes no longer in the pipeline {extra}")
    if rewired:
        parts.append(f"different upstream for {rewired}")
    if current.get("no_retry_exit_codes") != manifest.get("no_retry_exit_codes"):
        parts.append(f"exit codes not to retry are {current.get('no_retry_exit_codes')}, the CLI's are "
                     f"{manifest.get('no_retry_exit_codes')}")
    if not parts:
        parts.append("order or metadata differ")
    return f"{path} disagrees with the pipeline: " + "; ".join(parts)
