"""DailyDialog (Li et al., 2017): one record per utterance, previous turns as context.

Official split files (lines aligned, one dialogue per line):
``dialogues_<split>.txt`` (utterances separated by ``__eou__``) and
``dialogues_emotion_<split>.txt`` (one id 0..6 per utterance: 0 no emotion (neutral), 1 anger,
2 disgust, 3 fear, 4 happiness, 5 sadness, 6 surprise).

A dialogue whose utterance and label counts differ (train line 7,852 of the release has 12
utterances and 11 labels) is reported and skipped as a whole: which label belongs to which turn
cannot be known, so no turn of it is labelled. Files whose line counts differ are an error, not
bad rows: one missing line shifts every later dialogue onto the wrong labels, and the dialogues
whose turn counts still agree would be kept, wrongly labelled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from emoloom.contract import Record
from emoloom.labels import DAILYDIALOG

from .base import Report, require_path

CORPUS = "dailydialog"
TAXONOMY = "dailydialog"
SPLIT_ALIASES = {"dev": "validation", "valid": "validation"}
DEFAULT_CONTEXT_TURNS = 5
EOU = "__eou__"
HINT = ("pass --source /path/to/dailydialog/validation (the folder holding dialogues_validation.txt and "
        "dialogues_emotion_validation.txt) or its parent folder with --split validation")


def resolve(source, split: str | None) -> tuple[Path, Path, str]:
    """(dialogues file, emotion file, split name as given) of a split folder or its parent."""
    path = require_path(source, CORPUS, HINT)
    if path.is_file():  # dialogues_<split>.txt itself
        name = path.name
        if not (name.startswith("dialogues_") and name.endswith(".txt")) or name.startswith("dialogues_emotion_"):
            raise ValueError(f"{CORPUS}: {path} is not a dialogues_<split>.txt file; {HINT}")
        stem = name[len("dialogues_"):-len(".txt")]
        return path, path.with_name(f"dialogues_emotion_{stem}.txt"), split or stem
    if not split:
        found = sorted(path.glob("dialogues_emotion_*.txt"))
        if len(found) != 1:
            raise ValueError(f"{CORPUS}: give --split (train, validation or test) for {path}")
        split = found[0].name[len("dialogues_emotion_"):-len(".txt")]
    names = list(dict.fromkeys([split, SPLIT_ALIASES.get(split, split)]))
    for folder in (path, *(path / n for n in names)):
        for n in names:
            dia, emo = folder / f"dialogues_{n}.txt", folder / f"dialogues_emotion_{n}.txt"
            if dia.is_file():
                if not emo.is_file():
                    raise FileNotFoundError(f"{CORPUS}: {dia} has no {emo.name} beside it; {HINT}")
                return dia, emo, split
    raise FileNotFoundError(f"{CORPUS}: no dialogues_{names[-1]}.txt in {path} or {path / names[-1]}; {HINT}")


def split_utterances(line: str) -> list[str]:
    """Utterances of one dialogue line (the segment after the final __eou__ is dropped if empty)."""
    parts = [p.strip() for p in line.split(EOU)]
    if parts and not parts[-1]:
        parts.pop()
    return parts


def dialogue_records(utterances: list[str], label_ids: list[int], dialogue: int, split: str,
                     context_turns: int) -> list[Record]:
    records = []
    for k, (text, lab) in enumerate(zip(utterances, label_ids)):
        context = utterances[max(0, k - context_turns):k] if context_turns > 0 else []
        records.append(Record(
            id=f"dd-{split}-{dialogue:05d}-{k:02d}", text=text, context=context, corpus=CORPUS,
            taxonomy=TAXONOMY, split=split, labels=[DAILYDIALOG[lab]],
            meta={"dialogue": dialogue, "turn": k},
        ))
    return records


def check_dialogue(utterances: list[str], raw_labels: list) -> tuple[list[int] | None, str | None]:
    """Label ids of a dialogue or (None, reason) when it cannot be labelled exactly."""
    ids = []
    for x in raw_labels:
        s = str(x).strip()
        if not s.isdigit() or int(s) >= len(DAILYDIALOG):
            return None, f"unknown emotion id {s!r} (dailydialog ids are 0-{len(DAILYDIALOG) - 1}); dialogue skipped"
        ids.append(int(s))
    if not utterances:
        return None, "empty dialogue"
    if len(utterances) != len(ids):
        return None, (f"{len(utterances)} utterances but {len(ids)} emotion labels; "
                      "dialogue skipped (turns cannot be aligned)")
    empty = [k for k, u in enumerate(utterances) if not u]
    if empty:
        return None, f"empty utterance at turn {empty[0]}; dialogue skipped"
    return ids, None


def read_split(source, split: str | None, report: Report, limit: int | None = None,
               context_turns: int = DEFAULT_CONTEXT_TURNS) -> list[Record]:
    dia_path, emo_path, split = resolve(source, split)
    report.file(dia_path)
    report.file(emo_path)
    dia_lines = dia_path.read_bytes().split(b"\n")
    emo_lines = emo_path.read_bytes().split(b"\n")
    for lines in (dia_lines, emo_lines):
        if lines and lines[-1].strip() == b"":
            lines.pop()  # the final newline
    if len(dia_lines) != len(emo_lines):
        raise ValueError(
            f"{CORPUS}: {dia_path} has {len(dia_lines)} lines but {emo_path} has {len(emo_lines)}; "
            "the files of a split pair up line by line, so every dialogue after a missing or extra "
            "line would get another dialogue's labels")
    records: list[Record] = []
    if limit == 0:
        return records
    for i in range(len(dia_lines)):
        line = i + 1
        try:
            text = dia_lines[i].rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError as exc:
            report.bad(dia_path, line, f"undecodable text (not UTF-8 at byte {exc.start})")
            continue
        utterances = split_utterances(text)
        raw = emo_lines[i].decode("ascii", errors="replace").split()
        ids, why = check_dialogue(utterances, raw)
        if ids is None:
            report.bad(dia_path, line, why)
            continue
        records += dialogue_records(utterances, ids, line, split, context_turns)
        if limit is not None and len(records) >= limit:
            return records[:limit]
    return records


def from_hub_rows(rows: Iterable[dict], where: str, split: str, report: Report, limit: int | None,
                  context_turns: int = DEFAULT_CONTEXT_TURNS) -> list[Record]:
    """Rows of `li2017dailydialog/daily_dialog` (dialog: list of str, emotion: list of int)."""
    records: list[Record] = []
    if limit == 0:
        return records
    for i, row in enumerate(rows):
        utterances = [str(u).strip() for u in row.get("dialog") or []]
        ids, why = check_dialogue(utterances, list(row.get("emotion") or []))
        if ids is None:
            report.bad(where, i, why)
            continue
        records += dialogue_records(utterances, ids, i + 1, split, context_turns)
        if limit is not None and len(records) >= limit:
            return records[:limit]
    return records
