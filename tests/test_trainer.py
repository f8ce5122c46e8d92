"""train_one_epoch / evaluate / pretrain_one_epoch on a toy temporal task with real registered models, on CPU."""

import math
import sys

import numpy as np
import pytest
import torch

from microexp.engine import trainer
from microexp.engine.trainer import (
    build_optimizer, build_scheduler, evaluate, pretrain_one_epoch, select_device, train_one_epoch,
)
from microexp.errors import ConfigError
from microexp.models import create_model
from microexp.seed import seed_everything


class ToyMotion(torch.utils.data.Dataset):
    """Class 1: the frames brighten over time; class 0: they darken. Single frames tell nothing."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 2, n)
        self.base = rng.normal(0, 1, (n, 3, 1, 16, 16)).astype(np.float32)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        ramp = torch.linspace(-1, 1, 4).view(1, 4, 1, 1) * (1 if self.labels[i] else -1)
        return {"video": torch.from_numpy(self.base[i]) + ramp, "label": torch.tensor(int(self.labels[i])),
                "clip": f"c{i}", "subject": i % 5}


def _run(seed):
    generator = seed_everything(seed)
    model = create_model("tsm_tiny", num_classes=2, num_frames=4, input_size=16)
    train = torch.utils.data.DataLoader(ToyMotion(64, 0), batch_size=16, shuffle=True, generator=generator)
    test = torch.utils.data.DataLoader(ToyMotion(32, 1), batch_size=16)
    optimizer = build_optimizer(model, name="adamw", lr=3e-3, weight_decay=0.01)
    scheduler = build_scheduler(optimizer, name="cosine", epochs=6, steps_per_epoch=len(train), warmup_epochs=1)
    device = select_device("cpu")
    stats = [train_one_epoch(model, train, loss_fn=torch.nn.functional.cross_entropy, optimizer=optimizer,
                             scheduler=scheduler, device=device, grad_clip=1.0, progress=False) for _ in range(6)]
    return stats, evaluate(model, test, device=device, loss_fn=torch.nn.functional.cross_entropy, progress=False)


def test_training_learns_and_evaluate_returns_distributions():
    stats, predictions = _run(0)
    assert stats[-1].loss < stats[0].loss
    assert stats[0].samples == 64 and 0 <= stats[-1].data_seconds <= stats[-1].seconds
    assert predictions.probabilities.shape == (32, 2)
    assert np.allclose(predictions.probabilities.sum(axis=1), 1, atol=1e-5)
    assert predictions.clips[:2] == ["c0", "c1"] and predictions.subjects[:2] == [0, 1]
    assert (predictions.predicted == predictions.labels).mean() >= 0.8


def test_same_seed_same_results_on_cpu():
    a_stats, a_pred = _run(3)
    b_stats, b_pred = _run(3)
    assert [s.loss for s in a_stats] == [s.loss for s in b_stats]
    assert np.array_equal(a_pred.probabilities, b_pred.probabilities)


def test_schedule_warms_up_then_decays():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, name="cosine", epochs=4, steps_per_epoch=5, warmup_epochs=1)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < lrs[4] < lrs[5] == pytest.approx(1.0) and lrs[-1] < 0.05
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6]))


def test_bad_names_and_missing_cuda():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="adamw or sgd"):
        build_optimizer(model, name="adam", lr=0.1, weight_decay=0)
    with pytest.raises(ConfigError, match="cosine, step or constant"):
        build_scheduler(torch.optim.SGD(model.parameters(), lr=0.1), name="poly", epochs=1, steps_per_epoch=1)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            select_device("cuda")


def test_diverging_loss_stops_the_epoch():
    model = create_model("frame_tiny", num_classes=2, num_frames=4, input_size=16)
    loader = torch.utils.data.DataLoader(ToyMotion(8, 0), batch_size=4)
    optimizer = build_optimizer(model, name="sgd", lr=0.1, weight_decay=0)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_one_epoch(model, loader, loss_fn=lambda logits, y: logits.sum() * float("nan"),
                        optimizer=optimizer, device=torch.device("cpu"), progress=False)


def test_diverging_loss_is_found_at_the_next_check_and_named():
    """The loss is read on the host every check_every steps: a NaN at step 2 is found at step 4's check."""
    model = create_model("frame_tiny", num_classes=2, num_frames=4, input_size=16)
    loader = torch.utils.data.DataLoader(ToyMotion(24, 0), batch_size=4)  # 6 steps
    optimizer = build_optimizer(model, name="sgd", lr=0.0, weight_decay=0)
    calls = []

    def nan_at_step_2(logits, labels):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if len(calls) == 2 else loss

    with pytest.raises(FloatingPointError, match=r"loss is nan between steps 1 and 4 .*checked every 4 steps"):
        train_one_epoch(model, loader, loss_fn=nan_at_step_2, optimizer=optimizer, device=torch.device("cpu"),
                        check_every=4, progress=False)
    assert len(calls) == 4  # stopped at the check, not at the end of the epoch
    calls.clear()
    with pytest.raises(FloatingPointError, match="loss is nan between steps 1 and 6"):  # found at the end
        train_one_epoch(model, loader, loss_fn=nan_at_step_2, optimizer=optimizer, device=torch.device("cpu"),
                        check_every=100, progress=False)
    assert len(calls) == 6
    with pytest.raises(ValueError, match="check_every=0"):
        train_one_epoch(model, loader, loss_fn=nan_at_step_2, optimizer=optimizer, device=torch.device("cpu"),
                        check_every=0, progress=False)


def _reference_epoch(model, loader, *, loss_fn, optimizer, scheduler, grad_clip):
    """The loop as it was before the device-side bookkeeping: one host read of loss and accuracy per step."""
    model.train()
    total_loss, correct, samples = 0.0, 0, 0
    for batch in loader:
        logits = model(batch["video"])
        loss = loss_fn(logits.float(), batch["label"])
        assert torch.isfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * batch["label"].shape[0]
        correct += int((logits.argmax(dim=1) == batch["label"]).sum())
        samples += batch["label"].shape[0]
    return total_loss / samples, correct / samples


def _reference_evaluate(model, loader, loss_fn):
    model.eval()
    probabilities, total, samples = [], 0.0, 0
    with torch.no_grad():
        for batch in loader:
            logits = model(batch["video"]).float()
            total += loss_fn(logits, batch["label"]).item() * batch["label"].shape[0]
            samples += batch["label"].shape[0]
            probabilities.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(probabilities), total / samples


@pytest.mark.parametrize("name", ["tsm_tiny", "r3d_tiny"])
def test_cpu_results_equal_a_plain_reference_loop(name):
    """Device-side sums change nothing on CPU: the same weights, loss, accuracy and probabilities, bit for bit."""
    loss_fn = torch.nn.functional.cross_entropy
    results = []
    for loop in ("microexp", "reference"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=2, num_frames=4, input_size=16)
        train = torch.utils.data.DataLoader(ToyMotion(40, 0), batch_size=8, shuffle=True,
                                            generator=torch.Generator().manual_seed(1))
        test = torch.utils.data.DataLoader(ToyMotion(12, 1), batch_size=5)
        optimizer = build_optimizer(model, name="adamw", lr=3e-3, weight_decay=0.01)
        scheduler = build_scheduler(optimizer, name="cosine", epochs=2, steps_per_epoch=len(train), warmup_epochs=1)
        epochs = []
        for _ in range(2):
            if loop == "microexp":
                stats = train_one_epoch(model, train, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
                                        device=torch.device("cpu"), grad_clip=1.0, check_every=2, progress=False)
                epochs.append((stats.loss, stats.accuracy))
            else:
                epochs.append(_reference_epoch(model, train, loss_fn=loss_fn, optimizer=optimizer,
                                               scheduler=scheduler, grad_clip=1.0))
        if loop == "microexp":
            predictions = evaluate(model, test, device=torch.device("cpu"), loss_fn=loss_fn, progress=False)
            scored = (predictions.probabilities, predictions.loss)
        else:
            scored = _reference_evaluate(model, test, loss_fn)
        results.append((epochs, {k: v.clone() for k, v in model.state_dict().items()}, scored))
    (ours_epochs, ours_state, ours_scored), (ref_epochs, ref_state, ref_scored) = results
    assert ours_epochs == ref_epochs
    assert all(torch.equal(ours_state[k], ref_state[k]) for k in ref_state)
    assert np.array_equal(ours_scored[0], ref_scored[0]) and ours_scored[1] == ref_scored[1]


def test_no_host_read_per_step(monkeypatch):
    """The trainer reads device values on the host only at its checks: ceil(8 / 3) + the final ones."""
    reads = []
    here = trainer.__file__

    def counted(method):
        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename == here:
                reads.append(method)
            return original[method](self, *args, **kwargs)
        return wrapper

    original = {m: getattr(torch.Tensor, m) for m in ("item", "__bool__", "__float__", "__int__", "tolist")}
    model = create_model("frame_tiny", num_classes=2, num_frames=4, input_size=16)
    loader = torch.utils.data.DataLoader(ToyMotion(32, 0), batch_size=4)  # 8 steps
    optimizer = build_optimizer(model, name="sgd", lr=0.01, weight_decay=0)
    for method in original:
        monkeypatch.setattr(torch.Tensor, method, counted(method))
    stats = train_one_epoch(model, loader, loss_fn=torch.nn.functional.cross_entropy, optimizer=optimizer,
                            device=torch.device("cpu"), check_every=3, progress=False)
    monkeypatch.undo()
    assert stats.samples == 32 and math.isfinite(stats.loss)
    # checks after steps 3 and 6 and at the end (loss), plus the accuracy at the end
    assert reads == ["__float__"] * 4  # three loss checks, then the correct count (a float sum)


class _ToyAutoencoder(torch.nn.Module):
    """A stand-in for MaskedVideoAutoencoder: ``model(videos, generator=)`` returns an output with a loss."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 3)
        self.nan_at = None
        self.calls = 0

    def forward(self, videos, generator=None):
        self.calls += 1
        x = videos.mean(dim=(2, 3, 4))
        loss = ((self.proj(x) - x) ** 2).mean()
        if self.calls == self.nan_at:
            loss = loss * float("inf")
        return type("Out", (), {"loss": loss})()


def test_pretrain_epoch_matches_float32_sum_and_stops_on_divergence():
    loader = torch.utils.data.DataLoader(ToyMotion(20, 0), batch_size=4)
    torch.manual_seed(0)
    model = _ToyAutoencoder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    mean = pretrain_one_epoch(model, loader, optimizer=optimizer, device=torch.device("cpu"), progress=False)
    with torch.no_grad():  # lr 0: the same losses again, summed in float32 as the loop always did
        expected = torch.zeros(())
        for batch in loader:
            expected += model(batch["video"]).loss * batch["video"].shape[0]
    assert mean == float(expected) / 20
    model.calls, model.nan_at = 0, 3
    with pytest.raises(FloatingPointError, match=r"reconstruction loss is (inf|nan) between steps 3 and 4 .*lower pretrain.lr"):
        pretrain_one_epoch(model, loader, optimizer=optimizer, device=torch.device("cpu"), check_every=2,
                           progress=False)


def test_scaler_and_autocast_branches_run_on_cpu():
    """The fp16 path's GradScaler branch (scale, unscale, clip, step) and the autocast branch, exercised on
    CPU: a power-of-two loss scale leaves the fp32 step unchanged; bf16 autocast trains to a finite loss."""
    loader = torch.utils.data.DataLoader(ToyMotion(16, 0), batch_size=4)
    states = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)):
        torch.manual_seed(0)
        model = create_model("r3d_tiny", num_classes=2, num_frames=4, input_size=16)
        optimizer = build_optimizer(model, name="sgd", lr=0.05, weight_decay=0)
        train_one_epoch(model, loader, loss_fn=torch.nn.functional.cross_entropy, optimizer=optimizer,
                        device=torch.device("cpu"), grad_clip=1.0, scaler=scaler, progress=False)
        states.append(model.state_dict())
    for key in states[0]:
        torch.testing.assert_close(states[1][key], states[0][key], rtol=1e-5, atol=1e-6)
    stats = train_one_epoch(model, loader, loss_fn=torch.nn.functional.cross_entropy, optimizer=optimizer,
                            device=torch.device("cpu"), dtype=torch.bfloat16,
                            memory_format=torch.channels_last_3d, progress=False)
    assert math.isfinite(stats.loss) and stats.samples == 16
    predictions = evaluate(model, loader, device=torch.device("cpu"), dtype=torch.bfloat16,
                           memory_format=torch.channels_last_3d, progress=False)
    assert predictions.probabilities.dtype == np.float32 and predictions.probabilities.shape == (16, 2)
