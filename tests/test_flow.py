"""Optical flow, optical strain, the flow cache and ``microexp flow``.

Flows are checked against motions we apply ourselves: a smooth random texture (Gaussian-blurred noise)
moved by a known sub-pixel translation with bicubic ``cv2.warpAffine``, and strain against linear and
quadratic flow fields whose strain is known analytically. TV-L1 is the slow estimator, so images are
64 px.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from microexp.cli import flow as flow_cli
from microexp.data.cache import ClipCache
from microexp.data.flow import (
    FLOW_METHODS,
    FLOW_PARAMS,
    cached_clip_flow,
    clip_flow,
    compute_flow,
    flow_cache_key,
    optical_strain,
    precompute_flow,
)
from microexp.data.sampling import SamplingSpec
from microexp.synth import generate_dataset
from microexp.errors import ConfigError

SIZE = 64
MARGIN = 8  # border pixels left out of error measures (reflected borders are not translated content)


def texture(size: int = SIZE, *, sigma: float = 2.0, seed: int = 0) -> np.ndarray:
    """Gaussian-blurred noise stretched to 0..255, uint8 ``(size, size)``."""
    noise = np.random.default_rng(seed).standard_normal((size, size)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), sigma)
    blurred = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    return np.clip(np.rint(blurred * 255), 0, 255).astype(np.uint8)


def translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Move the content by ``(dx, dy)`` px: ``out(x, y) = image(x - dx, y - dy)`` (bicubic)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    size = (image.shape[1], image.shape[0])
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def fourier_translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Exact band-limited (periodic) translation by ``(dx, dy)`` px, independent of any interpolation kernel."""
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    moved = np.fft.ifft2(np.fft.fft2(image.astype(np.float64)) * np.exp(-2j * np.pi * (kx * dx + ky * dy))).real
    return np.clip(np.rint(moved), 0, 255).astype(np.uint8)


def endpoint_error(flow: np.ndarray, dx: float, dy: float) -> float:
    inner = flow[MARGIN:-MARGIN, MARGIN:-MARGIN]
    return float(np.mean(np.hypot(inner[..., 0] - dx, inner[..., 1] - dy)))


def moving_clip(shifts: list[float], *, size: int = 48, seed: int = 0) -> np.ndarray:
    """``(T, size, size, 3)`` uint8 RGB frames of a texture moved right by ``shifts[t]`` px."""
    base = texture(size, seed=seed)
    return np.stack([np.repeat(translate(base, s, 0.0)[..., None], 3, axis=-1) for s in shifts])


# --------------------------------------------------------------------------------------------------
# compute_flow


@pytest.mark.parametrize("method", FLOW_METHODS)
@pytest.mark.parametrize("shift", [(0.6, -0.4), (0.25, 0.15), (1.5, 1.0)])
def test_compute_flow_recovers_subpixel_translation(method, shift):
    # measured mean EPE at 64 px: tvl1 0.011-0.015, farneback 0.004-0.068, dis 0.009-0.067 px (the
    # worst case of farneback and dis is the quarter-pixel shift, a bias from the bicubic warp)
    dx, dy = shift
    prev = texture(seed=1)
    nxt = translate(prev, dx, dy)
    flow = compute_flow(prev, nxt, method)
    assert flow.shape == (SIZE, SIZE, 2) and flow.dtype == np.float32
    assert endpoint_error(flow, dx, dy) < 0.1


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_compute_flow_recovers_exact_subpixel_translation(method):
    # the same with an interpolation-free (Fourier) shift of a periodic texture
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    rng = np.random.default_rng(4)
    image = sum(
        np.cos(2 * np.pi * (kx * xs + ky * ys) / SIZE + phase)
        for kx, ky, phase in zip(rng.integers(-6, 7, 24), rng.integers(-6, 7, 24), rng.uniform(0, 2 * np.pi, 24))
    )
    prev = np.clip(np.rint(127.5 + 120 * image / np.abs(image).max()), 0, 255).astype(np.uint8)
    flow = compute_flow(prev, fourier_translate(prev, 0.6, -0.4), method)
    assert endpoint_error(flow, 0.6, -0.4) < 0.1


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_compute_flow_sign_convention(method):
    # content moving right and up: prev(y, x) ~ next(y + dy, x + dx) with dx > 0, dy < 0
    prev = texture(seed=2)
    flow = compute_flow(prev, translate(prev, 1.0, -0.5), method)
    inner = flow[MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert inner[..., 0].mean() == pytest.approx(1.0, abs=0.1)
    assert inner[..., 1].mean() == pytest.approx(-0.5, abs=0.1)
    backward = compute_flow(translate(prev, 1.0, -0.5), prev, method)[MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert backward[..., 0].mean() == pytest.approx(-1.0, abs=0.1)


def test_compute_flow_rgb_equals_grey():
    grey = texture(seed=3)
    nxt = translate(grey, 0.5, 0.5)
    rgb = lambda image: np.repeat(image[..., None], 3, axis=-1)  # noqa: E731
    np.testing.assert_array_equal(compute_flow(rgb(grey), rgb(nxt), "dis"), compute_flow(grey, nxt, "dis"))


def test_compute_flow_unknown_method_lists_methods():
    image = texture()
    with pytest.raises(ConfigError, match="tvl1, farneback, dis"):
        compute_flow(image, image, "raft")
    with pytest.raises(ConfigError, match="did you mean 'tvl1'"):
        compute_flow(image, image, "tvl")


def test_compute_flow_rejects_bad_frames():
    image = texture()
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(image.astype(np.float32), image, "farneback")
    with pytest.raises(ValueError, match="prev is 64x64 px but next is 32x64 px"):
        compute_flow(image, image[:, :32], "farneback")
    with pytest.raises(ValueError, match="at least 16 px"):
        compute_flow(image[:8, :8], image[:8, :8], "farneback")


def test_flow_params_are_read_only():
    with pytest.raises(TypeError):
        FLOW_PARAMS["tvl1"]["nscales"] = 1  # type: ignore[index]


# --------------------------------------------------------------------------------------------------
# optical strain


def test_optical_strain_of_linear_flow_matches_analytic():
    # u = a x + b y, v = c x + d y: exx = a, eyy = d, exy = (b + c) / 2 everywhere, borders included
    a, b, c, d = 0.02, -0.03, 0.05, -0.01
    ys, xs = np.mgrid[0:20, 0:30].astype(np.float64)
    flow = np.stack([a * xs + b * ys, c * xs + d * ys], axis=-1).astype(np.float32)
    expected = np.sqrt(a**2 + d**2 + 2 * ((b + c) / 2) ** 2)
    strain = optical_strain(flow)
    assert strain.shape == (20, 30) and strain.dtype == np.float32
    np.testing.assert_allclose(strain, expected, rtol=1e-5)


def test_optical_strain_is_zero_for_rigid_motion():
    ys, xs = np.mgrid[0:16, 0:16].astype(np.float64)
    theta = 0.01  # small rotation about (8, 8) plus a translation: no deformation to first order
    flow = np.stack([-theta * (ys - 8) + 0.7, theta * (xs - 8) - 0.2], axis=-1)
    np.testing.assert_allclose(optical_strain(flow), 0.0, atol=1e-7)


def test_optical_strain_of_quadratic_flow_in_interior():
    # u = x^2 / 20, v = x y / 10: exx = x / 10, eyy = x / 10, exy = y / 20 (central differences are exact)
    ys, xs = np.mgrid[0:12, 0:12].astype(np.float64)
    flow = np.stack([xs**2 / 20, xs * ys / 10], axis=-1)
    expected = np.sqrt(2 * (xs / 10) ** 2 + 2 * (ys / 20) ** 2)
    np.testing.assert_allclose(optical_strain(flow)[1:-1, 1:-1], expected[1:-1, 1:-1], rtol=1e-5, atol=1e-7)


def test_optical_strain_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        optical_strain(np.zeros((8, 8, 3), np.float32))


# --------------------------------------------------------------------------------------------------
# clip_flow


def test_clip_flow_onset_and_consecutive():
    frames = moving_clip([0.0, 0.5, 1.0, 1.5])
    onset = clip_flow(frames, method="farneback", reference="onset")
    consecutive = clip_flow(frames, method="farneback", reference="consecutive")
    for flows in (onset, consecutive):
        assert flows.shape == (4, 48, 48, 2) and flows.dtype == np.float32
        assert not flows[0].any()  # exactly zero
    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    for t in range(1, 4):
        assert onset[t][inner][..., 0].mean() == pytest.approx(0.5 * t, abs=0.1)
        assert consecutive[t][inner][..., 0].mean() == pytest.approx(0.5, abs=0.1)


def test_clip_flow_strain_channel_and_repeated_frames():
    frames = moving_clip([0.0, 1.0, 1.0])  # sampling repeats the last frame of short clips
    flows = clip_flow(frames, method="dis", reference="onset", strain=True)
    assert flows.shape == (3, 48, 48, 3)
    np.testing.assert_array_equal(flows[2], flows[1])
    np.testing.assert_allclose(flows[1, ..., 2], optical_strain(flows[1, ..., :2]), rtol=1e-6)
    consecutive = clip_flow(frames, method="dis", reference="consecutive")
    assert not consecutive[2].any()


def test_clip_flow_rejects_bad_arguments():
    frames = moving_clip([0.0, 1.0])
    with pytest.raises(ConfigError, match="onset, consecutive"):
        clip_flow(frames, method="dis", reference="apex")
    with pytest.raises(ConfigError, match="tvl1, farneback, dis"):
        clip_flow(frames, method="lk")
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        clip_flow(frames[..., :2], method="dis")


# --------------------------------------------------------------------------------------------------
# cache


class CountingProducer:
    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.calls = 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.frames


def test_cached_clip_flow_reuses_and_misses_on_method(tmp_path):
    cache = ClipCache(tmp_path / "cache")
    producer = CountingProducer(moving_clip([0.0, 0.6, 1.2]))
    key = {"clip": "c1", "times": [1.0, 2.0, 3.0], "size": 48}
    first = cached_clip_flow(cache, key, producer, method="farneback", reference="onset", strain=True)
    second = cached_clip_flow(cache, key, producer, method="farneback", reference="onset", strain=True)
    assert producer.calls == 1
    assert first.dtype == second.dtype == np.float32 and first.shape == (3, 48, 48, 3)
    np.testing.assert_array_equal(first, second)  # both are the stored float16 values
    direct = clip_flow(producer.frames, method="farneback", reference="onset", strain=True)
    np.testing.assert_allclose(first, direct, rtol=1e-3, atol=1e-4)  # float16 precision

    cached_clip_flow(cache, key, producer, method="dis", reference="onset", strain=True)
    assert producer.calls == 2  # another method is another entry
    cached_clip_flow(cache, key, producer, method="farneback", reference="consecutive", strain=True)
    cached_clip_flow(cache, key, producer, method="farneback", reference="onset", strain=False)
    cached_clip_flow(cache, {**key, "size": 64}, producer, method="farneback", reference="onset", strain=True)
    assert producer.calls == 5
    cached_clip_flow(cache, key, producer, method="dis", reference="onset", strain=True)
    assert producer.calls == 5


def test_flow_cache_key_refuses_clashing_parts():
    with pytest.raises(ValueError, match="method"):
        flow_cache_key({"clip": "c", "method": "x"}, method="dis", reference="onset", strain=False)


# --------------------------------------------------------------------------------------------------
# precompute_flow and ``microexp flow``


@pytest.fixture
def synthetic_dataset(tmp_path) -> Path:
    out = tmp_path / "synth"
    generate_dataset(out, subjects=2, clips=3, size=32, fmt="frames", seed=0, workers=1, progress=False)
    return out


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="microexp")
    flow_cli.add_parser(parser.add_subparsers(dest="command"))
    return flow_cli.run(parser.parse_args(["flow", *argv]))


def test_cli_precomputes_resumes_and_reports_failures(synthetic_dataset, tmp_path, capsys):
    cache_dir = tmp_path / "flows"
    argv = [str(synthetic_dataset / "annotations.csv"), "--cache-dir", str(cache_dir), "--method", "farneback",
            "--frames", "4", "--size", "32", "--strain", "--no-progress"]
    assert run_cli(argv) == 0
    assert "3 clips: 3 computed, 0 already cached, 0 failed" in capsys.readouterr().out
    assert run_cli(argv) == 0
    assert "3 clips: 0 computed, 3 already cached, 0 failed" in capsys.readouterr().out
    assert run_cli([*argv[:-1], "--reference", "consecutive", "--no-progress"]) == 0
    assert "3 computed" in capsys.readouterr().out

    # a clip whose onset frame cannot be decoded fails alone, with its reason; the others stay cached
    with open(synthetic_dataset / "annotations.csv", newline="") as f:
        row = next(csv.DictReader(f))
    (synthetic_dataset / row["path"] / f"{int(row['onset']):05d}.png").write_bytes(b"not a png")
    cache_dir_2 = tmp_path / "flows2"
    assert run_cli([*argv[:2], str(cache_dir_2), *argv[3:]]) == 1
    out = capsys.readouterr().out
    assert "3 clips: 2 computed, 0 already cached, 1 failed" in out
    assert f"failed {row['clip']}: " in out


def test_precompute_flow_summary(synthetic_dataset, tmp_path):
    from microexp.data.annotations import load_clip_table

    table = load_clip_table(synthetic_dataset / "annotations.csv").resolve()
    table.loc[1, "path"] = str(tmp_path / "missing")
    summary = precompute_flow(
        table, cache=ClipCache(tmp_path / "flows"), sampling=SamplingSpec("uniform", 3), method="dis", size=32,
        progress=False,
    )
    assert (summary.total, summary.computed, summary.cached) == (3, 2, 0)
    assert [clip for clip, _ in summary.failed] == [table.loc[1, "clip"]]
    assert "missing" in summary.failed[0][1]
    assert summary.seconds > 0


def test_cli_rejects_unknown_method(synthetic_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli([str(synthetic_dataset / "annotations.csv"), "--cache-dir", str(tmp_path), "--method", "raft"])
    assert exc.value.code == 2
    assert "invalid choice: 'raft'" in capsys.readouterr().err


def test_flow_command_is_registered(synthetic_dataset, tmp_path, capsys):
    from microexp.cli import COMMANDS, main

    assert "flow" in COMMANDS
    argv = ["flow", str(synthetic_dataset / "annotations.csv"), "--cache-dir", str(tmp_path / "flows"),
            "--method", "farneback", "--frames", "2", "--size", "32", "--no-progress"]
    assert main(argv) == 0
    assert "3 computed" in capsys.readouterr().out


@pytest.mark.slow
def test_precompute_flow_with_workers_matches_serial(synthetic_dataset, tmp_path):
    from microexp.data.annotations import load_clip_table

    table = load_clip_table(synthetic_dataset / "annotations.csv").resolve()
    kwargs = dict(sampling=SamplingSpec("uniform", 3), method="farneback", size=32, progress=False)
    serial = precompute_flow(table, cache=ClipCache(tmp_path / "a"), **kwargs)
    parallel = precompute_flow(table, cache=ClipCache(tmp_path / "b"), workers=2, **kwargs)
    assert serial.computed == parallel.computed == 3
    entries = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.npy"))
    assert len(entries) == 3
    for entry in entries:
        np.testing.assert_array_equal(np.load(tmp_path / "a" / entry), np.load(tmp_path / "b" / entry))
    again = precompute_flow(table, cache=ClipCache(tmp_path / "b"), workers=2, **kwargs)
    assert (again.computed, again.cached) == (0, 3)


def test_a_full_cache_disk_stops_precompute_with_one_line(synthetic_dataset, tmpfs):
    """A full disk fails every clip alike: one OutputError naming the cache, not one failure per clip."""
    from microexp.fileio import OutputError

    disk = tmpfs("disk", size="16k")
    argv = [str(synthetic_dataset / "annotations.csv"), "--cache-dir", str(disk / "cache"), "--method",
            "farneback", "--frames", "4", "--size", "32", "--no-progress"]
    with pytest.raises(OutputError, match="disk full") as info:
        run_cli(argv)
    assert str(disk / "cache") in str(info.value) and "\n" not in str(info.value)
