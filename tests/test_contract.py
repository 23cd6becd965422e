"""The JSON contract: prompt, target line and the tail-scanning parser."""
import io
import json
import subprocess
import sys
from argparse import Namespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emoloom.contract import VAD, Record, parse_output, render_prompt, render_target
from emoloom.labels import TAXONOMIES
from emoloom.parse_cli import run as parse_cli_run

GOOD = '{"labels":["joy"],"vad":{"v":0.81,"a":0.62,"d":0.55},"rationale":"sounds thrilled"}'


def parse(raw, taxonomy="goemotions"):
    return parse_output(raw, taxonomy)


def test_valid_answer_parses_with_normalized_labels():
    r = parse('{"labels":[" Joy ","joy","LOVE"],"vad":{"v":0.81,"a":0.62,"d":0.55},"rationale":"x"}')
    assert r.parse_ok and r.error is None
    assert r.labels == ["joy", "love"]
    assert r.vad == VAD(v=0.81, a=0.62, d=0.55)


@pytest.mark.parametrize("raw", [
    "Sure! Here is my answer: " + GOOD,
    GOOD + "\nI hope this helps {not json}.",
    "```json\n" + GOOD + "\n```",
    "reasoning: the user says {maybe} and \"quotes\"\n" + GOOD,
])
def test_preamble_trailing_text_and_fences_are_ignored(raw):
    r = parse(raw)
    assert r.parse_ok, r
    assert r.labels == ["joy"]


def test_braces_inside_rationale_string_do_not_break_scanning():
    raw = '{"labels":["anger"],"vad":{"v":0.1,"a":0.9,"d":0.6},"rationale":"said }{ and \\"}\\" loudly"}'
    r = parse(raw)
    assert r.parse_ok
    assert r.rationale == 'said }{ and "}" loudly'


def test_two_objects_the_last_decides_without_fallback():
    later_bad = GOOD + ' {"labels":["nope"],"vad":{"v":0.5,"a":0.5,"d":0.5},"rationale":""}'
    assert parse(later_bad).error == "unknown_label"
    later_good = '{"labels":["nope"]} ' + GOOD.replace("joy", "fear")
    assert parse(later_good).labels == ["fear"]


@pytest.mark.parametrize("raw, reason", [
    ("", "no_json"),
    ("I feel joy", "no_json"),
    ('{"labels":["joy"],"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":"trunc', "unbalanced"),
    ('{"labels":["joy"],"vad":{"v":0.8,"a":0.6,"d":0.5}', "unbalanced"),
    (GOOD + ' {"labels":["sad', "unbalanced"),
    ("{labels: [joy]}", "invalid_json"),
    ('{"labels":["happyish"],"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":""}', "unknown_label"),
    ('{"labels":[],"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":""}', "empty_labels"),
    ('{"labels":"joy","vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":""}', "bad_labels"),
    ('{"labels":["joy"],"vad":{"v":1.2,"a":0.6,"d":0.5},"rationale":""}', "bad_vad"),
    ('{"labels":["joy"],"vad":{"v":-0.1,"a":0.6,"d":0.5},"rationale":""}', "bad_vad"),
    ('{"labels":["joy"],"vad":{"v":"0.8","a":0.6,"d":0.5},"rationale":""}', "bad_vad"),
    ('{"labels":["joy"],"vad":{"v":NaN,"a":0.6,"d":0.5},"rationale":""}', "bad_vad"),
    ('{"labels":["joy"],"vad":{"v":true,"a":0.6,"d":0.5},"rationale":""}', "bad_vad"),
    ('{"labels":["joy"],"vad":{"v":0.8,"a":0.6},"rationale":""}', "bad_vad"),
    ('{"labels":["joy"],"vad":{"v":0.8,"a":0.6,"d":0.5,"x":1},"rationale":""}', "bad_vad"),
    ('{"labels":["joy"],"vad":{"v":0.8,"a":0.6,"d":0.5}}', "missing_field"),
    ('{"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":""}', "missing_field"),
    ('{"labels":["joy"],"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":3}', "bad_rationale"),
])
def test_invalid_answers_give_parse_ok_0_with_a_reason(raw, reason):
    r = parse(raw)
    assert not r.parse_ok
    assert r.error == reason
    assert r.labels is None and r.vad is None


def test_labels_are_checked_against_the_records_taxonomy():
    raw = '{"labels":["happiness"],"vad":{"v":0.9,"a":0.6,"d":0.6},"rationale":"ok"}'
    assert parse(raw, "dailydialog").parse_ok
    assert parse(raw, "goemotions").error == "unknown_label"


@pytest.mark.parametrize("raw", [
    "{" * 10_000,
    "{" * 10_000 + "}" * 10_000,
    '{"a":' * 5_000 + "1" + "}" * 5_000,
    "x" * 1_000_000 + GOOD,
    "\ud800\udfff{\ud800}",
    '{"labels":["joy"],"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":"\\',
])
def test_hostile_inputs_get_a_real_reason(raw):
    # parse_output turns any exception into error="internal", so "never raises" cannot fail:
    # what must hold is that no hostile input reaches that catch-all.
    r = parse(raw)
    assert (r.error is None) == r.parse_ok and r.error != "internal", r


@pytest.mark.parametrize("raw, reason", [
    # a JSON escape that decodes to a lone surrogate cannot be written out as UTF-8
    ('{"labels":["joy"],"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":"\\ud800"}', "bad_rationale"),
    ('{"labels":["joy\\udc00"],"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":""}', "unknown_label"),
    ('{"labels":["joy"],"vad":{"v":1' + "0" * 5000 + ',"a":0.6,"d":0.5},"rationale":""}', "invalid_json"),
    ('{"labels":["joy"],"vad":{"v":1e999,"a":0.6,"d":0.5},"rationale":""}', "bad_vad"),
    ('{"labels":["joy"],"vad":{"v":[[[[1]]]],"a":0.6,"d":0.5},"rationale":""}', "bad_vad"),
    ('{"labels":' + "[" * 500 + "]" * 500 + ',"vad":{"v":0.8,"a":0.6,"d":0.5},"rationale":""}', "bad_labels"),
])
def test_hostile_answers_get_their_reason(raw, reason):
    r = parse(raw)
    assert (r.parse_ok, r.error) == (False, reason), r
    json.dumps(r.row(), ensure_ascii=False).encode("utf-8")  # the row can be written out


def test_long_generation_still_finds_the_answer_at_the_tail():
    assert parse("x" * 1_000_000 + GOOD).parse_ok


def make_record(labels, taxonomy="goemotions", context=()):
    return Record(id="r1", text="I finally passed the exam!", labels=labels, taxonomy=taxonomy,
                  context=list(context), vad=VAD(v=0.9, a=0.7, d=0.6), vad_source="lexicon")


def test_prompt_names_the_taxonomy_labels_and_context_turns():
    prompt = render_prompt(make_record(["happiness"], "dailydialog", context=["Hi.", "How did it go?"]))
    assert "Labels: neutral, anger, disgust, fear, happiness, sadness, surprise\n" in prompt
    assert prompt.index("Turn 1: Hi.") < prompt.index("Turn 2: How did it go?") < prompt.index("Text: I finally")
    assert "Context" not in render_prompt(make_record(["joy"]))


def test_target_is_one_line_with_two_decimal_vad_and_short_rationale():
    line = render_target(["joy"], (0.8149, 0.6, 0.5), "a " * 30)
    assert "\n" not in line
    assert '"vad":{"v":0.81,"a":0.60,"d":0.50}' in line
    assert len(json.loads(line)["rationale"].split()) == 12


@pytest.mark.parametrize("field", [{"text": "bad \ud800 text"}, {"context": ["ok", "\udfff"]},
                                   {"id": "x\ud800"}, {"meta": {"note": ["\ud800"]}}])
def test_record_rejects_lone_surrogates(field):
    # A lone surrogate cannot be encoded as UTF-8: the record could be neither tokenised nor
    # written back, so it is refused where it is read (with the field named).
    with pytest.raises(ValueError, match="lone surrogate"):
        Record.model_validate({"id": "r", "text": "t", **field})
    assert Record(id="ok", text="astral \U0001f600 is fine").text.endswith("fine")


def test_record_rejects_labels_outside_its_taxonomy():
    with pytest.raises(ValueError, match="not in taxonomy"):
        Record(id="1", text="t", labels=["joy"], taxonomy="dailydialog")
    assert Record(id=5, text="t").id == "5"


_label_sets = st.sampled_from(list(TAXONOMIES)).flatmap(
    lambda t: st.tuples(st.just(t), st.lists(st.sampled_from(TAXONOMIES[t]), min_size=1, max_size=3, unique=True)))
_unit = st.floats(0, 1, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(tax_labels=_label_sets, v=_unit, a=_unit, d=_unit, rationale=st.text(max_size=80))
def test_every_rendered_target_parses_back_to_the_same_answer(tax_labels, v, a, d, rationale):
    tax, labels = tax_labels
    line = render_target(labels, (v, a, d), rationale)
    r = parse_output(line, tax)
    assert r.parse_ok, (line, r)
    assert r.labels == labels
    assert r.vad.as_tuple() == tuple(float(f"{x:.2f}") for x in (v, a, d))
    assert r.rationale == " ".join(rationale.split()[:12])


@settings(max_examples=500, deadline=None)
@given(raw=st.lists(st.sampled_from(list('{}[]":,\\ab01. \n') + ["\ud800", '"joy"', '"labels"', '"vad"']),
                    max_size=120).map("".join))
def test_parser_gives_a_real_reason_on_arbitrary_text(raw):
    r = parse_output(raw, "goemotions")
    assert r.parse_ok in (True, False)
    assert (r.error is None) == r.parse_ok
    assert r.error != "internal", r


def test_parse_cli_reports_malformed_lines_and_keeps_going():
    lines = [json.dumps({"id": 1, "output": GOOD}), "{not json", json.dumps({"id": 2, "output": "nothing"})]
    out, err = io.StringIO(), io.StringIO()
    status = parse_cli_run(Namespace(taxonomy="goemotions"), io.StringIO("\n".join(lines) + "\n"), out, err)
    rows = [json.loads(l) for l in out.getvalue().splitlines()]
    assert status == 1
    assert [r["id"] for r in rows] == [1, 2]
    assert rows[0] == {"id": 1, "parse_ok": True, "labels": ["joy"], "vad": {"v": 0.81, "a": 0.62, "d": 0.55},
                       "rationale": "sounds thrilled", "error": None}
    assert rows[1]["parse_ok"] is False and rows[1]["error"] == "no_json" and rows[1]["labels"] is None
    assert "<stdin>:2: malformed input line" in err.getvalue()
    assert json.loads(err.getvalue().splitlines()[-1])["parse_ok_rate"] == 0.5


def test_parse_cli_end_to_end_via_python_m():
    proc = subprocess.run([sys.executable, "-m", "emoloom", "parse", "--taxonomy", "dailydialog"],
                          input=json.dumps({"id": "a", "output": GOOD.replace("joy", "happiness")}) + "\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["labels"] == ["happiness"]
    assert '"parse_ok_rate": 1.0' in proc.stderr


def test_parse_cli_skips_lone_surrogate_lines_and_keeps_going():
    escaped = GOOD.replace("sounds thrilled", "\\ud800")  # the model wrote the 6 characters \ud800
    lines = [
        json.dumps({"id": 1, "output": escaped}),
        json.dumps({"id": "\ud800", "output": GOOD}),  # the input id is no valid text
        json.dumps({"id": 3, "output": "x\udc00" + GOOD}),  # nor is this raw output
        json.dumps({"id": 4, "output": GOOD}),
    ]
    out, err = io.StringIO(), io.StringIO()
    status = parse_cli_run(Namespace(taxonomy="goemotions"), io.StringIO("\n".join(lines) + "\n"), out, err)
    out.getvalue().encode("utf-8")  # everything written is valid UTF-8
    rows = [json.loads(l) for l in out.getvalue().splitlines()]
    assert status == 1
    assert [(r["id"], r["parse_ok"], r["error"]) for r in rows] == [(1, False, "bad_rationale"), (4, True, None)]
    assert "<stdin>:2: " in err.getvalue() and "<stdin>:3: " in err.getvalue()
    assert err.getvalue().count("lone surrogate") == 2


def test_parse_cli_lone_surrogate_via_python_m():
    lines = [json.dumps({"id": 1, "output": GOOD.replace("sounds thrilled", "\\ud800")}),
             json.dumps({"id": "\ud800", "output": GOOD}), json.dumps({"id": 3, "output": GOOD})]
    proc = subprocess.run([sys.executable, "-m", "emoloom", "parse", "--taxonomy", "goemotions"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    assert [json.loads(l)["id"] for l in proc.stdout.splitlines()] == [1, 3]
    assert "<stdin>:2: " in proc.stderr


@pytest.mark.parametrize("raw", [
    '{"labels":["joy"],"vad":{"v":0.8,"a":0.6,"d":0.7},"rationale":"a } and a { in text"} tail',
    'note {not json} then {"labels":["anger"],"vad":{"v":0.1,"a":0.9,"d":0.5},"rationale":"x"}',
    '```json\n{ "labels": ["fear"], "rationale": "she said \\"{\\" twice" }\n```',
    '{"rationale":"ends in a backslash \\\\"} more',
    '{ }',
    '{"labels":["joy"],"vad":{"v":0.5',
])
def test_the_decoders_close_rule_is_the_parsers(raw):
    """JsonCloseScanner (fed as tokens arrive) stops where find_last_object sees the object close."""
    from emoloom.contract import JsonCloseScanner, find_last_object

    scanner, closed_at = JsonCloseScanner(), None
    for end in range(0, len(raw), 3):  # three characters at a time, as tokens would come
        if scanner.feed(raw[end:end + 3]):
            closed_at = next(p for p in range(end + 1, len(raw) + 1) if JsonCloseScanner().feed(raw[:p]))
            break
    text, reason = find_last_object(raw if closed_at is None else raw[:closed_at])
    if closed_at is None:
        assert reason == "unbalanced"
    else:
        assert reason is None and raw[:closed_at].endswith(text) and text.lstrip("{ ")[:1] in ('"', "}")
