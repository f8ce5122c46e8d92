"""Data-parallel training of one fold under ``torchrun``: the process group, DDP, and what ranks share.

``torchrun --nproc-per-node N -m microexp train ...`` starts ``N`` processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`init_distributed` reads
them (NCCL on CUDA, one GPU per process at ``cuda:LOCAL_RANK``; gloo on CPU) and returns a
:class:`DistributedContext`; without those variables (or with ``WORLD_SIZE=1``) it returns a
single-process context and every helper here is a no-op that returns its input, so the engine needs no
branches.

The division of work:

* training: every rank draws the same epoch stream and trains on its share
  (:func:`train_batches`, built on :class:`~microexp.data.samplers.DistributedBatchSampler`); DDP
  averages the gradients, so all ranks hold the same weights;
* evaluation: each rank predicts a disjoint block of clips (:func:`shard_indices`) with the unwrapped
  model, and :func:`gather_predictions` returns the full predictions, in clip order, on every rank (so
  every rank takes the same model-selection decision);
* files: only rank 0 writes (``ctx.is_main`` or :func:`main_only`); the others wait at a :func:`barrier`
  where they would next read what rank 0 wrote.

Never imported by ``data``, ``models`` or ``config``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler, Subset

from microexp.data.samplers import DistributedBatchSampler
from microexp.engine.trainer import EpochStats, Predictions, select_device
from microexp.errors import ConfigError

__all__ = [
    "DistributedContext",
    "barrier",
    "broadcast_object",
    "context_from_env",
    "entered_on_main",
    "gather_mean",
    "gather_epoch_stats",
    "gather_predictions",
    "init_distributed",
    "is_main",
    "main_only",
    "run_on_main",
    "shard_dataset",
    "shard_indices",
    "shutdown",
    "train_batches",
    "unwrap_model",
    "wrap_model",
]

#: torchrun's variables; RANK and WORLD_SIZE decide whether a process group is started
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in a data-parallel run (a single process: rank 0 of 1, no backend)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  #: ``nccl``, ``gloo`` or None (no process group)
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and logs progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process (a process group is running)."""
        return self.world_size > 1


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {key}={raw!r}: expected an integer (as torchrun sets it)") from None


def context_from_env(env: Mapping[str, str] | None = None) -> DistributedContext:
    """Rank, world size and local rank from torchrun's variables (device and backend not yet chosen).

    Raises:
        ConfigError: a variable is not an integer, ranks are out of range, or ``WORLD_SIZE > 1`` without
            ``MASTER_ADDR``/``MASTER_PORT``.
    """
    env = os.environ if env is None else env
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(f"RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={world_size}: expected "
                          "0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0")
    if world_size > 1:
        missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if not env.get(key)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: start the processes with "
                              "torchrun (torchrun --nproc-per-node N -m microexp ...)")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def init_distributed(device_name: str = "auto", *, env: Mapping[str, str] | None = None,
                     timeout_seconds: float = 1800.0) -> DistributedContext:
    """Start the process group torchrun describes, or return a single-process context.

    Args:
        device_name: the recipe's ``device`` (``auto``, ``cpu``, ``cuda``): with several processes, CUDA
            means ``cuda:LOCAL_RANK`` and the NCCL backend, CPU the gloo backend.
        env: the variables to read (default ``os.environ``; ``init_process_group`` reads
            ``MASTER_ADDR``/``MASTER_PORT`` from ``os.environ``).
        timeout_seconds: how long a collective waits for the other ranks before raising.

    Returns:
        The context; with ``WORLD_SIZE`` absent or 1, rank 0 of 1 on ``select_device(device_name)`` and no
        process group.

    Raises:
        ConfigError: bad variables, a ``cuda:K`` device under torchrun (the local rank picks the GPU), or
            fewer visible GPUs than ``LOCAL_RANK + 1``.
    """
    ctx = context_from_env(env)
    if not ctx.distributed:
        return DistributedContext(device=select_device(device_name))
    if device_name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={device_name!r} under torchrun: use cuda (each process takes cuda:LOCAL_RANK), "
                          "auto or cpu")
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = select_device(device_name)
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={ctx.local_rank} but torch sees {torch.cuda.device_count()} GPU(s); "
                              "use --nproc-per-node <= the GPU count")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
        backend = "nccl"
    else:
        backend = "gloo"
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (ctx.rank, ctx.world_size):
            raise ConfigError(f"a process group is already running as rank {dist.get_rank()} of "
                              f"{dist.get_world_size()}, not {ctx.rank} of {ctx.world_size}")
        backend = str(dist.get_backend())
    else:
        dist.init_process_group(backend, init_method="env://", rank=ctx.rank, world_size=ctx.world_size,
                                timeout=datetime.timedelta(seconds=timeout_seconds))
    return DistributedContext(rank=ctx.rank, world_size=ctx.world_size, local_rank=ctx.local_rank,
                              backend=backend, device=device)


def shutdown() -> None:
    """Destroy the process group, if one is running (safe to call in a ``finally``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _group_running() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait until every rank is here (no-op without a process group)."""
    if _group_running():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def is_main() -> bool:
    """True on rank 0 and in a single process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def main_only(function: Callable[..., T]) -> Callable[..., T | None]:
    """Decorator: run ``function`` on rank 0 only; other ranks return None at once (no barrier)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        return function(*args, **kwargs) if is_main() else None

    return wrapper


def broadcast_object(obj: T, ctx: DistributedContext, *, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; the input itself in one process)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (to reach the other ranks), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any unpicklable exception is replaced, never lost
        return RuntimeError(f"rank 0: {type(exc).__name__}: {exc}")


def run_on_main(function: Callable[..., T], ctx: DistributedContext, *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` on rank 0; its result, or the exception it raised, on every rank.

    For the steps where rank 0 alone reads or writes the run directory (``config.yaml``, ``folds.json``,
    the pooled metrics): the other ranks wait, then receive the same result, or raise the same error
    instead of hanging at the next collective. The result must pickle. In one process: just the call.
    """
    if not ctx.distributed:
        return function(*args, **kwargs)
    outcome: tuple[bool, Any] = (True, None)
    if ctx.is_main:
        try:
            outcome = (True, function(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            outcome = (False, _portable(exc))
    ok, value = broadcast_object(outcome, ctx)
    if not ok:
        raise value
    return value


@contextlib.contextmanager
def entered_on_main(manager: contextlib.AbstractContextManager[Any], ctx: DistributedContext) -> Iterator[None]:
    """Enter ``manager`` (e.g. the run directory's lock) on rank 0 only, for the block.

    If entering fails on rank 0 (another run holds the lock), every rank raises that error. The other
    ranks never enter ``manager`` (an exclusive lock would refuse them); in one process it is simply
    entered.
    """
    with contextlib.ExitStack() as stack:
        if not ctx.distributed:
            stack.enter_context(manager)
        else:
            run_on_main(lambda: stack.enter_context(manager) and None, ctx)  # broadcast None, not its value
        yield


def wrap_model(model: nn.Module, ctx: DistributedContext, *, device: torch.device, sync_batchnorm: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around ``model`` on ``device`` (the model itself in one process).

    Every microexp classifier and the masked-video autoencoder use all their trainable parameters in
    each forward (checked for all CPU-friendly models, two-stream late/fixed/feature fusion included),
    so ``find_unused_parameters`` stays False; set it for a model that skips parameters.

    Wrap before building the optimizer, and load or save state dicts on :func:`unwrap_model` (the DDP
    module's keys carry a ``module.`` prefix). DDP broadcasts rank 0's parameters and buffers when it
    is built, so every rank starts from the same weights.

    Args:
        sync_batchnorm: convert BatchNorm layers to SyncBatchNorm (batch statistics over all ranks;
            CUDA only).

    Raises:
        ConfigError: ``sync_batchnorm`` on a CPU device (torch's SyncBatchNorm needs a GPU).
    """
    if not ctx.distributed:
        return model.to(device)
    if sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError(f"train.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm), not {device}; "
                              "set train.sync_batchnorm=false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP (or ``torch.compile``), whose ``state_dict`` has plain keys."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def train_batches(sampler: Sampler[Any], ctx: DistributedContext, *, batch_size: int) -> dict[str, Any]:
    """DataLoader keyword arguments that batch ``sampler`` for this rank.

    One process: ``sampler``, ``batch_size`` and the engine's ``drop_last`` rule (only a last batch of
    one is dropped, when there is more than one batch). Several: a
    :class:`~microexp.data.samplers.DistributedBatchSampler` (this rank's share of the same epoch
    stream, the same number of batches on every rank, nothing dropped).

    Returns:
        ``{"sampler", "batch_size", "drop_last"}`` or ``{"batch_sampler"}``; call ``set_epoch`` on the
        sampler passed in (the batch sampler forwards it too).
    """
    if not ctx.distributed:
        n = len(sampler)  # type: ignore[arg-type]
        return {"sampler": sampler, "batch_size": batch_size, "drop_last": n > batch_size and n % batch_size == 1}
    return {"batch_sampler": DistributedBatchSampler(sampler, batch_size=batch_size, rank=ctx.rank,
                                                     world_size=ctx.world_size)}


def shard_indices(n: int, ctx: DistributedContext) -> list[int]:
    """This rank's consecutive block of ``range(n)`` for evaluation (``np.array_split`` blocks: sizes
    differ by at most one; a rank may get none when ``n < world_size``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    base, extra = divmod(int(n), ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return list(range(start, start + base + (ctx.rank < extra)))


def shard_dataset(dataset: Dataset[Any], ctx: DistributedContext) -> tuple[Dataset[Any], list[int]]:
    """This rank's evaluation block of ``dataset`` (a ``Subset``; the dataset itself in one process) and
    its indices, for :func:`gather_predictions`."""
    indices = shard_indices(len(dataset), ctx)  # type: ignore[arg-type]
    return (Subset(dataset, indices) if ctx.distributed else dataset), indices


def gather_predictions(predictions: Predictions, ctx: DistributedContext, *, indices: Sequence[int],
                       total: int) -> Predictions:
    """Every rank's :class:`Predictions` joined in dataset order, on every rank.

    Args:
        predictions: this rank's predictions, one per entry of ``indices``, in that order (``evaluate`` on
            ``Subset(dataset, indices)``).
        indices: the dataset positions this rank evaluated (:func:`shard_indices`).
        total: the dataset's length.

    Returns:
        Predictions of all ``total`` clips in order ``0..total-1``; ``loss`` is the mean over all clips
        (each rank's mean weighted by its clip count; NaN when no rank has one).

    Raises:
        RuntimeError: the ranks' indices do not cover ``range(total)`` exactly once, or a rank's
            predictions do not match its indices in length.
    """
    if len(predictions.clips) != len(indices) or len(predictions.labels) != len(indices):
        raise RuntimeError(f"rank {ctx.rank}: {len(predictions.clips)} predictions for {len(indices)} indices")
    piece = {"indices": [int(i) for i in indices], "clips": list(predictions.clips),
             "subjects": list(predictions.subjects), "labels": np.asarray(predictions.labels),
             "probabilities": np.asarray(predictions.probabilities), "loss": float(predictions.loss),
             "au_probabilities": predictions.au_probabilities, "aus": list(predictions.aus)}
    if ctx.distributed:
        pieces: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(pieces, piece)
    else:
        pieces = [piece]
    order = np.asarray([i for p in pieces for i in p["indices"]], dtype=np.int64)
    if len(order) != total or not np.array_equal(np.sort(order), np.arange(total)):
        inside = order[(order >= 0) & (order < total)]
        counts = np.bincount(inside, minlength=total)
        missing, repeated = np.flatnonzero(counts == 0)[:5].tolist(), np.flatnonzero(counts > 1)[:5].tolist()
        outside = f", {len(order) - len(inside)} out of range" if len(inside) < len(order) else ""
        raise RuntimeError(f"gathered predictions cover {len(order)} positions of {total}: missing {missing}, "
                           f"repeated {repeated}{outside} (each rank must evaluate its own shard_indices block)")
    full = [p for p in pieces if p["indices"]]
    rank_of = np.argsort(order, kind="stable")
    clips = [c for p in pieces for c in p["clips"]]
    subjects = [s for p in pieces for s in p["subjects"]]
    num_classes = max((p["probabilities"].shape[1] for p in pieces if p["probabilities"].ndim == 2), default=0)
    labels = np.concatenate([p["labels"] for p in full]) if full else np.zeros(0, dtype=np.int64)
    probabilities = (np.concatenate([p["probabilities"] for p in full]) if full
                     else np.zeros((0, num_classes), dtype=np.float32))
    weighted = [(p["loss"], len(p["indices"])) for p in full if np.isfinite(p["loss"])]
    count = sum(n for _, n in weighted)
    loss = sum(value * n for value, n in weighted) / count if count else float("nan")
    au_probabilities, aus = None, []
    if predictions.au_codes:  # the same AU head on every rank
        width = len(predictions.au_codes)
        au_probabilities = (np.concatenate([p["au_probabilities"] for p in full])[rank_of] if full
                            else np.zeros((0, width), dtype=np.float32))
        aus = [a for p in pieces for a in p["aus"]]
        aus = [aus[i] for i in rank_of]
    return Predictions(clips=[clips[i] for i in rank_of], subjects=[subjects[i] for i in rank_of],
                       labels=labels[rank_of], probabilities=probabilities[rank_of], loss=loss,
                       au_probabilities=au_probabilities, au_codes=predictions.au_codes, aus=aus)


def gather_epoch_stats(stats: EpochStats, ctx: DistributedContext) -> EpochStats:
    """One epoch's training statistics over all ranks, the same on every rank.

    ``loss`` and ``accuracy`` are means over every sample trained on (each rank's weighted by its
    samples), ``samples`` the total; ``seconds`` and ``data_seconds`` the slowest rank's; ``lr`` rank 0's
    (all ranks step the same schedule).
    """
    if not ctx.distributed:
        return stats
    pieces: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(pieces, stats)
    samples = sum(p.samples for p in pieces)
    return EpochStats(loss=sum(p.loss * p.samples for p in pieces) / max(samples, 1),
                      accuracy=sum(p.accuracy * p.samples for p in pieces) / max(samples, 1),
                      samples=samples, seconds=max(p.seconds for p in pieces),
                      data_seconds=max(p.data_seconds for p in pieces), lr=pieces[0].lr)


def gather_mean(value: float, weight: int, ctx: DistributedContext) -> float:
    """The mean over ranks of ``value`` weighted by ``weight`` (e.g. a per-clip mean loss and its clip
    count), the same on every rank; ``value`` itself in one process; NaN when all weights are 0."""
    if not ctx.distributed:
        return float(value)
    pieces: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(pieces, (float(value), int(weight)))
    total = sum(w for _, w in pieces)
    return sum(v * w for v, w in pieces if w) / total if total else float("nan")
