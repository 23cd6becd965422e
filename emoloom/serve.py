"""The screen's winner as an MLflow model a user can load and serve.

`log_candidate` packages a trial's LoRA adapter, a reference to its base model (a built-in name is
rebuilt offline and deterministically into EMOLOOM_CACHE on first load; a hub id or folder is
loaded as training loaded it) and the screen's decoder settings as an `mlflow.pyfunc` model in the
trial's run (artifact `model/`). Its `predict` takes records (`id`, `text`, optional `taxonomy`,
default goemotions, and `context`) and returns the contract's parsed answers, one row each:

    mlflow.pyfunc.load_model("models:/emoloom-best@best").predict([{"id": "1", "text": "I passed!"}])
    mlflow models serve -m models:/emoloom-best@best --env-manager local --host 127.0.0.1
"""
from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

MODEL_ARTIFACT = "model"
ANSWER_KEYS = ("id", "parse_ok", "labels", "vad", "rationale", "error", "raw", "truncated")


class EmoLoomModel(mlflow.pyfunc.PythonModel):
    """Base model + adapter + decoder settings; KV-off decoding as in the screen's evaluation."""

    def load_context(self, context) -> None:
        from emoloom.eval.predict import Predictor
        from emoloom.eval.run import load_candidate
        from emoloom.models import ModelSpec

        settings = json.loads(Path(context.artifacts["settings"]).read_text())
        self.settings = settings
        candidate = load_candidate(ModelSpec(**settings["model"]), context.artifacts["adapter"])
        d = settings["decoder"]
        self.predictor = Predictor(candidate, d["name"], d["max_new_tokens"], d["batch_size"])

    # Annotated as what pyfunc hands over (a DataFrame under the explicit signature); without a
    # hint MLflow warns at every import of this module, and a list hint would make it convert.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        from emoloom.contract import Record

        rows = records_of(model_input)
        records = [Record.model_validate({"taxonomy": "goemotions", "split": "predict", **row}) for row in rows]
        answers = self.predictor.predict(records) if records else []
        return pd.DataFrame([{k: a[k] for k in ANSWER_KEYS} for a in answers], columns=list(ANSWER_KEYS))


def records_of(model_input: Any) -> list[dict]:
    """A DataFrame (what `mlflow models serve` hands over), a list of dicts, or one dict; only the
    record's fields, without the NaN a DataFrame puts in missing cells."""
    import math

    if hasattr(model_input, "to_dict"):
        model_input = model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        model_input = [model_input]
    fields = ("id", "text", "taxonomy", "context")
    out = []
    for row in model_input:
        rec = {k: v for k, v in dict(row).items() if k in fields
               and v is not None and not (isinstance(v, float) and math.isnan(v))}
        if "context" in rec:
            rec["context"] = list(rec["context"])
        out.append(rec)
    return out


def save_candidate(path: str | Path, model: dict, adapter: str | Path, decoder: dict) -> Path:
    """Write the pyfunc model folder: settings.json (base model reference, decoder settings),
    the adapter, and the emoloom package as code (its loader lives there)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from emoloom.versions import package_versions

    path = Path(path)
    work = Path(tempfile.mkdtemp(prefix="emoloom-pyfunc-"))
    settings = work / "settings.json"
    settings.write_text(json.dumps({"model": model, "decoder": decoder}, indent=1))
    versions = package_versions()
    # Explicit requirements: inferring them would load the model once more in a subprocess.
    reqs = [f"{p}=={versions[p]}" for p in ("torch", "transformers", "peft", "tokenizers", "mlflow", "pydantic")
            if versions.get(p)]
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "id"), ColSpec("string", "text"), ColSpec("string", "taxonomy", required=False)]))
    # The signature is explicit and predict validates its own records; MLflow's advice on input
    # examples, type hints and pickling (three warnings per registration) does not apply here.
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pyfunc_log.setLevel(logging.ERROR)
        try:
            mlflow.pyfunc.save_model(
                path=str(path), python_model=EmoLoomModel(),
                artifacts={"settings": str(settings), "adapter": str(adapter)},
                code_paths=[str(Path(__file__).resolve().parent)], pip_requirements=reqs, signature=signature,
                metadata={"emoloom.base_model": model.get("name"), "emoloom.decoder": decoder.get("name")})
        finally:
            pyfunc_log.setLevel(level)
    return path


def log_candidate(c, run_id: str, decoder: dict) -> str:
    """Package run `run_id`'s adapter and base model (its config.yaml) with `decoder` settings as
    artifact `model/` of that run; a run that has it already keeps it (idempotent). The artifact
    path, for a model version's source."""
    import yaml

    if any(f.path == MODEL_ARTIFACT for f in c.list_artifacts(run_id)):
        return MODEL_ARTIFACT
    with tempfile.TemporaryDirectory(prefix="emoloom-serve-") as tmp:
        adapter = c.download_artifacts(run_id, "adapter", tmp)
        config = yaml.safe_load(Path(c.download_artifacts(run_id, "config.yaml", tmp)).read_text())
        folder = save_candidate(Path(tmp) / MODEL_ARTIFACT, config["model"], adapter, decoder)
        c.log_artifacts(run_id, str(folder), artifact_path=MODEL_ARTIFACT)
    return MODEL_ARTIFACT
