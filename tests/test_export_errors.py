"""``microexp export`` output errors: a folder as --out, full and read-only disks, permissions, nothing half-written."""

import os

import pytest
import torch

from microexp.cli import main
from microexp.checkpoint import save_checkpoint
from microexp.inference.export import ExportError, export_checkpoint
from microexp.models import create_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("tsm_tiny", num_classes=3, num_frames=4, input_size=16)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model=model, class_names=["a", "b", "c"],
                           data={"num_frames": 4, "size": 16, "sampling": "uniform"})


def _export(checkpoint, out, fmt="torchscript"):
    return main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)])


@pytest.mark.parametrize("slash", [False, True], ids=["existing_folder", "trailing_slash"])
def test_a_folder_as_out_names_it_and_asks_for_a_file(checkpoint, tmp_path, capsys, slash):
    folder = tmp_path / ("new" if slash else "exports")
    if not slash:
        folder.mkdir()
    assert _export(checkpoint, f"{folder}/" if slash else folder) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(folder) in lines[0] and "is a folder" in lines[0], lines
    assert "expected the path of the file to write" in lines[0] and ".tmp" not in lines[0]
    assert not folder.exists() or list(folder.iterdir()) == []


def test_exports_get_normal_permissions_and_leave_no_temporary_file(checkpoint, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert _export(checkpoint, tmp_path / "model.ts") == 0
    finally:
        os.umask(old)
    assert (tmp_path / "model.ts").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ts", "model.ts.model_card.md"]  # no temporary file
    assert f"wrote {tmp_path / 'model.ts'}" in capsys.readouterr().out


def test_a_failed_parity_check_keeps_the_previous_export(checkpoint, tmp_path):
    out = tmp_path / "model.ts"
    out.write_bytes(b"previous export")
    with pytest.raises(ExportError, match="disagrees with the eager model .* the previous file is kept"):
        export_checkpoint(checkpoint, fmt="torchscript", out=out, atol=-1.0)  # no difference passes atol < 0
    assert out.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == ["model.ts"]


def test_a_full_disk_is_one_line_and_keeps_nothing_half_written(checkpoint, tmpfs, capsys):
    small = tmpfs("small", size="512k")
    assert _export(checkpoint, small / "model.ts") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"cannot write {small / 'model.ts'}: disk full" in lines[0], lines
    assert list(small.iterdir()) == []


def test_a_read_only_folder_is_one_line(checkpoint, tmpfs, capsys):
    ro = tmpfs("ro", size="1m", read_only=True)
    assert _export(checkpoint, ro / "model.ts") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"cannot write {ro / 'model.ts'}: read-only file system" in lines[0], lines


@pytest.mark.parametrize("atol", ["-1", "nan"])
def test_a_negative_or_nan_atol_is_refused(checkpoint, tmp_path, capsys, atol):
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out",
                 str(tmp_path / "m.ts"), f"--atol={atol}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--atol" in lines[0] and "expected a number >= 0" in lines[0], lines
    assert not (tmp_path / "m.ts").exists()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_modified_weights_in_an_export_are_refused(checkpoint, tmp_path, fmt):
    """Exports carry a SHA-256 of their weights, like checkpoints: changed values are refused on load."""
    import zipfile

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from microexp.inference.export import load_exported

    good = tmp_path / f"model.{fmt}"
    export_checkpoint(checkpoint, fmt=fmt, out=good)
    load_exported(good)  # verifies
    bad = tmp_path / f"bad.{fmt}"
    if fmt == "torchscript":  # add 1.0 to one stored weight, leaving the archive otherwise intact
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
            storages = [i.filename for i in src.infolist() if i.filename.split("/")[1:2] == ["data"]]
            target = max(storages, key=lambda name: src.getinfo(name).file_size)
            for info in src.infolist():
                data = src.read(info)
                if info.filename == target:
                    values = np.frombuffer(data, dtype=np.float32).copy()
                    values[0] += 1.0
                    data = values.tobytes()
                dst.writestr(info, data)
    else:
        proto = onnx.load(str(good))
        tensor = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        values = numpy_helper.to_array(tensor).copy()
        values.flat[0] += 1.0
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
        onnx.save(proto, str(bad))
    with pytest.raises(ExportError, match="do not match the SHA-256"):
        load_exported(bad)
