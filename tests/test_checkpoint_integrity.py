"""Checkpoint integrity: a SHA-256 of the weights is stored and verified, non-finite weights and files that
are no checkpoint are one-line errors, and checkpoints are written atomically with normal permissions."""

import logging
import os
import struct
import zipfile

import pytest
import torch

from microexp.cli import main
from microexp.checkpoint import (
    DIGEST_KEY,
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    weights_digest,
)
from microexp.fileio import OutputError
from microexp.models import create_model


def _model():
    torch.manual_seed(0)
    return create_model("tsm_tiny", num_classes=3, num_frames=4, input_size=16)


def _save(path, model=None):
    return save_checkpoint(path, model=model or _model(), class_names=["a", "b", "c"],
                           data={"num_frames": 4, "size": 16, "sampling": "uniform"})


def _largest_entry_data_offset(path):
    """(offset, size) in the file of the raw bytes of the checkpoint's largest tensor entry (stored uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_the_weights_digest_is_stored_and_canonical(tmp_path):
    model = _model()
    path = _save(tmp_path / "c.pt", model)
    payload = load_checkpoint(path)
    assert payload[DIGEST_KEY] == weights_digest(model.state_dict())
    shuffled = dict(reversed(list(model.state_dict().items())))
    assert weights_digest(shuffled) == payload[DIGEST_KEY]  # name order does not matter
    changed = dict(model.state_dict())
    name = next(k for k, v in changed.items() if v.is_floating_point())
    changed[name] = changed[name].clone()
    changed[name].view(-1)[0] += 1e-6
    assert weights_digest(changed) != payload[DIGEST_KEY]
    as_double = {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    assert weights_digest(as_double) != payload[DIGEST_KEY]  # dtype is part of the digest


def test_flipped_bytes_in_the_tensor_data_are_refused(tmp_path, capsys):
    path = _save(tmp_path / "c.pt")
    offset, size = _largest_entry_data_offset(path)
    data = bytearray(path.read_bytes())
    for i in range(offset + size // 2, offset + size // 2 + 4):
        data[i] ^= 0xFF
    tampered = tmp_path / "tampered.pt"
    tampered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="tampered.pt: the weights do not match the SHA-256"):
        load_checkpoint(tampered)
    assert main(["export", "--checkpoint", str(tampered), "--format", "torchscript", "--out",
                 str(tmp_path / "m.ts")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tampered.pt" in err[0] and "SHA-256" in err[0], err
    assert not (tmp_path / "m.ts").exists()


def test_a_checkpoint_without_a_digest_loads_with_a_warning(tmp_path, caplog):
    path = _save(tmp_path / "c.pt")
    payload = load_checkpoint(path)
    del payload[DIGEST_KEY]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    with caplog.at_level(logging.WARNING, logger="microexp.checkpoint"):
        loaded = load_checkpoint(old)
    assert DIGEST_KEY not in loaded
    [record] = caplog.records
    assert "old.pt" in record.getMessage() and "cannot be verified" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="microexp.checkpoint"):
        load_checkpoint(path)
    assert not caplog.records


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, capsys, value):
    model = _model()
    name, param = next((n, p) for n, p in model.named_parameters() if p.dim() > 1)
    with torch.no_grad():
        param.view(-1)[:3] = value
    path = _save(tmp_path / "diverged.pt", model)
    with pytest.raises(CheckpointError, match=rf"diverged.pt: weights are not finite: tensor '{name}' \(3 of "):
        model_from_checkpoint(load_checkpoint(path), source=str(path))
    (tmp_path / "clip").mkdir()
    assert main(["predict", "--checkpoint", str(path), str(tmp_path / "clip"), "--json", "--no-face-crop"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "not finite" in lines[0], lines
    assert "NaN" not in captured.out


def _truncated_torchscript(tmp_path):
    ckpt = _save(tmp_path / "c.pt")
    full = tmp_path / "full.ts"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(full)]) == 0
    cut = tmp_path / "cut.ts"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return cut


@pytest.mark.parametrize("kind,expected", [
    ("text", "a text file"), ("csv", "a CSV file"), ("empty", "an empty file"), ("binary", "an unknown binary file"),
    ("truncated_checkpoint", "damaged or truncated"), ("truncated_torchscript", "damaged or truncated"),
])
@pytest.mark.parametrize("command", ["predict", "export"])
def test_files_that_are_no_checkpoint_are_one_line_errors(tmp_path, capsys, kind, expected, command):
    if kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("these are my notes\nnot a model\n")
    elif kind == "csv":
        path = tmp_path / "annotations.csv"
        path.write_text("subject,clip,path\n1,EP01,a\n")
    elif kind == "empty":
        path = tmp_path / "empty.pt"
        path.write_bytes(b"")
    elif kind == "binary":
        path = tmp_path / "noise.pt"
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "truncated_checkpoint":
        full = _save(tmp_path / "full.pt")
        path = tmp_path / "cut.pt"
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    else:
        path = _truncated_torchscript(tmp_path)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    capsys.readouterr()
    if command == "predict":
        (tmp_path / "clip").mkdir(exist_ok=True)
        args = ["predict", "--checkpoint", str(path), str(tmp_path / "clip"), "--json"]
    else:
        args = ["export", "--checkpoint", str(path), "--format", "torchscript", "--out", str(tmp_path / "o.ts")]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and expected in lines[0] and "expected" in lines[0], lines


def test_an_export_given_where_a_checkpoint_is_needed_says_so(tmp_path, capsys):
    ckpt = _save(tmp_path / "c.pt")
    exported = tmp_path / "m.ts"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(exported)]) == 0
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(exported), "--format", "torchscript", "--out", str(tmp_path / "x.ts")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "a TorchScript export" in lines[0] and "checkpoint it was made from" in lines[0], lines


def test_rebuild_errors_keep_their_cause(tmp_path):
    payload = load_checkpoint(_save(tmp_path / "c.pt"))
    payload["model_kwargs"]["num_classes"] = 5
    with pytest.raises(CheckpointError, match="cannot rebuild model 'tsm_tiny'") as info:
        model_from_checkpoint(payload)
    assert isinstance(info.value.__cause__, RuntimeError)  # the size mismatch, kept for debugging
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(CheckpointError, match="not a loadable") as info:
        load_checkpoint(garbage)
    assert info.value.__cause__ is not None


def test_checkpoints_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = _save(tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temporary file left


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmpfs):
    small = tmpfs("small", size="4m")
    first = _save(small / "model.pt", create_model("tsm_tiny", num_classes=3, num_frames=4, input_size=16))
    before = first.read_bytes()
    ballast = small / "ballast"
    ballast.write_bytes(b"\0" * (4 * 1024 * 1024 - first.stat().st_size - 256 * 1024))
    with pytest.raises(OutputError) as info:
        _save(small / "model.pt")
    message = str(info.value)
    assert str(small / "model.pt") in message and "disk full" in message
    assert "the previous checkpoint is kept" in message and "\n" not in message
    assert first.read_bytes() == before
    assert sorted(p.name for p in small.iterdir()) == ["ballast", "model.pt"]  # no temporary file left


def test_a_read_only_folder_is_one_line(tmpfs, capsys):
    ro = tmpfs("ro", size="1m", read_only=True)
    with pytest.raises(OutputError, match=r"cannot write .*ro/model.pt: read-only file system"):
        _save(ro / "model.pt")


def test_changed_class_names_are_refused(tmp_path):
    path = _save(tmp_path / "c.pt")
    payload = load_checkpoint(path)
    payload["class_names"] = ["b", "a", "c"]  # swapped labels, weights untouched
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    with pytest.raises(CheckpointError, match="edited.pt: the model name, arguments, class names or data config"):
        load_checkpoint(edited)
