"""The GPU path's choices, tested on CPU: the CUDA branches take the device's capabilities as arguments."""

import logging

import pytest
import torch

from microexp.engine.precision import (
    CHANNELS_LAST_3D_FAMILIES, autocast_dtype, configure_backends, dtype_name, is_conv3d_model, make_grad_scaler,
    memory_format_for, needs_grad_scaler, prepare_model,
)
from microexp.errors import ConfigError
from microexp.models import FAMILIES, create_model, list_models, model_info
from microexp.models._registry import build_on_meta

CUDA, CPU = torch.device("cuda"), torch.device("cpu")  # a cuda device object needs no GPU

#: the decision per family, by hand from each family's layers (the 3D CNNs are Conv3d throughout; the
#: two-stream, TSM, frame and apex-flow models are 2D CNNs; every transformer, including torchvision's
#: MViT and Swin3D and VideoMAE with their Conv3d patch embeddings, is attention on tokens)
EXPECTED = {"3dcnn": torch.channels_last_3d, "two_stream": torch.contiguous_format, "tsm": torch.contiguous_format,
            "transformer": torch.contiguous_format, "frame": torch.contiguous_format,
            "apex_flow": torch.contiguous_format}


@pytest.mark.parametrize("amp_dtype, bf16, expected", [
    ("auto", True, torch.bfloat16), ("auto", False, torch.float16), ("float16", True, torch.float16),
    ("float16", False, torch.float16), ("bfloat16", True, torch.bfloat16)])
def test_autocast_dtype_on_cuda(amp_dtype, bf16, expected):
    assert autocast_dtype(CUDA, amp=True, amp_dtype=amp_dtype, bf16_supported=bf16) is expected


def test_autocast_dtype_off():
    for amp_dtype in ("auto", "bfloat16", "float16"):
        assert autocast_dtype(CPU, amp=True, amp_dtype=amp_dtype, bf16_supported=True) is None  # CPU: fp32
        assert autocast_dtype(CUDA, amp=False, amp_dtype=amp_dtype, bf16_supported=True) is None  # amp off
    assert autocast_dtype(CPU, amp=True) is None  # never asks CUDA on a CPU run
    assert dtype_name(None) == "fp32" and dtype_name(torch.bfloat16) == "bf16" and dtype_name(torch.float16) == "fp16"


def test_autocast_dtype_errors():
    with pytest.raises(ConfigError, match="no native bfloat16.*auto or float16"):
        autocast_dtype(CUDA, amp=True, amp_dtype="bfloat16", bf16_supported=False)
    with pytest.raises(ConfigError, match="train.amp_dtype='fp8'.*auto, bfloat16, float16"):
        autocast_dtype(CPU, amp=True, amp_dtype="fp8")


def test_grad_scaler_only_for_fp16_on_cuda():
    assert needs_grad_scaler(CUDA, torch.float16)
    assert not needs_grad_scaler(CUDA, torch.bfloat16) and not needs_grad_scaler(CUDA, None)
    assert not needs_grad_scaler(CPU, torch.float16)
    for dtype in (None, torch.bfloat16, torch.float16):
        scaler = make_grad_scaler(CPU, dtype)
        assert isinstance(scaler, torch.amp.GradScaler) and not scaler.is_enabled() and scaler.state_dict() == {}


def test_memory_format_per_family_name():
    for family in FAMILIES:
        assert memory_format_for(family, device=CUDA, channels_last=True) == EXPECTED[family], family
        assert memory_format_for(family, device=CUDA, channels_last=False) == torch.contiguous_format
        assert memory_format_for(family, device=CPU, channels_last=True) == torch.contiguous_format
    assert {f for f, fmt in EXPECTED.items() if fmt == torch.channels_last_3d} == set(CHANNELS_LAST_3D_FAMILIES)
    with pytest.raises(ValueError, match="'cnn3d'.*3dcnn"):
        memory_format_for("cnn3d", device=CUDA, channels_last=True)


@pytest.mark.parametrize("name", list_models())
def test_memory_format_of_every_registered_model_matches_its_family(name):
    """Inspecting the layers of every registered model (built on the meta device: no weights) gives its
    family's decision, so the family table cannot drift from the models."""
    model = build_on_meta(name, num_classes=3)
    family = model_info(name).family
    assert memory_format_for(model, device=CUDA, channels_last=True) == EXPECTED[family]
    assert is_conv3d_model(model) == (family in CHANNELS_LAST_3D_FAMILIES)


def _small_model_per_family():
    chosen = {}
    for name in list_models():
        info = model_info(name)
        if info.cpu_friendly:
            chosen.setdefault(info.family, name)
    assert set(chosen) == set(FAMILIES)  # one CPU-sized model in every family
    return sorted(chosen.items())


@pytest.mark.parametrize("family, name", _small_model_per_family())
def test_prepare_model_converts_conv3d_weights_and_runs(family, name):
    """One small real model per family: prepared in its family's format (forced on CPU here), it runs on an
    input in that format and gives the contiguous model's logits; state_dict keys are unchanged."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    spec = model.spec
    fmt = EXPECTED[family]
    keys = list(model.state_dict())
    x = torch.randn(2, spec.in_channels, spec.num_frames, spec.input_size, spec.input_size)
    with torch.no_grad():
        expected = model(x)
        prepared = prepare_model(model, device=CPU, memory_format=fmt)
        got = prepared(x.contiguous(memory_format=fmt))
    assert prepared is model and list(model.state_dict()) == keys
    conv3d = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    if fmt == torch.channels_last_3d:
        assert conv3d and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in conv3d)
        assert not all(w.is_contiguous() for w in conv3d)
    else:
        assert all(w.is_contiguous() for w in conv3d)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_prepare_model_skips_compile_off_cuda(caplog):
    model = create_model("frame_tiny", num_classes=3)
    with caplog.at_level(logging.WARNING, logger="microexp.engine.precision"):
        assert prepare_model(model, device=CPU, compile=True) is model
    assert "not compiled on cpu" in caplog.text
    assert getattr(model, "_compiled_call_impl", None) is None  # what Module.compile sets
    with pytest.raises(ValueError, match="channels_last_3d or torch.contiguous_format"):
        prepare_model(model, device=CPU, memory_format=torch.channels_last)


def test_configure_backends_sets_cudnn_benchmark_on_cuda_only():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        assert configure_backends(CPU, deterministic=False) is False and torch.backends.cudnn.benchmark is False
        assert configure_backends(CUDA, deterministic=False) is True and torch.backends.cudnn.benchmark is True
        assert configure_backends(CUDA, deterministic=True) is False and torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


def test_throughput_reports_its_precision_and_formats():
    from microexp.benchmark.throughput import measure_throughput

    section = measure_throughput(device="cpu", steps=1, repeats=1, models=("r3d_tiny", "frame_tiny"))
    details = section.details
    assert details["dtype"] == "fp32" and details["amp_dtype"] == "auto"
    assert details["models"]["r3d_tiny"]["memory_format"] == "contiguous_format"  # CPU: nothing converted
    assert details["models"]["frame_tiny"]["memory_format"] == "contiguous_format"
    assert section.figure("r3d_tiny.microexp.clips_per_s").median > 0


def test_gpu_check_script_parses_and_covers_every_family():
    """scripts/gpu_check.sh (run on a GPU machine, never by the tests) is valid bash and trains one model of
    every family with an existing recipe."""
    import re
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    specs = re.findall(r'^  "(\w+)\|([^|]+)\|', script.read_text(), flags=re.M)
    assert {model_info(name).family for name, _ in specs} == set(FAMILIES)
    for _, recipe in specs:
        assert (script.parents[1] / recipe).is_file(), recipe
