"""`evaluate` says why ParseOK is 0 or Macro-F1 is null (no model needed)."""
import json

from emoloom.eval.cli import explain_metrics


def test_failures_are_counted_and_another_taxonomys_labels_are_named(tmp_path):
    rows = [{"id": "1", "taxonomy": "goemotions", "parse_ok": False, "error": "unknown_label",
             "detail": "labels: not in the taxonomy: ['afraid', 'proud']"},
            {"id": "2", "taxonomy": "goemotions", "parse_ok": False, "error": "unknown_label",
             "detail": "labels: not in the taxonomy: ['not-a-label']"},
            {"id": "3", "taxonomy": "goemotions", "parse_ok": False, "error": "no_json", "detail": "no JSON object"}]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    head = {"n": 3, "parse_ok_rate": 0.0, "parse_errors": {"unknown_label": 2, "no_json": 1},
            "ok_only": {"labels": {"macro_f1": None}}}
    lines = explain_metrics(head, predictions)
    assert lines[0].startswith("3 of 3 answers failed the contract: unknown_label 2, no_json 1")
    assert "answers goemotions records with labels of another taxonomy: empathetic (1 answers)" in lines[1]
    assert lines[2].startswith("macro_f1 is null: no ParseOK answer")


def test_a_clean_evaluation_says_nothing(tmp_path):
    head = {"n": 3, "parse_ok_rate": 1.0, "parse_errors": {}, "ok_only": {"labels": {"macro_f1": 0.5}}}
    assert explain_metrics(head, tmp_path / "missing.jsonl") == []
