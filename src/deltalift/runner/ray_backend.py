"""The Ray engine of :func:`deltalift.runner.run_job`: Ray Data ``map_batches`` over shards with an actor pool.

The pending shard numbers become a Ray dataset with one row per shard; ``map_batches`` sends them,
one at a time (``batch_size=1``), to a pool of ``actors`` long-lived workers, each holding its own
copy of the job (so the model is loaded once per actor, not once per shard) and reserving
``num_gpus`` GPUs and ``num_cpus`` CPUs. Each worker computes its shard with
:func:`~deltalift.runner.job.compute_shard` and writes it atomically to the output folder, which
therefore must be on a file system all nodes share (NFS, Lustre, a mounted bucket); the driver only
counts finished shards for the progress bar. A shard's results do not depend on which actor computed
it, so a Ray run writes the same shards as a single-process run with the same settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from deltalift.runner.job import RayOptions, ShardJob, compute_shard
from deltalift.runner.store import ShardStore

__all__ = ["ShardWorker", "run_on_ray"]


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError("running on Ray needs ray[data]: pip install 'deltalift[ray]'") from exc
    return ray


class ShardWorker:
    """A Ray actor: computes the shards it is sent and writes them to the shared output folder."""

    def __init__(self, job: ShardJob, store: ShardStore, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.job, self.store = job, store

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = [int(k) for k in batch["shard"]]
        seconds = [compute_shard(self.job, self.store, k) for k in shards]
        return {"shard": np.asarray(shards, dtype=np.int64), "seconds": np.asarray(seconds, dtype=np.float64)}


def run_on_ray(job: ShardJob, store: ShardStore, pending: list[int], options: RayOptions) -> Iterator[int]:
    """Compute the ``pending`` shards of ``job`` on Ray; yield each shard number as it is written."""
    ray = _ray()
    if options.num_gpus < 0 or options.num_cpus <= 0:
        raise ValueError(f"num_gpus must be >= 0 and num_cpus > 0, got {options.num_gpus}, {options.num_cpus}")
    started = not ray.is_initialized()
    if started:
        if options.address is None:
            ray.init(num_cpus=options.local_num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=options.address, log_to_driver=False)
    try:
        actors = options.actors
        if actors is None:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            actors = max(1, int(gpus / options.num_gpus)) if options.num_gpus else 2
        if actors < 1:
            raise ValueError(f"actors must be at least 1, got {actors}")
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = False
        dataset = ray.data.from_items([{"shard": k} for k in pending], override_num_blocks=len(pending))
        results = dataset.map_batches(
            ShardWorker,
            fn_constructor_kwargs={"job": job, "store": store, "threads": int(options.num_cpus)},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(actors, len(pending))),
            num_gpus=options.num_gpus or None,
            num_cpus=options.num_cpus,
        )
        for row in results.iter_rows():
            yield int(row["shard"])
    finally:
        if started:
            ray.shutdown()
