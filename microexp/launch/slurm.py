"""One Slurm job-array task per unit, through submitit (Meta's launcher; ``pip install 'microexp[slurm]'``).

Each task runs its unit's ``python -m microexp ARGV``. The task object is checkpointable: when Slurm
preempts a task or its time runs out, submitit requeues it, and the rerun command resumes its fold from
the fold's last completed epoch (``last.pt``). ``cluster="local"`` runs the tasks as processes on this
machine (submitit's local executor: what the tests use, no Slurm needed).
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from microexp.errors import ConfigError
from microexp.launch import Unit, UnitResult, command, last_line

logger = logging.getLogger(__name__)

__all__ = ["UnitTask", "run_submitit", "slurm_parameters"]


class UnitTask:
    """A unit as a submitit callable; ``checkpoint`` makes it requeue (same command, which resumes)."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit

    def __call__(self) -> int:
        self.unit.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.unit.log, "ab") as log:
            returncode = subprocess.call(command(self.unit), stdout=log, stderr=subprocess.STDOUT)
        if returncode != 0:
            raise RuntimeError(f"{self.unit.name}: exit {returncode}: {last_line(self.unit.log)} (log {self.unit.log})")
        return returncode

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(UnitTask(self.unit))


def slurm_parameters(slurm: Any, *, name: str) -> dict[str, Any]:
    """submitit's executor parameters from a recipe's ``slurm`` section (:class:`microexp.config.SlurmConfig`).

    The generic keys apply to every cluster kind; the ``slurm_`` ones only on Slurm (submitit's
    AutoExecutor ignores them for the local executor).
    """
    parameters: dict[str, Any] = {"name": name, "timeout_min": slurm.time_min, "gpus_per_node": slurm.gpus_per_task,
                                  "cpus_per_task": slurm.cpus_per_task, "tasks_per_node": 1, "nodes": 1,
                                  "slurm_array_parallelism": slurm.array_parallelism}
    if slurm.mem_gb is not None:
        parameters["mem_gb"] = slurm.mem_gb
    for key in ("partition", "account", "qos"):
        value = getattr(slurm, key)
        if value is not None:
            parameters[f"slurm_{key}"] = value
    return parameters


def run_submitit(units: Sequence[Unit], *, folder: Path, slurm: Any, cluster: str | None = None, name: str = "microexp",
                 wait: bool = True, progress: bool | None = None, poll_seconds: float = 5.0) -> list[UnitResult]:
    """Submit every unit as one task of a job array; wait for all (unless ``wait`` is False).

    Args:
        folder: submitit's folder (job scripts, pickles, each task's stdout and stderr).
        slurm: the recipe's ``slurm`` section (partition, time, GPUs, CPUs, memory, account, qos).
        cluster: None (Slurm when ``sbatch`` is found, else local), ``slurm``, ``local`` or ``debug``.
        wait: False returns right after submitting (results have ``returncode`` None; the job ids are
            logged): ``microexp evaluate RUN`` merges the folds once the tasks are done.

    Raises:
        ConfigError: submitit is not installed.
    """
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError("--launcher submitit needs the submitit package: pip install 'microexp[slurm]' "
                          "(or pip install submitit)") from exc
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    executor.update_parameters(**slurm_parameters(slurm, name=name))
    with executor.batch():
        jobs = [executor.submit(UnitTask(unit)) for unit in units]
    logger.info("submitted %d task(s) to %s (job %s); submitit's files: %s", len(jobs), executor.cluster,
                jobs[0].job_id.split("_")[0] if jobs else "-", folder)
    start = time.perf_counter()
    if not wait:
        return [UnitResult(unit, None, 0.0, f"submitted as job {job.job_id}") for unit, job in zip(units, jobs)]
    bar = tqdm(total=len(jobs), desc="tasks", unit="task", disable=None if progress is None else not progress)
    finished: dict[int, UnitResult] = {}
    try:
        while len(finished) < len(jobs):
            for index, (unit, job) in enumerate(zip(units, jobs)):
                if index in finished or not job.done():
                    continue
                try:
                    job.result()
                    returncode = 0
                except Exception as exc:  # the task's own failure, or Slurm's (cancelled, out of memory)
                    returncode = 1
                    logger.error("%s failed: %s", unit.name, " ".join(str(exc).split())[:300])
                finished[index] = UnitResult(unit, returncode, time.perf_counter() - start, last_line(unit.log))
                bar.update()
            if len(finished) < len(jobs):
                time.sleep(poll_seconds)
    finally:
        bar.close()
    return [finished[i] for i in range(len(jobs))]
