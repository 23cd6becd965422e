"""Presets by name, space overrides on the command line, paths resolved where the command starts,
trial run names and the parent run's note (no Ray, no training)."""
import json
import os
import subprocess
import sys

import pytest

from emoloom.config import ConfigError
from emoloom.paths import expand
from emoloom.screen.presets import PRESETS_DIR, presets


def dry_run(capsys, *argv: str) -> tuple[int, str, str]:
    from emoloom.screen.__main__ import main

    rc = main(["--dry-run", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip()


def test_help_lists_presets_spaces_override_syntax_and_results():
    proc = subprocess.run([sys.executable, "-m", "emoloom.screen", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    out = proc.stdout
    assert "presets (screens/*.yaml):   goemotions, smollm2" in out
    assert "search spaces (space=NAME): default, goemotions" in out
    assert "space.num_trials=2 space.max_concurrent=1" in out and "space.fixed.epochs=1" in out
    assert "report/leaderboard.md" in out and "mlflow.db" in out


def test_the_goemotions_preset_is_shipped_and_reads_its_data_root_from_the_environment():
    assert "goemotions" in presets()
    text = (PRESETS_DIR / "goemotions.yaml").read_text()
    assert "${EMOLOOM_DATA:-../shared/data}/goemotions" in text and "empatheticdialogues_hypemo" in text


def test_the_smollm2_preset_plans_a_pretrained_model_against_a_tiny_control(capsys, shared_data, monkeypatch):
    monkeypatch.setenv("EMOLOOM_DATA", str(shared_data))
    rc, out, err = dry_run(capsys, "smollm2")
    assert rc == 0, err
    plan = json.loads(out)
    assert set(plan["space"]["params"]["model.name"]["choices"]) == {"smollm2-135m", "tiny-qwen2"}
    assert plan["evaluation_sample"]["rows"] == 150


def test_expand_reads_variables_with_defaults(monkeypatch):
    monkeypatch.setenv("EMOLOOM_DATA", "/data/root")
    assert expand("${EMOLOOM_DATA:-../shared/data}/goemotions") == "/data/root/goemotions"
    monkeypatch.delenv("EMOLOOM_DATA")
    assert expand("${EMOLOOM_DATA:-../shared/data}/goemotions") == "../shared/data/goemotions"
    with pytest.raises(ConfigError, match="EMOLOOM_NOPE is not set"):
        expand("${EMOLOOM_NOPE}/x")


def test_a_space_key_without_space_prefix_gets_a_suggestion(capsys):
    rc, _, err = dry_run(capsys, "num_trials=2")
    assert rc == 2 and err == "error: override num_trials=2: unknown key 'num_trials'; did you mean 'space.num_trials'?"
    rc, _, err = dry_run(capsys, "space.num_trails=2")
    assert rc == 2 and "did you mean 'space.num_trials'?" in err and "\n" not in err
    rc, _, err = dry_run(capsys, "goemotion")
    assert rc == 2 and "not a preset (goemotions, smollm2); did you mean 'goemotions'?" in err


def test_space_keys_are_overridden_on_the_command_line(capsys):
    rc, out, err = dry_run(capsys, "space.num_trials=2", "space.max_concurrent=1", "space.asha.max_t=1",
                           "space.fixed.data.synthetic_size=300",
                           "space.params.optim.lr={type: float, low: 0.001, high: 0.004}")
    assert rc == 0, err
    plan = json.loads(out)["space"]
    assert (plan["num_trials"], plan["max_concurrent"], plan["asha"]["max_t"]) == (2, 1, 1)
    assert plan["fixed"]["data.synthetic_size"] == 300 and plan["params"]["optim.lr"]["high"] == 0.004
    # they are part of the screen's identity
    _, base, _ = dry_run(capsys)
    assert json.loads(base)["config_hash"] != json.loads(out)["config_hash"]
    rc, _, err = dry_run(capsys, "space.num_trials=0")
    assert rc == 2 and "num_trials: Input should be greater than or equal to 1" in err


def relative_screen(folder):
    """A screen whose cross-corpus data is a relative folder (synthetic DailyDialog files)."""
    from emoloom.data.synthetic import write_synthetic

    write_synthetic(folder / "data", seed=0, size=200)
    return ["eval.cross_corpus=[{corpus: dailydialog, source: data/dailydialog, split: validation, limit: 8}]",
            "train.data.synthetic_size=300", "eval.dev_limit=8"]


def test_relative_paths_resolve_where_the_command_starts_and_the_hash_does_not_move(capsys, tmp_path, monkeypatch):
    plans = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        argv = relative_screen(folder)
        monkeypatch.chdir(folder)
        rc, out, err = dry_run(capsys, *argv)
        assert rc == 0, err
        plans.append(json.loads(out))
    for name, plan in zip("ab", plans):
        assert plan["config"]["eval"]["cross_corpus"][0]["source"] == str(tmp_path / name / "data" / "dailydialog")
        assert plan["evaluation_sample"]["cross_corpus_rows"] == {"dailydialog/validation": 8}
    # the same screen from a copy elsewhere (a Ray job's working dir) keeps its identity, so it resumes
    assert plans[0]["config_hash"] == plans[1]["config_hash"]


def test_a_data_root_from_the_environment_is_part_of_the_identity(capsys, tmp_path, monkeypatch):
    from emoloom.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "data", seed=0, size=200)
    monkeypatch.chdir(tmp_path)
    argv = ["eval.cross_corpus=[{corpus: dailydialog, source: '${EMOLOOM_TEST_ROOT:-data}/dailydialog', "
            "split: validation, limit: 8}]", "train.data.synthetic_size=300", "eval.dev_limit=8"]
    monkeypatch.delenv("EMOLOOM_TEST_ROOT", raising=False)
    rc, default, err = dry_run(capsys, *argv)
    assert rc == 0, err
    monkeypatch.setenv("EMOLOOM_TEST_ROOT", str(tmp_path / "data"))
    rc, chosen, err = dry_run(capsys, *argv)
    assert rc == 0, err
    default, chosen = json.loads(default), json.loads(chosen)
    assert default["config"]["eval"]["cross_corpus"] == chosen["config"]["eval"]["cross_corpus"]
    assert default["config_hash"] != chosen["config_hash"]  # another data root: another screen


def test_a_trial_in_another_working_directory_reads_the_resolved_paths(tmp_path, monkeypatch):
    """What failed every trial before: Tune runs each trial in a folder of its own."""
    from emoloom.config import load_config
    from emoloom.screen.config import ScreenConfig
    from emoloom.screen.presets import resolve_paths
    from emoloom.screen.space import SearchSpace
    from emoloom.screen.trial import build_train_config
    from emoloom.train.examples import prepare_data
    from emoloom.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "data", seed=0, size=200)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ScreenConfig, None, ["train.data.sources=[{corpus: goemotions, source: data/goemotions, "
                                           "split: train, dev_split: dev}]"])
    cfg, space = resolve_paths(cfg, SearchSpace(fixed={"data.lexicon": None}))
    elsewhere = tmp_path / "trial_0001"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    train_cfg = build_train_config(cfg.train, space.fixed, {}, elsewhere, 0)
    assert train_cfg.data.sources[0].source == str(tmp_path / "data" / "goemotions")
    assert len(prepare_data(train_cfg).pool_a) > 0


def test_the_train_command_resolves_relative_paths_where_it_starts(tmp_path, monkeypatch, capsys):
    """Ray Train workers run elsewhere: `emoloom train` hands them absolute inputs and output."""
    import yaml

    from emoloom.__main__ import main
    from emoloom.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "data", seed=0, size=50)
    (tmp_path / "train.yaml").write_text("data:\n  sources:\n    - {corpus: goemotions, source: data/goemotions, "
                                         "split: train, dev_split: dev}\nout: runs/one\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "train.yaml", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["sources"][0]["source"] == str(tmp_path / "data" / "goemotions")
    assert cfg["out"] == str(tmp_path / "runs" / "one")


def test_a_missing_relative_path_names_the_directory_it_was_read_from(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = dry_run(capsys, "eval.cross_corpus=[{corpus: dailydialog, source: ./no_dd, split: validation}]")
    assert rc == 2 and "'./no_dd': no such file or folder" in err and str(tmp_path) in err


def test_trial_run_names_say_what_the_trial_is():
    from emoloom.screen.trial import run_name

    assert run_name("ab12_00001", {"model.name": "tiny-llama", "optim.lr": 0.003,
                                   "loss.vad_preserve": 0.2}) == "tiny-llama lr=3e-3 vp=0.20 #00001"
    assert run_name("ab12_00002", {"optim.lr": 0.0125, "sampling.schedule": "cosine"}) == \
        "lr=0.01 schedule=cosine #00002"
    assert run_name("ab12_00003") == "trial_ab12_00003"


def test_the_parent_note_holds_the_leaderboard_and_fits_a_tag(tmp_path):
    from emoloom import tracking
    from emoloom.screen.run import screen_note

    board = tmp_path / "leaderboard.md"
    rows = [f"| {i} | t{i} | FINISHED | tiny | 0.1 |" for i in range(1, 200)]
    board.write_text("| rank | trial | status | model | objective |\n|---|---|---|---|---|\n" + "\n".join(rows)
                     + "\n\nRanks 1 and 2 are not separated on 300 rows.\n")
    note = screen_note("s-1", board, {"trial": "t1", "model": "tiny", "objective": 0.1})
    assert len(note) <= tracking.NOTE_CHARS and note.startswith("### Screen s-1")
    assert "**Best**: trial t1 (tiny), objective 0.1000" in note
    assert "| 1 | t1 |" in note and "| 199 | t199 |" not in note  # the lowest rows go first
    assert "Ranks 1 and 2 are not separated" in note and "report/leaderboard.md" in note


def test_mlflow_command_is_the_one_of_this_environment(monkeypatch, tmp_path):
    from emoloom.screen.__main__ import mlflow_command

    cmd = mlflow_command()
    assert cmd.endswith("mlflow")
    if os.path.exists(os.path.join(os.path.dirname(sys.executable), "mlflow")):
        assert os.path.samefile(cmd if os.path.isabs(cmd) or os.sep in cmd else
                                os.path.join(os.path.dirname(sys.executable), "mlflow"),
                                os.path.join(os.path.dirname(sys.executable), "mlflow"))
