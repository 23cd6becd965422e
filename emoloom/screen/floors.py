"""Floor baselines of a screen: what a candidate must beat to be worth anything.

    floors = compute_floors(train_records, {"dev": sample, "cross/dailydialog": cross}, "runs/floors")
    floors["floors"]["tfidf_lr"]["dev"]["metrics"]      # emoloom.eval.metrics.compute_metrics output
    floors["floors"]["tfidf_lr"]["dev"]["rows"]         # prediction rows, as in predictions.jsonl

* ``majority`` - the training set's most frequent label, for every row;
* ``tfidf_lr`` - TF-IDF (word 1-2 grams, min_df 2, sublinear tf) + one-vs-rest
  LogisticRegression(C=4, class_weight="balanced"); a label is predicted when its probability
  reaches one decision threshold, chosen on the training data only (out-of-fold probabilities
  of 3-fold cross-validation, so the threshold is not tuned on overconfident in-sample scores),
  else the argmax label alone (every row gets an answer, as the contract requires);
* both answer the training set's mean VAD on every row: their VAD metrics are the constant
  mean-VAD floor.

A row's floor is fit on the training records of the row's taxonomy (cross-corpus rows asked
with the training taxonomy, see `screen.sample.cross_corpus_records`, use the same fit; their Ekman
Macro-F1 projects the predictions as for a model). Rows of taxonomy "ekman" with no Ekman
training records use the training records projected onto Ekman-7.

The rows carry every field of a model's prediction row (parse_ok True, raw = the contract's
target line), so `compute_metrics`, the leaderboard's `summarize` and `eval.paired` score them
like any candidate. Rows and metrics are cached in `cache_dir` under a sha256 of the training
records, the evaluation records and the floor settings: a screen fits and scores them once.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from emoloom.atomic import atomic_write
from emoloom.contract import VAD, Record, render_target
from emoloom.labels import TAXONOMIES

__all__ = ["FLOORS", "compute_floors", "mean_vad"]

FLOORS = ("majority", "tfidf_lr")
FLOOR_VERSION = 1  # bump when a floor's predictions change for the same inputs
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
CV_FOLDS = 3
SETTINGS = {"version": FLOOR_VERSION, "tfidf": {"ngram_range": [1, 2], "min_df": 2, "sublinear_tf": True},
            "lr": {"C": 4.0, "class_weight": "balanced", "solver": "liblinear"}, "cv_folds": CV_FOLDS,
            "thresholds": THRESHOLDS.tolist()}


def mean_vad(train: Sequence[Record]) -> VAD:
    """The constant VAD floor: mean VAD of the training records that have one (gold or
    lexicon-weak), rounded like a contract answer; the midpoint when none has."""
    vads = np.array([r.vad.as_tuple() for r in train if r.vad is not None], dtype=np.float64)
    if not len(vads):
        return VAD(v=0.5, a=0.5, d=0.5)
    v, a, d = vads.mean(axis=0)
    return VAD(v=float(v), a=float(a), d=float(d)).rounded()


class _Majority:
    def fit(self, texts: list[str], labels: list[list[str]], classes: Sequence[str], seed: int) -> "_Majority":
        counts = Counter(l for ls in labels for l in ls)
        # Ties go to the taxonomy's order, so the floor does not depend on record order.
        self.label = max(classes, key=lambda c: (counts[c], -list(classes).index(c)))
        self.info: dict = {"label": self.label}
        return self

    def predict(self, texts: list[str]) -> list[list[str]]:
        return [[self.label] for _ in texts]


class _TfidfLR:
    def fit(self, texts: list[str], labels: list[list[str]], classes: Sequence[str], seed: int) -> "_TfidfLR":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.model_selection import KFold, cross_val_predict
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import MultiLabelBinarizer

        from emoloom.eval.metrics import active_labels, weighted_macro_f1

        seen = {l for ls in labels for l in ls}
        self.classes = [c for c in classes if c in seen]  # a label never seen cannot be learned
        y = MultiLabelBinarizer(classes=self.classes).fit_transform(labels)
        t = SETTINGS["tfidf"]
        self.vectorizer = TfidfVectorizer(ngram_range=tuple(t["ngram_range"]), min_df=t["min_df"],
                                          sublinear_tf=t["sublinear_tf"])
        x = self.vectorizer.fit_transform(texts)
        lr = LogisticRegression(C=SETTINGS["lr"]["C"], class_weight="balanced", solver="liblinear", random_state=seed)
        self.model = OneVsRestClassifier(lr)
        with warnings.catch_warnings():  # a label absent from a CV fold is a constant predictor there
            warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
            folds = min(CV_FOLDS, len(texts))
            if folds >= 2:
                oof = cross_val_predict(self.model, x, y, cv=KFold(folds, shuffle=True, random_state=seed),
                                        method="predict_proba")
            self.model.fit(x, y)
            if folds < 2:
                oof = self.model.predict_proba(x)
        # One threshold for all labels: the training Macro-F1 (metrics' definition) of the
        # out-of-fold decisions picks it; ties go to the lower threshold.
        scores = []
        for thr in THRESHOLDS:
            p = self._decide(oof, thr)
            act = active_labels(y, p)
            scores.append(float(weighted_macro_f1(y[:, act], p[:, act], np.ones(len(y)))[0]) if act else 0.0)
        self.threshold = float(THRESHOLDS[int(np.argmax(scores))])
        self.info = {"threshold": self.threshold, "train_macro_f1_oof": round(max(scores), 4),
                     "vocabulary": len(self.vectorizer.vocabulary_)}
        return self

    @staticmethod
    def _decide(proba: np.ndarray, threshold: float) -> np.ndarray:
        out = proba >= threshold
        none = ~out.any(axis=1)
        out[np.flatnonzero(none), proba[none].argmax(axis=1)] = True  # argmax fallback
        return out.astype(np.int64)

    def predict(self, texts: list[str]) -> list[list[str]]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
            proba = self.model.predict_proba(self.vectorizer.transform(texts))
        return [[self.classes[j] for j in np.flatnonzero(row)] for row in self._decide(proba, self.threshold)]


_MODELS = {"majority": _Majority, "tfidf_lr": _TfidfLR}


def _training_for(taxonomy: str, by_tax: Mapping[str, list[Record]]) -> list[Record]:
    if by_tax.get(taxonomy):
        return by_tax[taxonomy]
    if taxonomy == "ekman":
        from emoloom.data.base import project

        return project([r for recs in by_tax.values() for r in recs], "ekman")
    raise ValueError(f"floors: no training records of taxonomy {taxonomy!r} (training has "
                     f"{', '.join(sorted(by_tax)) or 'none'}); cannot fit a floor for its rows")


def _row(record: Record, labels: list[str], vad: VAD, floor: str) -> dict:
    from emoloom.eval.predict import gold_fields

    rationale = f"{floor} floor"
    return {
        "id": record.id, "corpus": record.corpus, "split": record.split, "taxonomy": record.taxonomy,
        "prompt_sha256": None, "truncated": False, "raw": render_target(labels, vad, rationale),
        "parse_ok": True, "labels": labels, "vad": vad.model_dump(), "rationale": rationale,
        "error": None, "detail": None, "stop": "floor", "new_tokens": 0, "forwards": 0,
        **gold_fields(record),
    }


def _fit_predict(train: Sequence[Record], evals: Mapping[str, Sequence[Record]], seed: int) -> dict:
    by_tax: dict[str, list[Record]] = defaultdict(list)
    for r in train:
        if r.labels:
            by_tax[r.taxonomy].append(r)
    vad = mean_vad(train)
    needed = sorted({r.taxonomy for recs in evals.values() for r in recs})
    rows: dict[str, dict[str, list[dict]]] = {}
    fit: dict[str, dict] = {}
    for name in FLOORS:
        started = time.perf_counter()
        models = {}
        for tax in needed:
            recs = _training_for(tax, by_tax)
            models[tax] = _MODELS[name]().fit([r.text for r in recs], [r.labels for r in recs], TAXONOMIES[tax], seed)
        rows[name] = {}
        for ev, recs in evals.items():
            recs = list(recs)
            preds: list[list[str] | None] = [None] * len(recs)
            for tax in needed:
                idx = [i for i, r in enumerate(recs) if r.taxonomy == tax]
                for i, labels in zip(idx, models[tax].predict([recs[i].text for i in idx]) if idx else []):
                    preds[i] = labels
            rows[name][ev] = [_row(r, p, vad, name) for r, p in zip(recs, preds)]
        fit[name] = {"seconds": round(time.perf_counter() - started, 3),
                     "per_taxonomy": {tax: {"train_records": len(_training_for(tax, by_tax)), **m.info}
                                      for tax, m in models.items()}}
    return {"rows": rows, "fit": fit, "mean_vad": vad.model_dump()}


def _key(train: Sequence[Record], evals: Mapping[str, Sequence[Record]], seed: int, bootstrap: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"settings": SETTINGS, "seed": seed, "bootstrap": bootstrap}, sort_keys=True).encode())
    for r in train:
        h.update(json.dumps(r.model_dump(mode="json"), sort_keys=True).encode())
    for name in sorted(evals):
        h.update(f"\x00eval:{name}\x00".encode())
        for r in evals[name]:
            h.update(json.dumps(r.model_dump(mode="json"), sort_keys=True).encode())
    return h.hexdigest()


def _read_cache(path: Path, key: str) -> dict | None:
    """The cache entry at `path` for `key`, or None when there is none to use. An entry that
    cannot be read (cut short, not ours) is said so and refitted: failing on it would fail every
    later screen on the same data."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fields = {"rows", "metrics", "mean_vad", "fit"}
        whole = isinstance(data, dict) and (data.get("key") != key or fields <= set(data))
        if not whole:
            raise ValueError("not a whole floors entry")
    except (OSError, ValueError) as exc:  # a cut file is a JSONDecodeError, bad UTF-8 a UnicodeDecodeError
        print(f"warning: floors cache {path} is unreadable ({str(exc).splitlines()[0][:200]}); fitting the floors "
              f"again", file=sys.stderr)
        return None
    return data if data.get("key") == key else None


def compute_floors(train: Sequence[Record], evals: Mapping[str, Sequence[Record]], cache_dir: str | Path, *,
                   seed: int = 0, bootstrap: int = 1000) -> dict:
    """Floors fit on `train` and scored on every evaluation set of `evals` ({name: records}).

    train: the training records (e.g. `prepared.pool_a + prepared.pool_b` of the screen's base
    training config); records without labels are ignored. Returns::

        key        sha256 of (floor settings, seed, bootstrap, training and evaluation records)
        cached     True when everything was read from cache_dir/floors-<key[:16]>.json
        path       that file
        mean_vad   {v, a, d}: the VAD every floor answers
        fit        {floor: {seconds, per_taxonomy: {taxonomy: {train_records, ...}}}} of the run
                   that computed the rows (majority: label; tfidf_lr: threshold,
                   train_macro_f1_oof, vocabulary)
        floors     {floor: {eval name: {rows, metrics}}}: prediction rows and
                   eval.metrics.compute_metrics(rows, bootstrap, seed), as a model's metrics.json
    """
    from emoloom.eval.metrics import compute_metrics

    key = _key(train, evals, seed, bootstrap)
    path = Path(cache_dir) / f"floors-{key[:16]}.json"
    data = _read_cache(path, key)
    cached = data is not None
    if not cached:
        data = {"key": key, **_fit_predict(train, evals, seed)}
        data["metrics"] = {name: {ev: compute_metrics(rows, bootstrap=bootstrap, seed=seed) for ev, rows in per.items()}
                           for name, per in data["rows"].items()}
        with atomic_write(path) as f:  # concurrent screens never read half a file
            f.write(json.dumps(data, ensure_ascii=False))
    floors = {name: {ev: {"rows": rows, "metrics": data["metrics"][name][ev]} for ev, rows in per.items()}
              for name, per in data["rows"].items()}
    return {"key": key, "cached": cached, "path": str(path), "mean_vad": data["mean_vad"], "fit": data["fit"],
            "floors": floors}
