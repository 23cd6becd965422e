"""Typed config: YAML + key=value overrides, unknown keys rejected with a suggestion."""
import pytest
from pydantic import Field

from emoloom.config import AnyFinite, ConfigError, StrictModel, config_hash, flatten, load_config


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


class Section(StrictModel):
    rate: float = Field(0.5, ge=0)
    maybe: float | None = None
    steps: list[float] = []
    weights: dict[str, float] = {}


class Outer(StrictModel):
    section: Section = Section()
    sections: list[Section] = []
    optional: Section | None = None
    free: dict[str, AnyFinite] = {}


@pytest.mark.parametrize("override, key", [
    ("section.rate=.nan", "section.rate"),  # was "greater than or equal to 0"
    ("section.rate=.inf", "section.rate"),  # was accepted
    ("section.maybe=-.inf", "section.maybe"),
    ("section.steps=[0.1, .nan]", "section.steps.1"),
    ("section.weights={a: .inf}", "section.weights.a"),
    ("sections=[{rate: .nan}]", "sections.0.rate"),
    ("optional.rate=.inf", "optional.rate"),
    ("free.optim={lr: .nan}", "free.optim"),  # Any-typed values: checked at every depth
    ("free.choices=[1, [2, .inf]]", "free.choices"),
])
def test_non_finite_numbers_are_rejected_everywhere(override, key):
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, None, [override])
    message = str(exc.value)
    assert f"{key}: Input should be a finite number" in message, message
    assert "greater than" not in message and "\n" not in message  # one error, one line
    ok = load_config(Outer, None, ["section.rate=1e30", "free.optim={lr: 0.001, name: x}"])
    assert ok.section.rate == 1e30 and ok.free["optim"] == {"lr": 0.001, "name": "x"}


def test_a_folder_given_as_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(Cfg, tmp_path)
