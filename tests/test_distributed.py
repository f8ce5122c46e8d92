"""Data parallelism with real torch.distributed: gloo, 2 CPU processes started with torch.multiprocessing.

Each spawned run sets torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and goes
through ``init_distributed``; its ranks save what they saw, and the test compares that with one process.
A run that does not finish within its timeout (a hung collective) is killed and fails the test.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Subset

import microexp.engine.experiment as experiment
from microexp.config import load_config
from microexp.data.dataset import EpochIndexSampler
from microexp.data.samplers import SAMPLERS, DistributedShard, build_sampler
from microexp.engine import distributed as dd
from microexp.engine.run_dir import RunLockedError, hold_lock
from microexp.engine.trainer import EpochStats, Predictions, evaluate
from microexp.errors import ConfigError

WORLD = 2
#: an odd training fold, so the two shares differ by one
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(4), [9, 5, 3, 2]))
EPOCHS = 2
BATCH = 4
NUM_CLASSES = 3


def _epoch_seed(epoch: int) -> int:
    """The engine's per-epoch seed from (seed, stream, epoch)."""
    return int(np.random.SeedSequence([7, 3, epoch]).generate_state(1)[0])


def _sampler(name: str) -> tuple[EpochIndexSampler, torch.Generator]:
    generator = torch.Generator()
    kwargs = {"epochs": EPOCHS} if name == "progressive" else {}
    return EpochIndexSampler(build_sampler(name, LABELS, generator=generator, **kwargs)), generator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, target: Callable[[dd.DistributedContext, Path], None], port: int, out: str) -> None:
    """A spawned rank: torchrun's environment, ``init_distributed``, the scenario, ``shutdown``."""
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    ctx = dd.init_distributed("cpu", timeout_seconds=30)
    try:
        assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device.type) == (rank, WORLD, "gloo", "cpu")
        assert dist.is_initialized() and dist.get_rank() == rank
        target(ctx, Path(out))
    finally:
        dd.shutdown()


def _spawn(target: Callable[[dd.DistributedContext, Path], None], out: Path, *, timeout: float = 120.0) -> None:
    """Run ``target`` on 2 gloo ranks (it saves what it saw under ``out``)."""
    context = mp.start_processes(_entry, args=(target, _free_port(), str(out)), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=0.5):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"the {WORLD}-process run did not finish within {timeout} s (a hung collective?)")


def _save(seen: dict[str, Any], out: Path, scenario: str, ctx: dd.DistributedContext) -> None:
    torch.save(seen, out / f"{scenario}_rank{ctx.rank}.pt")


def _scenarios(ctx: dd.DistributedContext, out: Path) -> None:
    """All scenarios in one 2-process run (starting processes costs more than the scenarios)."""
    for scenario in (_draw_streams, _evaluate_sharded, _train_uneven, _rank_zero_steps):
        scenario(ctx, out)


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[dict[str, Any]]]:
    """What each rank saw, per scenario name."""
    out = tmp_path_factory.mktemp("gloo")
    _spawn(_scenarios, out)
    return lambda scenario: [torch.load(out / f"{scenario}_rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ----------------------------------------------------------------------------------------------------
# scenarios, run on every rank


def _draw_streams(ctx: dd.DistributedContext, out: Path) -> None:
    """Every sampler over EPOCHS epochs, as the engine would run it: shares and batches of this rank."""
    seen: dict[str, Any] = {}
    for name in SAMPLERS:
        sampler, generator = _sampler(name)
        shard = DistributedShard(sampler, rank=ctx.rank, world_size=ctx.world_size)
        batches = dd.train_batches(sampler, ctx, batch_size=BATCH)["batch_sampler"]
        for epoch in range(EPOCHS):
            generator.manual_seed(_epoch_seed(epoch))
            batches.set_epoch(epoch)
            seen[name, epoch, "batches"] = list(batches)
            generator.manual_seed(_epoch_seed(epoch))
            shard.set_epoch(epoch)
            seen[name, epoch, "share"] = list(shard)
        seen[name, "len"] = (len(shard), len(batches))
    _save(seen, out, "streams", ctx)


class _Clips(torch.utils.data.Dataset):
    """``n`` tiny clips as the Dataset's batch dicts (``video`` ``(C, T, H, W)``)."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(n)
        self.videos = torch.randn(n, 2, 2, 3, 3, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"video": self.videos[i], "label": self.labels[i], "clip": f"clip_{i:02d}", "subject": 100 + i % 4}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, NUM_CLASSES))


def _evaluate_sharded(ctx: dd.DistributedContext, out: Path) -> None:
    """evaluate() on this rank's block of each test set, then gather_predictions; plus the other collectives."""
    seen: dict[str, Any] = {}
    model = _model()
    for n in (7, 8, 1):  # uneven blocks (4 + 3), even ones, and a rank with nothing to evaluate
        dataset = _Clips(n)
        indices = dd.shard_indices(n, ctx)
        loader = DataLoader(Subset(dataset, indices), batch_size=2)
        mine = evaluate(model, loader, device=ctx.device, loss_fn=nn.CrossEntropyLoss())
        seen[n, "indices"] = indices
        seen[n] = dd.gather_predictions(mine, ctx, indices=indices, total=n)
    # a rank claiming another's clip is caught, not silently doubled
    try:
        dd.gather_predictions(Predictions(clips=["x"], subjects=[0], labels=np.zeros(1, np.int64),
                                          probabilities=np.ones((1, 1), np.float32)), ctx, indices=[0], total=2)
    except RuntimeError as exc:
        seen["overlap_error"] = str(exc)
    stats = EpochStats(loss=1.0 + ctx.rank, accuracy=0.5 * ctx.rank, samples=3 - ctx.rank, seconds=1.0 + ctx.rank,
                       data_seconds=0.1, lr=0.01)
    seen["stats"] = dd.gather_epoch_stats(stats, ctx)
    seen["broadcast"] = dd.broadcast_object({"rank": ctx.rank}, ctx)
    seen["main_only"] = dd.main_only(lambda: ctx.rank)()
    dd.barrier()
    _save(seen, out, "evaluation", ctx)


def _toy_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.randint(0, 2, (n,), generator=g)


def _toy_model(*, batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(1)
    norm = nn.BatchNorm1d(8) if batchnorm else nn.Identity()  # BatchNorm1d cannot train on a batch of one
    return nn.Sequential(nn.Linear(5, 8), norm, nn.ReLU(), nn.Linear(8, 2))


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def _train_uneven(ctx: dd.DistributedContext, out: Path) -> None:
    """9 samples on 2 ranks: 5 + 4 items. With a DataLoader's batch_size 2 that is 3 vs 2 batches (2, 2, 1
    against 2, 2: Join); DistributedBatchSampler with batch_size 3 gives 2 batches on both ranks (3, 2 and
    2, 2: no Join needed, BatchNorm trains)."""
    x, y = _toy_data(9)
    seen: dict[str, Any] = {}
    # (a) plain shares and the loader's own batching, under DDP's Join
    model = dd.wrap_model(_toy_model(batchnorm=False), ctx, device=ctx.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    shard = DistributedShard(torch.utils.data.SequentialSampler(range(9)), rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(list(range(9)), sampler=shard, batch_size=2)
    seen["join_batches"] = len(loader)
    with torch.distributed.algorithms.Join([model]):
        for index in loader:
            _train_step(model, optimizer, x[index], y[index])
    seen["join_params"] = [p.detach().clone() for p in dd.unwrap_model(model).parameters()]
    seen["join_initial"] = [p.detach().clone() for p in _toy_model(batchnorm=False).parameters()]
    # (b) the same number of batches on every rank: no Join, equal optimizer steps and states
    model = dd.wrap_model(_toy_model(), ctx, device=ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    sampler = torch.utils.data.RandomSampler(range(9), generator=torch.Generator().manual_seed(5))
    loader = DataLoader(list(range(9)), **dd.train_batches(sampler, ctx, batch_size=3))
    seen["even_batches"] = len(loader)
    seen["even_items"] = []
    for index in loader:
        seen["even_items"] += index.tolist()
        _train_step(model, optimizer, x[index], y[index])
    seen["even_params"] = [p.detach().clone() for p in dd.unwrap_model(model).parameters()]
    seen["even_adam"] = [optimizer.state[p]["exp_avg_sq"].clone() for p in model.parameters()]
    seen["initial"] = [p.detach().clone() for p in _toy_model().parameters()]
    _save(seen, out, "training", ctx)


class _Unpicklable(Exception):
    def __init__(self, message: str, *, code: int) -> None:  # keyword-only: unpickling fails
        super().__init__(message)
        self.code = code


class _RefusingLock:
    def __enter__(self) -> None:
        raise RunLockedError("run directory x is in use by pid 1")

    def __exit__(self, *exc: object) -> None:
        return None


def _rank_zero_steps(ctx: dd.DistributedContext, out: Path) -> None:
    """run_on_main / entered_on_main: rank 0 acts, every rank gets the result or the same error."""
    seen: dict[str, Any] = {"calls": []}
    seen["result"] = dd.run_on_main(lambda: seen["calls"].append(ctx.rank) or {"value": 7}, ctx)
    for key, error in (("config_error", ConfigError("train.lr: bad")), ("unpicklable", _Unpicklable("x", code=3))):
        def fail(error: Exception = error) -> None:
            raise error
        try:
            dd.run_on_main(fail, ctx)
        except Exception as exc:  # noqa: BLE001 - recorded for the test
            seen[key] = (type(exc).__name__, str(exc))
    with dd.entered_on_main(hold_lock(out / "run.lock", what="run directory"), ctx):
        if ctx.rank == 1:  # rank 0 holds the exclusive lock now: a second holder is refused
            try:
                with hold_lock(out / "run.lock", what="run directory"):
                    seen["second_holder"] = "entered"
            except RunLockedError:
                seen["second_holder"] = "refused"
        dd.barrier()
    try:
        with dd.entered_on_main(_RefusingLock(), ctx):
            seen["refused_block"] = "ran"
    except RunLockedError as exc:
        seen["refused_block"] = str(exc)
    seen["mean"] = dd.gather_mean(float(ctx.rank + 1), ctx.rank + 1, ctx)
    seen["empty_mean"] = dd.gather_mean(float("nan"), 0, ctx)
    _save(seen, out, "rank_zero", ctx)


# ----------------------------------------------------------------------------------------------------
# the tests


def test_every_sampler_shares_the_single_process_stream(gloo_runs: Callable[[str], list[dict[str, Any]]]) -> None:
    ranks = gloo_runs("streams")
    n = len(LABELS)
    for name in SAMPLERS:
        single, generator = _sampler(name)
        streams = []
        for epoch in range(EPOCHS):
            generator.manual_seed(_epoch_seed(epoch))
            single.set_epoch(epoch)
            stream = list(single)  # (epoch, index) pairs, exactly as one process trains on them
            streams.append(stream)
            shares = [r[name, epoch, "share"] for r in ranks]
            # disjoint positions of one stream, and as a multiset exactly the single-process epoch
            assert shares == [stream[0::2], stream[1::2]], name
            assert sorted(shares[0] + shares[1]) == sorted(stream) and len(stream) == n
            batches = [r[name, epoch, "batches"] for r in ranks]
            assert len(batches[0]) == len(batches[1]), (name, batches)
            assert [[i for b in rank for i in b] for rank in batches] == shares
            assert all(1 <= len(b) <= BATCH for rank in batches for b in rank)
        assert streams[0] != streams[1], f"{name}: both epochs drew the same stream"
        assert [r[name, "len"] for r in ranks] == [(10, 3), (9, 3)]
    # the rebalancing really rebalanced: class_balanced draws the rare class 3 more often than 'none'
    counts = {name: sum(LABELS[i] == 3 for r in ranks for e in range(EPOCHS) for _, i in r[name, e, "share"])
              for name in ("none", "class_balanced")}
    assert counts["none"] == 2 * EPOCHS and counts["class_balanced"] > counts["none"]


def test_sharded_evaluation_gathers_every_clip_once_in_order(gloo_runs: Callable[[str], list[dict[str, Any]]]) -> None:
    ranks = gloo_runs("evaluation")
    model = _model()
    for n, blocks in ((7, [[0, 1, 2, 3], [4, 5, 6]]), (8, [[0, 1, 2, 3], [4, 5, 6, 7]]), (1, [[0], []])):
        assert [r[n, "indices"] for r in ranks] == blocks
        whole = evaluate(model, DataLoader(_Clips(n), batch_size=3), device=torch.device("cpu"),
                         loss_fn=nn.CrossEntropyLoss())
        for r in ranks:
            got: Predictions = r[n]
            assert got.clips == whole.clips == [f"clip_{i:02d}" for i in range(n)]
            assert got.subjects == whole.subjects
            np.testing.assert_array_equal(got.labels, whole.labels)
            np.testing.assert_allclose(got.probabilities, whole.probabilities, rtol=1e-6, atol=1e-7)
            assert got.loss == pytest.approx(whole.loss, rel=1e-6)
    assert all("repeated [0]" in r["overlap_error"] and "missing [1]" in r["overlap_error"] for r in ranks)
    for r in ranks:
        stats: EpochStats = r["stats"]  # rank 0: 3 samples, loss 1, acc 0; rank 1: 2 samples, loss 2, acc 0.5
        assert (stats.samples, stats.seconds, stats.lr) == (5, 2.0, 0.01)
        assert stats.loss == pytest.approx((3 * 1 + 2 * 2) / 5) and stats.accuracy == pytest.approx(1 / 5)
        assert r["broadcast"] == {"rank": 0}
    assert [r["main_only"] for r in ranks] == [0, None]


def test_ddp_training_with_uneven_shares_finishes_with_identical_weights(
        gloo_runs: Callable[[str], list[dict[str, Any]]]) -> None:
    ranks = gloo_runs("training")
    assert [r["join_batches"] for r in ranks] == [3, 2]  # uneven: only Join keeps this from hanging
    assert [r["even_batches"] for r in ranks] == [2, 2]
    assert sorted(ranks[0]["even_items"] + ranks[1]["even_items"]) == list(range(9))
    for key in ("join_params", "even_params", "even_adam"):
        for a, b in zip(ranks[0][key], ranks[1][key]):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
    for trained, initial in (("join_params", "join_initial"), ("even_params", "initial")):
        assert all(not torch.equal(a, b) for a, b in zip(ranks[0][trained], ranks[0][initial])), trained


def test_rank_zero_acts_and_every_rank_shares_its_result_or_error(
        gloo_runs: Callable[[str], list[dict[str, Any]]]) -> None:
    ranks = gloo_runs("rank_zero")
    assert [r["result"] for r in ranks] == [{"value": 7}] * 2
    assert [r["calls"] for r in ranks] == [[0], []]  # called on rank 0 only
    assert [r["config_error"] for r in ranks] == [("ConfigError", "train.lr: bad")] * 2
    assert [r["unpicklable"] for r in ranks] == [("RuntimeError", "rank 0: _Unpicklable: x")] * 2
    assert ranks[1]["second_holder"] == "refused"  # the lock is really held, by rank 0 alone
    assert [r["refused_block"] for r in ranks] == ["run directory x is in use by pid 1"] * 2
    assert [r["mean"] for r in ranks] == [pytest.approx(5 / 3)] * 2
    assert all(np.isnan(r["empty_mean"]) for r in ranks)


# ----------------------------------------------------------------------------------------------------
# a whole run under DDP, once the engine takes a context (run_experiment(..., ctx=))

_ENGINE_WIRED = "ctx" in inspect.signature(experiment.run_experiment).parameters


def _run_experiment(ctx: dd.DistributedContext, out: Path) -> None:
    overrides = json.loads((out / "overrides.json").read_text())
    metrics = experiment.run_experiment(load_config(None, overrides), out / "ddp", progress=False, ctx=ctx)
    _save({"metrics": metrics}, out, "experiment", ctx)


@pytest.mark.slow
@pytest.mark.skipif(not _ENGINE_WIRED, reason="run_experiment takes no ctx yet (the engine's DDP wiring)")
def test_a_ddp_run_tests_every_clip_once_like_one_process(tmp_path: Path) -> None:
    from microexp.synth import generate_dataset

    generate_dataset(tmp_path / "data", clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    values = {"data.annotations": str(tmp_path / "data" / "annotations.csv"), "cv.folds": 2, "train.epochs": 2,
              "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny",
              "data.num_workers": 0, "train.batch_size": 4, "seed": 5, "cv.val_fraction": 0.34,
              "train.model_selection": "val", "train.sampler": "class_balanced", "device": "cpu"}
    overrides = [f"{k}={v}" for k, v in values.items()]
    (tmp_path / "overrides.json").write_text(json.dumps(overrides))
    _spawn(_run_experiment, tmp_path, timeout=300)
    ranks = [torch.load(tmp_path / f"experiment_rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert ranks[0]["metrics"] is not None and ranks[0]["metrics"] == ranks[1]["metrics"]  # gathered, the same
    single = tmp_path / "single"
    experiment.run_experiment(load_config(None, overrides), single, progress=False)
    for fold in ("fold_00", "fold_01"):
        ddp, one = (pd.read_csv(run / fold / "predictions.csv") for run in (tmp_path / "ddp", single))
        assert list(ddp["clip"]) == list(one["clip"]) and ddp["clip"].is_unique  # every test clip once, in order
        assert len(pd.read_csv(tmp_path / "ddp" / fold / "log.csv")) == 2  # one row per epoch: rank 0 alone wrote
        state = torch.load(tmp_path / "ddp" / fold / "model.pt", weights_only=False)["state_dict"]
        assert not any(key.startswith("module.") for key in state)  # the unwrapped model was saved
    pooled = pd.read_csv(tmp_path / "ddp" / "predictions.csv")
    assert sorted(pooled["clip"].astype(str)) == sorted(pd.read_csv(values["data.annotations"])["clip"].astype(str))


@pytest.mark.slow
@pytest.mark.skipif(not _ENGINE_WIRED, reason="run_experiment takes no ctx yet (the engine's DDP wiring)")
def test_a_ddp_run_with_the_au_graph_and_every_uncertain_label_method(tmp_path: Path) -> None:
    """Task outputs through DDP's forward, EAC's doubled batch, mixing (parameters unused in the loss) and
    re-labelling decided on rank 0: the run finishes, the ranks agree and the outputs have their AU parts."""
    from microexp.synth import generate_dataset

    generate_dataset(tmp_path / "data", clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    values = {"data.annotations": str(tmp_path / "data" / "annotations.csv"), "cv.folds": 2, "train.epochs": 2,
              "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny",
              "data.num_workers": 0, "train.batch_size": 4, "seed": 5, "device": "cpu", "data.aus": "true",
              "data.au_min_count": 2, "model.au_head": "graph", "noisy_labels.eac_weight": 1,
              "noisy_labels.confidence": "true", "noisy_labels.mix_fraction": 0.5, "noisy_labels.relabel": "true",
              "noisy_labels.relabel_warmup": 1, "noisy_labels.relabel_confidence": 0.01,
              "noisy_labels.relabel_distance_ratio": 1.0}
    overrides = [f"{k}={v}" for k, v in values.items()]
    (tmp_path / "overrides.json").write_text(json.dumps(overrides))
    _spawn(_run_experiment, tmp_path, timeout=300)
    ranks = [torch.load(tmp_path / f"experiment_rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert ranks[0]["metrics"] == ranks[1]["metrics"] and ranks[0]["metrics"]["aus"]["pooled"]["mean_f1"] is not None
    pooled = pd.read_csv(tmp_path / "ddp" / "predictions.csv")
    assert pooled["clip"].is_unique and any(c.startswith("au_prob_") for c in pooled.columns)
    folds = json.loads((tmp_path / "ddp" / "folds.json").read_text())
    for fold in folds:
        log = tmp_path / "ddp" / f"fold_{fold['fold']:02d}" / "relabelled.csv"
        if log.exists():  # rank 0's decisions, for training subjects only
            assert set(pd.read_csv(log)["subject"]) <= set(fold["train_subjects"])


# ----------------------------------------------------------------------------------------------------
# one process: no environment, no process group, every helper passes its input through


def test_single_process_context_needs_no_process_group(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in dd.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    ctx = dd.init_distributed("cpu")
    assert ctx == dd.DistributedContext(device=torch.device("cpu")) and ctx.is_main and not ctx.distributed
    assert not dist.is_initialized()
    model = _model()
    assert dd.wrap_model(model, ctx, device=ctx.device, sync_batchnorm=True) is model
    assert dd.unwrap_model(model) is model
    dd.barrier()
    assert dd.is_main() and dd.main_only(lambda: 5)() == 5 and dd.broadcast_object([1], ctx) == [1]
    assert dd.shard_indices(5, ctx) == [0, 1, 2, 3, 4]
    whole = evaluate(model, DataLoader(_Clips(5), batch_size=2), device=ctx.device)
    gathered = dd.gather_predictions(whole, ctx, indices=range(5), total=5)
    assert gathered.clips == whole.clips and np.array_equal(gathered.probabilities, whole.probabilities)
    sampler = build_sampler("none", LABELS)
    assert dd.train_batches(sampler, ctx, batch_size=6) == {"sampler": sampler, "batch_size": 6, "drop_last": True}
    assert dd.train_batches(sampler, ctx, batch_size=4)["drop_last"] is False  # 19 = 4 * 4 + 3
    assert dd.run_on_main(lambda: 3, ctx) == 3 and dd.gather_mean(2.5, 4, ctx) == 2.5
    with dd.entered_on_main(hold_lock(tmp_path / "lock", what="run"), ctx):
        with pytest.raises(RunLockedError):
            with hold_lock(tmp_path / "lock", what="run"):
                pass
    dd.shutdown()  # nothing to shut down: no error
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not dd.init_distributed("cpu").distributed


def test_environment_errors_name_the_variable() -> None:
    assert dd.context_from_env({}) == dd.DistributedContext()
    ctx = dd.context_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                               "MASTER_PORT": "1"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main, ctx.distributed) == (3, 4, 1, False, True)
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        dd.context_from_env({"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="RANK=2.*WORLD_SIZE=2"):
        dd.context_from_env({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    with pytest.raises(ConfigError, match="MASTER_ADDR, MASTER_PORT unset.*torchrun"):
        dd.context_from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="cuda:1.*LOCAL_RANK"):
        dd.init_distributed("cuda:1", env={"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})


def test_wrap_model_refuses_sync_batchnorm_on_cpu() -> None:
    ctx = dd.DistributedContext(rank=0, world_size=2, backend="gloo")
    with pytest.raises(ConfigError, match="train.sync_batchnorm needs CUDA"):
        dd.wrap_model(_toy_model(), ctx, device=torch.device("cpu"), sync_batchnorm=True)


def test_shard_indices_blocks_cover_range_once() -> None:
    for n in (0, 1, 5, 6, 17):
        for world in (1, 2, 3, 4):
            blocks = [dd.shard_indices(n, dd.DistributedContext(rank=r, world_size=world)) for r in range(world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    with pytest.raises(ValueError, match="n must be"):
        dd.shard_indices(-1, dd.DistributedContext())
