"""Screen config, search spaces and the --dry-run plan (no Ray, no training)."""
import json
import subprocess
import sys

import pytest

from emoloom.config import ConfigError, load_config
from emoloom.screen.config import ClusterShape, ScreenConfig
from emoloom.screen.plan import concurrency
from emoloom.screen.space import SPACES_DIR, check_keys, load_space
from emoloom.screen.trial import build_train_config, train_keys


@pytest.mark.parametrize("name", sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
def test_every_shipped_space_loads_and_names_real_training_keys(name):
    space = load_space(name)
    check_keys(space, train_keys(), name)
    assert space.num_trials >= len(space.baselines)
    assert set(space.distributions()) == set(space.params)


def test_shipped_spaces_cover_the_issue():
    names = {p.stem for p in SPACES_DIR.glob("*.yaml")}
    assert {"default", "regularizers", "temperature", "gpu_base_models"} <= names
    default = load_space("default")
    assert default.num_trials >= 8 and default.asha.enabled
    assert len(default.params["model.name"].choices) >= 2


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_unknown_key_in_a_space_names_the_file_and_suggests(tmp_path):
    path = write(tmp_path, "metric: objective\nnum_trails: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_space(path)
    assert str(path) in str(exc.value) and "did you mean 'num_trials'" in str(exc.value)


@pytest.mark.parametrize("param, message", [
    ("{type: float, low: 1.0, high: 0.1}", "must not exceed high"),
    ("{type: float, low: 0.0, high: 1.0, log: true}", "log-scaled range needs low > 0"),
    ("{type: int, low: 1, high: 4, step: 0.5}", "valid integer"),
    ("{type: categorical, choices: []}", "at least 1"),
    ("{type: uniform, low: 0, high: 1}", "does not match any of the expected tags"),
])
def test_bad_ranges_are_rejected_with_the_key(tmp_path, param, message):
    path = write(tmp_path, f"params:\n  optim.lr: {param}\n")
    with pytest.raises(ConfigError) as exc:
        load_space(path)
    assert "params.optim.lr" in str(exc.value) and message in str(exc.value)


def test_param_that_is_not_a_training_key_is_rejected(tmp_path):
    space = load_space(write(tmp_path, "params:\n  optim.lrr: {type: float, low: 0.1, high: 0.2}\n"))
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        check_keys(space, train_keys(), "space.yaml")


def test_baseline_outside_its_range_is_rejected(tmp_path):
    path = write(tmp_path, "num_trials: 2\nparams:\n  optim.lr: {type: float, low: 0.1, high: 0.2}\n"
                           "baselines:\n  - {optim.lr: 0.5}\n")
    with pytest.raises(ConfigError, match="outside its range"):
        load_space(path)


def test_sampled_parameters_override_fixed_and_screen_values(tmp_path):
    cfg = build_train_config({"optim": {"lr": 0.1, "batch_size": 4}}, {"epochs": 2, "optim.lr": 0.2},
                             {"optim.lr": 0.3, "model.name": "tiny-llama"}, tmp_path, seed=7)
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.epochs, cfg.model.name, cfg.seed) == (0.3, 4, 2, "tiny-llama", 7)


def test_plan_counts_trials_at_once_from_the_cluster_shape():
    space = load_space("gpu_base_models")
    cfg = load_config(ScreenConfig, None, ["resources.train_workers=2", "resources.gpus_per_worker=1",
                                           "resources.eval_actors=2", "resources.gpus_per_eval_actor=0.5"])
    plan = concurrency(cfg, space, ClusterShape(nodes=2, cpus_per_node=32, gpus_per_node=8))
    assert plan["per_trial"]["peak_gpus"] == 2 and plan["per_trial"]["eval_actors_per_gpu"] == 2
    assert plan["trials_at_once"] == 8  # 16 GPUs / 2 per trial, capped by max_concurrent 8
    small = concurrency(cfg, space, ClusterShape(nodes=1, cpus_per_node=8, gpus_per_node=4))
    assert small["trials_at_once"] == 2 and small["limited_by"] == "cluster resources"


def test_dry_run_prints_the_plan_without_starting_ray():
    proc = subprocess.run([sys.executable, "-m", "emoloom.screen", "--dry-run", "cluster.nodes=4",
                           "cluster.gpus_per_node=8", "cluster.cpus_per_node=32", "resources.train_workers=2", "resources.gpus_per_worker=1",
                           "space=gpu_base_models"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["config_hash"]) == 16
    assert out["space"]["num_trials"] == 16 and "model.name" in out["space"]["params"]
    assert out["plan"]["trials_at_once"] == 8 and out["plan"]["per_trial"]["deepspeed_ranks"] == 2
    assert "Started a local Ray instance" not in proc.stderr


def test_dry_run_rejects_a_typo_with_a_suggestion():
    proc = subprocess.run([sys.executable, "-m", "emoloom.screen", "--dry-run", "eval.decodr=fast"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "did you mean 'eval.decoder'" in proc.stderr


def dry_run(capsys, *argv: str) -> tuple[int, str]:
    """`python -m emoloom.screen --dry-run ARGV` in-process: (exit code, stderr)."""
    from emoloom.screen.__main__ import main

    rc = main(["--dry-run", *argv])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("override, key", [
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.max_new_tokens=-1", "eval.max_new_tokens"),
    ("eval.dev_limit=-1", "eval.dev_limit"),  # was accepted: the trial's slice dropped the last row
    ("eval.epoch_limit=0", "eval.epoch_limit"),
    ("eval.cross_corpus=[{corpus: synthetic, taxonomy: dailydialog, split: validation, limit: -1}]",
     "eval.cross_corpus.0.limit"),
    ("resources.driver_cpus=-1", "resources.driver_cpus"),
    ("resources.train_workers=-1", "resources.train_workers"),
    ("resources.gpus_per_eval_actor=-0.5", "resources.gpus_per_eval_actor"),
    ("cluster.nodes=0", "cluster.nodes"),
    ("cluster.cpus_per_node=0", "cluster.cpus_per_node"),
    ("ray.num_cpus=0", "ray.num_cpus"),
    ("trial_timeout_s=0", "trial_timeout_s"),
    ("trial_timeout_s=.inf", "trial_timeout_s"),
    ("resources.driver_cpus=.nan", "resources.driver_cpus"),
    ("train.optim.lr=.inf", "train.optim"),  # the free-form train: section, before any trial
])
def test_dry_run_rejects_impossible_values_naming_the_key(capsys, override, key):
    rc, err = dry_run(capsys, override)
    assert rc == 2 and err.startswith("error: ") and "\n" not in err, err
    assert f"{key}: " in err, err


def test_dry_run_of_a_bad_value_prints_one_error_line_and_exits_2():
    proc = subprocess.run([sys.executable, "-m", "emoloom.screen", "--dry-run", "eval.batch_size=0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: defaults + overrides eval.batch_size=0: invalid ScreenConfig: eval.batch_size: "
        "Input should be greater than or equal to 1"]


def test_dry_run_checks_model_names_like_a_real_run(capsys, tmp_path):
    rc, err = dry_run(capsys, "train.model.name=tiny-qwen")
    assert rc == 2 and "train.model.name: 'tiny-qwen' is not a built-in model" in err
    assert "did you mean 'tiny-qwen2'?" in err and "\n" not in err
    rc, err = dry_run(capsys, "train.model.name=./no/such/model")
    assert rc == 2 and "'./no/such/model'" in err
    space = write(tmp_path, "params:\n  model.name: {type: categorical, choices: [tiny-qwen2, tiny-lama]}\n")
    rc, err = dry_run(capsys, f"space={space}")
    assert rc == 2 and f"{space}: params.model.name: 'tiny-lama'" in err and "did you mean 'tiny-llama'" in err
    # hub ids are judged by their shape (nothing is looked up), local folders by existence
    assert dry_run(capsys, "train.model.name=Qwen/Qwen2.5-0.5B-Instruct", "space=gpu_base_models")[0] == 0
    assert dry_run(capsys, f"train.model.name={tmp_path}")[0] == 0


def test_dry_run_checks_data_paths_like_a_real_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = "train.data.sources=[{corpus: jsonl, source: rows.jsonl, split: train}]"
    rc, err = dry_run(capsys, source)
    assert rc == 2 and "train.data.sources[0].source: 'rows.jsonl': no such file or folder" in err, err
    assert str(tmp_path) in err  # relative paths: where they were looked for
    (tmp_path / "rows.jsonl").write_text("")
    assert dry_run(capsys, source)[0] == 0  # relative to the working directory
    missing = tmp_path / "goemotions"
    rc, err = dry_run(capsys, f"eval.cross_corpus=[{{corpus: goemotions, source: {missing}, split: test}}]")
    assert rc == 2 and f"eval.cross_corpus[0].source: '{missing}': no such file or folder" in err, err
    hub = "eval.cross_corpus=[{corpus: goemotions, source: google-research-datasets/go_emotions, split: test}]"
    assert dry_run(capsys, hub)[0] == 0  # a hub id: not contacted by a dry run
    rc, err = dry_run(capsys, "train.data.lexicon=lexicon.tsv")
    assert rc == 2 and "train.data.lexicon: 'lexicon.tsv'" in err
    # planning a screen for a cluster (its filesystem is not this one): warnings, not errors
    rc, err = dry_run(capsys, "ray.address=auto", "train.data.lexicon=/mnt/shared/lexicon.tsv")
    assert rc == 0 and err == ("warning: screen config: train.data.lexicon: '/mnt/shared/lexicon.tsv': no such file "
                               "or folder on this machine (the cluster's nodes must have it)")


def test_a_folder_given_as_space_or_config_is_a_one_line_error(capsys, tmp_path):
    rc, err = dry_run(capsys, f"space={tmp_path}")
    assert rc == 2 and err == (f"error: space={tmp_path}: is a folder; give a search-space YAML file or a "
                               f"shipped space ({', '.join(sorted(p.stem for p in SPACES_DIR.glob('*.yaml')))})")
    rc, err = dry_run(capsys, str(tmp_path))
    assert rc == 2 and "cannot read the config file" in err and "\n" not in err


def test_non_finite_values_in_a_space_are_rejected(tmp_path):
    path = write(tmp_path, "params:\n  optim.lr: {type: categorical, choices: [0.001, .nan]}\n")
    with pytest.raises(ConfigError, match=r"choices\.1: Input should be a finite number"):
        load_space(path)
    with pytest.raises(ConfigError, match=r"fixed\.optim\.lr: Input should be a finite number"):
        load_space(write(tmp_path, "fixed:\n  optim.lr: .inf\n"))
    with pytest.raises(ConfigError, match="low: Input should be a finite number"):
        load_space(write(tmp_path, "params:\n  optim.lr: {type: float, low: -.inf, high: 0.1}\n"))


def test_an_unknown_decoder_is_named_with_the_closest_one():
    # One definition of the decoder names (eval.decoding.DECODERS) checks the screen's config too.
    with pytest.raises(ConfigError, match="unknown decoder 'fsat'.*did you mean 'fast'"):
        load_config(ScreenConfig, None, ["eval.decoder=fsat"])
    assert load_config(ScreenConfig, None, ["eval.decoder=score"]).eval.decoder == "score"
