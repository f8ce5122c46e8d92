"""Class maps: emotion names of each source dataset -> class labels, loaded from YAML data.

The built-in maps live in ``class_maps.yaml`` next to this module (package data): ``dfme7``, ``casme2_5``,
``megc3``, ``casme3_4`` and ``mmew7``. A map lists its classes in label order and, per source dataset (the
clip table's ``dataset`` column), which emotion becomes which class; ``null`` drops an emotion on purpose
(e.g. MEGC 2019 drops CASME II fear/sadness/others and SAMM other) and an emotion that is not listed is an
error.

A class map is named by a *spec* (``data.class_map``, ``microexp inspect --class-map``):

- the name of a built-in map, e.g. ``megc3``;
- ``identity``: the emotions as found, one class per distinct emotion name of the clip table being
  labelled, sorted (so it needs that table: the vocabulary is the whole table's, and a fold's training
  subjects may lack some class);
- a YAML file in the schema of ``class_maps.yaml`` (a path ending in ``.yaml``/``.yml``, or any existing
  file; relative to the working directory): its map when it holds one, else ``FILE.yaml#NAME`` picks one.

A built-in name always means the built-in map (write ``./megc3`` for a file of that name).

>>> cm = get_class_map("megc3")
>>> cm.classes, cm.lookup("samm", "contempt")
(('negative', 'positive', 'surprise'), 'negative')
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import pandas as pd
import yaml

from microexp.data.annotations import Problem
from microexp.errors import AnnotationError, ConfigError

__all__ = [
    "BUILTIN_CLASS_MAPS_FILE",
    "ClassMap",
    "ClassMapSpec",
    "IDENTITY",
    "LabelledTable",
    "LeftOut",
    "MAP_NAME_SEPARATOR",
    "apply_class_map",
    "get_class_map",
    "identity_class_map",
    "list_class_maps",
    "load_class_maps",
    "parse_class_map_spec",
    "summarise_left_out",
]

logger = logging.getLogger(__name__)

#: The YAML file of the built-in class maps (package data).
BUILTIN_CLASS_MAPS_FILE = Path(__file__).with_name("class_maps.yaml")
#: The map that keeps the emotions as found (its classes come from the clip table).
IDENTITY = "identity"
#: Separates a class map file from the name of one of its maps: ``maps.yaml#megc3``.
MAP_NAME_SEPARATOR = "#"
_YAML_SUFFIXES = (".yaml", ".yml")
_DEFAULT = "default"
_SHOWN_CLIPS = 3


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


class ClassMapSpec(NamedTuple):
    """Where a class map spec points: ``file`` None for a built-in map or ``identity``; ``name`` None for
    the only map of ``file``."""

    file: Path | None
    name: str | None


@dataclass(frozen=True)
class LeftOut:
    """Clips a class map leaves out for one reason, i.e. one (dataset, emotion) pair.

    Attributes:
        message: the reason, as each clip's Problem says it.
        severity: ``'warning'`` (dropped by protocol) or ``'error'`` (the map does not know the pair).
        clips: the clip ids, in table order.
    """

    message: str
    severity: str
    clips: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.clips)

    def __str__(self) -> str:
        shown = ", ".join(self.clips[:_SHOWN_CLIPS]) + (", ..." if self.count > _SHOWN_CLIPS else "")
        return f"{self.message}: {self.count} clip(s) left out ({shown})"


# ----------------------------------------------------------------------------------------------------
# reading maps


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
        ConfigError: the file is missing or unreadable, not valid YAML, or a map is malformed (one line
            naming the file and the key).
    """
    source = Path(path) if path is not None else BUILTIN_CLASS_MAPS_FILE
    if not source.exists():
        raise ConfigError(f"{source}: class map file not found")
    if not source.is_file():
        raise ConfigError(f"{source}: not a file (expected a YAML file of class maps)")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not a UTF-8 text file (class maps are YAML text)") from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot be read ({exc.strerror or type(exc).__name__})") from exc
    if not isinstance(data, dict) or not data:
        got = "nothing" if data is None or data == {} else type(data).__name__
        raise ConfigError(f"{source}: expected a mapping of class map names to maps, got {got}")
    if "classes" in data and "datasets" in data:
        raise ConfigError(f"{source}: 'classes' and 'datasets' belong under a map's name "
                          f"(NAME: {{classes: [...], datasets: {{...}}}}), as in {BUILTIN_CLASS_MAPS_FILE.name}")
    return {str(name): _parse_map(str(name), spec, str(source)) for name, spec in data.items()}


def list_class_maps(path: str | Path | None = None) -> list[str]:
    """Names of the class maps in ``path`` (default: the built-in ones), sorted."""
    return sorted(load_class_maps(path))


def parse_class_map_spec(spec: str | Path) -> ClassMapSpec:
    """Where a class map spec points (see the module docstring); reads nothing but the built-in names.

    A built-in name or ``identity`` -> ``(None, name)``; an existing file, a path ending in ``.yaml`` or
    ``.yml`` or holding a directory separator -> ``(file, None)``; ``FILE#NAME`` with such a ``FILE`` ->
    ``(file, NAME)``; anything else -> ``(None, spec)`` (an unknown name).
    """
    text = str(spec)
    if not isinstance(spec, Path) and (text == IDENTITY or text in load_class_maps()):
        return ClassMapSpec(None, text)

    def is_path(candidate: str) -> bool:
        separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
        return (candidate.lower().endswith(_YAML_SUFFIXES) or any(s in candidate for s in separators)
                or Path(candidate).is_file())

    if isinstance(spec, Path) or Path(text).is_file():
        return ClassMapSpec(Path(text), None)
    file, separator, name = text.rpartition(MAP_NAME_SEPARATOR)
    if separator and is_path(file):
        if not name:
            raise ConfigError(f"class map {text!r}: no map name after {MAP_NAME_SEPARATOR!r} "
                              f"(expected {file}{MAP_NAME_SEPARATOR}NAME)")
        return ClassMapSpec(Path(file), name)
    if is_path(text):
        return ClassMapSpec(Path(text), None)
    return ClassMapSpec(None, text)


def _map_from_file(file: Path, name: str | None) -> ClassMap:
    maps = load_class_maps(file)
    if name is None:
        if len(maps) == 1:
            return next(iter(maps.values()))
        raise ConfigError(f"{file}: holds {len(maps)} class maps ({', '.join(sorted(maps))}): pick one with "
                          f"{file}{MAP_NAME_SEPARATOR}NAME")
    if name not in maps:
        close = difflib.get_close_matches(name, list(maps), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{file}: no class map {name!r}{hint}; it holds: {', '.join(sorted(maps))}")
    return maps[name]


def identity_class_map(table: pd.DataFrame) -> ClassMap:
    """The map that keeps the emotions as found: one class per distinct emotion of ``table``, sorted.

    The vocabulary is the whole table's (every dataset; rows with no emotion are not a class and stay
    unlabelled), so a class may have no clip among one fold's training subjects.

    Raises:
        AnnotationError: the table has no ``emotion`` column.
    """
    if "emotion" not in table.columns:
        raise AnnotationError(f"class map {IDENTITY!r} takes its classes from the clip table's emotion column, "
                              f"which it lacks; found: {', '.join(map(str, table.columns))}")
    emotions = sorted({str(e) for e in table["emotion"] if not pd.isna(e) and str(e).strip()})
    return ClassMap(name=IDENTITY, classes=tuple(emotions), mapping={_DEFAULT: {e: e for e in emotions}},
                    description=f"the emotions as found in the clip table ({len(emotions)})")


def get_class_map(name: str | Path | ClassMap, *, path: str | Path | None = None,
                  table: pd.DataFrame | None = None) -> ClassMap:
    """The class map a spec names (see the module docstring); a ClassMap is returned as is.

    Args:
        name: a built-in map's name, ``identity``, a YAML file, or ``FILE#NAME``; with ``path``, the name
            of a map in that file.
        path: look ``name`` up in this YAML file instead.
        table: the clip table to be labelled; ``identity`` takes its classes from it (required then).

    Raises:
        ConfigError: unknown name (the message lists the available maps and close matches); a file that
            is missing, not YAML, holds a malformed map, or several maps and none picked; ``identity``
            without a table.
    """
    if isinstance(name, ClassMap):
        return name
    if path is not None:
        return _map_from_file(Path(path), str(name))
    file, map_name = parse_class_map_spec(name)
    if file is not None:
        return _map_from_file(file, map_name)
    if map_name == IDENTITY:
        if table is None:
            raise ConfigError(f"class map {IDENTITY!r} takes its classes from the clip table being labelled, "
                              f"and no table was given (get_class_map({IDENTITY!r}, table=TABLE))")
        return identity_class_map(table)
    maps = load_class_maps()
    if map_name in maps:
        return maps[map_name]
    close = difflib.get_close_matches(str(map_name), [*maps, IDENTITY], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown class map {map_name!r}{hint}; available: {', '.join(sorted(maps))}, {IDENTITY}, "
                      f"or a YAML file of class maps (FILE.yaml or FILE.yaml{MAP_NAME_SEPARATOR}NAME)")


# ----------------------------------------------------------------------------------------------------
# labelling


def _label_or_problem(clip: str, dataset: str, emotion: str, class_map: ClassMap) -> int | Problem:
    """The clip's label, or the Problem saying why the map leaves it out (one message per (dataset, emotion))."""
    if class_map.emotions_of(dataset) is None:
        message = (f"class map {class_map.name!r} does not cover dataset {dataset!r} (emotion {emotion!r}; "
                   f"it covers: {', '.join(sorted(class_map.mapping))})")
        return Problem(file="", row=None, field="dataset", value=dataset, message=message, severity="error",
                       clip=clip)
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


def summarise_left_out(problems: Iterable[Problem]) -> list[LeftOut]:
    """Group per-clip problems by reason: for :func:`apply_class_map`'s, one group per (dataset, emotion).

    Problems with the same severity, field, value and message form one group, in order of first
    appearance; ``str(group)`` is the line to log, e.g. ``class map 'megc3' drops emotion 'others' of
    dataset 'casme2' (by protocol): 12 clip(s) left out (EP01_2, EP02_1, EP04_3, ...)``.
    """
    groups: dict[tuple, list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.severity, p.field, p.value, p.message), []).append(p)
    return [LeftOut(message=message, severity=severity, clips=tuple(str(p.clip) for p in members))
            for (severity, _field, _value, message), members in groups.items()]


def apply_class_map(table: pd.DataFrame, class_map: str | Path | ClassMap, *, strict: bool = False,
                    log: bool = True) -> LabelledTable:
    """Label a clip table with a class map.

    Args:
        table: a clip table with ``clip``, ``emotion`` and ``dataset`` columns.
        class_map: a map or its spec (see :func:`get_class_map`; ``identity`` takes its classes from
            ``table``).
        strict: raise when a clip's emotion or dataset is unknown to the map (dropping by protocol
            never raises).
        log: log one warning per (dataset, emotion) pair left out, with its clip count (see
            :func:`summarise_left_out`; ``False`` for callers that report the problems themselves, like
            ``microexp inspect``).

    Returns:
        ``LabelledTable(table, problems)``: the clips the map labels, with an int ``label`` column
        (index into the map's classes) and a fresh index; one Problem per clip left out (``'warning'``
        when the protocol drops it, ``'error'`` when the map does not know it).

    Raises:
        AnnotationError: (``strict=True``) some clips have emotions or datasets unknown to the map.
        ConfigError: ``class_map`` names no map (see :func:`get_class_map`).
    """
    missing = [c for c in ("clip", "emotion", "dataset") if c not in table.columns]
    if missing:
        name = class_map.name if isinstance(class_map, ClassMap) else str(class_map)
        raise AnnotationError(f"clip table lacks column(s) {', '.join(missing)} needed by class map {name!r}; "
                              f"found: {', '.join(map(str, table.columns))}")
    cm = get_class_map(class_map, table=table)
    outcomes = [_label_or_problem(str(c), str(d), str(e), cm)
                for c, d, e in zip(table["clip"], table["dataset"], table["emotion"])]
    problems = [o for o in outcomes if isinstance(o, Problem)]
    errors = [p for p in problems if p.severity == "error"]
    if strict and errors:
        shown = "; ".join(str(group) for group in summarise_left_out(errors)[:5])
        more = len(summarise_left_out(errors)) - 5
        raise AnnotationError(f"{len(errors)} clip(s) cannot be labelled by class map {cm.name!r}: {shown}"
                              + (f"; and {more} more reason(s)" if more > 0 else ""))
    for group in summarise_left_out(problems) if log else ():
        logger.warning("%s", group)
    keep = [not isinstance(o, Problem) for o in outcomes]
    kept = table[keep].copy()
    kept["label"] = pd.Series([o for o in outcomes if not isinstance(o, Problem)], index=kept.index, dtype="int64")
    return LabelledTable(kept.reset_index(drop=True), problems)
