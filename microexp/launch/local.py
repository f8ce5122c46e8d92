"""Worker processes on this machine: one unit per process, pinned with ``CUDA_VISIBLE_DEVICES``.

``gpus=["0", "1"], per_gpu=4`` keeps up to 8 units running, four per GPU (micro-expression models are
small: one H200 holds many folds). Without GPUs, ``workers`` CPU processes share the cores, each limited
to its share of threads (``OMP_NUM_THREADS``, unless already set), since several torch processes that
each spin on every core run many times slower than one.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from tqdm.auto import tqdm

from microexp.launch import Unit, UnitResult, command, last_line

logger = logging.getLogger(__name__)

__all__ = ["run_local", "slots"]


def slots(*, gpus: Sequence[str] | None, per_gpu: int = 1, workers: int | None = None) -> list[str | None]:
    """The worker slots: a GPU id per slot (``per_gpu`` slots per GPU), or ``workers`` CPU slots (None).

    Raises:
        ValueError: no slot (``per_gpu`` or ``workers`` below 1, an empty GPU list).
    """
    if gpus:
        if per_gpu < 1:
            raise ValueError(f"--per-gpu {per_gpu}: expected at least 1")
        return [str(g) for _ in range(per_gpu) for g in gpus]  # round-robin: fill every GPU before doubling up
    count = 1 if workers is None else workers
    if count < 1:
        raise ValueError(f"--workers {count}: expected at least 1")
    return [None] * count


def run_local(units: Sequence[Unit], *, gpus: Sequence[str] | None = None, per_gpu: int = 1,
              workers: int | None = None, progress: bool | None = None) -> list[UnitResult]:
    """Run every unit in its own process, at most one per slot at a time; wait for all of them.

    A failed unit does not stop the others (their folds are independent); the caller reports failures.
    Ctrl-C terminates the running units (each keeps its last completed epoch) and re-raises.

    Returns:
        One :class:`UnitResult` per unit, in order.
    """
    free: queue.Queue[str | None] = queue.Queue()
    pool = slots(gpus=gpus, per_gpu=per_gpu, workers=workers)
    for slot in pool:
        free.put(slot)
    cpu_share = max(1, (os.cpu_count() or 1) // len(pool))
    running: set[subprocess.Popen] = set()
    lock = threading.Lock()
    bar = tqdm(total=len(units), desc="units", unit="unit", disable=None if progress is None else not progress)

    def run_one(unit: Unit) -> UnitResult:
        slot = free.get()
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        else:
            env.setdefault("OMP_NUM_THREADS", str(cpu_share))
        unit.log.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            with open(unit.log, "ab") as log:
                process = subprocess.Popen(command(unit), stdout=log, stderr=subprocess.STDOUT, env=env)
                with lock:
                    running.add(process)
                returncode = process.wait()
                with lock:
                    running.discard(process)
        finally:
            free.put(slot)
        result = UnitResult(unit, returncode, time.perf_counter() - start, last_line(unit.log))
        where = f"GPU {slot}" if slot is not None else "CPU"
        if result.ok:
            logger.info("%s done in %.0f s (%s)", unit.name, result.seconds, where)
        else:
            logger.error("%s failed (exit %s, %s): %s; log %s", unit.name, returncode, where,
                         result.last_line or "no output", unit.log)
        bar.update()
        return result

    logger.info("%d unit(s) on %d slot(s)%s", len(units), len(pool),
                f": GPUs {','.join(sorted(set(s for s in pool if s)))}, {per_gpu} per GPU" if gpus
                else f" (CPU, {cpu_share} thread(s) each)")
    executor = ThreadPoolExecutor(max_workers=len(pool))
    try:
        futures = [executor.submit(run_one, unit) for unit in units]
        return [future.result() for future in futures]
    except KeyboardInterrupt:
        with lock:
            for process in running:
                process.terminate()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
