"""MLflow bookkeeping of a screen: one parent run per screen, one child run per trial.

Runs are found again by tags (`emoloom.screen_hash`, `emoloom.trial_key`), which is what makes a
resumed screen continue its runs instead of duplicating them; `emoloom.journal` records every
run locally first and replays it here. Everything goes through
`MlflowClient` with an explicit tracking URI: Tune changes each trial's working directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable


SCREEN_TAG = "emoloom.screen_hash"
TRIAL_TAG = "emoloom.trial_key"
ROLE_TAG = "emoloom.role"  # "screen" (parent run) or "trial" (child run)
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_CHARS = 500  # MLflow caps param values
# MLflow 3's UI picks an experiment's view from this tag; without it a screen may open on the
# GenAI traces page instead of its runs.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # a run's Description in the UI (markdown)
NOTE_CHARS = 5000  # what a journal keeps of a tag value


def default_tracking_uri(storage: str | Path) -> str:
    return "sqlite:///" + str((Path(storage) / "mlflow.db").resolve())


def resolve_tracking_uri(configured: str | None, storage: str | Path) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(storage)


def client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_reachable(uri: str, timeout_s: int = 10) -> None:
    """Fail before any training when a remote tracking server does not answer."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        raise RuntimeError(
            f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}: {exc}). Start it "
            f"(mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000), fix "
            f"mlflow.tracking_uri / MLFLOW_TRACKING_URI, or leave both unset for a local sqlite store."
        ) from None


def ensure_experiment(c, name: str, artifact_location: str | Path | None = None) -> str:
    """The experiment's id, created when missing. For a local store pass `artifact_location`:
    MLflow's default is ./mlruns of whatever the working directory happens to be."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        if KIND_TAG not in exp.tags:  # an experiment made before the tag (or by hand); a user's choice stays
            c.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id
    location = Path(artifact_location).resolve().as_uri() if artifact_location else None
    return c.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND})


def find_run(c, experiment_id: str, **tags: str):
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = c.search_runs([experiment_id], filter_string=query, max_results=1,
                         order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def set_tags(c, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    c.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


def log_files(c, run_id: str, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
    for p in map(Path, paths):
        if p.is_dir():
            c.log_artifacts(run_id, str(p), artifact_path=(artifact_path + "/" if artifact_path else "") + p.name)
        elif p.exists():
            c.log_artifact(run_id, str(p), artifact_path=artifact_path)


def finish(c, run_id: str, status: str = "FINISHED", reason: str | None = None,
           end_time: int | None = None) -> None:
    if reason:
        set_tags(c, run_id, {"emoloom.failure": reason})
    c.set_terminated(run_id, status=status, end_time=end_time)


def child_runs(c, experiment_id: str, parent_run_id: str) -> list:
    return c.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                         max_results=1000, order_by=["attributes.start_time ASC"])


def register_best(c, run_id: str, model_name: str, artifact: str = "model") -> str:
    """Register artifact `artifact` of the best trial's run (the pyfunc model emoloom.serve logs)
    as a model version and point alias `best` at it."""
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(model_name)
    except MlflowException:
        pass  # exists already
    # Idempotent: a screen run again (or replayed after an outage) keeps its one version.
    existing = c.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
    else:
        source = f"{c.get_run(run_id).info.artifact_uri}/{artifact}"
        version = c.create_model_version(model_name, source=source, run_id=run_id)
    c.set_registered_model_alias(model_name, "best", version.version)
    return str(version.version)
