"""Self-describing checkpoints: exact rebuild, resume state, and safe refusal of foreign or tampered files."""

import pickle

import pytest
import torch

from microexp.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from microexp.models import create_model


def _model():
    torch.manual_seed(0)
    return create_model("tsm_tiny", num_classes=3, num_frames=4, input_size=16)


def test_rebuilds_the_exact_model_and_resume_state(tmp_path):
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 4, 16, 16)
    model(x).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model, class_names=["a", "b", "c"], epoch=4, fold=2,
                           data={"num_frames": 4, "sampling": "uniform"}, metrics={"uf1": 0.5}, optimizer=optimizer)
    payload = load_checkpoint(path)
    assert payload["class_names"] == ["a", "b", "c"] and payload["epoch"] == 4 and payload["fold"] == 2
    assert payload["data"]["sampling"] == "uniform"
    rebuilt = model_from_checkpoint(payload)
    model.eval(), rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))
    fresh = torch.optim.AdamW(rebuilt.parameters(), lr=1e-3)
    fresh.load_state_dict(payload["optimizer"])
    assert fresh.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_foreign_and_tampered_files_are_refused_without_running_code(tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a microexp checkpoint"):
        load_checkpoint(foreign)

    class Exploit:
        def __reduce__(self):
            return (print, ("code ran",))

    tampered = tmp_path / "tampered.pt"
    with open(tampered, "wb") as handle:
        pickle.dump({"format": "microexp-checkpoint", "payload": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="tampered.pt: not a loadable"):
        load_checkpoint(tampered)
    assert "code ran" not in capsys.readouterr().out
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_weights_are_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", model=_model(), class_names=["a", "b", "c"])
    payload = load_checkpoint(path)
    payload["model_kwargs"]["num_classes"] = 5
    with pytest.raises(CheckpointError, match="cannot rebuild model 'tsm_tiny'"):
        model_from_checkpoint(payload)
