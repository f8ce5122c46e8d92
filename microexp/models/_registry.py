"""The model registry: ``@register_model`` entry points, ``create_model`` and ``list_models``.

An entry point is a function with keyword-only, plain-typed arguments (``num_classes``, ``num_frames``,
``input_size`` and whatever the family takes) that returns a :class:`~microexp.models._base.VideoClassifier`.
Registering wraps it so that the model it returns carries a complete :class:`ModelSpec`: the
registered name and every constructor argument (defaults resolved), which together with a state dict
rebuild the exact model: ``create_model(spec.name, **spec.kwargs)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

from microexp.errors import ConfigError

from ._base import FAMILIES, MODALITIES, ModelSpec, VideoClassifier

F = TypeVar("F", bound=Callable[..., VideoClassifier])


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about an entry point without building it."""

    name: str
    family: str
    modality: str
    cpu_friendly: bool
    description: str
    module: str


_ENTRYPOINTS: dict[str, Callable[..., VideoClassifier]] = {}
#: arguments of every model that add task heads (:mod:`microexp.models.multitask`) instead of reaching the family
TASK_ARGUMENTS = ("aus", "au_head", "confidence_head")
_INFO: dict[str, ModelInfo] = {}

#: the modules whose import registers the built-in models (one per family)
_FAMILY_MODULES = ("apex_flow", "cnn3d", "frame", "transformer", "tsm", "tv_video", "two_stream", "videomae")


def _register_builtins() -> None:
    """Import the family modules (idempotent), so that lookups work however ``microexp.models`` was imported."""
    import importlib

    for module in _FAMILY_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def register_model(*, family: str, modality: str, cpu_friendly: bool = False) -> Callable[[F], F]:
    """Decorator registering a model entry point under its function name.

    Args:
        family: one of ``3dcnn``, ``two_stream``, ``tsm``, ``transformer``, ``frame``.
        modality: ``rgb``, ``flow`` or ``rgb+flow``.
        cpu_friendly: True for configurations that train on a 2-core CPU in minutes.
    """
    if family not in FAMILIES:
        raise ValueError(f"register_model: family must be one of {FAMILIES}, got {family!r}")
    if modality not in MODALITIES:
        raise ValueError(f"register_model: modality must be one of {MODALITIES}, got {modality!r}")

    def decorate(fn: F) -> F:
        name = fn.__name__
        if name in _ENTRYPOINTS:
            raise ValueError(f"register_model: {name!r} is already registered by {_INFO[name].module}")
        signature = inspect.signature(fn)
        for param in signature.parameters.values():
            if param.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"register_model: {name}: argument {param.name!r} must be keyword-only")

        @functools.wraps(fn)
        def build(**kwargs: Any) -> VideoClassifier:
            resolved = _bind(name, signature, kwargs)
            model = fn(**resolved)
            if model.spec.family != family or model.spec.modality != modality:
                raise RuntimeError(
                    f"{name}: registered as {family}/{modality} but built {model.spec.family}/{model.spec.modality}"
                )
            model.spec = dataclasses.replace(model.spec, name=name, kwargs=resolved)
            return model

        doc = inspect.getdoc(fn) or ""
        _ENTRYPOINTS[name] = build
        _INFO[name] = ModelInfo(
            name=name,
            family=family,
            modality=modality,
            cpu_friendly=cpu_friendly,
            description=doc.splitlines()[0] if doc else "",
            module=fn.__module__,
        )
        return build  # type: ignore[return-value]

    return decorate


def _bind(name: str, signature: inspect.Signature, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check kwargs against the entry point's signature; return them with defaults filled in."""
    params = signature.parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(params), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{name}: unknown argument(s) {', '.join(hints)}; accepted: {', '.join(params)}")
    missing = [p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
        raise ConfigError(f"{name}: missing required argument(s) {', '.join(missing)}")
    resolved = {p.name: kwargs.get(p.name, p.default) for p in params.values()}
    for key, value in resolved.items():
        _check_plain(name, key, value)
    return resolved


def _check_plain(name: str, key: str, value: Any) -> None:
    """Constructor arguments must be plain so that checkpoints load with ``weights_only=True``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(name, key, item)
        return
    raise ConfigError(
        f"{name}: argument {key}={value!r} must be a plain value (int, float, str, bool, None or a list of them) "
        "so that a checkpoint can rebuild the model"
    )


def list_models(
    pattern: str = "*",
    *,
    family: str | None = None,
    modality: str | None = None,
    cpu_friendly: bool | None = None,
) -> list[str]:
    """Sorted names of registered models matching a shell-style ``pattern`` and optional filters."""
    _register_builtins()
    names = []
    for name, info in _INFO.items():
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        if family is not None and info.family != family:
            continue
        if modality is not None and info.modality != modality:
            continue
        if cpu_friendly is not None and info.cpu_friendly != cpu_friendly:
            continue
        names.append(name)
    return sorted(names)


def model_info(name: str) -> ModelInfo:
    """Registry information of ``name`` (``ConfigError``, a ``ValueError``, naming the closest names when
    unknown)."""
    _check_name(name)
    return _INFO[name]


def model_arguments(name: str) -> dict[str, Any]:
    """The constructor arguments of ``name`` and their defaults, without building it.

    Returns:
        ``{argument: default}`` in signature order; a required argument (``num_classes``) maps to
        ``inspect.Parameter.empty``.

    Raises:
        ConfigError: unknown name (the message lists the closest names).
    """
    _check_name(name)
    signature = inspect.signature(_ENTRYPOINTS[name])  # functools.wraps keeps the entry point's signature
    return {p.name: p.default for p in signature.parameters.values()}


def check_plain_argument(name: str, key: str, value: Any) -> None:
    """Raise ``ConfigError`` unless ``value`` is a plain constructor value (a checkpoint can store it)."""
    _check_plain(name, key, value)


def _check_name(name: str) -> None:
    if name in _ENTRYPOINTS:
        return
    _register_builtins()
    if name in _ENTRYPOINTS:
        return
    close = difflib.get_close_matches(str(name), list(_ENTRYPOINTS), n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ConfigError(f"unknown model {name!r}{hint} (see list_models() or `microexp models`)")


def create_model(
    name: str,
    *,
    num_classes: int,
    num_frames: int | None = None,
    input_size: int | None = None,
    pretrained: str | os.PathLike | None = None,
    **kwargs: Any,
) -> VideoClassifier:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs (0 builds no classifier: ``forward`` returns pooled features).
        num_frames: key frames ``T`` per clip; ``None`` keeps the model's default.
        input_size: square input side in pixels; ``None`` keeps the model's default.
        pretrained: path of a local checkpoint to initialise from (see :mod:`microexp.models.pretrained`);
            the classifier is always freshly initialised for ``num_classes``. Nothing is downloaded.
        **kwargs: family-specific constructor arguments (plain types); the task arguments
            (:data:`TASK_ARGUMENTS`: ``aus`` AU codes, ``au_head`` ``linear``/``graph``, ``confidence_head``)
            wrap the model in a :class:`~microexp.models.multitask.MultiTaskVideoModel`.

    Returns:
        The model; ``model.spec`` describes its input and rebuilds it with ``create_model(spec.name, **spec.kwargs)``.

    Raises:
        ConfigError: (a ``ValueError``) unknown name (the message lists the closest names), unknown or
            non-plain argument, or an unusable ``pretrained`` file
            (:class:`~microexp.models.pretrained.PretrainedError`).
        ValueError: an argument value the family's constructor rejects.
    """
    _check_name(name)
    tasks = {key: kwargs.pop(key) for key in TASK_ARGUMENTS if key in kwargs}
    kwargs["num_classes"] = num_classes
    if num_frames is not None:
        kwargs["num_frames"] = num_frames
    if input_size is not None:
        kwargs["input_size"] = input_size
    model = _ENTRYPOINTS[name](**kwargs)
    if pretrained is not None:
        from .pretrained import load_pretrained

        load_pretrained(model, pretrained)
    if tasks:  # the task heads around the backbone; the spec records them, so checkpoints rebuild them
        from .multitask import MultiTaskVideoModel

        for key, value in tasks.items():
            _check_plain(name, key, value)
        aus = tasks.get("aus") or []
        model = MultiTaskVideoModel(model, aus=[str(a) for a in aus], au_head=str(tasks.get("au_head", "linear")),
                                    confidence_head=bool(tasks.get("confidence_head", False)))
    return model


def get_model_spec(name: str, **kwargs: Any) -> ModelSpec:
    """The :class:`ModelSpec` of ``create_model(name, **kwargs)`` without allocating weights.

    ``num_classes`` defaults to 7 here since the spec does not depend on it beyond ``kwargs``.
    """
    kwargs.setdefault("num_classes", 7)
    return build_on_meta(name, **kwargs).spec


def build_on_meta(name: str, **kwargs: Any) -> VideoClassifier:
    """``create_model`` on the ``meta`` device: shapes, no memory (every registered model builds there)."""
    if kwargs.get("pretrained") is not None:
        raise ValueError("build_on_meta: pretrained weights cannot be loaded on the meta device")
    with torch.device("meta"):
        return create_model(name, **kwargs)


def check_model_arguments(name: str, **kwargs: Any) -> ModelSpec:
    """Run the family's own argument checks cheaply: build on the ``meta`` device and return the spec.

    Raises:
        ConfigError: unknown name or argument, non-plain value.
        ValueError: a value the family's constructor rejects.
    """
    kwargs.setdefault("num_classes", 7)
    return build_on_meta(name, **kwargs).spec


def count_params(model: torch.nn.Module, *, trainable: bool = True) -> int:
    """Number of (trainable) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
