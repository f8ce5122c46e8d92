"""Class maps: emotion names of each source dataset -> class labels, loaded from YAML data.

The built-in maps live in ``class_maps.yaml`` next to this module (package data): ``dfme7``, ``casme2_5``
and ``megc3``. A map lists its classes in label order and, per source dataset (the clip table's
``dataset`` column), which emotion becomes which class; ``null`` drops an emotion on purpose (e.g. MEGC
2019 drops CASME II fear/sadness/others and SAMM other) and an emotion that is not listed is an error.

>>> cm = get_class_map("megc3")
>>> cm.classes, cm.lookup("samm", "contempt")
(('negative', 'positive', 'surprise'), 'negative')
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, NamedTuple

import pandas as pd
import yaml

from microexp.data.annotations import Problem
from microexp.errors import AnnotationError, ConfigError

__all__ = [
    "BUILTIN_CLASS_MAPS_FILE",
    "ClassMap",
    "LabelledTable",
    "apply_class_map",
    "get_class_map",
    "list_class_maps",
    "load_class_maps",
]

logger = logging.getLogger(__name__)

#: The YAML file of the built-in class maps (package data).
BUILTIN_CLASS_MAPS_FILE = Path(__file__).with_name("class_maps.yaml")
_DEFAULT = "default"


@dataclass(frozen=True)
class ClassMap:
    """A named mapping from (dataset, emotion) to a class label.

    Attributes:
        name: the map's name, e.g. ``'megc3'``.
        classes: class names in label order (label ``i`` is ``classes[i]``).
        mapping: dataset -> {emotion -> class name, or ``None`` to drop}; key ``'default'`` covers
            datasets not listed.
        description: one line.
    """

    name: str
    classes: tuple[str, ...]
    mapping: Mapping[str, Mapping[str, str | None]]
    description: str = field(default="", compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def emotions_of(self, dataset: str) -> Mapping[str, str | None] | None:
        """The emotion map used for ``dataset`` (``None`` when the map does not cover it)."""
        return self.mapping.get(dataset, self.mapping.get(_DEFAULT))

    def lookup(self, dataset: str, emotion: str) -> str | None:
        """The class of ``emotion`` from ``dataset``; ``None`` when the map drops it.

        Raises:
            KeyError: the map does not cover this dataset or this emotion.
        """
        emotions = self.emotions_of(dataset)
        if emotions is None:
            raise KeyError(f"class map {self.name!r} does not cover dataset {dataset!r} "
                           f"(it covers: {', '.join(sorted(self.mapping))})")
        if emotion not in emotions:
            raise KeyError(f"class map {self.name!r} does not know emotion {emotion!r} of dataset {dataset!r} "
                           f"(known: {', '.join(sorted(emotions))})")
        return emotions[emotion]

    def label(self, class_name: str) -> int:
        """The integer label of a class name."""
        return self.classes.index(class_name)


class LabelledTable(NamedTuple):
    """What :func:`apply_class_map` returns: the kept clips with a ``label`` column, and the problems."""

    table: pd.DataFrame
    problems: list[Problem]


def _parse_map(name: str, spec: object, source: str) -> ClassMap:
    """Build and validate one map from its YAML entry (ConfigError naming the file and key)."""
    where = f"{source}: class map {name!r}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with 'classes' and 'datasets', got {type(spec).__name__}")
    classes = spec.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"{where}: 'classes' must be a non-empty list of names, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"{where}: 'classes' has duplicates: {classes}")
    datasets = spec.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError(f"{where}: 'datasets' must map dataset names to {{emotion: class}}, got {datasets!r}")
    mapping: dict[str, dict[str, str | None]] = {}
    for dataset, emotions in datasets.items():
        if not isinstance(emotions, dict):
            raise ConfigError(f"{where}: datasets.{dataset} must map emotions to classes, got {emotions!r}")
        for emotion, target in emotions.items():
            if target is not None and target not in classes:
                raise ConfigError(f"{where}: datasets.{dataset}.{emotion} = {target!r} is not one of the "
                                  f"classes ({', '.join(classes)}) nor null")
        mapping[str(dataset)] = {str(e).lower(): t for e, t in emotions.items()}
    return ClassMap(name=name, classes=tuple(classes), mapping=mapping,
                    description=str(spec.get("description", "")))


def load_class_maps(path: str | Path | None = None) -> dict[str, ClassMap]:
    """Read class maps from a YAML file (default: the built-in ``class_maps.yaml``).

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: the file is not valid YAML or a map is malformed.
    """
    source = Path(path) if path is not None else BUILTIN_CLASS_MAPS_FILE
    if not source.is_file():
        raise FileNotFoundError(f"class map file not found: {source}")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of class map names, got {type(data).__name__}")
    return {str(name): _parse_map(str(name), spec, str(source)) for name, spec in data.items()}


def list_class_maps(path: str | Path | None = None) -> list[str]:
    """Names of the class maps in ``path`` (default: the built-in ones), sorted."""
    return sorted(load_class_maps(path))


def get_class_map(name: str | ClassMap, *, path: str | Path | None = None) -> ClassMap:
    """A class map by name (from ``path``, default the built-in maps); a ClassMap is returned as is.

    Raises:
        ConfigError: unknown name; the message lists the available maps and close matches.
    """
    if isinstance(name, ClassMap):
        return name
    maps = load_class_maps(path)
    if name not in maps:
        close = difflib.get_close_matches(str(name), list(maps), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown class map {name!r}{hint}; available: {', '.join(sorted(maps))}")
    return maps[name]


def _label_or_problem(clip: str, dataset: str, emotion: str, class_map: ClassMap) -> int | Problem:
    """The clip's label, or the Problem saying why the map leaves it out."""
    try:
        target = class_map.lookup(dataset, emotion)
    except KeyError as exc:
        return Problem(file="", row=None, field="emotion", value=emotion, message=str(exc.args[0]),
                       severity="error", clip=clip)
    if target is None:
        message = f"class map {class_map.name!r} drops emotion {emotion!r} of dataset {dataset!r} (by protocol)"
        return Problem(file="", row=None, field="emotion", value=emotion, message=message,
                       severity="warning", clip=clip)
    return class_map.label(target)


def apply_class_map(table: pd.DataFrame, class_map: str | ClassMap, *, strict: bool = False,
                    log: bool = True) -> LabelledTable:
    """Label a clip table with a class map.

    Args:
        table: a clip table with ``clip``, ``emotion`` and ``dataset`` columns.
        class_map: a map or its name (see :func:`list_class_maps`).
        strict: raise when a clip's emotion or dataset is unknown to the map (dropping by protocol
            never raises).
        log: log one warning per clip left out (``False`` for callers that report the problems
            themselves, like ``microexp inspect``).

    Returns:
        ``LabelledTable(table, problems)``: the clips the map labels, with an int ``label`` column
        (index into ``class_map.classes``) and a fresh index; one Problem per clip left out
        (``'warning'`` when the protocol drops it, ``'error'`` when the map does not know it). Each left-out
        clip is also logged.

    Raises:
        AnnotationError: (``strict=True``) some clips have emotions or datasets unknown to the map.
    """
    cm = get_class_map(class_map)
    missing = [c for c in ("clip", "emotion", "dataset") if c not in table.columns]
    if missing:
        raise AnnotationError(f"clip table lacks column(s) {', '.join(missing)} needed by class map {cm.name!r}; "
                              f"found: {', '.join(map(str, table.columns))}")
    outcomes = [_label_or_problem(str(c), str(d), str(e), cm)
                for c, d, e in zip(table["clip"], table["dataset"], table["emotion"])]
    problems = [o for o in outcomes if isinstance(o, Problem)]
    errors = [p for p in problems if p.severity == "error"]
    if strict and errors:
        shown = "; ".join(f"clip {p.clip}: {p.message}" for p in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise AnnotationError(f"{len(errors)} clip(s) cannot be labelled by class map {cm.name!r}: {shown}{more}")
    for p in problems if log else ():
        logger.warning("leaving out clip %s: %s", p.clip, p.message)
    keep = [not isinstance(o, Problem) for o in outcomes]
    kept = table[keep].copy()
    kept["label"] = pd.Series([o for o in outcomes if not isinstance(o, Problem)], index=kept.index, dtype="int64")
    return LabelledTable(kept.reset_index(drop=True), problems)
