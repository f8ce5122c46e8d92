"""The options shared by commands that run folds in other processes (``train``, ``study``), and the
dispatch to :mod:`microexp.launch`.

``--folds 0,3-5`` runs a shard in this process; ``--launcher local|submitit`` runs every pending fold
(or study cell fold) as its own ``microexp train ... --folds F`` process, here or on Slurm.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

SLURM_FLAGS = {"slurm_partition": "partition", "slurm_account": "account", "slurm_qos": "qos",
               "slurm_time": "time_min", "slurm_gpus": "gpus_per_task", "slurm_cpus": "cpus_per_task",
               "slurm_mem": "mem_gb"}


def add_shard_arguments(parser: argparse.ArgumentParser, *, cpu_workers: bool = True,
                        folds_help: str | None = None) -> None:
    """``--folds`` and the launcher options (``cpu_workers`` False: the command has its own ``--workers``)."""
    group = parser.add_argument_group("many processes, GPUs and machines (README: Running on many GPUs and machines)")
    group.add_argument("--folds", default=None, metavar="F,A-B",
                       help=folds_help or "run only these folds (e.g. 0,3-5) into the shared --out; other processes or "
                       "machines may run the others at the same time; the pooled metrics.json is written by whichever "
                       "finishes the last fold (microexp evaluate RUN merges what is complete)")
    group.add_argument("--launcher", choices=("local", "submitit"), default=None,
                       help="run each pending fold as its own process: local (this machine: --gpus, --per-gpu, "
                       "--workers) or submitit (one Slurm job-array task per fold: --slurm-*)")
    group.add_argument("--gpus", default=None, metavar="0,1,..",
                       help="local: the GPUs to use, one worker per fold pinned with CUDA_VISIBLE_DEVICES")
    group.add_argument("--per-gpu", type=int, default=1, metavar="K",
                       help="local: folds run at once per GPU (default 1)")
    if cpu_workers:
        group.add_argument("--workers", dest="launch_workers", type=int, default=None, metavar="N",
                           help="local without --gpus: CPU worker processes (default 1), each with its share of "
                           "the cores")
    group.add_argument("--slurm-partition", default=None, help="submitit: Slurm partition (slurm.partition)")
    group.add_argument("--slurm-account", default=None, help="submitit: Slurm account (slurm.account)")
    group.add_argument("--slurm-qos", default=None, help="submitit: Slurm QOS (slurm.qos)")
    group.add_argument("--slurm-time", type=int, default=None, metavar="MIN",
                       help="submitit: minutes per task (slurm.time_min, default 120)")
    group.add_argument("--slurm-gpus", type=int, default=None, metavar="N",
                       help="submitit: GPUs per task (slurm.gpus_per_task)")
    group.add_argument("--slurm-cpus", type=int, default=None, metavar="N",
                       help="submitit: CPUs per task (slurm.cpus_per_task)")
    group.add_argument("--slurm-mem", type=int, default=None, metavar="GB",
                       help="submitit: memory per task (slurm.mem_gb)")
    group.add_argument("--slurm-cluster", choices=("auto", "slurm", "local", "debug"), default="auto",
                       help="submitit: auto (Slurm when sbatch is found, else this machine), or force one; local "
                       "runs the tasks as processes here (what the tests use)")
    group.add_argument("--no-wait", action="store_true",
                       help="submitit: return once the tasks are submitted; run microexp evaluate RUN when they "
                       "are done")


def slurm_overrides(args: argparse.Namespace) -> list[str]:
    """``--slurm-*`` flags as ``slurm.*`` overrides (the recipe's slurm section holds the same keys)."""
    return [f"slurm.{key}={getattr(args, flag)}" for flag, key in SLURM_FLAGS.items()
            if getattr(args, flag, None) is not None]


def check_shard_arguments(args: argparse.Namespace) -> None:
    """Launcher options without ``--launcher`` (or of the other launcher) are refused, not ignored."""
    from microexp.errors import ConfigError

    workers = getattr(args, "launch_workers", None)
    local = {"--gpus": args.gpus is not None, "--per-gpu": args.per_gpu != 1, "--workers": workers is not None}
    slurm = {"--slurm-cluster": args.slurm_cluster != "auto", "--no-wait": args.no_wait,
             **{"--" + flag.replace("_", "-"): getattr(args, flag) is not None for flag in SLURM_FLAGS}}
    for launcher, flags in (("local", local), ("submitit", slurm)):
        given = [flag for flag, on in flags.items() if on]
        if given and args.launcher != launcher:
            raise ConfigError(f"{', '.join(given)}: only with --launcher {launcher}")
    if args.launcher == "local" and args.per_gpu != 1 and not args.gpus:
        raise ConfigError("--per-gpu: only with --gpus (without GPUs, --workers sets the CPU processes)")
    if args.gpus is not None and workers is not None:
        raise ConfigError("--gpus and --workers exclude each other (with --gpus, --per-gpu sets the workers per GPU)")


def launch(units: list[Any], args: argparse.Namespace, *, slurm: Any, folder: Path, name: str) -> list[Any]:
    """Run ``units`` with the chosen launcher; raise a one-line LaunchError naming the failed ones."""
    from microexp.launch import LaunchError, failures

    if not units:
        return []
    if args.launcher == "local":
        from microexp.launch.local import run_local

        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
        results = run_local(units, gpus=gpus, per_gpu=args.per_gpu, workers=getattr(args, "launch_workers", None),
                            progress=False if getattr(args, "no_progress", False) else None)
    else:
        from microexp.launch.slurm import run_submitit

        results = run_submitit(units, folder=folder, slurm=slurm,
                               cluster=None if args.slurm_cluster == "auto" else args.slurm_cluster, name=name,
                               wait=not args.no_wait, progress=False if getattr(args, "no_progress", False) else None)
    problem = failures([r for r in results if r.returncode is not None])
    if problem:
        raise LaunchError(problem + "; fix the cause and rerun the same command: finished folds are kept")
    return results


def under_torchrun() -> bool:
    """True in a process torchrun started with more than one rank (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or "1") > 1


@contextlib.contextmanager
def distributed_session(device: str) -> Iterator[Any]:
    """The process group of ``torchrun --nproc-per-node N -m microexp ...`` (a one-process context without
    torchrun). Ranks other than 0 log only errors (every line would appear N times) and print nothing."""
    from microexp.engine.distributed import init_distributed, shutdown

    ctx = init_distributed(device)
    if not ctx.is_main:
        logging.getLogger("microexp").setLevel(logging.ERROR)
    try:
        yield ctx
    finally:
        shutdown()
