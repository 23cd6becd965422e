"""External appraisal guidance: a small classifier OUTSIDE the LM that scores four appraisals.

Dimensions (each in [0, 1]), after cognitive appraisal theory (Smith & Ellsworth; Scherer):

* goal_attainment  -- the event helps (1) or blocks (0) what the person wants;
* controllability  -- the person (or someone they can act on) can influence the outcome (1) or not (0);
* certainty        -- the situation and its outcome are clear (1) or open / not understood (0);
* fairness         -- the event is just and follows norms (1) or violates them (0).

`PROTOTYPES` gives, for every label of the GoEmotions, EmpatheticDialogues and DailyDialog
taxonomies (Ekman labels share these names), the typical appraisal of that emotion: values written
for this project from the usual appraisal profiles (anger: goal blocked, other-caused, fairly
certain, unfair; fear: goal blocked, low control, uncertain; pride: goal attained, self-caused,
certain; ...). A record's prototype is the mean over its gold labels.

The classifier is a ridge regression (scikit-learn) from text features to the prototype of the
record's labels, fitted on the training records of a run:

* TextBlob polarity (-1..1) and subjectivity (0..1) of the text (`TextBlob(text).sentiment`, which
  works offline; tokenisation-based TextBlob features need NLTK corpora and are not used);
* the lexicon's mean VAD of the text (negation applied) and whether any word matched;
* negation, question and exclamation marks;
* hashed word unigrams and bigrams (2**12 buckets), so it can pick up cue words the lexicon lacks.

Its predictions (clipped to [0, 1]) on every training record, gold or augmented, are the targets
the LM's appraisal head is pulled toward during training. Nothing of this goes into the prompt and
the classifier is not needed at inference.
"""
from __future__ import annotations

import re
from functools import lru_cache
from types import MappingProxyType
from typing import Sequence

import numpy as np

DIMENSIONS = ("goal_attainment", "controllability", "certainty", "fairness")

# label -> (goal_attainment, controllability, certainty, fairness)
PROTOTYPES = MappingProxyType({
    # GoEmotions
    "admiration": (0.80, 0.55, 0.75, 0.90), "amusement": (0.75, 0.60, 0.70, 0.70),
    "anger": (0.15, 0.65, 0.80, 0.10), "annoyance": (0.25, 0.55, 0.70, 0.25),
    "approval": (0.75, 0.60, 0.75, 0.85), "caring": (0.60, 0.60, 0.60, 0.80),
    "confusion": (0.40, 0.30, 0.10, 0.50), "curiosity": (0.60, 0.55, 0.20, 0.60),
    "desire": (0.40, 0.45, 0.40, 0.60), "disappointment": (0.15, 0.30, 0.80, 0.35),
    "disapproval": (0.25, 0.55, 0.75, 0.15), "disgust": (0.15, 0.45, 0.75, 0.15),
    "embarrassment": (0.20, 0.25, 0.70, 0.45), "excitement": (0.85, 0.55, 0.45, 0.70),
    "fear": (0.15, 0.15, 0.15, 0.35), "gratitude": (0.85, 0.40, 0.80, 0.90),
    "grief": (0.05, 0.05, 0.85, 0.30), "joy": (0.90, 0.60, 0.75, 0.75), "love": (0.85, 0.55, 0.70, 0.80),
    "nervousness": (0.30, 0.25, 0.15, 0.45), "optimism": (0.70, 0.55, 0.35, 0.70),
    "pride": (0.90, 0.85, 0.80, 0.80), "realization": (0.55, 0.50, 0.80, 0.55),
    "relief": (0.80, 0.50, 0.85, 0.70), "remorse": (0.15, 0.60, 0.80, 0.30),
    "sadness": (0.10, 0.20, 0.75, 0.35), "surprise": (0.60, 0.40, 0.10, 0.55),
    "neutral": (0.50, 0.50, 0.60, 0.60),
    # EmpatheticDialogues (names shared with GoEmotions are above)
    "sad": (0.10, 0.20, 0.75, 0.35), "trusting": (0.70, 0.50, 0.70, 0.85),
    "terrified": (0.05, 0.05, 0.10, 0.30), "disappointed": (0.15, 0.30, 0.80, 0.35),
    "faithful": (0.70, 0.55, 0.70, 0.85), "joyful": (0.90, 0.60, 0.75, 0.75),
    "jealous": (0.20, 0.35, 0.60, 0.15), "disgusted": (0.15, 0.45, 0.75, 0.15),
    "surprised": (0.60, 0.40, 0.10, 0.55), "ashamed": (0.15, 0.55, 0.75, 0.35),
    "afraid": (0.15, 0.15, 0.15, 0.35), "impressed": (0.80, 0.50, 0.75, 0.85),
    "sentimental": (0.55, 0.35, 0.70, 0.60), "devastated": (0.05, 0.05, 0.80, 0.20),
    "excited": (0.85, 0.55, 0.45, 0.70), "anticipating": (0.65, 0.50, 0.30, 0.65),
    "annoyed": (0.25, 0.55, 0.70, 0.25), "anxious": (0.25, 0.20, 0.10, 0.45),
    "furious": (0.10, 0.65, 0.85, 0.05), "content": (0.80, 0.65, 0.80, 0.75),
    "lonely": (0.20, 0.25, 0.65, 0.40), "angry": (0.15, 0.65, 0.80, 0.10),
    "confident": (0.80, 0.85, 0.85, 0.70), "apprehensive": (0.30, 0.30, 0.15, 0.45),
    "guilty": (0.20, 0.60, 0.80, 0.30), "embarrassed": (0.20, 0.25, 0.70, 0.45),
    "grateful": (0.85, 0.40, 0.80, 0.90), "hopeful": (0.65, 0.45, 0.30, 0.70),
    "proud": (0.90, 0.85, 0.80, 0.80), "prepared": (0.70, 0.85, 0.75, 0.65),
    "nostalgic": (0.55, 0.25, 0.75, 0.60),
    # DailyDialog (the others share GoEmotions names)
    "happiness": (0.90, 0.60, 0.75, 0.75),
})
NEUTRAL_PROTOTYPE = PROTOTYPES["neutral"]
HASH_FEATURES = 2 ** 12
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NEGATORS = {"not", "no", "never", "without", "nothing", "cannot"}


def prototype(labels: Sequence[str]) -> tuple[float, float, float, float]:
    """Mean appraisal prototype of a record's labels (neutral's for none)."""
    if not labels:
        return NEUTRAL_PROTOTYPE
    rows = np.asarray([PROTOTYPES[l] for l in labels])
    return tuple(float(x) for x in rows.mean(axis=0))  # type: ignore[return-value]


@lru_cache(maxsize=200_000)
def sentiment(text: str) -> tuple[float, float]:
    """(polarity, subjectivity) of TextBlob's bundled pattern analyzer (no NLTK data needed)."""
    from textblob import TextBlob

    s = TextBlob(text).sentiment
    return float(s.polarity), float(s.subjectivity)


def dense_features(text: str, lexicon) -> list[float]:
    polarity, subjectivity = sentiment(text)
    vad, _ = lexicon.text_vad(text)
    words = _WORDS.findall(text.lower())
    return [
        polarity, subjectivity,
        *(vad if vad is not None else (0.5, 0.5, 0.5)), float(vad is not None),
        float(any(w in _NEGATORS or w.endswith("n't") for w in words)),
        float("?" in text), float("!" in text),
    ]


class AppraisalClassifier:
    """Ridge regression text -> the four appraisal scores; see the module docstring."""

    def __init__(self, lexicon, alpha: float = 1.0):
        self.lexicon = lexicon
        self.alpha = alpha
        self._model = None
        self._hasher = None

    def _features(self, texts: Sequence[str]):
        from scipy import sparse
        from sklearn.feature_extraction.text import HashingVectorizer

        if self._hasher is None:
            self._hasher = HashingVectorizer(n_features=HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False,
                                             norm="l2", token_pattern=r"(?u)\b\w+\b")
        dense = sparse.csr_matrix(np.asarray([dense_features(t, self.lexicon) for t in texts]))
        return sparse.hstack([dense, self._hasher.transform(texts)]).tocsr()

    def fit(self, texts: Sequence[str], labels: Sequence[Sequence[str]]) -> "AppraisalClassifier":
        from sklearn.linear_model import Ridge

        y = np.asarray([prototype(ls) for ls in labels])
        self._model = Ridge(alpha=self.alpha).fit(self._features(texts), y)
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 4) scores in [0, 1], columns in DIMENSIONS order."""
        if self._model is None:
            raise RuntimeError("AppraisalClassifier.predict before fit")
        if not texts:
            return np.zeros((0, len(DIMENSIONS)))
        return np.clip(self._model.predict(self._features(texts)), 0.0, 1.0)
