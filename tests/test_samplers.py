"""Rebalancing samplers: empirical class frequencies vs the expected ones, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from microexp.data.dataset import EpochIndexSampler
from microexp.data.samplers import (
    SAMPLERS,
    DistributedBatchSampler,
    DistributedShard,
    build_sampler,
    class_sampling_probabilities,
)
from microexp.errors import ConfigError

COUNTS = [400, 100, 20, 5]
N = sum(COUNTS)
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)
DRAWS = 200_000


def shuffled_labels() -> np.ndarray:
    return np.random.default_rng(0).permutation(LABELS)


def empirical(name: str, *, epoch: int | None = None, **kwargs) -> np.ndarray:
    labels = shuffled_labels()
    g = torch.Generator().manual_seed(1234)
    sampler = build_sampler(name, labels, num_samples=DRAWS, generator=g, **kwargs)
    if epoch is not None:
        sampler.set_epoch(epoch)
    idx = np.fromiter(iter(sampler), dtype=np.int64, count=DRAWS)
    return np.bincount(labels[idx], minlength=len(COUNTS)) / DRAWS


def assert_close(freq: np.ndarray, expected: list[float] | np.ndarray) -> None:
    # each class frequency is a binomial proportion: std = sqrt(p(1-p)/DRAWS) <= 0.0011;
    # 5 standard deviations makes a false failure (with a fixed seed: never) vanishingly rare
    expected = np.asarray(expected, dtype=np.float64)
    tol = 5 * np.sqrt(expected * (1 - expected) / DRAWS) + 1e-9
    assert np.all(np.abs(freq - expected) <= tol), (freq, expected, tol)


def test_none_gives_instance_frequencies() -> None:
    assert_close(empirical("none"), [c / N for c in COUNTS])


def test_class_balanced_is_uniform() -> None:
    assert_close(empirical("class_balanced"), [0.25] * 4)


def test_sqrt_is_proportional_to_sqrt_counts() -> None:
    s = [math.sqrt(c) for c in COUNTS]
    assert_close(empirical("sqrt"), [x / sum(s) for x in s])


@pytest.mark.parametrize("beta", [0.99, 0.999])
def test_effective_number_per_formula(beta: float) -> None:
    # per-sample weight (1-beta)/(1-beta^n_c), so class mass n_c * that weight
    mass = [c * (1 - beta) / (1 - beta**c) for c in COUNTS]
    expected = [m / sum(mass) for m in mass]
    assert_close(empirical("effective_number", beta=beta), expected)
    probs = class_sampling_probabilities("effective_number", COUNTS, beta=beta)
    assert np.allclose(probs, expected)


def test_progressive_moves_from_instance_to_uniform() -> None:
    epochs = 5
    instance = [c / N for c in COUNTS]
    assert_close(empirical("progressive", epochs=epochs, epoch=0), instance)
    assert_close(empirical("progressive", epochs=epochs, epoch=4), [0.25] * 4)
    mid = [(a + 0.25) / 2 for a in instance]
    assert_close(empirical("progressive", epochs=epochs, epoch=2), mid)


def test_progressive_formula_and_set_epoch_changes_weights() -> None:
    p = class_sampling_probabilities("progressive", COUNTS, epoch=1, epochs=5)
    expected = [0.75 * c / N + 0.25 * 0.25 for c in COUNTS]
    assert np.allclose(p, expected)
    sampler = build_sampler("progressive", LABELS, epochs=5)
    before = sampler.weights.clone()
    sampler.set_epoch(4)
    assert not torch.allclose(before, sampler.weights)
    assert np.allclose(sampler.class_probabilities, 0.25)
    with pytest.raises(ConfigError, match="epoch"):
        sampler.set_epoch(5)


def test_probabilities_sum_to_one_and_absent_classes_get_zero() -> None:
    counts = [10, 0, 3]
    for name in SAMPLERS:
        p = class_sampling_probabilities(name, counts, epoch=1, epochs=3)
        assert math.isclose(p.sum(), 1.0) and p[1] == 0.0, (name, p)


@pytest.mark.parametrize("name", SAMPLERS)
def test_len_determinism_and_set_epoch(name: str) -> None:
    kwargs = {"epochs": 3} if name == "progressive" else {}
    labels = shuffled_labels()

    def draw(seed: int) -> list[int]:
        s = build_sampler(
            name, labels, num_samples=300, generator=torch.Generator().manual_seed(seed), **kwargs
        )
        s.set_epoch(1)
        return list(s)

    first = draw(7)
    assert len(first) == 300 and first == draw(7) and first != draw(8)
    assert all(0 <= i < len(labels) for i in first)
    assert len(build_sampler(name, labels, **kwargs)) == len(labels)
    assert len(build_sampler(name, labels, num_samples=17, **kwargs)) == 17


def test_none_is_a_permutation_by_default() -> None:
    s = build_sampler("none", LABELS, generator=torch.Generator().manual_seed(0))
    assert sorted(s) == list(range(len(LABELS)))


def test_unknown_name_lists_names() -> None:
    with pytest.raises(ConfigError) as err:
        build_sampler("class_balance", LABELS)
    msg = str(err.value)
    assert "did you mean class_balanced" in msg
    assert all(name in msg for name in SAMPLERS)
    with pytest.raises(ConfigError, match="unknown sampler"):
        class_sampling_probabilities("nope", COUNTS)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([], dtype=np.int64), "non-empty"),
        (np.array([0, 1, -1]), "negative"),
        (np.array([0.0, 1.0]), "integers"),
        (np.zeros((2, 2), dtype=np.int64), "1-D"),
    ],
)
def test_bad_labels(labels: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_sampler("class_balanced", labels)


def test_option_errors() -> None:
    with pytest.raises(ConfigError, match="needs epochs"):
        build_sampler("progressive", LABELS)
    with pytest.raises(ConfigError, match="epochs must be"):
        build_sampler("progressive", LABELS, epochs=0)
    with pytest.raises(ConfigError, match=r"unknown option.*\['beta'\]"):
        build_sampler("sqrt", LABELS, beta=0.9)
    with pytest.raises(ConfigError, match="beta"):
        build_sampler("effective_number", LABELS, beta=1.0)
    with pytest.raises(ConfigError, match="num_samples"):
        build_sampler("none", LABELS, num_samples=0)
    with pytest.raises(ConfigError, match="class_counts"):
        class_sampling_probabilities("sqrt", [3, -1])


# ----------------------------------------------------------------------------------------------------
# the shares of one epoch stream (ranks simulated in one process; tests/test_distributed.py runs them
# as real gloo processes)


def _rank_samplers(name: str, world_size: int, *, n: int = 23, num_samples: int | None = None):
    """One sampler (and generator) per simulated rank, built identically as every rank would."""
    labels = shuffled_labels()[:n]
    kwargs = {"epochs": 3} if name == "progressive" else {}
    out = []
    for _ in range(world_size):
        g = torch.Generator()
        out.append((build_sampler(name, labels, num_samples=num_samples, generator=g, **kwargs), g))
    return out


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_distributed_shards_are_disjoint_positions_of_the_single_process_stream(name: str, world_size: int) -> None:
    single, single_g = _rank_samplers(name, 1)[0]
    ranks = _rank_samplers(name, world_size)
    for epoch in (0, 2):
        single_g.manual_seed(100 + epoch)
        single.set_epoch(epoch)
        stream = list(single)
        shares = []
        for rank, (sampler, g) in enumerate(ranks):
            shard = DistributedShard(sampler, rank=rank, world_size=world_size)
            g.manual_seed(100 + epoch)  # what the engine does on every rank before the epoch
            shard.set_epoch(epoch)
            share = list(shard)
            assert len(share) == len(shard)
            assert share == stream[rank::world_size]
            shares.append(share)
        union = [i for share in shares for i in share]
        assert sorted(union) == sorted(stream) and len(union) == len(stream) == 23
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_distributed_shard_passes_set_epoch_to_progressive() -> None:
    (sampler, _), = _rank_samplers("progressive", 1)
    shard = DistributedShard(EpochIndexSampler(sampler), rank=0, world_size=2)
    shard.set_epoch(2)
    assert sampler.epoch == 2 and np.allclose(sampler.class_probabilities[sampler.class_counts > 0],
                                              1 / (sampler.class_counts > 0).sum())
    assert all(pair[0] == 2 for pair in shard)  # EpochIndexSampler's (epoch, index) pairs pass through


@pytest.mark.parametrize("n", [2, 3, 7, 8, 9, 16, 17, 23, 41])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [2, 3, 4, 8])
def test_distributed_batches_same_count_on_every_rank(n: int, world_size: int, batch_size: int) -> None:
    if n < world_size:
        pytest.skip("covered by the error test")
    stream = list(range(100, 100 + n))  # any items: a fixed list stands for the drawn stream
    per_rank = [list(DistributedBatchSampler(stream, batch_size=batch_size, rank=r, world_size=world_size))
                for r in range(world_size)]
    counts = {len(batches) for batches in per_rank}
    assert len(counts) == 1, per_rank
    assert counts == {len(DistributedBatchSampler(stream, batch_size=batch_size, rank=0, world_size=world_size))}
    for rank, batches in enumerate(per_rank):
        assert all(1 <= len(b) <= batch_size for b in batches), batches
        assert [i for b in batches for i in b] == stream[rank::world_size]
    # as few steps as the largest share allows: ceil(ceil(n / W) / B)
    assert counts == {-(-(-(-n // world_size)) // batch_size)}


def test_distributed_samplers_refuse_impossible_shares() -> None:
    with pytest.raises(ValueError, match="same number of non-empty batches"):
        DistributedBatchSampler(list(range(3)), batch_size=4, rank=0, world_size=4)  # a rank would get nothing
    with pytest.raises(ValueError, match="same number of non-empty batches"):
        DistributedBatchSampler(list(range(5)), batch_size=1, rank=0, world_size=2)  # 3 vs 2 single batches
    assert len(DistributedBatchSampler(list(range(6)), batch_size=1, rank=1, world_size=2)) == 3  # even: fine
    with pytest.raises(ValueError, match="rank"):
        DistributedShard(list(range(4)), rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        DistributedShard(list(range(4)), rank=0, world_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        DistributedBatchSampler(list(range(4)), batch_size=0, rank=0, world_size=1)
