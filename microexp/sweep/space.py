"""Search-space files for ``microexp sweep``: config keys mapped to Optuna distributions.

A space file is a YAML mapping from dotted config keys (``microexp.config.valid_keys()`` or
``model.kwargs.<name>``) to a spec::

    data.sampling: {type: categorical, choices: [uniform, onset_apex, tsn]}
    data.num_frames: [8, 16]                       # a plain list is a categorical
    train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    data.stride: {type: int, low: 1, high: 3, step: 1}
    loss.gamma: {type: float, low: 0.5, high: 3, when: {loss.name: [focal, cb_focal]}}

``when`` makes a key conditional: it is suggested only when every named key currently has one of the
listed values (a key listed earlier in the file, or the base recipe's value). Keys that define the
outer protocol or the data (``cv.*``, ``seed``, ``data.annotations`` ...) cannot be searched: the
nested protocol's outer folds must not depend on the trial. A bad file raises one-line
:class:`~microexp.errors.ConfigError` naming the file, the key and what is expected.

The Optuna parameter name of a key is the key itself (``trial.params['loss.gamma']``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from microexp.config import valid_keys
from microexp.errors import ConfigError

__all__ = ["FIXED_KEYS", "ParamSpec", "SearchSpace", "apply_params", "flatten", "load_space", "parse_space"]

TYPES = ("categorical", "int", "float")
_FIELDS = {
    "categorical": ("type", "choices", "when"),
    "int": ("type", "low", "high", "step", "log", "when"),
    "float": ("type", "low", "high", "step", "log", "when"),
}
#: keys a sweep may not search: they define the data and the outer protocol
FIXED_KEYS = ("data.annotations", "data.format", "data.root", "data.class_map", "data.strict", "seed",
              "deterministic", "device")


@dataclass(frozen=True)
class ParamSpec:
    """One searched key.

    Attributes:
        key: dotted config key, also the Optuna parameter name.
        kind: ``categorical``, ``int`` or ``float``.
        choices: the values of a categorical (YAML scalars; ``null`` allowed).
        low, high: inclusive range of an int or float.
        step: grid step of an int (default 1) or float (default continuous).
        log: sample on a log scale.
        when: condition ``{key: (allowed values...)}``; the key is suggested only when all hold.
    """

    key: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def suggest(self, trial: Any) -> Any:
        """Ask ``trial`` (an ``optuna.Trial`` or ``FixedTrial``) for this key's value."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds for the current ``values`` (dotted key -> value)."""
        return all(values.get(key) in allowed for key, allowed in self.when.items())

    def to_dict(self) -> dict[str, Any]:
        """The spec as it would be written in a space file (plain types)."""
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The searched keys in file order (conditions only refer to earlier keys)."""

    params: tuple[ParamSpec, ...]
    source: str = "space"

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def suggest(self, trial: Any, base: Mapping[str, Any]) -> dict[str, Any]:
        """Suggest every active key.

        Args:
            trial: an ``optuna.Trial`` or ``optuna.trial.FixedTrial``.
            base: the base config as dotted key -> value (conditions on unsearched keys read it).

        Returns:
            dotted key -> value for the keys whose condition holds, in file order.
        """
        values = dict(base)
        chosen: dict[str, Any] = {}
        for param in self.params:
            if param.active(values):
                chosen[param.key] = values[param.key] = param.suggest(trial)
        return chosen

    def grid(self) -> dict[str, list[Any]]:
        """The grid for ``optuna.samplers.GridSampler``; only categorical spaces have one."""
        ranges = [p for p in self.params if p.kind != "categorical"]
        if ranges:
            names = ", ".join(f"{p.key} ({p.kind} range)" for p in ranges)
            raise ConfigError(
                f"{self.source}: the grid sampler needs a categorical-only space, but {names} "
                "is not; list its values as choices or use --sampler tpe or random"
            )
        return {p.key: list(p.choices) for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        """The space as a space file mapping."""
        return {p.key: p.to_dict() for p in self.params}


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space YAML file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"search space not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    return parse_space(raw, source=str(p))


def parse_space(raw: Any, *, source: str = "space") -> SearchSpace:
    """Validate a space mapping (as read from YAML) and return the :class:`SearchSpace`."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{source}: expected a non-empty mapping of config keys to specs, got {raw!r}")
    known = set(valid_keys())
    params: list[ParamSpec] = []
    for key, spec in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r}: expected a dotted config key such as train.lr")
        _check_key(key, known, source)
        params.append(_parse_param(key, spec, source))
    order = [p.key for p in params]
    for index, param in enumerate(params):
        for other in param.when:
            if other in order[index + 1:]:
                raise ConfigError(f"{source}: key {param.key!r}: its condition on {other!r} needs {other} listed "
                                  "before it in the file")
    return SearchSpace(params=tuple(params), source=source)


def apply_params(raw: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested recipe mapping ``raw`` with dotted ``params`` set in it."""
    result = _deep_copy(raw)
    for key, value in params.items():
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else child
            node = child
        node[parts[-1]] = value
    return result


def flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys (``model.kwargs`` entries become ``model.kwargs.<name>``)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------------


def _check_key(key: str, known: set[str], source: str) -> None:
    if key in FIXED_KEYS or key.startswith("cv."):
        raise ConfigError(
            f"{source}: key {key!r} cannot be searched: the data and the outer protocol (cv.*, "
            f"{', '.join(FIXED_KEYS)}) are fixed for the whole study; set it in the recipe or with --set"
        )
    if key == "model.kwargs":
        raise ConfigError(f"{source}: key 'model.kwargs': search one argument, e.g. model.kwargs.drop_rate")
    if key in known or (key.startswith("model.kwargs.") and len(key) > len("model.kwargs.")):
        return
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"{source}: unknown config key {key!r}{hint}; expected a key of microexp.config.valid_keys() "
                      "or model.kwargs.<argument>")


def _parse_param(key: str, spec: Any, source: str) -> ParamSpec:
    where = f"{source}: key {key!r}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a list of choices or a mapping with type categorical|int|float, "
                          f"got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    unknown = sorted(set(spec) - set(_FIELDS[kind]))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} for type {kind}; "
                          f"allowed: {', '.join(_FIELDS[kind])}")
    when = _parse_when(spec.get("when"), key, where)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: categorical needs choices: a non-empty list, got {choices!r}")
        for choice in choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise ConfigError(f"{where}: choice {choice!r} must be a scalar (string, number, true/false, null)")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices {choices!r} repeat a value")
        return ParamSpec(key=key, kind=kind, choices=tuple(choices), when=when)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    number = int if kind == "int" else (int, float)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number) or (kind == "float" and not math.isfinite(value)):
            raise ConfigError(f"{where}: {kind} needs {name}: {'an integer' if kind == 'int' else 'a finite number'}, "
                              f"got {value!r}")
    if not low < high:
        raise ConfigError(f"{where}: needs low < high, got low={low}, high={high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got low={low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise ConfigError(f"{where}: step must be a positive {'integer' if kind == 'int' else 'number'}, "
                              f"got {step!r}")
        if log and (kind == "float" or step != 1):
            raise ConfigError(f"{where}: step and log: true cannot be combined (Optuna samples a log range "
                              "continuously)")
    return ParamSpec(key=key, kind=kind, low=low, high=high, step=step, log=log, when=when)


def _parse_when(when: Any, key: str, where: str) -> dict[str, tuple[Any, ...]]:
    if when is None:
        return {}
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(f"{where}: when must map config keys to allowed values, e.g. "
                          "{loss.name: [focal, cb_focal]}, got " + repr(when))
    known = set(valid_keys())
    out = {}
    for other, allowed in when.items():
        if other == key:
            raise ConfigError(f"{where}: when cannot refer to the key itself")
        if other not in known and not str(other).startswith("model.kwargs."):
            raise ConfigError(f"{where}: when refers to unknown config key {other!r}")
        values = allowed if isinstance(allowed, list) else [allowed]
        if not values:
            raise ConfigError(f"{where}: when {other}: expected a value or a non-empty list of values")
        out[str(other)] = tuple(values)
    return out


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
