"""The generator's options: difficulty presets, defaults and limits, and their validation in one place.

:func:`check_options` runs before anything is planned, rendered or written; every error is a one-line
:class:`~microexp.errors.ConfigError` naming the ``microexp synth`` option and its allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microexp.errors import ConfigError

__all__ = [
    "DEFAULT_CLIPS",
    "DEFAULT_IMBALANCE_RATIO",
    "DEFAULT_SUBJECTS",
    "FORMATS",
    "MAX_SIZE",
    "MAX_UNCROPPED",
    "MIN_SIZE",
    "PRESETS",
    "Preset",
    "check_options",
    "get_preset",
]


DEFAULT_IMBALANCE_RATIO = 8.0
DEFAULT_SUBJECTS = 20
DEFAULT_CLIPS = 300
FORMATS = ("mp4", "frames")
MIN_SIZE, MAX_SIZE = 32, 1024
MAX_UNCROPPED = 4096  # largest side of --uncropped frames


@dataclass(frozen=True)
class Preset:
    """Difficulty of the generated data. Pixel quantities are at 128 px and scale with the size.

    Attributes:
        name: preset name.
        amplitude_px: range of one AU's peak displacement.
        duration_ms: range of the onset-to-offset duration.
        apex_fraction: range of (apex - onset) / (offset - onset).
        noise_sigma: sensor noise (grey levels, per pixel and channel, independent per frame).
        drift_px: head translation amplitude (slow, 0.3-1.5 Hz sinusoids).
        drift_deg: head roll amplitude.
        drift_scale: relative scale amplitude (towards/away from the camera).
        illumination: relative amplitude of the slow gain and gradient change.
        blink_rate: probability that a clip contains a blink (anywhere, unrelated to the class).
        jitter_px: per-clip move of the neutral features (uniform +-), a little more than the AUs.
        margin_frames: range of neutral frames before the onset and after the offset.
        max_frames: cap of a clip's frame count (durations are drawn below what fits).
    """

    name: str
    amplitude_px: tuple[float, float]
    duration_ms: tuple[float, float]
    apex_fraction: tuple[float, float]
    noise_sigma: float
    drift_px: float
    drift_deg: float
    drift_scale: float
    illumination: float
    blink_rate: float
    jitter_px: float
    margin_frames: tuple[int, int]
    max_frames: int


PRESETS: dict[str, Preset] = {
    "easy": Preset("easy", amplitude_px=(1.2, 2.0), duration_ms=(150.0, 500.0), apex_fraction=(0.3, 0.6),
                   noise_sigma=1.0, drift_px=0.25, drift_deg=0.1, drift_scale=0.001, illumination=0.01,
                   blink_rate=0.05, jitter_px=2.5, margin_frames=(3, 8), max_frames=160),
    "medium": Preset("medium", amplitude_px=(0.8, 1.6), duration_ms=(80.0, 500.0), apex_fraction=(0.2, 0.7),
                     noise_sigma=2.0, drift_px=0.6, drift_deg=0.3, drift_scale=0.003, illumination=0.03,
                     blink_rate=0.2, jitter_px=2.0, margin_frames=(3, 10), max_frames=160),
    "hard": Preset("hard", amplitude_px=(0.5, 1.2), duration_ms=(40.0, 400.0), apex_fraction=(0.15, 0.8),
                   noise_sigma=3.5, drift_px=1.2, drift_deg=0.6, drift_scale=0.006, illumination=0.06,
                   blink_rate=0.4, jitter_px=1.5, margin_frames=(3, 12), max_frames=160),
}


def get_preset(name: str | Preset) -> Preset:
    """The preset called ``name`` (a :class:`Preset` is returned as is); ConfigError for unknown names."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]


def _int_option(option: str, value: object, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{option} must be {what}, got {value!r}")
    return int(value)


def check_options(
    *, subjects: object, clips: object, size: object, fmt: object, seed: object, imbalance_ratio: object,
    label_noise: object, workers: object, uncropped: object = None, unlabeled: bool = False,
    dfme_sheet: object = False,
) -> None:
    """Raise :class:`ConfigError` for the first bad option (``workers``/``uncropped`` None: not checked).

    ``unlabeled``: the options of an unlabeled pool (``--unlabeled N``): ``clips`` is named ``--unlabeled``,
    and the options that only shape labels (``--label-noise``, ``--dfme-sheet``) are refused.
    """
    clips_option = "--unlabeled" if unlabeled else "--clips"
    what = "a positive integer (number of unlabeled clips)" if unlabeled else "a positive integer (total number of clips)"
    n_clips = _int_option(clips_option, clips, 1, what)
    n_subjects = _int_option("--subjects", subjects, 1, "a positive integer")
    if n_subjects > n_clips:
        raise ConfigError(f"--subjects ({n_subjects}) must not exceed {clips_option} ({n_clips}): every subject "
                          "needs a clip")
    if unlabeled and not (isinstance(label_noise, (int, float, np.number)) and not isinstance(label_noise, bool)
                          and label_noise == 0):
        raise ConfigError(f"--label-noise flips annotated labels; an --unlabeled pool has none, got {label_noise!r}")
    if unlabeled and dfme_sheet:
        raise ConfigError("--dfme-sheet writes a labelled DFME coding sheet; an --unlabeled pool has no labels")
    _int_option("--size", size, MIN_SIZE, f"an even integer in {MIN_SIZE}..{MAX_SIZE}")
    if int(size) > MAX_SIZE or int(size) % 2:  # type: ignore[arg-type]
        raise ConfigError(f"--size must be an even integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _int_option("--seed", seed, 0, "a non-negative integer")
    if imbalance_ratio is not None:
        if isinstance(imbalance_ratio, bool) or not isinstance(imbalance_ratio, (int, float, np.number)) or not (
            np.isfinite(imbalance_ratio) and imbalance_ratio >= 1
        ):
            raise ConfigError(
                f"--imbalance-ratio must be a number >= 1 (largest / smallest class; 1 = balanced), "
                f"got {imbalance_ratio!r}"
            )
    if isinstance(label_noise, bool) or not isinstance(label_noise, (int, float, np.number)) or not (
        0 <= label_noise < 1
    ):
        raise ConfigError(f"--label-noise must be a fraction in [0, 1), got {label_noise!r}")
    if workers is not None:
        _int_option("--workers", workers, 1, "a positive integer")
    if uncropped is not None:
        try:
            width, height = uncropped  # type: ignore[misc]
        except (TypeError, ValueError):
            raise ConfigError(f"--uncropped must be a (width, height) pair, got {uncropped!r}") from None
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v % 2
               or not int(size) <= v <= MAX_UNCROPPED for v in (width, height)):  # type: ignore[operator]
            raise ConfigError(f"--uncropped must be even WxH frame sides of at least --size ({size}) and at most "
                              f"{MAX_UNCROPPED}, got {width}x{height}")

