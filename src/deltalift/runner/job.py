"""A dataset-level job: items computed shard by shard, in one process or on Ray, resumable.

A :class:`ShardJob` says how many items there are, which settings determine the results, and how to
compute the results of the items ``[start, stop)`` (a dict of arrays whose leading axis is those
items). :func:`run_job` cuts the items into shards, skips the shards an earlier run finished (see
:class:`~deltalift.runner.store.ShardStore`), computes the others in order in this process or on a
Ray cluster (:mod:`deltalift.runner.ray_backend`), and shows a progress bar with an ETA. Memory is
bounded by one shard's inputs and results per worker, whatever the number of items.

A job's results must depend only on its settings and the items of the shard, not on which worker or
run computed it; then an interrupted-and-resumed run, or a Ray run, writes the same shards as an
uninterrupted single-process one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from deltalift.runner.store import ShardStore
from deltalift.runtime import progress

__all__ = ["RayOptions", "RunSummary", "ShardJob", "compute_shard", "run_job"]


@runtime_checkable
class ShardJob(Protocol):
    """What :func:`run_job` runs. It is pickled to Ray workers, so it should hold paths or small objects."""

    #: Recorded in the manifest (``"genomics-attribute"``, ``"arrays"``).
    kind: str

    def __len__(self) -> int:
        """The number of items."""
        ...

    def settings(self) -> Mapping[str, Any]:
        """JSON-serialisable settings that determine the results."""
        ...

    def compute(self, start: int, stop: int) -> Mapping[str, np.ndarray]:
        """The results of items ``[start, stop)``: arrays whose leading axis has ``stop - start`` rows."""
        ...


@dataclass(frozen=True)
class RayOptions:
    """How :func:`run_job` uses Ray.

    Parameters
    ----------
    address:
        A running cluster's address (``"auto"``, ``"ray://head:10001"``); ``None`` starts a local Ray
        instance (with ``num_cpus``) for the call and shuts it down after.
    actors:
        Workers in the actor pool (default: one per GPU with ``num_gpus``, else 2).
    num_gpus:
        GPUs per actor (``1``: one actor per GPU; ``0.5``: two actors share one); 0 for CPU actors.
    num_cpus:
        CPUs per actor; also its torch threads.
    local_num_cpus:
        CPUs of a local instance started for the call (``None``: Ray's default, all cores).
    """

    address: str | None = None
    actors: int | None = None
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    local_num_cpus: int | None = None


@dataclass(frozen=True)
class RunSummary:
    """What :func:`run_job` did: shards in all, computed in this run, found finished, and seconds."""

    store: ShardStore
    n_shards: int
    computed: int
    skipped: int
    seconds: float


def compute_shard(job: ShardJob, store: ShardStore, shard: int) -> float:
    """Compute ``shard`` of ``job`` and write it to ``store``; return the seconds it took."""
    start, stop = store.bounds(shard)
    began, busy = time.perf_counter(), time.process_time()
    arrays = dict(job.compute(start, stop))
    seconds = time.perf_counter() - began
    store.write(shard, arrays, seconds=seconds, cpu_seconds=time.process_time() - busy)
    return seconds


def run_job(
    job: ShardJob,
    out: str | os.PathLike[str],
    shard_size: int = 256,
    overwrite: bool = False,
    ray: RayOptions | None = None,
    show_progress: bool = True,
) -> RunSummary:
    """Run ``job`` into the shards of ``out``, skipping shards already written by an earlier run.

    Parameters
    ----------
    job:
        A :class:`ShardJob`.
    out:
        The output folder; its ``manifest.json`` records the job's settings.
    shard_size:
        Items per shard: the unit of resumption and of work sent to a Ray actor (part of the settings).
    overwrite:
        Discard shards of a job with other settings instead of refusing
        (:class:`~deltalift.runner.store.SettingsMismatchError`).
    ray:
        Run on Ray with these options (``pip install 'deltalift[ray]'``); ``None``: in this process.
    show_progress:
        A tqdm bar over the shards, with the rate and the ETA.

    Returns
    -------
    RunSummary
    """
    if not isinstance(job, ShardJob):
        raise TypeError(f"job must have kind, __len__, settings() and compute(start, stop), got {type(job).__name__}")
    store = ShardStore(out, job.kind, job.settings(), len(job), shard_size, overwrite=overwrite)
    pending = store.pending()
    began = time.perf_counter()
    done = len(job) - sum(stop - start for start, stop in map(store.bounds, pending))
    # a bar over the items (with the rate and the ETA), advanced as each shard is written
    bar: Any = progress(iter(()), enabled=show_progress, desc=job.kind, unit="item", total=len(job), initial=done)
    try:
        if ray is not None and pending:
            from deltalift.runner.ray_backend import run_on_ray

            for shard in run_on_ray(job, store, pending, ray):
                _advance(bar, store, shard)
        else:
            for shard in pending:
                compute_shard(job, store, shard)
                _advance(bar, store, shard)
    finally:
        if hasattr(bar, "close"):
            bar.close()
    missing = store.pending()
    if missing:
        raise RuntimeError(f"{len(missing)} shards were not written (first: {missing[0]}); rerun to resume")
    return RunSummary(store, store.n_shards, len(pending), store.n_shards - len(pending), time.perf_counter() - began)


def _advance(bar: Any, store: ShardStore, shard: int) -> None:
    if hasattr(bar, "update"):
        start, stop = store.bounds(shard)
        bar.update(stop - start)
