"""Rebalancing samplers built from a training fold's label array.

The maths is one pure function, :func:`class_sampling_probabilities`, giving the expected class
frequencies of each strategy; the samplers turn it into per-sample weights ``p_c / n_c`` and draw
with replacement. Every sampler has ``set_epoch(epoch)`` (a no-op except ``progressive``) so the
trainer can call it uniformly, and is deterministic given a seeded ``torch.Generator``.

Classes absent from the labels (count 0) get probability 0 under every strategy: there is nothing
to draw.

Under DDP every rank builds the same sampler, seeds its generator identically before each epoch and
draws the same full epoch stream; :class:`DistributedShard` keeps this rank's positions of it and
:class:`DistributedBatchSampler` cuts that share into the same number of batches on every rank. The
union over ranks is the single-process stream itself, as a multiset: nothing padded, nothing dropped.

Never imports ``microexp.models``, the engine or the CLI.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, WeightedRandomSampler

from microexp.errors import ConfigError

__all__ = [
    "SAMPLERS",
    "ClassRebalancingSampler",
    "DistributedBatchSampler",
    "DistributedShard",
    "ShuffleSampler",
    "StagedSampler",
    "build_sampler",
    "class_sampling_probabilities",
]

#: Names accepted by :func:`build_sampler` and :func:`class_sampling_probabilities`.
SAMPLERS: tuple[str, ...] = ("none", "class_balanced", "sqrt", "effective_number", "progressive")

_OPTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "class_balanced": (),
    "sqrt": (),
    "effective_number": ("beta",),
    "progressive": ("epochs",),
}


def _check_name(name: str) -> None:
    if name not in SAMPLERS:
        close = difflib.get_close_matches(str(name), SAMPLERS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown sampler {name!r}{hint} Allowed: {', '.join(SAMPLERS)}")


def class_sampling_probabilities(
    name: str,
    class_counts: Sequence[int] | np.ndarray,
    *,
    epoch: int = 0,
    epochs: int = 1,
    beta: float = 0.999,
) -> np.ndarray:
    """Expected class frequencies of a sampling strategy.

    * ``none``: ``n_c / N`` (instance-balanced);
    * ``class_balanced``: uniform over present classes;
    * ``sqrt``: ``∝ sqrt(n_c)``;
    * ``effective_number``: per-sample weight ``(1 - beta) / (1 - beta^n_c)``, so
      ``p_c ∝ n_c (1 - beta) / (1 - beta^n_c)`` (instance-balanced at beta 0, towards uniform as
      beta -> 1);
    * ``progressive`` (Kang et al. 2020): ``(1 - t/T) n_c/N + (t/T) / C`` with ``t = epoch`` and
      ``T = epochs - 1``, i.e. instance-balanced at epoch 0 and class-balanced at the last epoch
      (with ``epochs == 1`` the only epoch is the last: class-balanced).

    Args:
        name: one of :data:`SAMPLERS`.
        class_counts: samples per class (>= 0, not all zero).
        epoch: 0-based epoch in ``[0, epochs)`` (``progressive`` only).
        epochs: total epochs (``progressive`` only).
        beta: in ``[0, 1)`` (``effective_number`` only).

    Returns:
        ``(C,)`` float64 probabilities summing to 1; 0 for absent classes.
    """
    _check_name(name)
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size == 0 or not np.issubdtype(counts.dtype, np.integer):
        raise ConfigError(
            f"class_counts must be a non-empty 1-D sequence of ints, got {class_counts!r}"
        )
    if (counts < 0).any():
        raise ConfigError(f"class_counts must be >= 0, got {counts.tolist()}")
    if counts.sum() == 0:
        raise ConfigError(f"class_counts are all zero: {counts.tolist()}")
    n = counts.astype(np.float64)
    present = n > 0
    if name == "none":
        raw = n
    elif name == "class_balanced":
        raw = present.astype(np.float64)
    elif name == "sqrt":
        raw = np.sqrt(n)
    elif name == "effective_number":
        if not 0.0 <= float(beta) < 1.0:
            raise ConfigError(f"beta must be in [0, 1), got {beta!r}")
        raw = np.zeros_like(n)
        raw[present] = n[present] * (1.0 - beta) / (1.0 - beta ** n[present])
    else:  # progressive
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise ConfigError(f"epochs must be an int >= 1, got {epochs!r}")
        if isinstance(epoch, bool) or int(epoch) != epoch or not 0 <= epoch < epochs:
            raise ConfigError(f"epoch must be an int in [0, {epochs}), got {epoch!r}")
        ratio = 1.0 if epochs == 1 else epoch / (epochs - 1)
        raw = (1.0 - ratio) * n / n.sum() + ratio * present / present.sum()
    return raw / raw.sum()


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"labels must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"labels must be integers, got dtype {arr.dtype}")
    if (arr < 0).any():
        bad = np.flatnonzero(arr < 0)[:5].tolist()
        raise ConfigError(f"labels must be >= 0; negative at positions {bad}")
    return arr.astype(np.int64)


class ShuffleSampler(RandomSampler):
    """Plain shuffle (``none``): a ``RandomSampler`` with a no-op ``set_epoch``."""

    def set_epoch(self, epoch: int) -> None:
        """No-op; present so the trainer can call it on any sampler."""


class ClassRebalancingSampler(WeightedRandomSampler):
    """Draws indices with replacement so class ``c`` appears with probability ``p_c``.

    Args:
        name: a :data:`SAMPLERS` name other than ``none``.
        labels: ``(N,)`` int class per sample.
        num_samples: draws per epoch.
        generator: optional seeded ``torch.Generator``.
        epochs: total epochs (``progressive``).
        beta: ``effective_number`` parameter.
    """

    def __init__(
        self,
        name: str,
        labels: np.ndarray,
        *,
        num_samples: int,
        generator: torch.Generator | None = None,
        epochs: int = 1,
        beta: float = 0.999,
    ) -> None:
        self.name = name
        self.labels = _check_labels(labels)
        self.class_counts = np.bincount(self.labels)
        self.epochs = epochs
        self.beta = beta
        self.epoch = 0
        super().__init__(
            self._weights(0), num_samples=num_samples, replacement=True, generator=generator
        )

    @property
    def class_probabilities(self) -> np.ndarray:
        """The expected class frequencies at the current epoch."""
        return class_sampling_probabilities(
            self.name, self.class_counts, epoch=self.epoch, epochs=self.epochs, beta=self.beta
        )

    def _weights(self, epoch: int) -> torch.Tensor:
        self.epoch = epoch
        p = self.class_probabilities
        per_class = np.zeros_like(p)
        present = self.class_counts > 0
        per_class[present] = p[present] / self.class_counts[present]
        return torch.as_tensor(per_class[self.labels], dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        """Set the 0-based epoch; only ``progressive`` changes its weights."""
        if self.name == "progressive":
            self.weights = self._weights(int(epoch))
        else:
            self.epoch = int(epoch)


class StagedSampler(Sampler[int]):
    """``first`` for epochs ``< switch_epoch``, then ``then``: a schedule that moves from one stream to another
    (e.g. instance sampling for the representation, then class-balanced sampling for the classifier).

    ``set_epoch`` reaches the stage of that epoch (a progressive first stage runs over ``switch_epoch``
    epochs), and that stage is iterated.
    """

    def __init__(self, first: Sampler[int], then: Sampler[int], *, switch_epoch: int) -> None:
        if len(first) != len(then):
            raise ValueError(f"StagedSampler: the stages draw {len(first)} and {len(then)} indices per epoch")
        self.first, self.then, self.switch_epoch = first, then, int(switch_epoch)
        self.epoch = 0

    @property
    def active(self) -> Sampler[int]:
        return self.first if self.epoch < self.switch_epoch else self.then

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.active, "set_epoch"):
            self.active.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(self.active)

    def __len__(self) -> int:
        return len(self.first)


def build_sampler(
    name: str,
    labels: np.ndarray,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    **kwargs: object,
) -> Sampler[int]:
    """Build a sampler over a training fold by name.

    Args:
        name: one of :data:`SAMPLERS`.
        labels: ``(N,)`` int class index per sample of the training fold.
        num_samples: draws per epoch (``__len__``); default ``N``.
        generator: seeded ``torch.Generator`` for reproducible draws.
        **kwargs: ``beta`` (effective_number, default 0.999), ``epochs`` (progressive, required).

    Returns:
        A sampler of dataset indices with ``set_epoch(epoch)``.

    Raises:
        ConfigError: unknown name or option, bad labels, missing ``epochs`` for progressive.
    """
    _check_name(name)
    arr = _check_labels(labels)
    allowed = _OPTIONS[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"sampler {name!r} got unknown option(s) {unknown}; allowed: {list(allowed) or 'none'}"
        )
    if num_samples is None:
        num_samples = len(arr)
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, (int, np.integer))
        or num_samples < 1
    ):
        raise ConfigError(f"num_samples must be an int >= 1, got {num_samples!r}")
    num_samples = int(num_samples)
    if name == "none":
        return ShuffleSampler(
            range(len(arr)), replacement=False, num_samples=num_samples, generator=generator
        )
    if name == "progressive" and "epochs" not in kwargs:
        raise ConfigError("sampler 'progressive' needs epochs=<total training epochs>")
    return ClassRebalancingSampler(
        name, arr, num_samples=num_samples, generator=generator, **kwargs  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------------------------------
# one epoch stream shared by the ranks of a data-parallel run


def _check_rank(rank: int, world_size: int) -> None:
    for key, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{key} must be an int, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def _share_size(n: int, rank: int, world_size: int) -> int:
    """Positions ``rank, rank + W, ...`` of a stream of ``n``: ``ceil((n - rank) / W)``; shares of
    different ranks differ by at most one and sum to ``n``."""
    return len(range(rank, n, world_size))


def _even_splits(n: int, parts: int) -> list[int]:
    """Sizes of ``parts`` consecutive pieces of ``n`` items, as equal as possible (the first ``n % parts``
    one larger); they sum to ``n`` and each is ``>= 1`` when ``n >= parts``."""
    base, extra = divmod(n, parts)
    return [base + (i < extra) for i in range(parts)]


class DistributedShard(Sampler):
    """This rank's disjoint share of the epoch stream of ``sampler``: positions ``rank::world_size``.

    Every rank must draw the identical stream: build the same sampler on every rank and seed its
    generator identically before each epoch (the engine reseeds it from ``(seed, stream, epoch)``). Then
    the shares are disjoint positions of one stream and their union is exactly the single-process
    stream (as a multiset; with replacement an index may appear several times, as it would in one
    process). Nothing is padded or dropped, so shares differ by at most one item.

    With a DataLoader's own ``batch_size``, uneven shares can give ranks different batch counts: train
    inside DDP's ``Join`` context (``with torch.distributed.algorithms.Join([ddp_model]):``) or the last
    collective hangs. :class:`DistributedBatchSampler` avoids the problem (same batch count everywhere,
    which also keeps optimizer and scheduler steps equal and works with SyncBatchNorm, which ``Join``
    does not support).

    Args:
        sampler: any sampler (e.g. from :func:`build_sampler`, or an ``EpochIndexSampler`` around one);
            its items are passed through unchanged.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes.
    """

    def __init__(self, sampler: Sampler[Any], *, rank: int, world_size: int) -> None:
        _check_rank(rank, world_size)
        self.sampler = sampler
        self.rank = int(rank)
        self.world_size = int(world_size)

    def set_epoch(self, epoch: int) -> None:
        """Passed to the wrapped sampler (when it has ``set_epoch``)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        stream = list(self.sampler)  # the whole epoch, drawn exactly as in one process
        return iter(stream[self.rank :: self.world_size])

    def __len__(self) -> int:
        return _share_size(len(self.sampler), self.rank, self.world_size)  # type: ignore[arg-type]


class DistributedBatchSampler(Sampler):
    """Batches of this rank's :class:`DistributedShard`, the same number of batches on every rank.

    The epoch stream of ``N`` items is shared as in :class:`DistributedShard` (sizes ``floor(N/W)`` or
    ``ceil(N/W)``); each rank cuts its share into ``ceil(ceil(N/W) / batch_size)`` consecutive batches
    as equal in size as possible (none larger than ``batch_size``, none empty). Equal batch counts mean
    equal optimizer and scheduler steps on every rank, no ``Join`` and no hang, SyncBatchNorm allowed;
    every item of the stream is trained on exactly once per epoch. ``batch_size`` is per rank (the
    global batch is up to ``world_size * batch_size``).

    Pass it as a DataLoader's ``batch_sampler`` (not with ``batch_size``/``sampler``/``drop_last``).

    Args:
        sampler: any sampler with ``__len__`` (items passed through, e.g. ``(epoch, index)`` pairs).
        batch_size: the largest per-rank batch (``>= 1``).
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes.

    Raises:
        ValueError: the smallest share cannot fill the common batch count (``N < world_size``, or
            ``batch_size == 1`` with uneven shares).
    """

    def __init__(self, sampler: Sampler[Any], *, batch_size: int, rank: int, world_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.shard = DistributedShard(sampler, rank=rank, world_size=world_size)
        self.batch_size = int(batch_size)
        n = len(sampler)  # type: ignore[arg-type]
        largest, smallest = math.ceil(n / world_size), n // world_size
        self.num_batches = math.ceil(largest / self.batch_size)
        if smallest < self.num_batches:
            raise ValueError(
                f"cannot give {world_size} ranks the same number of non-empty batches: an epoch of {n} items "
                f"shares as {smallest}..{largest} per rank, {self.num_batches} batch(es) of at most "
                f"{self.batch_size} each; use fewer processes or a larger batch size"
            )

    def set_epoch(self, epoch: int) -> None:
        """Passed to the wrapped sampler."""
        self.shard.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[Any]]:
        share = list(self.shard)
        start = 0
        for size in _even_splits(len(share), self.num_batches):
            yield share[start : start + size]
            start += size

    def __len__(self) -> int:
        return self.num_batches
