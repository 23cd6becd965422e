"""Quality of the built-in lexicon and of the lexicon-weak VAD target.

(a) Pearson r between the built-in lexicon and Warriner et al. (2013) V, A, D on the words of
    the XANEW dev split that both contain (exact word match, no lemmatisation).
(b) Mean weak valence per Ekman group on GoEmotions dev, for
      lex_only   weak_vad(text, [], builtin): lexicon only, rows without a matched word excluded
      lw=0       weak_vad(text, labels, builtin, label_weight=0): the lexicon where a word matched,
                 else the label anchor (the documented fallback)
      lw=0.5     weak_vad with the default label weight
    A multi-label row counts in each of its Ekman groups (once per group).

Usage:  .venv/bin/python bench/lexicon_quality.py [--shared-data DIR]
The shared data folder defaults to $EMOLOOM_SHARED_DATA or ../shared/data next to the repo.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy.stats import pearsonr

from emoloom.labels import EKMAN, GOEMOTIONS, to_ekman
from emoloom.lexicon import Lexicon, weak_vad

REPO = Path(__file__).resolve().parents[1]


def default_shared() -> Path:
    return Path(os.environ.get("EMOLOOM_SHARED_DATA") or REPO.parent / "shared" / "data")


def warriner_agreement(builtin: Lexicon, shared: Path) -> None:
    warriner = Lexicon.load(shared / "warriner" / "Ratings_Warriner_et_al.csv")
    dev = [w.strip().lower() for w in (shared / "warriner" / "xanew_splits" / "dev.txt").read_text().splitlines() if w.strip()]
    both = sorted({w for w in dev if builtin.exact(w) and warriner.exact(w)})
    print(f"(a) builtin ({len(builtin)} words) vs Warriner on XANEW dev ({len(dev)} words): overlap {len(both)}")
    print(f"    {'dim':<10} {'pearson_r':>9} {'p':>10}")
    for i, dim in enumerate(("valence", "arousal", "dominance")):
        r, p = pearsonr([builtin.exact(w)[i] for w in both], [warriner.exact(w)[i] for w in both])
        print(f"    {dim:<10} {r:>9.3f} {p:>10.2e}")


def goemotions_groups(builtin: Lexicon, shared: Path) -> dict[str, dict[str, float]]:
    names = (shared / "goemotions" / "emotions.txt").read_text().split()
    assert tuple(names) == GOEMOTIONS, "emotions.txt differs from emoloom.labels.GOEMOTIONS"
    cols: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    matched_rows = n_rows = 0
    with open(shared / "goemotions" / "dev.tsv", newline="", encoding="utf-8") as f:
        for text, ids, _cid in csv.reader(f, delimiter="\t"):
            n_rows += 1
            labels = [names[int(i)] for i in ids.split(",")]
            groups = set(to_ekman("goemotions", l) for l in labels)
            pure, src, _ = weak_vad(text, [], builtin)
            lw0, _, _ = weak_vad(text, labels, builtin, label_weight=0.0)
            lw5, _, _ = weak_vad(text, labels, builtin)
            matched_rows += src == "lexicon"
            for g in groups:
                cols[g]["rows"].append(1.0)
                if src == "lexicon":
                    cols[g]["lex_only"].append(pure.v)
                cols[g]["lw=0"].append(lw0.v)
                cols[g]["lw=0.5"].append(lw5.v)
    print(f"\n(b) GoEmotions dev: {n_rows} rows, {matched_rows} ({matched_rows / n_rows:.1%}) with a lexicon word")
    print(f"    {'group':<9} {'rows':>5} {'matched':>8} {'lex_only':>9} {'lw=0':>7} {'lw=0.5':>7}")
    means: dict[str, dict[str, float]] = {}
    for g in EKMAN:
        c = cols[g]
        means[g] = {k: statistics.fmean(c[k]) for k in ("lex_only", "lw=0", "lw=0.5")}
        print(f"    {g:<9} {len(c['rows']):>5} {len(c['lex_only']) / len(c['rows']):>8.1%} "
              f"{means[g]['lex_only']:>9.3f} {means[g]['lw=0']:>7.3f} {means[g]['lw=0.5']:>7.3f}")
    return means


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=default_shared())
    args = ap.parse_args(argv)
    builtin = Lexicon.builtin()
    warriner_agreement(builtin, args.shared_data)
    means = goemotions_groups(builtin, args.shared_data)
    lex = {g: m["lex_only"] for g, m in means.items()}
    ok = lex["joy"] > lex["neutral"] > lex["sadness"] and lex["neutral"] > lex["anger"]
    print(f"\n    lexicon-only ordering joy > neutral > sadness, anger: {'OK' if ok else 'VIOLATED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
