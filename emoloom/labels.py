"""Label taxonomies of the three corpora, their Ekman projection, and per-label VAD anchors.

Everything that names an emotion label lives here, so readers, the prompt, the parser, the
lexicon and the metrics agree on one spelling and one order.
"""
from __future__ import annotations

from types import MappingProxyType

# GoEmotions: order of emotions.txt in the original release (label id = index). 27 = neutral.
GOEMOTIONS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)

# EmpatheticDialogues, situation-level release (HypEmo label ids = index). The original CSV
# release spells the same 32 emotions as words; `ED_ALIASES` maps its spellings onto these.
EMPATHETIC = (
    "sad", "trusting", "terrified", "caring", "disappointed", "faithful", "joyful", "jealous",
    "disgusted", "surprised", "ashamed", "afraid", "impressed", "sentimental", "devastated",
    "excited", "anticipating", "annoyed", "anxious", "furious", "content", "lonely", "angry",
    "confident", "apprehensive", "guilty", "embarrassed", "grateful", "hopeful", "proud",
    "prepared", "nostalgic",
)
ED_ALIASES = MappingProxyType({"anticipation": "anticipating"})

# DailyDialog emotion ids 0..6; 0 ("no emotion") is called neutral here.
DAILYDIALOG = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")

EKMAN = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")

TAXONOMIES = MappingProxyType({
    "goemotions": GOEMOTIONS,
    "empathetic": EMPATHETIC,
    "dailydialog": DAILYDIALOG,
    "ekman": EKMAN,
})

# GoEmotions -> Ekman: the official ekman_mapping.json of the GoEmotions release; neutral stays.
_GOEMOTIONS_EKMAN = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": ("joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism",
            "relief", "pride", "admiration", "desire", "caring"),
    "sadness": ("sadness", "disappointment", "embarrassment", "grief", "remorse"),
    "surprise": ("surprise", "realization", "confusion", "curiosity"),
    "neutral": ("neutral",),
}

# EmpatheticDialogues -> Ekman: our table, following the GoEmotions grouping where the same
# emotion exists there (caring, embarrassed, grateful, proud -> as GoEmotions). Choices that
# are judgement calls: jealous -> anger (resentment of a rival); ashamed/guilty -> sadness
# (as GoEmotions' remorse/embarrassment); impressed -> joy (as admiration); sentimental and
# nostalgic -> sadness (longing for what is gone); trusting/faithful/confident/content/
# anticipating/hopeful -> joy (positive, low threat); prepared -> neutral (readiness carries no
# basic emotion); apprehensive/anxious/terrified/afraid -> fear.
_EMPATHETIC_EKMAN = {
    "anger": ("angry", "furious", "annoyed", "jealous"),
    "disgust": ("disgusted",),
    "fear": ("afraid", "terrified", "anxious", "apprehensive"),
    "joy": ("joyful", "excited", "content", "grateful", "proud", "impressed", "hopeful",
            "confident", "trusting", "faithful", "caring", "anticipating"),
    "sadness": ("sad", "devastated", "lonely", "disappointed", "ashamed", "guilty",
                "embarrassed", "sentimental", "nostalgic"),
    "surprise": ("surprised",),
    "neutral": ("prepared",),
}

_DAILYDIALOG_EKMAN = {"happiness": "joy"}


def _invert(groups: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {label: ekman for ekman, labels in groups.items() for label in labels}


EKMAN_OF = MappingProxyType({
    "goemotions": MappingProxyType(_invert(_GOEMOTIONS_EKMAN)),
    "empathetic": MappingProxyType(_invert(_EMPATHETIC_EKMAN)),
    "dailydialog": MappingProxyType({l: _DAILYDIALOG_EKMAN.get(l, l) for l in DAILYDIALOG}),
    "ekman": MappingProxyType({l: l for l in EKMAN}),
})

# VAD anchors (valence, arousal, dominance in [0,1]) per label name, written for this project
# from the usual placement of each emotion in VAD space. They are the label prior of the
# lexicon-weak VAD target (blended with the text's lexicon VAD) and the fallback when no word
# of the text is in the lexicon.
VAD_ANCHORS = MappingProxyType({
    # GoEmotions
    "admiration": (0.82, 0.52, 0.58), "amusement": (0.84, 0.62, 0.60),
    "anger": (0.15, 0.82, 0.62), "annoyance": (0.25, 0.62, 0.52),
    "approval": (0.74, 0.40, 0.62), "caring": (0.80, 0.42, 0.60),
    "confusion": (0.38, 0.52, 0.32), "curiosity": (0.66, 0.60, 0.52),
    "desire": (0.72, 0.70, 0.52), "disappointment": (0.22, 0.38, 0.32),
    "disapproval": (0.24, 0.52, 0.55), "disgust": (0.12, 0.60, 0.48),
    "embarrassment": (0.24, 0.60, 0.22), "excitement": (0.86, 0.88, 0.62),
    "fear": (0.12, 0.82, 0.20), "gratitude": (0.88, 0.48, 0.56),
    "grief": (0.08, 0.45, 0.18), "joy": (0.92, 0.70, 0.66), "love": (0.94, 0.62, 0.62),
    "nervousness": (0.24, 0.74, 0.24), "optimism": (0.82, 0.56, 0.64),
    "pride": (0.84, 0.60, 0.80), "realization": (0.55, 0.50, 0.55),
    "relief": (0.78, 0.30, 0.58), "remorse": (0.16, 0.46, 0.24),
    "sadness": (0.12, 0.30, 0.22), "surprise": (0.62, 0.84, 0.42),
    "neutral": (0.50, 0.30, 0.50),
    # EmpatheticDialogues
    "sad": (0.12, 0.30, 0.22), "trusting": (0.76, 0.36, 0.56), "terrified": (0.06, 0.92, 0.12),
    "disappointed": (0.22, 0.38, 0.32), "faithful": (0.76, 0.36, 0.58),
    "joyful": (0.92, 0.70, 0.66), "jealous": (0.20, 0.68, 0.34), "disgusted": (0.12, 0.60, 0.48),
    "surprised": (0.62, 0.84, 0.42), "ashamed": (0.16, 0.52, 0.18), "afraid": (0.12, 0.80, 0.20),
    "impressed": (0.82, 0.58, 0.54), "sentimental": (0.60, 0.36, 0.44),
    "devastated": (0.06, 0.58, 0.14), "excited": (0.86, 0.88, 0.62),
    "anticipating": (0.68, 0.64, 0.52), "annoyed": (0.25, 0.62, 0.52),
    "anxious": (0.22, 0.76, 0.26), "furious": (0.08, 0.94, 0.66), "content": (0.80, 0.24, 0.62),
    "lonely": (0.14, 0.28, 0.20), "angry": (0.15, 0.82, 0.62), "confident": (0.80, 0.56, 0.86),
    "apprehensive": (0.30, 0.62, 0.30), "guilty": (0.16, 0.50, 0.22),
    "embarrassed": (0.24, 0.60, 0.22), "grateful": (0.88, 0.48, 0.56),
    "hopeful": (0.78, 0.52, 0.58), "proud": (0.84, 0.60, 0.80), "prepared": (0.66, 0.46, 0.74),
    "nostalgic": (0.56, 0.36, 0.42),
    # DailyDialog (the rest share GoEmotions names)
    "happiness": (0.90, 0.64, 0.64),
})


def taxonomy(name: str) -> tuple[str, ...]:
    """The ordered labels of a taxonomy; a clear error for an unknown name."""
    try:
        return TAXONOMIES[name]
    except KeyError:
        raise ValueError(f"unknown taxonomy {name!r}; choose one of {', '.join(TAXONOMIES)}") from None


def to_ekman(taxonomy_name: str, label: str) -> str:
    """Project one label of a taxonomy onto the Ekman-7 set (anger ... surprise, neutral)."""
    taxonomy(taxonomy_name)
    try:
        return EKMAN_OF[taxonomy_name][label]
    except KeyError:
        raise ValueError(f"label {label!r} is not in taxonomy {taxonomy_name!r}") from None


def anchor(labels: list[str] | tuple[str, ...]) -> tuple[float, float, float] | None:
    """Mean VAD anchor of a set of labels (None for no labels)."""
    points = [VAD_ANCHORS[l] for l in labels]
    if not points:
        return None
    return tuple(sum(p[i] for p in points) / len(points) for i in range(3))  # type: ignore[return-value]
