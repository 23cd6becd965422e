"""The embedded default screen (what `python -m emoloom.screen` runs with no arguments)."""

# Synthetic GoEmotions is pool A (gold labels), synthetic EmpatheticDialogues pool B (a second
# corpus); DailyDialog (synthetic, projected to Ekman-7) is the cross-corpus test.
DEFAULT_SCREEN = {
    "name": "default",
    "space": "default",
    "train": {
        "data": {
            "sources": [
                {"corpus": "synthetic", "taxonomy": "goemotions", "split": "train", "dev_split": "dev", "pool": "A"},
                {"corpus": "synthetic", "taxonomy": "empathetic", "split": "train", "dev_split": None, "pool": "B"},
            ],
            "synthetic_size": 2000,
        },
    },
    "eval": {
        "decoder": "fast",
        "dev_limit": 100,
        "cross_corpus": [{"corpus": "synthetic", "taxonomy": "dailydialog", "split": "validation", "limit": 100}],
    },
}
