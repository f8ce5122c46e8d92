"""Typed experiment configuration: one schema of defaults, validated in one place.

A recipe is a YAML mapping with the sections below; ``--set key.sub=value`` overrides are applied to
the mapping before validation, values parsed as YAML (``train.lr=3e-4``, ``cv.stratify=true``,
``model.kwargs={drop_rate: 0.3}``). An unknown key or a bad value raises :class:`ConfigError`, one line
naming where the value came from (the recipe file, or the ``--set`` item that set it), the key, the value
and what was expected (the valid keys or values).

:func:`validate` checks every key before anything is written or any data is read: choices against the
modules that define them (sampling strategies, annotation formats, class maps, flow methods, backends,
samplers, losses), numeric ranges (``data.num_frames <= MAX_NUM_FRAMES``, sizes, workers, optimiser and
loss parameters, folds), ``model.name`` and ``model.kwargs`` against the registry and the family's own
checks (built on the ``meta`` device, no weights), the frame family's apex index against the sampling
strategy, and ``model.pretrained`` (a file ``torch.load(weights_only=True)`` reads; nothing in it runs).
Limits that depend on the data (``num_frames`` against the clips' lengths) are checked by the engine.

The module is ~600 lines on purpose: the schema and all of its validation stay in one place, so no key
is checked twice or not at all.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from microexp.errors import ConfigError

#: cv.protocol: subject k-fold, leave-one-subject-out, leave-one-dataset-out (composite tables), fixed test
#: subjects, train on some datasets and test on others (composite tables)
PROTOCOLS = ("kfold", "loso", "lodo", "split", "cross")
#: the keys of one data.annotations entry of a composite table
SOURCE_KEYS = ("path", "format", "root", "dataset")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
MODEL_SELECTION = ("last", "val")
METRICS = ("uf1", "uar", "acc")
AMP_DTYPES = ("auto", "bfloat16", "float16")
IN_MEMORY = ("auto", "on", "off")


@dataclass
class DataConfig:
    """Where the clips are and how key frames are sampled and preprocessed."""

    #: one annotation file, or a composite table: a list of entries {path, format, root, dataset}, one
    #: dataset each (microexp.data.annotations.composite: subject ids moved into a range per entry, clip ids
    #: prefixed with the dataset); data.format and data.root apply to a single file only
    annotations: str | list[dict[str, Any]] = ""
    format: str = "auto"
    root: str | None = None
    #: a built-in map (microexp/data/class_maps.yaml), ``identity`` (the table's emotions as classes), or a
    #: YAML file of maps in that schema (``FILE.yaml``; ``FILE.yaml#NAME`` picks one of several)
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
    #: the model's input when it is not the model's own modality: ``apex_flow`` feeds any 3-channel model
    #: with one frame (e.g. frame_tiny) the onset->apex flow; null = the model's modality
    modality: str | None = None
    #: apex_flow inputs (microexp.data.apex_flow): the estimator (TV-L1, as the papers), the side of the
    #: onset and apex frames it runs on, and what the model sees (minmax, pixels, or bgr255 for weights
    #: trained on OpenCV's raw reading of the 8-bit flow images)
    apex_flow_method: str = "tvl1"
    apex_flow_size: int = 128
    apex_encoding: str = "minmax"
    num_workers: int = 2
    #: hold the training clips as preprocessed uint8 tensors in memory and augment whole batches
    #: (microexp.data.in_memory): auto = when they fit in data.in_memory_limit_mb; on; off
    in_memory: str = "auto"
    in_memory_limit_mb: int = 1024
    strict: bool = False
    #: learn the clips' action units too: multi-hot targets over the AUs seen at least data.au_min_count
    #: times among each fold's training clips (laterality ignored); model.au_head adds the AU head
    aus: bool = False
    au_min_count: int = 5


@dataclass
class ModelConfig:
    """Which registered model, with which constructor arguments."""

    name: str = "tsm_tiny"
    pretrained: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: with data.aus: linear (one layer on the pooled feature) or graph (a GCN over AU nodes on the training
    #: clips' AU co-occurrence, coupled to the emotion logits); see microexp.models.multitask
    au_head: str = "linear"
    #: false = AU detection alone, as MEB evaluates it: no emotion classifier, no emotion metrics; needs data.aus
    emotion_head: bool = True


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
    #: a staged schedule: the last N epochs retrain the emotion classifier alone (re-initialised, every other
    #: weight and batch-norm statistic frozen) on class-balanced sampling (cRT, Kang et al. 2020), after
    #: train.sampler (none, or progressive for a smooth move towards balance) learnt the representation
    classifier_epochs: int = 0
    model_selection: str = "last"
    selection_metric: str = "uf1"
    amp: bool = True
    #: the autocast type on CUDA: auto = bfloat16 where the GPU supports it, else float16 with a GradScaler
    amp_dtype: str = "auto"
    #: the model family's channels-last memory format on CUDA (channels_last_3d for Conv3d families)
    channels_last: bool = True
    #: torch.compile the model (CUDA; a speed option that cannot change results beyond float rounding)
    compile: bool = False
    #: under torchrun (DDP), convert BatchNorm layers to SyncBatchNorm
    sync_batchnorm: bool = False


@dataclass
class LossConfig:
    """Imbalance-aware loss and its parameters (class counts come from the training fold)."""

    name: str = "ce"
    gamma: float = 2.0
    beta: float = 0.999
    label_smoothing: float = 0.0
    max_m: float = 0.5
    scale: float = 1.0  # LDAM's s: 1 for the raw logits microexp's models emit (30 is for cosine logits)
    drw_epoch: int | None = None
    #: focal_ldam: weight of the regulation term KL(uniform || batch-mean softmax)
    reg_weight: float = 0.1
    #: weight of the AU term (binary cross-entropy, positive weights from the training clips) with data.aus
    au_weight: float = 1.0
    #: knowledge distillation: finished runs with this run's folds whose fold-f models teach fold f on its
    #: training clips (microexp.engine.distill); the loss is (1 - distill_weight) x loss.name on the labels
    #: + distill_weight x T^2 KL(soft labels || softmax(logits / T)), T = distill_temperature
    distill_from: list[str] = field(default_factory=list)
    distill_weight: float = 0.5
    distill_temperature: float = 4.0
    #: label smoothing of the soft labels: (1 - eps) x the teachers' mean + eps / C
    distill_smoothing: float = 0.1


@dataclass
class NoisyLabelsConfig:
    """Methods for uncertain labels, each off by default (the maths: microexp.label_noise)."""

    #: EAC: weight of the flip-consistency term of the class activation maps of randomly erased clips
    #: (models whose linear classifier reads the pooled feature map: R3D, TSM, the flow and frame CNNs); 0 = off
    eac_weight: float = 0.0
    #: re-label a training clip whose feature is much closer to another class's template than to its own's,
    #: with high confidence, after relabel_warmup epochs (logged to fold_XX/relabelled.csv)
    relabel: bool = False
    relabel_warmup: int = 3
    relabel_confidence: float = 0.9
    relabel_distance_ratio: float = 1.5
    #: a learnt per-clip confidence weighting the logits, with rank regularisation (SCN / MTAC)
    confidence: bool = False
    confidence_beta: float = 0.7
    confidence_margin: float = 0.15
    #: uncertainty-feature mixing: the fraction of each batch's most uncertain clips whose pooled features
    #: are mixed with another clip's (mixup weights from Beta(mix_alpha, mix_alpha)); 0 = off
    mix_fraction: float = 0.0
    mix_alpha: float = 1.0


@dataclass
class CVConfig:
    """The evaluation protocol."""

    protocol: str = "kfold"
    folds: int = 10
    stratify: bool = False
    val_fraction: float = 0.0
    test_subjects: list[int] = field(default_factory=list)
    #: cv.protocol=cross: one fold that trains on the clips of these datasets and tests on those of
    #: cv.test_datasets (the table's dataset column; clips of other datasets are not used)
    train_datasets: list[str] = field(default_factory=list)
    test_datasets: list[str] = field(default_factory=list)


@dataclass
class PretrainConfig:
    """Masked-video pretraining (``microexp pretrain``), and what ``train`` accepts from its checkpoints.

    ``annotations`` is a clip table whose labels are ignored (blank emotions allowed); null pretrains on
    ``data.annotations``. ``allow_test_subjects`` lets ``train`` fine-tune a fold from an encoder that was
    pretrained on clips of that fold's test subjects (refused by default; recorded in the run).
    """

    annotations: str | None = None
    format: str = "auto"
    root: str | None = None
    mask_ratio: float = 0.9
    target: str = "pixels"
    target_pool: int = 1
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    allow_test_subjects: bool = False


@dataclass
class SlurmConfig:
    """Where ``--launcher submitit`` sends a run's folds (one Slurm job-array task per fold or study cell).

    None of these can change results (they are result-neutral keys): they say where and for how long.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 120
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: int | None = None
    #: at most this many array tasks run at once
    array_parallelism: int = 64


@dataclass
class ExperimentConfig:
    """A whole recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    noisy_labels: NoisyLabelsConfig = field(default_factory=NoisyLabelsConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-ready)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AnnotationSource:
    """One annotation file of ``data.annotations``: its path, format, clip root and dataset name (None: the
    sheet's own)."""

    path: str
    format: str = "auto"
    root: str | None = None
    dataset: str | None = None


def annotation_sources(data: DataConfig) -> list[AnnotationSource]:
    """The annotation files of ``data``: one (``data.annotations`` a path, with ``data.format``/``data.root``)
    or the entries of a composite table's list (validated by :func:`validate`)."""
    if isinstance(data.annotations, str):
        return [AnnotationSource(data.annotations, data.format, data.root)]
    return [AnnotationSource(**entry) for entry in data.annotations]


def is_composite(data: DataConfig) -> bool:
    """Whether ``data.annotations`` is a list of entries (a composite table)."""
    return isinstance(data.annotations, list)


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


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str], *, source: str = "recipe") -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested mapping; returns a copy.

    ``source`` names ``raw`` (the recipe file) in the message when ``raw`` holds a value where an override
    needs a section (``data: 5`` and ``--set data.size=64``): the recipe is at fault, not the override.
    """
    result = _deep_copy(raw)
    set_by: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        _check_key(key)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({_first_line(exc)})") from exc
        node = result
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parts[:i + 1])
                blame = f"override {set_by[section]!r}" if section in set_by else source
                raise ConfigError(f"{blame}: {section}={node!r}: expected a mapping (a section of keys), so "
                                  f"override {item!r} cannot set {key}")
        node[parts[-1]] = value
        set_by[key] = item
    return result


def overridden_keys(overrides: Sequence[str]) -> dict[str, str]:
    """Dotted key -> the last ``--set`` item that sets it (for messages naming where a value came from)."""
    keys = {}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and key.strip():
            keys[key.strip()] = item
    return keys


def build_config(raw: Mapping[str, Any] | None, *, source: str = "config",
                 overridden: Mapping[str, str] | None = None) -> ExperimentConfig:
    """Validate a nested mapping against the schema and return the typed config.

    Args:
        raw: the recipe's mapping (overrides applied).
        source: names the recipe in messages.
        overridden: dotted key -> ``--set`` item (see :func:`overridden_keys`): a bad value set by an
            override is blamed on the override, any other on ``source``.
    """
    where = _Where(source, overridden)
    config = _build(ExperimentConfig, raw or {}, prefix="", where=where)
    validate(config, source=source, overridden=overridden)
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
            raise ConfigError(f"{p}: not valid YAML ({_first_line(exc)})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not a UTF-8 text file (a recipe is YAML text; {exc.reason} at byte "
                              f"{exc.start})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of sections, got {type(raw).__name__}")
        source = str(p)
    return build_config(apply_overrides(raw, overrides, source=source), source=source,
                        overridden=overridden_keys(overrides))


def save_config(config: ExperimentConfig, path: str | Path, *, recipe: str | Path | None = None) -> None:
    """Write the resolved config as YAML, atomically (it loads back unchanged).

    ``recipe``, when given, is recorded as a leading ``# recipe: PATH`` comment (YAML ignores it; plots
    show the recipe's name from it).
    """
    from microexp.fileio import write_text

    header = f"# recipe: {recipe}\n" if recipe else ""
    write_text(path, header + yaml.safe_dump(config.to_dict(), sort_keys=False))


#: keys that cannot change a run's results, so a resume may change them (where and how fast it runs)
RESULT_NEUTRAL_KEYS = ("data.num_workers", "data.cache_dir", "device", "train.compile", "slurm.partition",
                       "slurm.account", "slurm.qos", "slurm.time_min", "slurm.gpus_per_task", "slurm.cpus_per_task",
                       "slurm.mem_gb", "slurm.array_parallelism")


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


#: losses whose per-clip cross-entropy feature mixing can weigh between two labels (noisy_labels.mix_fraction)
MIXABLE_LOSSES = ("ce", "weighted_ce", "cb_ce")
#: the largest data.num_frames accepted: a micro-expression lasts under 0.5 s, i.e. at most ~250 frames from
#: onset to offset even at DFME's 500 fps, and every sampled frame is decoded, cached and held per worker
#: (256 RGB frames at 224 px are 154 MB per clip as float32, times batch size and workers)
MAX_NUM_FRAMES = 256
#: the record a `microexp pretrain` folder holds (engine.pretrain_record.RECORD_NAME; config imports no engine)
PRETRAIN_RECORD = "pretrain.json"
#: data.size bounds: optical flow needs a 16 px side (microexp.data.flow.MIN_SIDE); above 1024 px a clip
#: no longer fits a worker's memory at any useful num_frames
MIN_SIZE, MAX_SIZE = 16, 1024
#: model arguments the engine sets from other keys (so they cannot disagree with the data)
_ENGINE_MODEL_ARGS = {"num_classes": "the class map (data.class_map)", "num_frames": "data.num_frames",
                      "input_size": "data.size", "aus": "data.aus (the training folds' AUs)",
                      "au_head": "model.au_head", "confidence_head": "the engine (loss options that need it)"}


class _Where:
    """Names where a key's value came from: the ``--set`` override that set it, else the recipe (source)."""

    def __init__(self, source: str, overridden: Mapping[str, str] | None) -> None:
        self.source = source
        self.overridden = dict(overridden or {})

    def __call__(self, key: str) -> str:
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            item = self.overridden.get(".".join(parts[:i]))
            if item is not None:
                return f"override {item!r}"
        children = [item for k, item in self.overridden.items() if k.startswith(key + ".")]
        if children:  # e.g. model.kwargs checked as a whole, one of its keys set by --set
            return "override " + ", ".join(repr(item) for item in children)
        return self.source


def validate(config: ExperimentConfig, *, source: str = "config",
             overridden: Mapping[str, str] | None = None) -> None:
    """Check every key's value beyond its type, before anything is written or loaded.

    Cheap: no data is read and the model is built on the ``meta`` device (no weights); a
    ``model.pretrained`` file is opened with ``weights_only=True`` and its tensors memory-mapped.

    Args:
        config: the typed config.
        source: where the values come from (the recipe's path, or ``defaults``), named in messages.
        overridden: dotted key -> the ``--set`` item that set it, so that a message blames the override
            instead of the recipe.

    Raises:
        ConfigError: one line naming the key, the value, what was expected (the allowed values) and where
            the value came from.
    """
    where = _Where(source, overridden)
    _validate_sources(config, where)
    _validate_choices(config, where)
    _validate_ranges(config, where)
    _validate_protocol(config, where)
    _validate_distillation(config, where)
    _validate_model(config, where)


def _validate_choices(config: ExperimentConfig, where: _Where) -> None:
    from microexp.data.annotations import FORMATS
    from microexp.data.apex_flow import ENCODINGS
    from microexp.data.flow import FLOW_METHODS
    from microexp.data.samplers import SAMPLERS
    from microexp.data.sampling import STRATEGIES
    from microexp.data.transforms import FRAME_DIFFERENCES
    from microexp.data.video import BACKENDS
    from microexp.losses import LOSSES
    from microexp.models.masked_video import TARGETS
    from microexp.models.multitask import AU_HEADS

    choices = {
        "data.format": (config.data.format, FORMATS),
        "pretrain.format": (config.pretrain.format, FORMATS),
        "pretrain.target": (config.pretrain.target, TARGETS),
        "data.sampling": (config.data.sampling, STRATEGIES),
        "data.backend": (config.data.backend, BACKENDS),
        "data.frame_difference": (config.data.frame_difference, FRAME_DIFFERENCES),
        "data.flow_method": (config.data.flow_method, FLOW_METHODS),
        "data.apex_flow_method": (config.data.apex_flow_method, FLOW_METHODS),
        "data.apex_encoding": (config.data.apex_encoding, ENCODINGS),
        "cv.protocol": (config.cv.protocol, PROTOCOLS),
        "train.sampler": (config.train.sampler, SAMPLERS),
        "loss.name": (config.loss.name, LOSSES),
        "train.optimizer": (config.train.optimizer, OPTIMIZERS),
        "train.schedule": (config.train.schedule, SCHEDULES),
        "train.model_selection": (config.train.model_selection, MODEL_SELECTION),
        "train.selection_metric": (config.train.selection_metric, METRICS),
        "train.amp_dtype": (config.train.amp_dtype, AMP_DTYPES),
        "data.in_memory": (config.data.in_memory, IN_MEMORY),
        "model.au_head": (config.model.au_head, AU_HEADS),
    }
    if config.data.modality is not None:  # null: the model's own modality
        choices["data.modality"] = (config.data.modality, ("apex_flow",))
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where(key)}: {key}={value!r}: expected one of {', '.join(allowed)}{hint}")
    if config.device != "auto" and not (config.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", config.device)):
        raise ConfigError(f"{where('device')}: device={config.device!r}: expected auto, cpu, cuda or cuda:N")
    _validate_class_map(config.data.class_map, where)


def _validate_class_map(spec: str, where: _Where) -> None:
    """A built-in map's name, ``identity``, or a class map file that reads and picks one map."""
    from microexp.data.class_maps import (IDENTITY, MAP_NAME_SEPARATOR, get_class_map, list_class_maps,
                                          parse_class_map_spec)

    prefix = f"{where('data.class_map')}: data.class_map={spec!r}"
    try:
        file, name = parse_class_map_spec(spec)
        if file is not None:
            get_class_map(spec)  # reads the file: missing, not YAML, a malformed map, no map picked
            return
    except ConfigError as exc:
        raise ConfigError(f"{prefix}: {exc}") from exc
    names = (*list_class_maps(), IDENTITY)
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{prefix}: expected one of {', '.join(names)}, or a YAML file of class maps "
                          f"(FILE.yaml, or FILE.yaml{MAP_NAME_SEPARATOR}NAME for one of several){hint}")


def _check_int(where: _Where, key: str, value: int, low: int, high: int | None = None, why: str = "") -> None:
    if value < low or (high is not None and value > high):
        expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ConfigError(f"{where(key)}: {key}={value}: expected {expected}{why}")


def _check_float(where: _Where, key: str, value: float | None, low: float, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, null: bool = False) -> None:
    if value is None and null:
        return
    ok = value is not None and math.isfinite(value) and (value > low if low_open else value >= low)
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(" if low_open else "["
        if high is None:
            bounds = f"a number {'>' if low_open else '>='} {low}"
        else:
            bounds = f"a number in {lo}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{where(key)}: {key}={value}: expected {bounds}{' or null' if null else ''}")


def _validate_ranges(config: ExperimentConfig, where: _Where) -> None:
    d, t, loss, cv = config.data, config.train, config.loss, config.cv
    _check_int(where, "data.num_frames", d.num_frames, 1, MAX_NUM_FRAMES,
               " (a micro-expression lasts under 0.5 s: at most ~250 frames even at 500 fps, and each sampled "
               "frame is held in memory per clip and worker)")
    _check_int(where, "data.stride", d.stride, 1)
    _check_int(where, "data.size", d.size, MIN_SIZE, MAX_SIZE,
               f" (optical flow needs {MIN_SIZE} px; larger clips no longer fit a worker's memory)")
    _check_int(where, "data.apex_flow_size", d.apex_flow_size, MIN_SIZE, MAX_SIZE,
               " (the side of the onset and apex frames the flow is computed on)")
    _check_int(where, "data.num_workers", d.num_workers, 0, None, " (0 loads in the main process)")
    _check_int(where, "data.in_memory_limit_mb", d.in_memory_limit_mb, 0, None, " (0 never holds clips in memory)")
    _check_int(where, "data.au_min_count", d.au_min_count, 1, None,
               " (AUs seen fewer times among a fold's training clips are not learnt)")
    _check_float(where, "loss.au_weight", loss.au_weight, 0.0)
    n = config.noisy_labels
    _check_float(where, "noisy_labels.eac_weight", n.eac_weight, 0.0)
    if n.relabel:
        _check_int(where, "noisy_labels.relabel_warmup", n.relabel_warmup, 1, max(1, t.epochs - 1),
                   " (epochs trained before the first re-labelling, fewer than train.epochs)")
    _check_float(where, "noisy_labels.relabel_confidence", n.relabel_confidence, 0.0, 1.0, low_open=True)
    _check_float(where, "noisy_labels.relabel_distance_ratio", n.relabel_distance_ratio, 1.0)
    _check_float(where, "noisy_labels.confidence_beta", n.confidence_beta, 0.0, 1.0, low_open=True, high_open=True)
    _check_float(where, "noisy_labels.confidence_margin", n.confidence_margin, 0.0)
    _check_float(where, "noisy_labels.mix_fraction", n.mix_fraction, 0.0, 1.0)
    _check_float(where, "noisy_labels.mix_alpha", n.mix_alpha, 0.0, low_open=True)
    slurm = config.slurm
    _check_int(where, "slurm.time_min", slurm.time_min, 1)
    _check_int(where, "slurm.gpus_per_task", slurm.gpus_per_task, 0)
    _check_int(where, "slurm.cpus_per_task", slurm.cpus_per_task, 1)
    if slurm.mem_gb is not None:
        _check_int(where, "slurm.mem_gb", slurm.mem_gb, 1)
    _check_int(where, "slurm.array_parallelism", slurm.array_parallelism, 1)
    _check_float(where, "data.reference_fps", d.reference_fps, 0.0, low_open=True, null=True)
    _check_float(where, "data.crop_scale", d.crop_scale, 0.1, 1.0)
    _check_int(where, "train.epochs", t.epochs, 1)
    _check_int(where, "train.batch_size", t.batch_size, 1)
    _check_float(where, "train.lr", t.lr, 0.0, low_open=True)
    _check_float(where, "train.weight_decay", t.weight_decay, 0.0)
    _check_float(where, "train.momentum", t.momentum, 0.0, 1.0, high_open=True)
    _check_int(where, "train.warmup_epochs", t.warmup_epochs, 0, t.epochs, " (at most train.epochs)")
    _check_int(where, "train.classifier_epochs", t.classifier_epochs, 0, t.epochs - 1,
               " (the last epochs that retrain the classifier alone; the others learn the representation)")
    _check_int(where, "train.step_size", t.step_size, 1)
    _check_float(where, "train.grad_clip", t.grad_clip, 0.0, low_open=True, null=True)
    _check_float(where, "loss.gamma", loss.gamma, 0.0)
    _check_float(where, "loss.beta", loss.beta, 0.0, 1.0, high_open=True)
    _check_float(where, "loss.label_smoothing", loss.label_smoothing, 0.0, 1.0, high_open=True)
    _check_float(where, "loss.max_m", loss.max_m, 0.0, low_open=True)
    _check_float(where, "loss.scale", loss.scale, 0.0, low_open=True)
    _check_float(where, "loss.reg_weight", loss.reg_weight, 0.0)
    if loss.drw_epoch is not None:
        _check_int(where, "loss.drw_epoch", loss.drw_epoch, 0, t.epochs - 1,
                   f" or null (the re-weighting must start within train.epochs={t.epochs})")
    _check_float(where, "cv.val_fraction", cv.val_fraction, 0.0, 0.5, high_open=True)
    _check_int(where, "seed", config.seed, 0, 2**32 - 1)
    p = config.pretrain
    _check_float(where, "pretrain.mask_ratio", p.mask_ratio, 0.0, 1.0, low_open=True, high_open=True)
    for key in ("target_pool", "decoder_dim", "decoder_depth", "decoder_heads", "epochs", "batch_size"):
        _check_int(where, f"pretrain.{key}", getattr(p, key), 1)
    if p.decoder_dim % p.decoder_heads:
        raise ConfigError(f"{where('pretrain.decoder_heads')}: pretrain.decoder_heads={p.decoder_heads}: expected a "
                          f"divisor of pretrain.decoder_dim={p.decoder_dim}")
    _check_float(where, "pretrain.lr", p.lr, 0.0, low_open=True)
    _check_float(where, "pretrain.weight_decay", p.weight_decay, 0.0)
    _check_int(where, "pretrain.warmup_epochs", p.warmup_epochs, 0, p.epochs, " (at most pretrain.epochs)")


def _validate_sources(config: ExperimentConfig, where: _Where) -> None:
    """A composite ``data.annotations``: a non-empty list of entries with known keys, a path each, known
    formats and distinct dataset names; ``data.format``/``data.root`` left at their defaults."""
    from microexp.data.annotations import FORMATS

    data = config.data
    if not is_composite(data):
        return
    key = "data.annotations"
    if not data.annotations:
        raise ConfigError(f"{where(key)}: {key}=[]: expected a path or a non-empty list of entries "
                          f"({', '.join(SOURCE_KEYS)})")
    for name, default in (("format", "auto"), ("root", None)):
        if getattr(data, name) != default:
            raise ConfigError(f"{where('data.' + name)}: data.{name}={getattr(data, name)!r} applies to a single "
                              f"annotation file; with a list in {key}, give each entry its own {name}")
    named: dict[str, int] = {}
    for index, entry in enumerate(data.annotations):
        item = f"{key}[{index}]"
        unknown = sorted(set(entry) - set(SOURCE_KEYS))
        if unknown:
            raise ConfigError(f"{where(key)}: {item}: unknown key(s) {', '.join(map(repr, unknown))}; an entry has "
                              f"{', '.join(SOURCE_KEYS)}")
        path = entry.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where(key)}: {item}.path={path!r}: expected the annotation file's path")
        fmt = entry.get("format", "auto")
        if fmt not in FORMATS:
            raise ConfigError(f"{where(key)}: {item}.format={fmt!r}: expected one of {', '.join(FORMATS)}")
        for name in ("root", "dataset"):
            value = entry.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{where(key)}: {item}.{name}={value!r}: expected a non-empty string or null")
        dataset = entry.get("dataset")
        if dataset is not None:
            if dataset in named:
                raise ConfigError(f"{where(key)}: {item}.dataset={dataset!r}: also the name of "
                                  f"{key}[{named[dataset]}]; each entry is one dataset with a name of its own")
            named[dataset] = index


def _validate_protocol(config: ExperimentConfig, where: _Where) -> None:
    cv = config.cv
    if not config.model.emotion_head:
        _validate_au_only(config, where)
    if config.train.model_selection == "val" and cv.val_fraction <= 0:
        raise ConfigError(
            f"{where('train.model_selection')}: train.model_selection=val needs cv.val_fraction > 0 (validation "
            "subjects are carved from the training subjects; the test fold is never used for selection)"
        )
    if cv.protocol == "kfold" and cv.folds < 2:
        raise ConfigError(f"{where('cv.folds')}: cv.folds={cv.folds}: expected an integer >= 2 for cv.protocol=kfold")
    if cv.protocol == "split" and not cv.test_subjects:
        raise ConfigError(f"{where('cv.protocol')}: cv.protocol=split needs cv.test_subjects (a list of subject ids)")
    if cv.protocol == "cross":
        for key in ("train_datasets", "test_datasets"):
            if not getattr(cv, key):
                raise ConfigError(f"{where('cv.protocol')}: cv.protocol=cross needs cv.{key} (a list of dataset names, "
                                  "the table's dataset column)")
        both = sorted(set(cv.train_datasets) & set(cv.test_datasets))
        if both:
            raise ConfigError(f"{where('cv.test_datasets')}: dataset(s) {', '.join(both)} in both cv.train_datasets "
                              "and cv.test_datasets: a cross-dataset fold tests on datasets it did not train on")
    elif cv.train_datasets or cv.test_datasets:
        raise ConfigError(f"{where('cv.train_datasets' if cv.train_datasets else 'cv.test_datasets')}: "
                          f"cv.train_datasets/cv.test_datasets apply to cv.protocol=cross, not {cv.protocol!r}")
    repeated = sorted({s for s in cv.test_subjects if cv.test_subjects.count(s) > 1})
    if repeated:
        raise ConfigError(f"{where('cv.test_subjects')}: cv.test_subjects={cv.test_subjects}: subjects {repeated} "
                          "are listed more than once")


def _validate_distillation(config: ExperimentConfig, where: _Where) -> None:
    """Distinct teachers, a weight in (0, 1], a positive temperature, smoothing in [0, 1), an emotion task."""
    loss = config.loss
    if not loss.distill_from:
        return
    key = "loss.distill_from"
    if not config.model.emotion_head:
        raise ConfigError(f"{where(key)}: {key}: distillation teaches emotion logits; an AU-only model "
                          "(model.emotion_head=false) has none")
    if len(set(loss.distill_from)) < len(loss.distill_from):
        raise ConfigError(f"{where(key)}: {key}={loss.distill_from}: a teacher is listed twice")
    # the teachers' folders are checked when a run starts (engine.distill.check_teachers), not here: a finished
    # student's config.yaml must load after its teachers have moved
    _check_float(where, "loss.distill_weight", loss.distill_weight, 0.0, 1.0, low_open=True)
    _check_float(where, "loss.distill_temperature", loss.distill_temperature, 0.0, low_open=True)
    _check_float(where, "loss.distill_smoothing", loss.distill_smoothing, 0.0, 1.0, high_open=True)


def _validate_au_only(config: ExperimentConfig, where: _Where) -> None:
    """AU detection alone: AU targets, and nothing that needs an emotion classifier."""
    if not config.data.aus:
        raise ConfigError(f"{where('model.emotion_head')}: model.emotion_head=false (AU detection alone) needs "
                          "data.aus=true: the model would have nothing to learn")
    n = config.noisy_labels
    needs_emotion = {"train.model_selection": config.train.model_selection == "val",
                     "train.classifier_epochs": config.train.classifier_epochs > 0,
                     "noisy_labels.eac_weight": n.eac_weight > 0, "noisy_labels.relabel": n.relabel,
                     "noisy_labels.confidence": n.confidence, "noisy_labels.mix_fraction": n.mix_fraction > 0}
    for key, used in needs_emotion.items():
        if used:
            section, name = key.split(".")
            raise ConfigError(f"{where(key)}: {key}={getattr(getattr(config, section), name)!r} works on the emotion "
                              "classifier, but model.emotion_head=false (AU detection alone)")


def _validate_model(config: ExperimentConfig, where: _Where) -> None:
    from microexp.models._registry import (
        check_model_arguments, check_plain_argument, list_models, model_arguments, model_info,
    )

    m, d = config.model, config.data
    names = list_models()
    if m.name not in names:
        close = difflib.get_close_matches(str(m.name), names, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{where('model.name')}: model.name={m.name!r}: expected a registered model{hint}: "
                          f"{', '.join(names)} (see `microexp models`)")
    arguments = model_arguments(m.name)
    for key, value in m.kwargs.items():
        dotted = f"model.kwargs.{key}"
        if key in _ENGINE_MODEL_ARGS:
            raise ConfigError(f"{where(dotted)}: {dotted}={value!r}: set by {_ENGINE_MODEL_ARGS[key]}, "
                              "not in model.kwargs")
        if key not in arguments:
            accepted = [a for a in arguments if a not in _ENGINE_MODEL_ARGS]
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where(dotted)}: {dotted}: model {m.name}: unknown argument {key!r}{hint}; "
                              f"accepted: {', '.join(accepted) or 'none'}")
        try:
            check_plain_argument(m.name, key, value)
        except ConfigError as exc:
            raise ConfigError(f"{where(dotted)}: {dotted}={value!r}: expected a plain value (number, string, "
                              "true/false, null or a list of them) so that a checkpoint can rebuild the model") from exc
    if (d.modality or model_info(m.name).modality) == "apex_flow" and d.num_frames != 1:
        _validate_apex_flow_input(config, None, where)  # before the model's own, less telling message
    try:  # the family's own argument checks, on the meta device (no weights)
        spec = check_model_arguments(m.name, num_frames=d.num_frames, input_size=d.size, **m.kwargs)
    except (ValueError, TypeError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in m.kwargs.items())
        raise ConfigError(
            f"{where('model.kwargs' if m.kwargs else 'model.name')}: model {m.name} (data.num_frames={d.num_frames}, "
            f"data.size={d.size}{', ' + given if given else ''}) rejects its arguments: {_first_line(exc)}"
        ) from exc
    modality = d.modality or (spec.modality if spec is not None else None)
    _validate_noisy_labels(config, modality, where)
    if modality == "apex_flow" and spec is not None:
        _validate_apex_flow_input(config, spec, where)
    elif spec is not None and spec.family == "frame":
        _validate_apex_pairing(config, spec.apex_index, arguments.get("apex_index"), where)
    if m.pretrained is not None:
        _validate_pretrained(m.pretrained, where)


def _validate_noisy_labels(config: ExperimentConfig, modality: str | None, where: _Where) -> None:
    """EAC and feature mixing need an average-pooled linear classifier (and EAC a flip of the model's input);
    the classifier stage (train.classifier_epochs) needs classifier weights to retrain."""
    import torch

    from microexp.models._registry import build_on_meta
    from microexp.models.multitask import pooled_classifier

    n, m, d, t = config.noisy_labels, config.model, config.data, config.train
    if n.mix_fraction > 0 and config.loss.name not in MIXABLE_LOSSES:
        raise ConfigError(f"{where('noisy_labels.mix_fraction')}: noisy_labels.mix_fraction={n.mix_fraction} mixes "
                          f"the cross-entropy of two labels, but loss.name={config.loss.name!r}; use one of "
                          f"{', '.join(MIXABLE_LOSSES)}")
    if n.eac_weight > 0 and modality == "apex_flow":
        raise ConfigError(f"{where('noisy_labels.eac_weight')}: noisy_labels.eac_weight={n.eac_weight}: EAC flips "
                          "clips, and an apex_flow input has no flip here; use noisy_labels.relabel or confidence")
    if not (t.classifier_epochs or n.eac_weight > 0 or n.mix_fraction > 0):
        return
    model = build_on_meta(m.name, num_classes=7, num_frames=d.num_frames, input_size=d.size, **m.kwargs)
    prefixes = model.classifier_prefixes()
    if t.classifier_epochs and not any(key.startswith(prefixes) for key, _ in model.named_parameters()):
        found = ", ".join(prefixes) or "it has no classifier layer"
        raise ConfigError(f"{where('train.classifier_epochs')}: train.classifier_epochs={t.classifier_epochs}: model "
                          f"{m.name} has no separate classifier weights ({found}) to retrain alone")
    classifier = pooled_classifier(model)
    reads_map = False
    if classifier is not None and n.eac_weight > 0:  # CAMs: the classifier must read the map itself, channel-first
        probe = torch.zeros(1, model.spec.in_channels, d.num_frames, d.size, d.size, device="meta")
        maps = model.forward_features(probe)
        reads_map = isinstance(maps, torch.Tensor) and maps.ndim >= 3 and maps.shape[1] == classifier.in_features
    for key, value, usable in (("noisy_labels.eac_weight", n.eac_weight, reads_map),
                               ("noisy_labels.mix_fraction", n.mix_fraction, classifier is not None)):
        if value > 0 and not usable:
            raise ConfigError(f"{where(key)}: {key}={value}: model {m.name} has no average-pooled linear classifier on "
                              "its feature map (class activation maps and feature mixing need one: R3D, TSM, the flow "
                              "and frame CNNs have it; transformers, X3D's projection head and the two-stream fusion "
                              "do not)")


def _validate_apex_flow_input(config: ExperimentConfig, spec: Any, where: _Where) -> None:
    """An apex_flow input is one 3-channel flow: the model must read 3 channels of 1 frame."""
    d = config.data
    if d.num_frames != 1:
        raise ConfigError(f"{where('data.num_frames')}: data.num_frames={d.num_frames}: an apex_flow input is one "
                          "onset->apex flow (T = 1); set data.num_frames=1")
    if spec is not None and spec.in_channels != 3:
        raise ConfigError(f"{where('data.modality')}: data.modality=apex_flow: model {config.model.name} reads "
                          f"{spec.in_channels} channels, but an apex flow has 3 (u, v, strain)")


def apex_position(sampling: str, num_frames: int) -> int | None:
    """Where a sampling strategy puts the apex among its ``num_frames`` frames, or None when not fixed.

    ``onset_apex`` ends on the apex (index ``T - 1``, always); ``apex_centered`` centres its window on the
    apex (index ``T // 2``, shifted only when the apex is within ``T // 2`` strides of onset or offset);
    the other strategies do not place the apex at a fixed index (see :mod:`microexp.data.sampling`).
    """
    return {"onset_apex": num_frames - 1, "apex_centered": num_frames // 2}.get(sampling)


def _validate_apex_pairing(config: ExperimentConfig, apex_index: int | None, default: Any, where: _Where) -> None:
    """The frame family reads one frame: it must be the apex of the sampling strategy's frames."""
    d, m = config.data, config.model
    expected = apex_position(d.sampling, d.num_frames)
    given = m.kwargs.get("apex_index", default)
    blame = where("data.sampling") if where("data.sampling") != where.source else where("model.kwargs.apex_index")
    reads = f"model {m.name} reads frame {apex_index} of {d.num_frames} (model.kwargs.apex_index={given!r})"
    if expected is None:
        raise ConfigError(
            f"{blame}: data.sampling={d.sampling!r}: {reads}, but {d.sampling} puts the apex at no fixed frame; "
            "the frame family expects data.sampling onset_apex (with model.kwargs.apex_index=-1, the last frame) "
            "or apex_centered (with the default apex_index, T // 2)"
        )
    if apex_index != expected:
        fix = "-1 (the last frame)" if d.sampling == "onset_apex" else "null (T // 2)"
        raise ConfigError(
            f"{blame}: data.sampling={d.sampling!r}: {reads}, but {d.sampling} puts the apex at frame {expected}; "
            f"set model.kwargs.apex_index={fix}"
        )


def _validate_pretrained(path: str, where: _Where) -> None:
    from microexp.models.pretrained import PretrainedError, check_pretrained_file

    p = Path(path)
    prefix = f"{where('model.pretrained')}: model.pretrained={path!r}"
    if not p.exists():
        raise ConfigError(f"{prefix}: no such file (expected a local weights file; nothing is downloaded)")
    if p.is_dir() and (p / PRETRAIN_RECORD).is_file():  # a `microexp pretrain` folder: the engine picks
        return  # each fold's encoder from it
    if not p.is_file():
        raise ConfigError(f"{prefix}: not a file (expected a weights file such as resnet18.pth, or the --out folder "
                          "of `microexp pretrain`)")
    try:
        check_pretrained_file(p)
    except PretrainedError as exc:
        message = str(exc)
        message = message[len(f"{p}: "):] if message.startswith(f"{p}: ") else message
        raise ConfigError(f"{prefix}: {message}") from exc
    except OSError as exc:
        raise ConfigError(f"{prefix}: cannot be read ({exc.strerror or type(exc).__name__})") from exc


# ----------------------------------------------------------------------------------------------------
# building dataclasses from mappings, with type checks


def _build(cls: type, raw: Any, *, prefix: str, where: _Where) -> Any:
    if not isinstance(raw, Mapping):
        key = prefix.rstrip(".") or "config"
        raise ConfigError(f"{where(key)}: {key}={raw!r}: expected a mapping (a section of keys)")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            _check_key(f"{prefix}{key}", source=where(f"{prefix}{key}"))
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        key, value, hint = f"{prefix}{f.name}", raw[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            values[f.name] = _build(hint, value, prefix=f"{key}.", where=where)
        else:
            values[f.name] = _coerce(value, hint, key=key, source=where(key))
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
        if type(None) in options:
            raise ConfigError(f"{source}: {key}={value!r}: expected {_type_name(options[0])} or null")
        if isinstance(value, list):  # the list option's own message names the bad item
            raise errors[-1]
        raise ConfigError(f"{source}: {key}={value!r}: expected {' or '.join(_type_name(o) for o in options)}")
    expected = origin or hint
    if key == "data.in_memory" and isinstance(value, bool):  # YAML 1.1 reads the words on and off as booleans
        return "on" if value else "off"
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
        if expected is dict and not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{source}: {key}={value!r}: expected a mapping with string keys")
        return value
    if expected is list and isinstance(value, list):
        (item_type,) = typing.get_args(hint) or (Any,)
        return [v if item_type is Any else _coerce(v, item_type, key=key, source=source) for v in value]
    raise ConfigError(f"{source}: {key}={value!r}: expected {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint) or hint
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
            list: "a list"}.get(origin, getattr(hint, "__name__", str(hint)))


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
