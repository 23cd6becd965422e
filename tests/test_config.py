"""Typed config: YAML + key=value overrides, unknown keys rejected with a suggestion."""
import pytest

from emoloom.config import ConfigError, StrictModel, config_hash, flatten, load_config


class Lora(StrictModel):
    r: int = 8
    alpha: int = 16


class Cfg(StrictModel):
    seed: int = 0
    lr: float = 1e-3
    lora: Lora = Lora()


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\nlora:\n  r: 4\n")
    cfg = load_config(Cfg, f, ["lora.alpha=32", "lr=0.5"])
    assert (cfg.seed, cfg.lr, cfg.lora.r, cfg.lora.alpha) == (3, 0.5, 4, 32)


def test_unknown_key_names_the_file_and_suggests(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lora:\n  alhpa: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Cfg, f)
    assert str(f) in str(exc.value)
    assert "lora.alhpa: unknown key; did you mean 'lora.alpha'?" in str(exc.value)


def test_bad_override_value_and_shape():
    with pytest.raises(ConfigError, match="seed"):
        load_config(Cfg, None, ["seed=abc"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Cfg, None, ["seed"])


def test_hash_is_stable_and_sensitive():
    assert config_hash(Cfg()) == config_hash(load_config(Cfg))
    assert config_hash(Cfg()) != config_hash(Cfg(seed=1))
    assert flatten(Cfg().model_dump()) == {"seed": 0, "lr": 1e-3, "lora.r": 8, "lora.alpha": 16}
