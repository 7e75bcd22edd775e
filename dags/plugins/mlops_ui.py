"""Airflow UI pages of the nightly TFX pipeline: the pushed models (with a rollback action), and on
each DAG run its data-gate report and lineage.

An Airflow 3 plugin (loaded by the api-server from AIRFLOW__CORE__PLUGINS_FOLDER, which
pipelines/airflow_env.py points here). It imports only Airflow, FastAPI (Airflow's own web stack)
and the standard library: what it shows comes from the project's CLI in the TFX environment
(`mlops models list --json`, `mlops lineage ... --json`), never from TensorFlow in Airflow's
processes. Every page and API answer needs Airflow's login (the UI's session cookie or a bearer
token); pages redirect to the login page without one, the JSON API answers 401.

- `/mlops/models`: every pushed version, which one serves, when and why each was pushed or rolled
  back, a link to its lineage, and "Roll back to this version": asks for a reason and triggers the
  `model_rollback` DAG through Airflow's REST API as the logged-in user (audited like the CLI:
  the push records who and why). In the UI's menu as "Models".
- `/mlops/run/{dag_id}/{run_id}`: a DAG run's data-gate verdicts with links to their reports, and
  its lineage. A tab on every DAG run page ("Data gates & lineage").
- `/mlops/lineage?version=V|run=R|span=D`: `mlops lineage` as a page; `/mlops/report?...`: a gate's
  report file; `/mlops/api/models`, `/mlops/api/lineage`: the same data as JSON.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

REPO = Path(__file__).resolve().parents[2]
HOME = Path(os.environ.get("MLOPS_HOME") or REPO)
MLOPS = os.environ.get("MLOPS_BIN") or str(REPO / ".venv" / "bin" / "mlops")
ROLLBACK_DAG = "model_rollback"
NIGHTLY_DAG = "nightly_retrain"
CLI_TIMEOUT_S = 120
COOKIE = "_token"  # Airflow's session cookie (airflow.api_fastapi.auth.managers.base_auth_manager)

app = FastAPI(title="mlops pages", description="The nightly TFX pipeline's models, data gates and lineage")


class CliError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def mlops(*args: str, as_json: bool = True) -> Any:
    """Runs the project's CLI; its JSON (or text). Exit 2 (unknown version/run/span, no store) is a 404."""
    command = [MLOPS, "--home", str(HOME), *args] + (["--json"] if as_json else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CliError(503, f"the mlops command did not answer ({err})") from err
    if done.returncode != 0:
        said = " ".join(done.stderr.strip().splitlines()[-1:]) or f"exit {done.returncode}"
        raise CliError(404 if done.returncode == 2 else 500, said.removeprefix("error: "))
    return json.loads(done.stdout) if as_json else done.stdout


# ------------------------------------------------------------------------------------- login


class LoginRequired(Exception):
    pass


async def page_user(request: Request, bearer=Depends(bearer_scheme)):
    """The logged-in user of a page (Airflow's session cookie or a bearer token); without a login, a
    redirect to Airflow's login page."""
    try:
        return await get_user(request, None, bearer)
    except HTTPException as err:
        raise LoginRequired() from err


@app.exception_handler(LoginRequired)
async def _to_login(request: Request, _exc: LoginRequired):
    try:
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # noqa: BLE001 -- another auth manager: Airflow's default login path
        login = "/auth/login?" + urllib.parse.urlencode({"next": str(request.url)})
    return RedirectResponse(login if "://" in login else f"{_base(request)}{login}", status_code=307)


@app.exception_handler(CliError)
async def _cli_error(request: Request, exc: CliError):
    if request.url.path.startswith(f"{_prefix(request)}/api/"):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    return HTMLResponse(_page("mlops", f"<p class='error'>{html.escape(str(exc))}</p>"), status_code=exc.status)


def _prefix(request: Request) -> str:
    return request.scope.get("root_path", "")


def _base(request: Request) -> str:
    """The api-server's own URL (this app is mounted under /mlops)."""
    root = _prefix(request)
    return str(request.base_url).rstrip("/").removesuffix(root.rstrip("/")) if root else str(request.base_url).rstrip("/")


# --------------------------------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2rem; color: #1a202c; }
table { border-collapse: collapse; font-size: 0.9rem; } td, th { border-bottom: 1px solid #e2e8f0; padding: 0.35rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f7fafc; } tr.serving { background: #f0fff4; } .tag { font-weight: 600; color: #276749; }
pre { background: #f7fafc; padding: 0.8rem; overflow-x: auto; font-size: 0.82rem; }
.error { color: #c53030; font-weight: 600; } .note { color: #2b6cb0; font-weight: 600; } .blocked { color: #c53030; font-weight: 600; }
input[type=text] { width: 16rem; } form { margin: 0; }
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _link(request: Request, path: str, text: str, **query: Any) -> str:
    url = f"{_prefix(request)}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    return f"<a href='{_e(url)}' target='_self'>{_e(text)}</a>"


# -------------------------------------------------------------------------------------- models


@app.get("/api/models")
def api_models(_user=Depends(get_user)) -> JSONResponse:
    return JSONResponse(mlops("models", "list"))


@app.get("/models", response_class=HTMLResponse)
def models_page(request: Request, note: str = "", error: str = "", _user=Depends(page_user)) -> HTMLResponse:
    rows = mlops("models", "list")
    body = [f"<h2>Models</h2><p>Pushed versions of the model in <code>{_e(HOME)}</code>, newest first. "
            "<span class='tag'>serving</span> marks the version that answers requests naming no version. "
            "A rollback pushes the chosen version's model again, through the <code>model_rollback</code> DAG, "
            "recorded in ML Metadata with your name and reason.</p>"]
    if note:
        body.append(f"<p class='note'>{_e(note)}</p>")
    if error:
        body.append(f"<p class='error'>{_e(error)}</p>")
    if not rows:
        body.append("<p>No model has been pushed yet.</p>")
    else:
        body.append("<table id='models'><tr><th>version</th><th>kind</th><th>pushed at (UTC)</th><th>by</th>"
                    "<th>reason</th><th>replaced</th><th>lineage</th><th>roll back</th></tr>")
        for row in sorted(rows, key=lambda r: r["version"], reverse=True):
            serving = row.get("serving")
            state = "<span class='tag'>serving</span>" if serving else ("" if row.get("on_disk") else "deleted")
            recorded = row.get("kind") != "unrecorded"
            action = ""
            if recorded and row.get("on_disk") and not serving:
                action = (f"<form method='post' action='{_e(_prefix(request))}/rollback' target='_self'>"
                          f"<input type='hidden' name='version' value='{row['version']}'>"
                          f"<input type='text' name='reason' required placeholder='why roll back?'> "
                          f"<button type='submit'>Roll back to this version</button></form>")
            body.append(
                f"<tr class='{'serving' if serving else ''}' data-version='{row['version']}'>"
                f"<td>{row['version']} {state}</td><td>{_e(row.get('kind_label') or row.get('kind'))}</td>"
                f"<td>{_e(str(row.get('pushed_at', ''))[:19].replace('T', ' '))}</td><td>{_e(row.get('requested_by'))}</td>"
                f"<td>{_e(row.get('reason'))}</td><td>{_e(row.get('replaced_version') or '')}</td>"
                f"<td>{_link(request, '/lineage', 'lineage', version=row['version']) if recorded else ''}</td>"
                f"<td>{action}</td></tr>")
        body.append("</table>")
    return HTMLResponse(_page("Models", "".join(body)))


def _airflow(request: Request, path: str, method: str = "GET", body: Optional[dict] = None) -> Tuple[int, Any]:
    """Airflow's REST API, called as the logged-in user (their token), so Airflow checks their rights."""
    token = request.cookies.get(COOKIE) or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    call = urllib.request.Request(f"{_base(request)}{path}", method=method,
                                  data=json.dumps(body).encode() if body is not None else None,
                                  headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(call, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"null")
        except ValueError:
            return err.code, None
    except (OSError, ValueError) as err:
        return 0, str(err)


def _same_origin(request: Request) -> bool:
    """A form post from Airflow's own pages (the session cookie alone must not be enough)."""
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    if not origin:
        return False
    parsed = urllib.parse.urlsplit(origin)
    return f"{parsed.scheme}://{parsed.netloc}" == _base(request)


def trigger_rollback(request: Request, version: int, reason: str, user_name: str) -> Tuple[bool, str]:
    """Triggers `model_rollback` for `version` (unpausing the DAG first: it only has triggered runs)."""
    dag = f"/api/v2/dags/{ROLLBACK_DAG}"
    status, answer = _airflow(request, dag)
    if status != 200:
        return False, f"cannot read the {ROLLBACK_DAG} DAG (HTTP {status}): {_detail(answer)}"
    note = ""
    if isinstance(answer, dict) and answer.get("is_paused"):
        status, answer = _airflow(request, f"{dag}?update_mask=is_paused", "PATCH", {"is_paused": False})
        if status != 200:
            return False, f"cannot unpause {ROLLBACK_DAG} (HTTP {status}): {_detail(answer)}"
        note = f" ({ROLLBACK_DAG} was paused: unpaused it, it only runs when triggered)"
    conf = {"to_version": version, "reason": reason, "requested_by": user_name, "trigger": "manual"}
    status, answer = _airflow(request, f"{dag}/dagRuns", "POST", {"logical_date": None, "conf": conf})
    if status not in (200, 201):
        return False, f"Airflow refused to trigger {ROLLBACK_DAG} (HTTP {status}): {_detail(answer)}"
    return True, (f"rollback to version {version} requested: {ROLLBACK_DAG} run {answer.get('dag_run_id')}"
                  f"{note}; this page shows the new version once the run has pushed it")


def _detail(answer: Any) -> str:
    said = answer.get("detail") if isinstance(answer, dict) else answer
    return " ".join(str(said or "").split())[:300]


@app.post("/rollback")
def rollback(request: Request, version: int = Form(...), reason: str = Form(""), user=Depends(page_user)):
    if not _same_origin(request):
        raise HTTPException(403, "a rollback must be requested from the Models page")
    if not reason.strip():
        return RedirectResponse(f"{_prefix(request)}/models?" + urllib.parse.urlencode(
            {"error": "a rollback needs a reason"}), status_code=303)
    ok, message = trigger_rollback(request, version, reason.strip(), user.get_name())
    return RedirectResponse(f"{_prefix(request)}/models?" + urllib.parse.urlencode(
        {"note" if ok else "error": message}), status_code=303)


# ------------------------------------------------------------------------------ lineage, runs


def _lineage_query(version: Optional[int], run: str, span: str) -> List[str]:
    if version is not None:
        return ["--version", str(version)]
    if run:
        return ["--run", run]
    if span:
        return ["--span", span]
    return ["--served"]


@app.get("/api/lineage")
def api_lineage(version: Optional[int] = None, run: str = "", span: str = "", _user=Depends(get_user)):
    return JSONResponse(mlops("lineage", *_lineage_query(version, run, span)))


@app.get("/lineage", response_class=HTMLResponse)
def lineage_page(request: Request, version: Optional[int] = None, run: str = "", span: str = "",
                 _user=Depends(page_user)) -> HTMLResponse:
    query = _lineage_query(version, run, span)
    text = mlops("lineage", *query, as_json=False)
    title = "Lineage of " + " ".join(query).replace("--", "")
    as_json = _link(request, "/api/lineage", "as JSON", **_json_query(version, run, span))
    body = (f"<h2>{_e(title)}</h2><p>{_link(request, '/models', 'all models')} &middot; {as_json}"
            f" &middot; from <code>mlops lineage {_e(' '.join(query))}</code></p><pre id='lineage'>{_e(text)}</pre>")
    return HTMLResponse(_page(title, body))


def _json_query(version: Optional[int], run: str, span: str) -> Dict[str, Any]:
    return {k: v for k, v in (("version", version), ("run", run), ("span", span)) if v not in (None, "")}


def tfx_run_id(dag_id: str, run_id: str) -> str:
    """The TFX run id of a DAG run (dags/nightly_retrain.py); rollbacks have their own, found by Airflow id."""
    return f"{dag_id}__{run_id}" if dag_id == NIGHTLY_DAG else run_id


@app.get("/run/{dag_id}/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, dag_id: str, run_id: str, _user=Depends(page_user)) -> HTMLResponse:
    try:
        doc = mlops("lineage", "--run", tfx_run_id(dag_id, run_id))["run"]
    except CliError as err:
        if err.status != 404:
            raise
        return HTMLResponse(_page("Data gates & lineage", (
            f"<h3>{_e(dag_id)} / {_e(run_id)}</h3><p>ML Metadata has no record of this run yet: its tasks "
            f"have not run a pipeline node ({_e(err)}).</p>")))
    tfx_id = doc["run_id"]
    gates = doc.get("gates") or []
    body = [f"<h3>Data gates &amp; lineage of {_e(dag_id)} / {_e(run_id)}</h3>",
            f"<p>TFX run <code>{_e(tfx_id)}</code>; code <code>{_e(doc.get('code_version'))}</code>. "
            f"{_link(request, '/lineage', 'Lineage of this run', run=tfx_id)}"
            + (" &middot; " + _link(request, "/lineage", f"lineage of version {doc['pushed_version']}",
                                    version=doc["pushed_version"]) if doc.get("pushed_version") else "")
            + f" &middot; {_link(request, '/models', 'all models')}</p>"]
    if gates:
        body.append("<table id='gates'><tr><th>gate</th><th>span</th><th>verdict</th><th>report</th></tr>")
        for gate in gates:
            verdict = ("<span class='blocked'>BLOCKED</span>: " + _e(gate.get("problem"))) if gate["blocked"] else "passed"
            report = _link(request, "/report", Path(gate["report"]).name, run=tfx_id, gate=gate["gate"]) \
                if gate.get("report") else "(no report on disk)"
            body.append(f"<tr data-gate='{_e(gate['gate'])}'><td>{_e(gate['gate'])}</td><td>{_e(gate.get('span'))}</td>"
                        f"<td>{verdict}</td><td>{report}</td></tr>")
        body.append("</table>")
    else:
        body.append("<p>No data gate ran in this run.</p>")
    outcome = (f"pushed version {doc['pushed_version']}" if doc.get("pushed_version")
               else "blocked by a data gate" if doc.get("blocked_by") else "pushed nothing")
    body.append(f"<p>Outcome: {_e(outcome)}.</p>")
    return HTMLResponse(_page("Data gates & lineage", "".join(body)))


@app.get("/report")
def report(run: str, gate: str, _user=Depends(page_user)):
    """A gate's report file of a run; only files under the home's pipeline root are served."""
    doc = mlops("lineage", "--run", run)["run"]
    found = [g["report"] for g in doc.get("gates") or [] if g["gate"] == gate and g.get("report")]
    if not found:
        raise CliError(404, f"run {run} has no {gate} report")
    path = Path(found[-1]).resolve()
    root = (HOME / "var" / "pipeline_root").resolve()
    if root not in path.parents or not path.is_file():
        raise CliError(404, f"{path} is not a report under {root}")
    return FileResponse(path, media_type="text/html" if path.suffix == ".html" else "text/plain")


class MlopsUiPlugin(AirflowPlugin):
    name = "mlops_ui"
    fastapi_apps = [{"app": app, "url_prefix": "/mlops", "name": "mlops pages"}]
    external_views = [
        {"name": "Models", "href": "mlops/models", "destination": "nav", "url_route": "mlops-models",
         "category": "browse"},
        {"name": "Data gates & lineage", "href": "mlops/run/{DAG_ID}/{RUN_ID}", "destination": "dag_run",
         "url_route": "mlops-run"},
    ]
