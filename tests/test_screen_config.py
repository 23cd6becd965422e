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
