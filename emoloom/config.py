"""Config is data: typed pydantic models loaded from YAML plus `key=value` overrides.

Unknown keys are rejected with a "did you mean" suggestion and the file (or override) that
introduced them, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Iterable, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, and so are NaN and infinities.

    `allow_inf_nan=False` reaches every float of every subclass, inside lists, dicts and
    Optionals too; without it YAML's `.nan` / `.inf` pass (`.nan` then fails a `ge=0` bound with
    a misleading message, `.inf` passes it and a run trains to NaN). Free-form values typed
    `Any` are not floats to pydantic: type them `AnyFinite`.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


def _finite(value: Any, where: str = "") -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # the same wording as pydantic's own float check; `where` is the path below the field
        inside = f" ({where}={value})" if where else ""
        raise PydanticCustomError("finite_number", "Input should be a finite number" + inside)
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _finite(item, f"{where}[{i}]")
    return value


# A free-form config value (a dict of training values, a categorical choice) that holds no NaN or
# infinity at any depth, as StrictModel's float fields.
AnyFinite = Annotated[Any, AfterValidator(_finite)]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest of `known`, or "" when none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class ConfigError(ValueError):
    """A config file or override that does not fit its schema."""


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3); the value is read as YAML so numbers and lists work."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, _, raw = item.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def _set(tree: dict, path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = tree.get(key)
        if not isinstance(node, dict):
            node = tree[key] = {}
        tree = node
    tree[path[-1]] = value


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model that `loc` points into, for suggestions."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = field.annotation
        # Optional[Model] / Model | None
        for arg in getattr(current, "__args__", ()) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def explain(exc: ValidationError, model: type[BaseModel], origin: str) -> str:
    """One line for one error (the CLIs print `error: <this>`), else one indented line per error."""
    lines = [f"{origin}: invalid {model.__name__}"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            known = _fields_at(model, err["loc"])
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f"; did you mean {'.'.join([*map(str, err['loc'][:-1]), close[0]])!r}?" if close else ""
            lines.append(f"  {key}: unknown key{hint}")
        else:
            lines.append(f"  {key}: {err['msg']}")
    if len(lines) == 2:
        return f"{lines[0]}: {lines[1].strip()}"
    return "\n".join(lines)


def load_config(
    model: type[M],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
) -> M:
    """Build `model` from defaults < `base` dict < YAML file < `key=value` overrides."""
    tree: dict = json.loads(json.dumps(base)) if base else {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except OSError as exc:  # a folder, no permission: one line, not a traceback
            raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        _deep_update(tree, loaded)
    for item in overrides:
        keys, value = parse_override(item)
        _set(tree, keys, value)
    if overrides:
        origin += " + overrides " + " ".join(overrides)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(explain(exc, model, origin)) from None


def _deep_update(tree: dict, other: dict) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _deep_update(tree[key], value)
        else:
            tree[key] = value


def config_hash(cfg: BaseModel, exclude: set[str] | None = None) -> str:
    """Stable short hash of a resolved config (canonical JSON), for run identity and resume."""
    data = cfg.model_dump(mode="json", exclude=exclude)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted keys used for overrides and MLflow params."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
