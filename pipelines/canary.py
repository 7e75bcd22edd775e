"""Deciding a canary (serving/canary.py): promote it, or roll it back through the audited rollback.

`check` reads the open window, waits out the soak period, then compares the canary's error rate and
p99 latency with stable's from the model server's own /monitoring/prometheus/metrics (request counts
and latency histograms by model version, serving/metrics.py; counted since the server started):

- the canary answered fewer than `min_requests` requests: no decision yet (the window stays open);
- error rate above stable's + `error_margin` (absolute), or p99 above stable's x (1 + `latency_margin`):
  rolled back by pipelines/rollback.py (trigger `canary`), a push of stable's model recorded in ML
  Metadata with the reason, e.g. "canary error rate 12.0% vs stable 0.0%";
- otherwise promoted: `stable` moves to the canary's version, recorded in ML Metadata as a PushedModel
  of kind `promotion` (no bytes copied: it names the version that now serves).

`mlops rollback` during an open window ends it through the same rollback (rollback_during_window:
trigger `manual` or `alert`, the operator's reason), so an alert on a bad canary rolls it back.

Errors are the inference answers (predict, classify, regress) with a status outside 2xx; both
versions see the same clients, so the clients' own mistakes weigh on both alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from pipelines.errors import ConfigError

INFERENCE = ("predict", "classify", "regress")
PROMOTION_KIND = "promotion"
PROMOTION_EXECUTION = "mlops.CanaryPromotion"


@dataclasses.dataclass(frozen=True)
class VersionStats:
    version: int
    requests: int = 0
    errors: int = 0
    p99_seconds: Optional[float] = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def describe(self) -> str:
        p99 = f"{self.p99_seconds * 1000:.1f} ms" if self.p99_seconds is not None else "n/a"
        return f"{self.requests} requests, {self.error_rate:.1%} errors, p99 {p99}"


def histogram_quantile(q: float, buckets: List[Tuple[float, float]]) -> Optional[float]:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets (linear within a bucket)."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # beyond the largest finite bucket: its bound, as Prometheus answers
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def parse_stats(text: str, model: str) -> Dict[int, VersionStats]:
    """Per-version inference requests, errors and p99 from the server's Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    requests: Dict[int, int] = {}
    errors: Dict[int, int] = {}
    buckets: Dict[int, Dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model or labels.get("method") not in INFERENCE or not labels.get("version", "").isdigit():
                continue
            version = int(labels["version"])
            if sample.name == "mlops_serving_requests_total":
                requests[version] = requests.get(version, 0) + int(sample.value)
                if not labels.get("code", "").startswith("2"):
                    errors[version] = errors.get(version, 0) + int(sample.value)
            elif sample.name == "mlops_serving_request_latency_seconds_bucket":
                bound = float(labels["le"])
                per = buckets.setdefault(version, {})
                per[bound] = per.get(bound, 0.0) + sample.value
    return {v: VersionStats(v, requests.get(v, 0), errors.get(v, 0),
                            histogram_quantile(0.99, list(buckets.get(v, {}).items())))
            for v in set(requests) | set(buckets)}


def fetch_stats(server_url: str, model: str, timeout: float = 5.0) -> Dict[int, VersionStats]:
    url = f"{server_url.rstrip('/')}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 -- the home's own server
        return parse_stats(response.read().decode("utf-8"), model)


def compare(stable: VersionStats, canary: VersionStats, settings) -> Tuple[str, str]:
    """("promote" | "rollback" | "wait", why)."""
    both = (f"canary (version {canary.version}): {canary.describe()}; "
            f"stable (version {stable.version}): {stable.describe()}")
    if canary.requests < settings.min_requests:
        return "wait", f"the canary answered {canary.requests} requests, fewer than the {settings.min_requests} " \
                       f"needed to judge it; {both}"
    if canary.error_rate > stable.error_rate + settings.error_margin:
        return "rollback", (f"canary error rate {canary.error_rate:.1%} vs stable {stable.error_rate:.1%} "
                            f"(margin {settings.error_margin:.1%}; {canary.errors} of {canary.requests} canary "
                            f"requests failed)")
    if (stable.p99_seconds is not None and canary.p99_seconds is not None
            and canary.p99_seconds > stable.p99_seconds * (1.0 + settings.latency_margin)):
        return "rollback", (f"canary p99 latency {canary.p99_seconds * 1000:.1f} ms vs stable "
                            f"{stable.p99_seconds * 1000:.1f} ms (margin +{settings.latency_margin:.0%})")
    return "promote", f"no worse than stable: {both}"


@dataclasses.dataclass
class CanaryState:
    """What `mlops models canary status|check` know about one model's canary."""

    model: str
    config_path: Path
    window: Optional[object]  # serving.canary.Window
    settings: object  # serving.canary.Settings
    server_url: Optional[str] = None
    stats: Dict[int, VersionStats] = dataclasses.field(default_factory=dict)
    server_error: str = ""

    def comparison(self) -> Optional[Tuple[str, str]]:
        w = self.window
        if w is None or w.canary is None or not self.server_url or self.server_error:
            return None
        return compare(self.stats.get(w.stable, VersionStats(w.stable)), self.stats.get(w.canary, VersionStats(w.canary)),
                       self.settings)

    def as_dict(self) -> dict:
        w = self.window
        verdict = self.comparison()
        return {"model": self.model, "models_config": str(self.config_path), "settings": dataclasses.asdict(self.settings),
                "window": w.as_dict() if w is not None else None,
                "soak_seconds_left": round(w.soak_left(), 1) if w is not None else None,
                "server": self.server_url, "server_error": self.server_error,
                "versions": {str(v): dataclasses.asdict(s) | {"error_rate": s.error_rate} for v, s in self.stats.items()},
                "verdict": verdict[0] if verdict else None, "why": verdict[1] if verdict else None}


def read_state(home: Path, base: Path, model: str, server_url: Optional[str] = None) -> CanaryState:
    from serving import canary
    from serving.home import model_server_for

    config_path = canary.home_config_path(home)
    path = canary.state_path(config_path)
    state = CanaryState(model, config_path, canary.windows(path).get(model), canary.load_settings(path))
    if state.window is None or state.window.canary is None:
        return state
    if server_url is None:
        found, why = model_server_for(home, base)
        server_url = found.rest_url if found else None
        state.server_error = "" if found else why
    state.server_url = server_url
    if server_url:
        try:
            state.stats = fetch_stats(server_url, model)
        except (OSError, ValueError) as err:
            state.server_error = f"cannot read {server_url}/monitoring/prometheus/metrics: {err}"
    return state


def record_promotion(config, window, reason: str, requested_by: str) -> int:
    """A PushedModel of kind `promotion` (pushed_version = the canary's) made by a `mlops.CanaryPromotion`
    execution whose input is the canary's own push: `mlops models list` and the lineage show it."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    from pipelines.rollback import list_pushes
    from serving.versions import model_fingerprint

    connection = config.metadata.to_proto()
    store = metadata_store.MetadataStore(connection)
    pushed = [p for p in list_pushes(connection) if p.version == window.canary and p.kind != PROMOTION_KIND]
    source = pushed[-1] if pushed else None
    base = Path(config.serving_model_dir)
    try:
        type_id = store.get_artifact_type("PushedModel").id
    except Exception:  # noqa: BLE001 -- NotFoundError: no push was ever recorded here
        type_id = store.put_artifact_type(pb.ArtifactType(name="PushedModel"))
    stamp = dt.datetime.now(dt.timezone.utc)
    artifact = pb.Artifact(type_id=type_id, state=pb.Artifact.LIVE,
                           uri=str(Path(config.pipeline_root) / "canary" / f"promotion-{stamp:%Y%m%dT%H%M%S%f}"))
    fingerprint = source.fingerprint if source else model_fingerprint(base / str(window.canary))
    for key, value in (("pushed", 1), ("pushed_version", window.canary), ("replaced_version", window.stable),
                       ("source_model_id", source.model_id if source else 0)):
        artifact.custom_properties[key].int_value = int(value)
    for key, value in (("push_kind", PROMOTION_KIND), ("reason", reason), ("requested_by", requested_by),
                       ("pushed_at", stamp.isoformat()), ("model_fingerprint", fingerprint),
                       ("pushed_destination", str(base)), ("canary_share", f"{window.share:g}")):
        artifact.custom_properties[key].string_value = value
    exec_type = store.put_execution_type(pb.ExecutionType(name=PROMOTION_EXECUTION))
    execution = pb.Execution(type_id=exec_type, last_known_state=pb.Execution.COMPLETE)
    execution.custom_properties["reason"].string_value = reason
    execution.custom_properties["requested_by"].string_value = requested_by
    out = pb.Event(type=pb.Event.OUTPUT)
    out.path.steps.add().key = "pushed_model"
    out.path.steps.add().index = 0
    pairs = [(artifact, out)]
    if source is not None and source.artifact_id:
        inp = pb.Event(type=pb.Event.INPUT)
        inp.path.steps.add().key = "canary_push"
        inp.path.steps.add().index = 0
        pairs.append((store.get_artifacts_by_id([source.artifact_id])[0], inp))
    contexts = []
    try:
        context = store.get_context_by_type_and_name("pipeline", config.pipeline_name)
        if context is not None:
            contexts.append(context)
    except Exception:  # noqa: BLE001 -- no pipeline context type yet
        pass
    _, artifact_ids, _ = store.put_execution(execution, pairs, contexts)
    return artifact_ids[0]


@dataclasses.dataclass
class Decision:
    verdict: str  # "promote", "rollback", "wait", "soaking", "none"
    why: str
    version: Optional[int] = None  # the version serving as stable afterwards
    artifact_id: Optional[int] = None  # the promotion's PushedModel, or the rollback's push
    run_id: str = ""


def check(config, home: Path, server_url: Optional[str] = None, force: bool = False,
          requested_by: Optional[str] = None, progress: Callable[[str], None] = print) -> Decision:
    """Decides the open canary of the home's model when its soak period is over (`force`: now)."""
    from serving import canary

    base = Path(config.serving_model_dir)
    model = base.name
    state = read_state(home, base, model, server_url)
    window = state.window
    requested_by = requested_by or f"canary check ({getpass.getuser()})"
    if window is None:
        return Decision("none", f"no canary window is open for model {model} ({state.config_path.parent / canary.FILE_NAME})")
    if window.canary is None:
        return Decision("wait", "the canary's version is still being pushed")
    left = window.soak_left()
    if left > 0 and not force:
        return Decision("soaking", f"{left:.0f}s of the soak period left")
    if not state.server_url or state.server_error:
        raise ConfigError(f"cannot judge the canary: {state.server_error or 'no model server'}",
                          "start the home's model server (`make up` or `mlops serve`), or name one with --server URL")
    verdict, why = state.comparison()
    if verdict == "wait":
        return Decision("wait", why)
    if verdict == "promote":
        canary.promote(home, base, window, state.config_path)
        reason = f"canary promoted after {time.time() - window.started_at:.0f}s at {window.share:.0%}: {why}"
        artifact_id = record_promotion(config, window, reason, requested_by)
        progress(f"promoted: version {window.canary} is stable now (was {window.stable}); {why}")
        return Decision("promote", reason, window.canary, artifact_id)
    return _roll_back(config, home, base, window, state, why, requested_by, progress)


def _roll_back(config, home, base, window, state, why: str, requested_by: str, progress) -> Decision:
    return roll_back_window(config, home, base, window, state.config_path, state.server_url, why, requested_by,
                            "canary", progress)[0]


def roll_back_window(config, home, base, window, config_path: Path, server_url: Optional[str], reason: str,
                     requested_by: str, trigger: str, progress, to_version: Optional[int] = None,
                     force: bool = False):
    """Ends an open window by the audited rollback: the requests that name no version go to stable at
    once, the Pusher pushes the model of `to_version` (default: stable's) again as a new version, that
    loads beside the others, then it becomes `stable` and the policy before the canary comes back.
    Returns (Decision, the RollbackResult or None when nothing was pushed). The canary check (trigger
    `canary`) and `mlops rollback` during a window (`manual`, `alert`: rollback_during_window) share it."""
    from pipelines.rollback import AlreadyServing, rollback
    from serving import canary
    from serving.retention import served_versions

    progress(f"rolling back the canary (version {window.canary}): {reason}")
    canary.stop_canary_traffic(home, base, window, config_path)  # stable answers everything from now on
    target = window.stable if to_version is None else to_version
    try:
        result = rollback(config, target, reason, requested_by=requested_by, progress=progress, trigger=trigger,
                          force=force)
    except AlreadyServing:  # the canary's bytes are stable's: nothing to push, the label move is enough
        canary.finish_rollback(home, base, window, window.stable, config_path)
        return Decision("rollback", reason, window.stable), None
    version = result.new_version
    canary.load_alongside(home, base, window, version, config_path)
    deadline = time.monotonic() + 120.0
    while server_url and time.monotonic() < deadline:
        try:
            if version in served_versions(server_url, window.model):
                break
        except (OSError, ValueError):
            pass  # restarting: ask again
        time.sleep(0.2)
    canary.finish_rollback(home, base, window, version, config_path)
    progress(f"rolled back: version {version} (model of version {target}) is stable now; the canary "
             f"(version {window.canary}) is no longer served")
    from pipelines.rollback import list_pushes

    pushed = [p for p in list_pushes(config.metadata.to_proto()) if p.version == version]
    return Decision("rollback", reason, version, pushed[-1].artifact_id if pushed else None, result.run_id), result


def rollback_during_window(config, home: Path, to_version: Optional[int], reason: str, requested_by: str,
                           trigger: str = "manual", only_if_serving: Optional[int] = None,
                           server_url: Optional[str] = None, force: bool = False, progress=print):
    """`mlops rollback` while a canary window is open for the home's model: None when none is open.

    - `--previous` (to_version None) or `--to <stable>`: the window ends by rolling the canary back
      (roll_back_window, the canary check's path): stable's model is pushed again and serves everything.
    - `--to V`, another pushed version: the window ends the same way, with V's model pushed instead.
    - `--to <canary>` is refused (a rollback does not promote: `mlops models canary check --now` does).
    - `--only-if-serving V`: the canary's version rolls back; stable's is refused (rolling the canary
      back would leave that version serving everything); any other raises NoLongerServed.
    Returns (Decision, RollbackResult or None); raises ConfigError before touching anything when refused."""
    from pipelines.rollback import NoLongerServed, list_pushes, was_blessed
    from serving import canary

    base = Path(config.serving_model_dir)
    config_path = canary.home_config_path(home)
    window = canary.windows(canary.state_path(config_path)).get(base.name)
    if window is None:
        return None
    if not reason or not reason.strip():
        raise ConfigError("a rollback needs a reason", 'pass --reason "why the served model is bad"')
    where = f"{canary.state_path(config_path)}"
    if window.canary is None:
        raise ConfigError(f"a canary push of model {window.model} is under way ({where} records its window, the new "
                          "version is not published yet)", "roll back again in a minute, once the push is done")
    stable, canary_version = window.stable, window.canary
    if only_if_serving is not None and only_if_serving != canary_version:
        if only_if_serving == stable:
            raise ConfigError(
                f"version {stable} is the stable version of an open canary window (canary: version "
                f"{canary_version}, {where}); rolling the canary back would leave version {stable} serving every request",
                f"end the window first: `mlops models canary check --now` (promotes version {canary_version} when it is "
                f"no worse), or serve an earlier model at once: `mlops rollback --to VERSION`")
        raise NoLongerServed(only_if_serving, canary_version)
    target = stable if to_version is None else to_version
    pushes = list_pushes(config.metadata.to_proto())
    match = [p for p in pushes if p.version == target]
    canary_push = [p for p in pushes if p.version == canary_version]
    if target == canary_version or (match and canary_push and match[0].fingerprint == canary_push[-1].fingerprint
                                    and target != stable):
        raise ConfigError(
            f"version {target} {'is' if target == canary_version else 'has the model of'} the canary of the open window "
            f"(stable: version {stable}, {where}): a rollback does not promote a canary",
            f"`mlops models canary check --now` promotes it when it is no worse than stable; `mlops rollback --to "
            f"{stable}` (or --previous) ends the window keeping version {stable}")
    if target != stable:
        if not match:
            known = ", ".join(str(p.version) for p in pushes)
            raise ConfigError(f"no pushed version {target}", f"pick one of the pushed versions: {known}")
        if not force and not was_blessed(config.metadata.to_proto(), match[0].model_id):
            raise ConfigError(f"model {match[0].model_id} (version {target}) was never blessed by the Evaluator",
                              "pick a blessed version (`mlops models list`) or pass --force to push it anyway")
    why = reason.strip()
    if trigger == "alert":
        progress(f"rollback triggered by an alert during the canary window of version {canary_version}, "
                 f"requested by {requested_by}: {why}")
    return roll_back_window(config, home, base, window, config_path, server_url, why, requested_by, trigger,
                            progress, to_version=target, force=force)
