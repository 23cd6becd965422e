"""Corpus readers (`emoloom.data`): counts and checksums of the real data, bad-row reporting,
JSONL round trip, hub-offline behaviour, and the `data` CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from emoloom.contract import Record
from emoloom.data import BadRowError, HubOfflineError, is_hub_id, load_corpus
from emoloom.labels import DAILYDIALOG, EMPATHETIC, GOEMOTIONS

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
GOEMOTIONS_DEV_SHA256 = "575489c079c9de1097062a01738f998590d6b7ead66dd1c9fd1d2ba01fd8bc62"


def need(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.exists():
        pytest.skip(f"{rel} not in {root}")
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **(env or {}))
    return subprocess.run([PY, "-m", "emoloom", *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Real data (skipped when /work/shared/data is absent)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def goemotions_dev(shared_data):
    return load_corpus("goemotions", need(shared_data, "goemotions"), "dev")


def test_goemotions_dev_counts(goemotions_dev):
    res = goemotions_dev
    assert len(res.records) == 5426 and res.skipped == []
    counts = Counter(l for r in res.records for l in r.labels)
    assert counts["neutral"] == 1766
    assert counts["admiration"] == 488
    assert counts["grief"] == 13
    assert set(counts) == set(GOEMOTIONS)
    assert sum(len(r.labels) > 1 for r in res.records) == 878  # README: 878 multi-label dev rows
    first = res.records[0]
    assert first.corpus == "goemotions" and first.taxonomy == "goemotions" and first.split == "dev"
    assert first.id.isalnum() and first.labels == ["neutral"] and first.vad is None
    assert len({r.id for r in res.records}) == 5426


def test_goemotions_dev_stats_checksum(goemotions_dev):
    stats = goemotions_dev.stats()
    (path, digest), = stats["sha256"].items()
    assert path.endswith("dev.tsv") and digest == GOEMOTIONS_DEV_SHA256
    assert stats["records"] == 5426 and stats["skipped"] == 0
    assert stats["labels"]["neutral"] == 1766 and list(stats["labels"]) == list(GOEMOTIONS)
    # 837 dev texts have no lexicon word: their target is the label anchor alone, tagged as such
    assert stats["vad_source"] == {"gold": 0, "lexicon": 5426 - 837, "label_anchor": 837, "none": 0}
    assert stats["lexicon"]["name"] and stats["lexicon"]["sha256"]
    json.dumps(stats)  # JSON-able


def test_goemotions_train_count(shared_data):
    res = load_corpus("goemotions", need(shared_data, "goemotions/train.tsv"), "train")
    assert len(res.records) == 43410 and res.skipped == []
    assert sum(len(r.labels) > 1 for r in res.records) == 7102


def test_goemotions_ekman_projection(shared_data):
    res = load_corpus("goemotions", need(shared_data, "goemotions"), "dev", taxonomy="ekman", limit=300)
    assert len(res.records) == 300 and res.taxonomy == "ekman"
    for r in res.records:
        assert r.taxonomy == "ekman" and r.meta["source_taxonomy"] == "goemotions"
    with pytest.raises(ValueError, match="ekman"):
        load_corpus("goemotions", shared_data / "goemotions", "dev", taxonomy="empathetic")


def test_dailydialog_validation(shared_data):
    folder = need(shared_data, "dailydialog/validation")
    res = load_corpus("dailydialog", folder, "validation")
    assert len(res.records) == 8069 and res.skipped == []
    assert len({r.meta["dialogue"] for r in res.records}) == 1000
    counts = Counter(r.labels[0] for r in res.records)
    assert [counts[l] for l in DAILYDIALOG] == [7108, 77, 3, 11, 684, 79, 107]  # README counts
    assert len(res.files) == 2
    # Context: previous turns of the same dialogue, oldest first, capped at the last 5.
    by_dialogue: dict[int, list[Record]] = {}
    for r in res.records:
        by_dialogue.setdefault(r.meta["dialogue"], []).append(r)
    long = next(turns for turns in by_dialogue.values() if len(turns) >= 8)
    texts = [r.text for r in long]
    assert long[0].context == []
    assert long[2].context == texts[:2]
    assert long[7].context == texts[2:7]
    # Parent folder + split name gives the same records; context cap is configurable.
    res2 = load_corpus("dailydialog", shared_data / "dailydialog", "dev", context_turns=2, limit=50)
    assert [r.text for r in res2.records] == [r.text for r in res.records[:50]]
    assert all(len(r.context) <= 2 for r in res2.records)


def test_dailydialog_train_mismatch_reported_not_mislabelled(shared_data):
    need(shared_data, "dailydialog/train/dialogues_train.txt")
    res = load_corpus("dailydialog", shared_data / "dailydialog", "train")
    assert len(res.skipped) == 1
    assert "dialogues_train.txt:7852:" in res.skipped[0] and "12 utterances but 11" in res.skipped[0]
    assert not any(r.meta["dialogue"] == 7852 for r in res.records)  # nothing of it labelled
    assert len(res.records) == 87171 - 12
    counts = Counter(r.labels[0] for r in res.records)
    # README train counts, minus the 11 "no emotion" labels of the skipped line.
    assert [counts[l] for l in DAILYDIALOG] == [72143 - 11, 827, 303, 146, 11182, 969, 1600]
    with pytest.raises(BadRowError, match=r"dialogues_train\.txt:7852: 12 utterances"):
        load_corpus("dailydialog", shared_data / "dailydialog" / "train", "train", strict=True)


def test_empathetic_situation_valid(shared_data):
    res = load_corpus("empathetic", need(shared_data, "empatheticdialogues_hypemo/valid.csv"), "valid")
    assert len(res.records) == 2761 and res.skipped == []
    counts = Counter(r.labels[0] for r in res.records)
    assert set(counts) == set(EMPATHETIC) and counts["sad"] == 100
    assert all(r.taxonomy == "empathetic" and r.text and r.context == [] for r in res.records)
    # The folder + an alias of the split name finds the same file.
    again = load_corpus("empathetic", shared_data / "empatheticdialogues_hypemo", "validation", limit=5)
    assert [r.text for r in again.records] == [r.text for r in res.records[:5]]


# ---------------------------------------------------------------------------------------------
# Formats and bad rows on files written here
# ---------------------------------------------------------------------------------------------

ED_ORIGINAL = (
    "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"
    "hit:1_conv:2,1,sentimental,I remember my first bike_comma_ a red one.,1,It was red_comma_ and fast.,5|5|5_2|2|5,\n"
    "hit:1_conv:2,2,sentimental,I remember my first bike_comma_ a red one.,0,Nice!,5|5|5_2|2|5,\n"
    "hit:2_conv:4,1,anticipation,Waiting for the \"big\" game.,1,Cannot wait.,,\n"
    "hit:3_conv:6,1,afraid,A dog chased me,1,So scary,,,extra\n"
    "hit:4_conv:8,1,bored,Nothing to do today,1,Meh,,\n"
    "hit:5_conv:10,1,proud,My son won the spelling bee,1,Great,,\n"
    "hit:5_conv:10,2,joyful,My son won the spelling bee,0,Wow,,\n"
)


def test_empathetic_original_format(tmp_path):
    path = tmp_path / "valid.csv"
    path.write_text(ED_ORIGINAL, encoding="utf-8")
    res = load_corpus("empathetic", path, "valid")
    by_id = {r.id: r for r in res.records}
    assert list(by_id) == ["hit:1_conv:2", "hit:2_conv:4"]  # one record per conversation
    assert by_id["hit:1_conv:2"].text == "I remember my first bike, a red one."
    assert by_id["hit:1_conv:2"].labels == ["sentimental"]
    assert by_id["hit:2_conv:4"].labels == ["anticipating"]  # ED_ALIASES
    assert by_id["hit:2_conv:4"].text == 'Waiting for the "big" game.'
    reasons = "\n".join(res.skipped)
    assert f"{path}:5: expected 8" in reasons  # stray comma
    assert f"{path}:6: unknown emotion 'bored'" in reasons
    assert f"{path}:8: conversation 'hit:5_conv:10'" in reasons  # label changes inside a conversation
    assert len(res.skipped) == 3
    with pytest.raises(BadRowError, match=rf"{path.name}:5:"):
        load_corpus("empathetic", path, "valid", strict=True)


def test_empathetic_situation_bad_rows(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,aug_text,label\n"a, quoted text",x,3\nplain,y,32\n"multi\nline",z,0\nshort,1\n',
                    encoding="utf-8")
    res = load_corpus("empathetic", tmp_path, "train")
    assert [(r.text, r.labels) for r in res.records] == [("a, quoted text", ["caring"]), ("multi\nline", ["sad"])]
    assert res.skipped == [f"{path}:3: unknown label id '32' (empathetic ids are 0-31)",
                           f"{path}:6: expected 3 columns (text,aug_text,label), got 2"]


def test_empathetic_unknown_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header"):
        load_corpus("empathetic", path, "train")


def test_goemotions_bad_rows(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes(
        b"fine text\t17\tid1\n"
        b"unknown label\t99\tid2\n"
        b"too\tmany\tcolumns\there\n"
        b"two labels\t3,10\tid4\n"
        b"bad bytes \xff\xfe\t1\tid5\n"
        b"\"quoted\ttab\"\t27\tid6\n"
        b"missing id column\t2\n"
    )
    res = load_corpus("goemotions", path, "dev")
    assert [(r.id, r.labels) for r in res.records] == [
        ("id1", ["joy"]), ("id4", ["annoyance", "disapproval"]), ("id6", ["neutral"])]
    assert res.records[2].text == "quoted\ttab"
    assert res.skipped == [
        f"{path}:2: unknown label id '99' (goemotions ids are 0-27)",
        f"{path}:3: expected 3 tab-separated columns (text, label ids, id), got 4",
        f"{path}:5: undecodable text (not UTF-8)",
        f"{path}:7: expected 3 tab-separated columns (text, label ids, id), got 2",
    ]
    with pytest.raises(BadRowError, match=rf"{path.name}:2: unknown label id '99'"):
        load_corpus("goemotions", path, "dev", strict=True)


def test_goemotions_stray_quote_costs_one_row(tmp_path):
    # With quote processing over the whole file, the stray quote opened a field that swallowed
    # the next rows (up to a closing quote) and the loss was reported as one bad row.
    path = tmp_path / "dev.tsv"
    rows = [f"row {i}\t{i % 28}\tid{i}\n" for i in range(1, 21)]
    path.write_text('"stray quote\t27\tid0\n' + "".join(rows) + '"""quoted"" start"\t27\tid21\n', encoding="utf-8")
    res = load_corpus("goemotions", path, "dev")
    assert [r.id for r in res.records] == [f"id{i}" for i in range(1, 21)] + ["id21"]
    assert res.records[-1].text == '"quoted" start'  # well-formed quoting is still read as CSV
    assert res.skipped == [f"{path}:1: unreadable CSV row: unexpected end of data (unclosed '\"' quote)"]
    with pytest.raises(BadRowError, match=rf"{path.name}:1: unreadable CSV row"):
        load_corpus("goemotions", path, "dev", strict=True)


def test_goemotions_quoted_rows_read_as_csv(shared_data):
    # The release does CSV-quote the texts that contain '"' (137 dev rows): reading line by line
    # must give exactly what csv gives for the whole (well-formed) file.
    import csv

    path = need(shared_data, "goemotions/dev.tsv")
    with open(path, encoding="utf-8", newline="") as f:
        reference = [row[0] for row in csv.reader(f, delimiter="\t")]
    assert [r.text for r in load_corpus("goemotions", path, "dev").records] == reference


def test_oversized_csv_field_is_reported_and_reading_goes_on(tmp_path):
    path = tmp_path / "big.tsv"
    path.write_text("ok\t1\ta\n" + "x" * 140_000 + "\t2\tb\nfine\t3\tc\n", encoding="utf-8")
    res = load_corpus("goemotions", path, "train")
    assert [r.id for r in res.records] == ["a", "c"]
    assert res.skipped == [f"{path}:2: unreadable CSV row: field larger than field limit (131072)"]


def test_dailydialog_bad_rows(tmp_path):
    d = tmp_path / "validation"
    d.mkdir()
    (d / "dialogues_validation.txt").write_bytes(
        b"hi there . __eou__ hello ! __eou__\n"
        b"one __eou__ two __eou__ three __eou__\n"
        b"bad \xff bytes __eou__\n"
        b"x __eou__ y __eou__\n")
    (d / "dialogues_emotion_validation.txt").write_text("0 4 \n0 1 \n0 \n0 9 \n", encoding="ascii")
    res = load_corpus("dailydialog", d, "validation")
    assert [(r.text, r.labels, r.context) for r in res.records] == [
        ("hi there .", ["neutral"], []), ("hello !", ["happiness"], ["hi there ."])]
    dia = d / "dialogues_validation.txt"
    assert res.skipped[0].startswith(f"{dia}:2: 3 utterances but 2 emotion labels")
    assert res.skipped[1].startswith(f"{dia}:3: undecodable text")
    assert res.skipped[2].startswith(f"{dia}:4: unknown emotion id '9'")
    assert len(res.skipped) == 3


def test_dailydialog_line_count_mismatch_is_an_error(tmp_path):
    # One missing line in the emotion file shifts every later dialogue onto the wrong labels,
    # and the dialogues whose turn counts happen to agree would be kept, wrongly labelled.
    d = tmp_path / "validation"
    d.mkdir()
    dia, emo = d / "dialogues_validation.txt", d / "dialogues_emotion_validation.txt"
    dia.write_text("".join(f"a{i} __eou__ b{i} __eou__\n" for i in range(6)), encoding="utf-8")
    emo.write_text("".join(f"{i % 7} 0 \n" for i in range(6) if i != 2), encoding="ascii")
    for strict in (False, True):
        with pytest.raises(ValueError, match="lines") as exc:
            load_corpus("dailydialog", d, "validation", strict=strict)
        msg = str(exc.value)
        assert f"{dia} has 6 lines" in msg and f"{emo} has 5" in msg
    emo.write_text("".join(f"{i % 7} 0 \n" for i in range(6)), encoding="ascii")  # aligned again
    assert len(load_corpus("dailydialog", d, "validation").records) == 12


def test_missing_source_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="--source"):
        load_corpus("goemotions", tmp_path / "nope.tsv", "dev")
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("emobank", tmp_path, "dev")


# ---------------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------------


def test_jsonl_reader_defaults_and_bad_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [
        {"id": 1, "text": "so happy today"},
        {"id": "b", "text": "furious", "taxonomy": "dailydialog", "labels": ["Anger"]},
        "not json {",
        {"text": "no id"},
        {"id": "c", "text": "x", "labels": ["nonsense"]},
        {"id": "b", "text": "duplicate id"},
        [1, 2],
    ]
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n\n", encoding="utf-8")
    res = load_corpus("jsonl", path, "test", taxonomy="empathetic")
    assert [(r.id, r.taxonomy, r.split, r.labels) for r in res.records] == [
        ("1", "empathetic", "test", []), ("b", "dailydialog", "test", ["anger"])]
    assert [s.split(": ", 1)[0] for s in res.skipped] == [f"{path}:{n}" for n in (3, 4, 5, 6, 7)]
    assert "invalid JSON" in res.skipped[0] and "id" in res.skipped[1]
    assert "nonsense" in res.skipped[2] and "duplicate id 'b'" in res.skipped[3]
    with pytest.raises(BadRowError, match=rf"{path.name}:3: invalid JSON"):
        load_corpus("jsonl", path, "test", strict=True)
    # Without a caller taxonomy, records carrying none are goemotions.
    assert load_corpus("jsonl", path, None).records[0].taxonomy == "goemotions"


def test_prepare_jsonl_round_trip(tmp_path):
    src = tmp_path / "dev.tsv"
    src.write_text("i am so happy\t17\ta1\nwhat a sad , sad day\t25,9\ta2\nthe bus is late\t27\ta3\n", encoding="utf-8")
    out = tmp_path / "records.jsonl"
    if (REPO / "emoloom" / "__main__.py").exists():
        proc = run_cli("data", "prepare", "--corpus", "goemotions", "--source", str(src), "--split", "dev",
                       "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert "wrote 3 records" in proc.stderr and proc.stdout == ""
    else:  # pragma: no cover - before the dispatcher exists
        from emoloom.data.jsonl import write_jsonl

        write_jsonl(load_corpus("goemotions", src, "dev").with_weak_vad(), out)
    written = [Record.model_validate_json(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r.id for r in written] == ["a1", "a2", "a3"]
    assert all(r.vad is not None for r in written)
    # "the bus is late" has no lexicon word: its target is the neutral label's anchor alone
    assert [r.vad_source for r in written] == ["lexicon", "lexicon", "label_anchor"]
    assert written[1].labels == ["sadness", "disappointment"]
    back = load_corpus("jsonl", out, "dev")
    assert back.records == written and back.skipped == [] and back.taxonomy == "goemotions"
    # The records are the reader's records plus VAD (nothing else changed).
    plain = load_corpus("goemotions", src, "dev").records
    assert [r.model_copy(update={"vad": None, "vad_source": "none"}) for r in back.records] == plain


def test_limit_zero_means_zero(tmp_path):
    from emoloom.data import write_synthetic

    write_synthetic(tmp_path / "syn", size=30)
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "text": "x"}) + "\n", encoding="utf-8")
    sources = [("goemotions", tmp_path / "syn" / "goemotions", "dev"),
               ("empathetic", tmp_path / "syn" / "empathetic", "valid"),
               ("dailydialog", tmp_path / "syn" / "dailydialog", "validation"),
               ("jsonl", jsonl, None), ("synthetic", tmp_path / "syn", "dev")]
    for corpus, src, split in sources:
        res = load_corpus(corpus, src, split, limit=0)
        assert res.records == [] and res.files, corpus  # the files are still read and checked
        assert len(load_corpus(corpus, src, split, limit=1).records) == 1, corpus
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_corpus("jsonl", jsonl, None, limit=-1)


def test_cli_limit_zero_and_negative(tmp_path, capsys):
    from emoloom.__main__ import main

    src = tmp_path / "dev.tsv"
    src.write_text("so happy\t17\ta1\nso sad\t25\ta2\n", encoding="utf-8")
    assert main(["data", "stats", "--corpus", "goemotions", "--source", str(src), "--limit", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 0
    with pytest.raises(SystemExit) as exc:
        main(["data", "stats", "--corpus", "goemotions", "--source", str(src), "--limit", "-1"])
    assert exc.value.code == 2
    assert "--limit: must be >= 0 (0 reads no records), got -1" in capsys.readouterr().err


def test_label_anchor_is_its_own_vad_source(tmp_path):
    src = tmp_path / "dev.tsv"
    src.write_text("i am so happy\t17\ta1\nqwzx blorp\t2\ta2\n", encoding="utf-8")
    res = load_corpus("goemotions", src, "dev")
    assert [r.vad_source for r in res.with_weak_vad()] == ["lexicon", "label_anchor"]
    assert res.stats()["vad_source"] == {"gold": 0, "lexicon": 1, "label_anchor": 1, "none": 0}


def test_prepare_skips_lone_surrogate_record_and_keeps_the_rest(tmp_path, capsys):
    from emoloom.__main__ import main

    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps({"id": "a", "text": "so happy"}),
                              json.dumps({"id": "b", "text": "bad \ud800 text"}),
                              json.dumps({"id": "c", "text": "so sad"})]) + "\n", encoding="utf-8")
    assert "\\ud800" in src.read_text()  # the escape, as JSON writes it
    out = tmp_path / "out.jsonl"
    assert main(["data", "prepare", "--corpus", "jsonl", "--source", str(src), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped {src}:2: invalid record: text: lone surrogate U+D800 at character 4" in err
    assert [json.loads(l)["id"] for l in out.read_text(encoding="utf-8").splitlines()] == ["a", "c"]


def test_write_jsonl_is_atomic(tmp_path):
    from emoloom.data.jsonl import write_jsonl

    out = tmp_path / "records.jsonl"
    out.write_text("old content\n", encoding="utf-8")

    def records():
        yield Record(id="a", text="fine")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_jsonl(records(), out)
    assert out.read_text(encoding="utf-8") == "old content\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.jsonl"]  # no temp file left
    write_jsonl([Record(id="b", text="new")], out)
    assert [json.loads(l)["id"] for l in out.read_text(encoding="utf-8").splitlines()] == ["b"]


def test_cli_folders_where_files_are_expected(tmp_path, capsys):
    from emoloom.__main__ import main

    src = tmp_path / "dev.tsv"
    src.write_text("so happy\t17\ta1\n", encoding="utf-8")
    folder = tmp_path / "folder"
    folder.mkdir()
    base = ["--corpus", "goemotions", "--source", str(src)]
    cases = [(["data", "stats", *base, "--lexicon", str(folder)], "--lexicon"),
             (["data", "prepare", *base, "--out", str(folder)], "--out"),
             (["data", "synth", "--out", str(src), "--size", "5"], "--out")]
    for argv, option in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and option in err[0], err
        assert str(folder if option == "--lexicon" or "prepare" in argv else src) in err[0], err
    assert src.read_text(encoding="utf-8") == "so happy\t17\ta1\n"


def test_weak_vad_keeps_gold(tmp_path):
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps({"id": "g", "text": "calm", "vad": {"v": 0.1, "a": 0.2, "d": 0.3},
                                "vad_source": "gold"}) + "\n" + json.dumps({"id": "h", "text": "happy"}) + "\n")
    res = load_corpus("jsonl", path, "train")
    stats = res.stats()
    assert stats["vad_source"]["gold"] == 1 and sum(stats["vad_source"].values()) == 2
    assert res.with_weak_vad()[0].vad.as_tuple() == (0.1, 0.2, 0.3)


# ---------------------------------------------------------------------------------------------
# Hub sources
# ---------------------------------------------------------------------------------------------


def test_is_hub_id(tmp_path):
    assert is_hub_id("google-research-datasets/go_emotions")
    assert is_hub_id("daily_dialog")
    assert not is_hub_id(str(tmp_path))
    assert not is_hub_id("data/train.tsv")  # a missing local file, not a hub id
    assert not is_hub_id("/abs/owner/name")
    assert not is_hub_id(None)


def test_hub_offline_fails_fast_without_datasets(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(HubOfflineError, match="--source"):
        load_corpus("goemotions", "google-research-datasets/go_emotions", "train")
    assert time.perf_counter() - t0 < 2
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")
    with pytest.raises(HubOfflineError, match="dialogues_validation.txt"):
        load_corpus("dailydialog", "daily_dialog", "validation")


def test_hub_rows_through_stub_datasets(monkeypatch):
    """The hub path, with a stand-in `datasets` module (no network): rows become records and bad
    rows are reported as hf://id[split]:row."""
    import types

    calls = []
    rows = {
        "google-research-datasets/go_emotions": [{"text": "yay", "labels": [17], "id": "x1"},
                                                 {"text": "huh", "labels": [28], "id": "x2"}],
        "facebook/empathetic_dialogues": [
            {"conv_id": "c1", "utterance_idx": 1, "context": "proud", "prompt": "I won_comma_ finally",
             "speaker_idx": 1, "utterance": "u", "selfeval": "", "tags": ""},
            {"conv_id": "c1", "utterance_idx": 2, "context": "proud", "prompt": "I won_comma_ finally",
             "speaker_idx": 0, "utterance": "v", "selfeval": "", "tags": ""}],
        "li2017dailydialog/daily_dialog": [{"dialog": ["hi", "great news !"], "act": [1, 1], "emotion": [0, 4]},
                                           {"dialog": ["a", "b", "c"], "act": [1, 1, 1], "emotion": [0, 0]}],
    }

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return rows[name]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    ge = load_corpus("goemotions", "google-research-datasets/go_emotions", "dev")
    assert [(r.id, r.labels, r.split) for r in ge.records] == [("x1", ["joy"], "dev")]
    assert ge.skipped and ge.skipped[0].startswith("hf://google-research-datasets/go_emotions/simplified[dev]:1:")
    ed = load_corpus("empathetic", "empathetic_dialogues", "train")
    assert [(r.id, r.text, r.labels) for r in ed.records] == [("c1", "I won, finally", ["proud"])]
    dd = load_corpus("dailydialog", "daily_dialog", "test")
    assert [(r.text, r.labels, r.context) for r in dd.records] == [
        ("hi", ["neutral"], []), ("great news !", ["happiness"], ["hi"])]
    assert "3 utterances but 2" in dd.skipped[0]
    assert calls == [("google-research-datasets/go_emotions", "simplified", "validation"),
                     ("facebook/empathetic_dialogues", None, "train"),
                     ("li2017dailydialog/daily_dialog", None, "test")]


def test_hub_offline_cli_is_immediate():
    code = ("import sys\nfrom emoloom.data import load_corpus, HubOfflineError\n"
            "try:\n    load_corpus('empathetic', 'facebook/empathetic_dialogues', 'train')\n"
            "except HubOfflineError as e:\n    print('datasets' in sys.modules, e)\n")
    proc = subprocess.run([PY, "-c", code], cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("False ") and "--source" in proc.stdout  # datasets never imported
    if not (REPO / "emoloom" / "__main__.py").exists():
        pytest.skip("emoloom/__main__.py not written yet")
    t0 = time.perf_counter()
    proc = run_cli("data", "stats", "--corpus", "goemotions", "--source", "google-research-datasets/go_emotions",
                   "--split", "train")
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0 and proc.stdout == ""
    assert "--source" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert elapsed < 2, f"offline hub error took {elapsed:.1f}s"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

needs_main = pytest.mark.skipif(not (REPO / "emoloom" / "__main__.py").exists(),
                                reason="emoloom/__main__.py (the dispatcher) not written yet")


@needs_main
def test_cli_stats_real_dev(shared_data):
    src = need(shared_data, "goemotions/dev.tsv")
    proc = run_cli("data", "stats", "--corpus", "goemotions", "--source", str(src), "--split", "dev")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert stats["sha256"] == {str(src): GOEMOTIONS_DEV_SHA256}
    assert stats["records"] == 5426 and stats["labels"]["neutral"] == 1766
    assert set(stats) >= {"corpus", "split", "records", "skipped", "labels", "vad_source", "sha256", "lexicon"}
    assert stats["lexicon"]["name"] == "builtin"


@needs_main
def test_cli_stats_skipped_reasons_capped(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("ok\t1\tok1\n" + "".join(f"row {i}\t99\tb{i}\n" for i in range(25)), encoding="utf-8")
    proc = run_cli("data", "stats", "--corpus", "goemotions", "--source", str(path), "--split", "dev")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["records"] == 1 and stats["skipped"] == 25
    reason_lines = [l for l in proc.stderr.splitlines() if l.startswith("skipped ")]
    assert len(reason_lines) == 20 and reason_lines[0] == f"skipped {path}:2: unknown label id '99' (goemotions ids are 0-27)"
    assert "5 more" in proc.stderr
    strict = run_cli("data", "stats", "--corpus", "goemotions", "--source", str(path), "--split", "dev", "--strict")
    assert strict.returncode == 1 and f"{path}:2:" in strict.stderr and strict.stdout == ""
