"""train_one_epoch / evaluate on a toy temporal task with a real registered model, on CPU."""

import numpy as np
import pytest
import torch

from microexp.engine.trainer import (
    build_optimizer, build_scheduler, evaluate, select_device, train_one_epoch,
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
