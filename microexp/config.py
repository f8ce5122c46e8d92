"""Typed experiment configuration: one schema of defaults, validated in one place.

A recipe is a YAML mapping with the sections below; ``--set key.sub=value`` overrides are applied to
the mapping before validation, values parsed as YAML (``train.lr=3e-4``, ``cv.stratify=true``,
``model.kwargs={drop_rate: 0.3}``). An unknown key or a bad value raises :class:`ConfigError` naming the
key and listing the valid keys or values.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from microexp.errors import ConfigError

#: cv.protocol: subject k-fold, leave-one-subject-out, leave-one-dataset-out (composite tables), fixed test subjects
PROTOCOLS = ("kfold", "loso", "lodo", "split")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
MODEL_SELECTION = ("last", "val")
METRICS = ("uf1", "uar", "acc")


@dataclass
class DataConfig:
    """Where the clips are and how key frames are sampled and preprocessed."""

    annotations: str = ""
    format: str = "auto"
    root: str | None = None
    class_map: str = "dfme7"
    num_frames: int = 8
    sampling: str = "tsn"
    stride: int = 1
    reference_fps: float | None = None
    size: int = 112
    crop_scale: float = 0.85
    flip: bool = True
    grayscale: bool = False
    frame_difference: str = "none"
    backend: str = "auto"
    cache_dir: str | None = None
    flow_method: str = "farneback"
    num_workers: int = 2
    strict: bool = False


@dataclass
class ModelConfig:
    """Which registered model, with which constructor arguments."""

    name: str = "tsm_tiny"
    pretrained: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation and model selection (on training subjects only)."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: int = 1
    step_size: int = 10
    grad_clip: float | None = 1.0
    sampler: str = "none"
    model_selection: str = "last"
    selection_metric: str = "uf1"
    amp: bool = True
    channels_last: bool = True


@dataclass
class LossConfig:
    """Imbalance-aware loss and its parameters (class counts come from the training fold)."""

    name: str = "ce"
    gamma: float = 2.0
    beta: float = 0.999
    label_smoothing: float = 0.0
    max_m: float = 0.5
    scale: float = 30.0
    drw_epoch: int | None = None


@dataclass
class CVConfig:
    """The evaluation protocol."""

    protocol: str = "kfold"
    folds: int = 10
    stratify: bool = False
    val_fraction: float = 0.0
    test_subjects: list[int] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    """A whole recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-ready)."""
        return dataclasses.asdict(self)


def valid_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts, e.g. ``['data.annotations', ..., 'seed']``."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += valid_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested mapping; returns a copy."""
    result = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        _check_key(key)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({_first_line(exc)})") from None
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return result


def build_config(raw: Mapping[str, Any] | None, *, source: str = "config") -> ExperimentConfig:
    """Validate a nested mapping against the schema and return the typed config."""
    config = _build(ExperimentConfig, raw or {}, prefix="", source=source)
    validate(config, source=source)
    return config


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML recipe (or start from defaults when ``path`` is None) and apply ``overrides``."""
    raw: Any = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"recipe not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({_first_line(exc)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of sections, got {type(raw).__name__}")
        source = str(p)
    return build_config(apply_overrides(raw, overrides), source=source)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (it loads back unchanged)."""
    from microexp.fileio import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


#: keys that cannot change a run's results, so a resume may change them (where and how fast it runs)
RESULT_NEUTRAL_KEYS = ("data.num_workers", "data.cache_dir", "device")


def config_differences(old: ExperimentConfig, new: ExperimentConfig, *,
                       ignore: Sequence[str] = RESULT_NEUTRAL_KEYS) -> list[str]:
    """Dotted keys whose values differ between two configs, as ``key: old -> new``, except ``ignore``."""
    flat_old, flat_new = _flatten(old.to_dict()), _flatten(new.to_dict())
    return [f"{key}: {flat_old.get(key)!r} -> {flat_new.get(key)!r}"
            for key in sorted(set(flat_old) | set(flat_new))
            if key not in ignore and flat_old.get(key) != flat_new.get(key)]


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and not (prefix + key).startswith("model.kwargs"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def validate(config: ExperimentConfig, *, source: str = "config") -> None:
    """Check values that the types alone do not constrain."""
    from microexp.data.samplers import SAMPLERS
    from microexp.data.sampling import STRATEGIES
    from microexp.data.transforms import FRAME_DIFFERENCES
    from microexp.data.video import BACKENDS
    from microexp.losses import LOSSES

    choices = {
        "data.sampling": (config.data.sampling, STRATEGIES),
        "data.backend": (config.data.backend, BACKENDS),
        "data.frame_difference": (config.data.frame_difference, FRAME_DIFFERENCES),
        "cv.protocol": (config.cv.protocol, PROTOCOLS),
        "train.sampler": (config.train.sampler, SAMPLERS),
        "loss.name": (config.loss.name, LOSSES),
        "train.optimizer": (config.train.optimizer, OPTIMIZERS),
        "train.schedule": (config.train.schedule, SCHEDULES),
        "train.model_selection": (config.train.model_selection, MODEL_SELECTION),
        "train.selection_metric": (config.train.selection_metric, METRICS),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{source}: {key}={value!r}: expected one of {', '.join(allowed)}")
    positive = {
        "data.num_frames": config.data.num_frames, "data.stride": config.data.stride, "data.size": config.data.size,
        "train.epochs": config.train.epochs, "train.batch_size": config.train.batch_size, "cv.folds": config.cv.folds,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{source}: {key}={value}: expected an integer >= 1")
    ranges = {
        "train.lr": (config.train.lr, 0.0, None), "data.crop_scale": (config.data.crop_scale, 0.1, 1.0),
        "cv.val_fraction": (config.cv.val_fraction, 0.0, 0.5), "loss.label_smoothing": (config.loss.label_smoothing, 0.0, 1.0),
        "loss.beta": (config.loss.beta, 0.0, 1.0),
    }
    for key, (value, low, high) in ranges.items():
        if value < low or (high is not None and value >= high) or (key == "train.lr" and value <= 0):
            bounds = f"> {low}" if high is None else f"in [{low}, {high})"
            raise ConfigError(f"{source}: {key}={value}: expected a value {bounds}")
    if config.train.model_selection == "val" and config.cv.val_fraction <= 0:
        raise ConfigError(
            f"{source}: train.model_selection=val needs cv.val_fraction > 0 (validation subjects are carved from "
            "the training subjects; the test fold is never used for selection)"
        )
    if config.cv.protocol == "split" and not config.cv.test_subjects:
        raise ConfigError(f"{source}: cv.protocol=split needs cv.test_subjects (a list of subject ids)")
    if config.device != "auto" and not (config.device == "cpu" or config.device.startswith("cuda")):
        raise ConfigError(f"{source}: device={config.device!r}: expected auto, cpu, cuda or cuda:N")


# ----------------------------------------------------------------------------------------------------
# building dataclasses from mappings, with type checks


def _build(cls: type, raw: Any, *, prefix: str, source: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            _check_key(f"{prefix}{key}", source=source)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        key, value, hint = f"{prefix}{f.name}", raw[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            values[f.name] = _build(hint, value, prefix=f"{key}.", source=source)
        else:
            values[f.name] = _coerce(value, hint, key=key, source=source)
    return cls(**values)


def _coerce(value: Any, hint: Any, *, key: str, source: str) -> Any:
    """Check ``value`` against a field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key=key, source=source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    expected = origin or hint
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, str):  # YAML 1.1 reads '3e-4' (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected in (str, bool, dict) and isinstance(value, expected):
        return value
    if expected is list and isinstance(value, list):
        (item_type,) = typing.get_args(hint) or (Any,)
        return [v if item_type is Any else _coerce(v, item_type, key=key, source=source) for v in value]
    raise ConfigError(f"{source}: {key}={value!r}: expected {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _check_key(key: str, *, source: str = "override") -> None:
    keys = valid_keys()
    sections = {k.split(".")[0] for k in keys if "." in k}
    if key in keys or key.split(".")[0] == "model" and key.startswith("model.kwargs."):
        return
    if key in sections:
        raise ConfigError(f"{source}: {key!r} is a section; set one of its keys, e.g. {key}.<name>=value")
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"{source}: unknown key {key!r}{hint}; valid keys: {', '.join(keys)}")


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
