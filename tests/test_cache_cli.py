"""``microexp cache info|prune``: the size rule measured on real entries, pruning rules, file-system errors."""

from __future__ import annotations

import argparse
import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from microexp.data.cache import ClipCache, prune_cache, scan_cache
from microexp.fileio import OutputError

SIZE = 16


def _cli(argv: list[str]) -> int:
    """Run ``microexp cache ...`` through the real CLI when the command is registered, else its module."""
    from microexp import cli

    if "cache" in getattr(cli, "COMMANDS", {}):
        return cli.main(argv)
    from microexp.cli import cache as command

    parser = argparse.ArgumentParser(prog="microexp")
    command.add_parser(parser.add_subparsers(dest="command"))
    return command.run(parser.parse_args(argv))


@pytest.fixture()
def filled(tmp_path) -> tuple[Path, dict]:
    """A cache filled by the real Dataset: one RGB clip (frames 3..25 of a lossless video) and one flow clip."""
    from microexp.data.dataset import MicroExpressionDataset
    from microexp.data.flow import FlowSpec
    from microexp.data.sampling import SamplingSpec
    from microexp.data.transforms import TransformSpec
    from microexp.data.video import write_video

    video = tmp_path / "a.mp4"
    write_video(video, np.stack([np.full((SIZE, SIZE, 3), 10 + i, np.uint8) for i in range(30)]), fps=200,
                lossless=True)
    folder = tmp_path / "m"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{i + 1:05d}.png")
    row = {"subject": 1, "fps": 200.0, "emotion": "happiness", "aus": "", "dataset": "microexp",
           "apex_estimated": False, "label": 0}
    rgb = pd.DataFrame([{**row, "clip": "a", "path": str(video), "onset": 3, "apex": 10, "offset": 25,
                         "first_frame": 1}])
    flow = pd.DataFrame([{**row, "clip": "m", "path": str(folder), "onset": 1, "apex": 4, "offset": 7,
                          "first_frame": 0}])
    spec = TransformSpec(size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), flip=False, crop_scale=1.0)
    cache = tmp_path / "cache"
    MicroExpressionDataset(rgb, sampling=SamplingSpec("uniform", num_frames=4), transform=spec, cache_dir=cache)[0]
    MicroExpressionDataset(flow, sampling=SamplingSpec("uniform", num_frames=4), transform=spec, cache_dir=cache,
                           flow=FlowSpec(method="farneback"), modality="flow")[0]
    return cache, {"rgb_span": 25 - 3 + 1, "flow_span": 7 - 1 + 1, "flow_frames": 4}


def test_size_rule_matches_the_entries_the_dataset_writes(filled):
    cache, n = filled
    scan = scan_cache(cache)
    by_kind: dict[str, list] = {}
    for entry in scan.entries:
        by_kind.setdefault(entry.kind, []).append(entry)
    # frames: (offset - onset + 1) x S x S x 3 bytes, one per clip (the flow clip's frames are cached too)
    frames = sorted(e.files[0].stat().st_size - 128 for e in by_kind["frames"])
    assert frames == sorted([n["rgb_span"] * SIZE * SIZE * 3, n["flow_span"] * SIZE * SIZE * 3])
    # flow: T x S x S x 2 channels x 2 bytes (float16)
    (flow,) = by_kind["flow"]
    assert flow.files[0].stat().st_size - 128 == n["flow_frames"] * SIZE * SIZE * 2 * 2
    assert "farneback, 4 frames, 16 px" in flow.setting
    assert scan.bytes == sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def test_info_prints_totals_breakdown_and_the_rule(filled, capsys):
    cache, _ = filled
    assert _cli(["cache", "info", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"{cache}: 3 entries" in out
    assert "frames" in out and "flow" in out and "size rule:" in out
    assert _cli(["cache", "info", str(cache), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["entries"] == 3 and sum(g["entries"] for g in doc["groups"]) == 3
    assert doc["bytes"] == sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def _entries(root: Path, count: int) -> list[Path]:
    cache = ClipCache(root)
    paths = []
    for i in range(count):
        cache.put({"clip": str(i), "span": [0, 9], "size": 8}, np.full((10, 8, 8, 3), i, np.uint8))
        paths.append(cache.path_for({"clip": str(i), "span": [0, 9], "size": 8}))
    return paths


def _age(path: Path, days: float) -> None:
    when = time.time() - days * 86400
    os.utime(path, (when, when))


def test_prune_never_touches_files_that_are_not_entries(tmp_path, capsys):
    root = tmp_path / "cache"
    _entries(root, 2)
    key = "a" * 64
    foreign = [root / "notes.txt", root / f"{key}.npy", root / "zz" / f"{key}.npy", root / "aa" / "x.npy",
               root / "ab" / f"{'a' * 64}.npy", root / "sub" / "aa" / f"{key}.npy"]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"keep me")
    assert _cli(["cache", "prune", str(root), "--all"]) == 0
    assert "2 entries removed" in capsys.readouterr().out
    assert all(p.read_bytes() == b"keep me" for p in foreign)
    assert not list(root.rglob("*.json"))
    assert len(scan_cache(root).foreign) == len(foreign)


def test_prune_older_than_and_max_size_least_recently_used_first(tmp_path, capsys):
    root = tmp_path / "cache"
    paths = _entries(root, 4)
    for days, path in zip((10, 5, 3, 0), paths):
        _age(path, days)
    assert _cli(["cache", "prune", str(root), "--older-than", "7"]) == 0
    assert "1 entries removed" in capsys.readouterr().out
    assert [p.exists() for p in paths] == [False, True, True, True]
    one = paths[1].stat().st_size + paths[1].with_suffix(".json").stat().st_size
    assert _cli(["cache", "prune", str(root), "--max-size", str(1.5 * one / 1e9), "--dry-run"]) == 0
    assert "would free" in capsys.readouterr().out and all(p.exists() for p in paths[1:])
    assert _cli(["cache", "prune", str(root), "--max-size", str(1.5 * one / 1e9)]) == 0
    assert f"freed {2 * one / 1000:.1f} kB" in capsys.readouterr().out
    assert [p.exists() for p in paths] == [False, False, False, True]  # the two least recently used went


def test_prune_removes_stale_temp_files_only(tmp_path):
    root = tmp_path / "cache"
    (entry,) = _entries(root, 1)
    stale = entry.parent / f".{entry.name}.abc123.tmp"
    fresh = entry.parent / f".{entry.name}.def456.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    _age(stale, 1)
    result = prune_cache(root, older_than_days=30)
    assert result.temp_files == (stale,) and not stale.exists() and fresh.exists() and entry.exists()


def test_prune_needs_a_rule_and_a_cache_folder(tmp_path, capsys):
    if _registered():
        assert _cli(["cache", "prune", str(tmp_path)]) == 2
        assert "--older-than DAYS, --max-size GB or --all" in capsys.readouterr().err
    else:
        from microexp.errors import ConfigError

        with pytest.raises(ConfigError, match="--older-than DAYS, --max-size GB or --all"):
            _cli(["cache", "prune", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="cache folder not found"):
        scan_cache(tmp_path / "none")


def _registered() -> bool:
    from microexp import cli

    return "cache" in getattr(cli, "COMMANDS", {})


def test_entries_get_normal_permissions(tmp_path):
    (entry,) = _entries(tmp_path, 1)
    umask = os.umask(0)
    os.umask(umask)
    assert entry.stat().st_mode & 0o777 == 0o666 & ~umask
    assert entry.with_suffix(".json").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.fixture()
def small_disk(tmpfs):
    return tmpfs("disk", size="64k")


@pytest.fixture()
def read_only_disk(tmpfs):
    return tmpfs("ro", size="64k", read_only=True)


def test_full_disk_while_filling_is_one_line_naming_the_path(small_disk):
    cache = ClipCache(small_disk / "cache")
    with pytest.raises(OutputError) as info:
        cache.put({"clip": "big"}, np.zeros((10, 64, 64, 3), np.uint8))  # 123 kB > 64 kB
    message = str(info.value)
    assert "\n" not in message and "disk full" in message and str(small_disk / "cache") in message
    assert info.value.errno == errno.ENOSPC
    assert not [p for p in small_disk.rglob("*") if p.is_file()]  # no partial entry or temp file left
    assert cache.get({"clip": "big"}) is None


def test_read_only_cache_dir_is_one_line_naming_the_path(read_only_disk):
    cache = ClipCache(read_only_disk / "cache")
    with pytest.raises(OutputError, match="read-only file system") as info:
        cache.get_or_create({"clip": "a"}, lambda: np.zeros((2, 4, 4, 3), np.uint8))
    assert str(read_only_disk / "cache") in str(info.value)


def test_prune_never_follows_a_linked_folder_out_of_the_cache(tmp_path):
    outside = tmp_path / "elsewhere"
    (entry,) = _entries(outside, 1)  # a real cache entry, but in another folder
    root = tmp_path / "cache"
    _entries(root, 1)
    free = next(f"{i:02x}" for i in range(256) if not (root / f"{i:02x}").exists())
    (root / free).symlink_to(entry.parent, target_is_directory=True)  # looks like a shard folder
    result = prune_cache(root, remove_all=True)
    assert len(result.removed) == 1 and entry.exists() and entry.with_suffix(".json").exists()
