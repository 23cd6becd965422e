"""A run's journal: what a screen tells MLflow, written to a local file first.

Every param, metric, tag, artifact and end status of a run is appended to `journal.json` (written
atomically) before MLflow is told, and marked `done` once MLflow took it. A tracking outage
therefore never loses a result: the operations still pending are replayed on the next sync (the
run's own next call, the screen's end, or a resumed screen), and the journal's `view` (the run's
params, latest metrics, tags and status) lets the screen rank its trials while MLflow is away.

After one failure a journal stops calling MLflow for `retry_after_s` seconds, so a trial in an
outage pays the client's retry budget once, not at every call.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from emoloom import tracking
from emoloom.atomic import atomic_write
from emoloom.config import flatten

JOURNAL = "journal.json"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class RejectedRecord(ValueError):
    """MLflow will never take this record (e.g. a param changed value): kept, not retried."""


def plain_reason(exc: BaseException, limit: int = 1500) -> str:
    """`Type: message` of the trial's own exception, plus the exception that started it (its
    innermost `__cause__`) when that is another one, without terminal colour codes.

    Ray wraps a trial's exception (RayTaskError, TuneError: the original on `.cause`) and prints a
    coloured traceback; the reader of a leaderboard wants the trial's error and its cause."""
    seen = set()
    while isinstance(getattr(exc, "cause", None), BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.cause
    root = exc
    while isinstance(root.__cause__, BaseException) and id(root) not in seen:
        seen.add(id(root))
        root = root.__cause__
    text = f"{type(exc).__name__}: {exc}"
    if root is not exc:
        text += f" (caused by {type(root).__name__}: {root})"
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


class RunJournal:
    """The local record of one MLflow run (a screen's parent run or one trial's run)."""

    def __init__(self, path: str | Path, *, uri: str, experiment_id: str, run_name: str,
                 key_tags: dict[str, str], tags: dict[str, str] | None = None,
                 retry_after_s: float = 30.0, autosync: bool = True, log=None):
        self.path = Path(path)
        self.autosync = autosync  # False: record only; a later sync() hands MLflow everything
        self.retry_after_s = retry_after_s
        self._log = log or _warn
        self._failed_at: float | None = None
        self._client = None
        self.uri = uri
        if self.path.exists():
            self.state = json.loads(self.path.read_text())
            self.state["uri"], self.state["experiment_id"] = uri, experiment_id
        else:
            self.state = {"uri": uri, "experiment_id": experiment_id, "run_name": run_name,
                          "key_tags": key_tags, "tags": tags or {}, "run_id": None, "ops": [],
                          "view": {"params": {}, "metrics": {}, "tags": {**(tags or {}), **key_tags},
                                   "status": "RUNNING"},
                          "last_error": None}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._save()

    def __getstate__(self):  # picklable for Ray Train workers: no client, no open connections
        return {**self.__dict__, "_client": None}

    @classmethod
    def load(cls, path: str | Path, uri: str | None = None, **kw) -> "RunJournal":
        """An existing journal (its own tracking URI unless `uri` replaces it)."""
        state = json.loads(Path(path).read_text())
        return cls(path, uri=uri or state["uri"], experiment_id=state["experiment_id"],
                   run_name=state["run_name"], key_tags=state["key_tags"], **kw)

    # -- what callers see ------------------------------------------------------------------
    @property
    def view(self) -> dict[str, Any]:
        return self.state["view"]

    @property
    def run_id(self) -> str | None:
        return self.state["run_id"]

    @property
    def pending(self) -> int:
        return sum(not op["done"] for op in self.state["ops"])

    @property
    def status(self) -> str:
        return self.view["status"]

    # -- recording -------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        self._reload()
        flat = {k: str(v)[: tracking.MAX_PARAM_CHARS] for k, v in flatten(params).items()}
        new = {k: v for k, v in flat.items() if k not in self.view["params"]}
        if new:
            self.view["params"].update(new)
            self._record({"op": "params", "params": new})

    def log_metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        self._reload()
        values = {k: float(v) for k, v in flatten(metrics).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if values:
            self.view["metrics"].update(values)
            self._record({"op": "metrics", "metrics": values, "step": int(step),
                          "timestamp": int(time.time() * 1000)})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._reload()
        values = {k: str(v)[:5000] for k, v in tags.items()}
        self.view["tags"].update(values)
        self._record({"op": "tags", "tags": values})

    def log_files(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        self._reload()
        files = [str(Path(p).resolve()) for p in paths if Path(p).exists()]
        if files:
            self.view.setdefault("artifacts", []).extend(
                f"{artifact_path}/{Path(p).name}" if artifact_path else Path(p).name for p in files)
            self._record({"op": "files", "paths": files, "artifact_path": artifact_path})

    def finish(self, status: str = "FINISHED", reason: str | None = None,
               end_time: int | None = None) -> None:
        """End the run: MLflow status FINISHED, FAILED or KILLED (with `reason` as a tag), at
        `end_time` (ms since the epoch) when the run really ended earlier than now."""
        self._reload()
        if reason:
            self.view["tags"]["emoloom.failure"] = reason
        self.view["status"] = status
        self._record({"op": "end", "status": status, "reason": reason, "end_time": end_time})

    @property
    def last_logged(self) -> int | None:
        """When the run last logged a metric (ms since the epoch), from the journal itself."""
        times = [op["timestamp"] for op in self.state["ops"] if op["op"] == "metrics"]
        return max(times) if times else None

    def reopen(self) -> None:
        """A resumed run: RUNNING again until it ends anew."""
        self._reload()
        if self.view["status"] != "RUNNING":
            self.view["status"] = "RUNNING"
            self._record({"op": "reopen"})

    def _reload(self) -> None:
        """Read the file again: a Ray Train rank-0 worker on this node may have written it."""
        if self.path.exists():
            state = json.loads(self.path.read_text())
            self.state = {**state, "uri": self.state["uri"], "experiment_id": self.state["experiment_id"]}

    def _record(self, op: dict) -> None:
        op["done"] = False
        self.state["ops"].append(op)
        self._save()
        if self.autosync:
            self.sync()

    def _save(self) -> None:
        # json allows NaN/inf for metrics; the journal is read back by Python only.
        with atomic_write(self.path) as f:
            f.write(json.dumps(self.state, indent=1))

    # -- replay ----------------------------------------------------------------------------
    def sync(self, force: bool = False) -> bool:
        """Send every pending operation to MLflow, in order; True when nothing is left pending.

        Never raises for a tracking failure: it is recorded (`last_error`), warned about once
        per outage, and retried on a later sync."""
        if not self.pending and self.run_id:
            return True
        if (not force and self._failed_at is not None
                and time.monotonic() - self._failed_at < self.retry_after_s):
            return False
        try:
            c = self._client or tracking.client(self.uri)
            self._client = c
            self._ensure_run(c)
            for op in self.state["ops"]:
                if not op["done"]:
                    try:
                        self._apply(c, op)
                    except RejectedRecord as exc:
                        op["error"] = str(exc)
                        self._log(f"warning: {self.path}: {exc}; kept in the journal only")
                    op["done"] = True
                    self._save()
        except Exception as exc:  # noqa: BLE001 - any tracking failure: keep it for later
            reason = plain_reason(exc, 500)
            if self._failed_at is None:
                self._log(f"warning: MLflow did not take run {self.state['run_name']} ({reason}); "
                          f"kept in {self.path}, replayed when MLflow answers again")
            self._failed_at = time.monotonic()
            self.state["last_error"] = reason
            self._save()
            return False
        if self._failed_at is not None or self.state["last_error"]:
            self._log(f"MLflow took the pending records of run {self.state['run_name']} again")
        self._failed_at = None
        self.state["last_error"] = None
        self._save()
        return True

    def _ensure_run(self, c) -> None:
        if self.run_id:
            return
        run = tracking.find_run(c, self.state["experiment_id"], **self.state["key_tags"])
        if run is None:
            run = c.create_run(self.state["experiment_id"], run_name=self.state["run_name"],
                               tags={**self.state["tags"], **self.state["key_tags"]})
        self.state["run_id"] = run.info.run_id
        self._save()

    def _apply(self, c, op: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id, kind = self.run_id, op["op"]
        if kind == "params":
            existing = c.get_run(run_id).data.params
            items = []
            for k, v in op["params"].items():
                if k in existing and existing[k] != v:
                    # Params are immutable in MLflow; a resumed trial must not change them.
                    raise RejectedRecord(f"param {k} of run {run_id} was {existing[k]!r}, now {v!r}")
                if k not in existing:
                    items.append(Param(k, v))
            for i in range(0, len(items), 100):
                c.log_batch(run_id, params=items[i:i + 100])
        elif kind == "metrics":
            items = [Metric(k, v, op["timestamp"], op["step"]) for k, v in op["metrics"].items()]
            for i in range(0, len(items), 500):
                c.log_batch(run_id, metrics=items[i:i + 500])
        elif kind == "tags":
            c.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
        elif kind == "files":
            tracking.log_files(c, run_id, op["paths"], op["artifact_path"])
        elif kind == "reopen":
            c.update_run(run_id, status="RUNNING")
        elif kind == "end":
            tracking.finish(c, run_id, op["status"], reason=op["reason"], end_time=op.get("end_time"))
        else:
            raise ValueError(f"{self.path}: unknown journal operation {kind!r}")


def journals(folder: str | Path) -> list[Path]:
    """The journals of a screen's trials (trial_<id>/) and floors (floor_<name>/), in folder order."""
    return sorted(Path(folder).glob(f"*/{JOURNAL}"))
