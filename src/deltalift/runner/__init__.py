"""The dataset-level runner: a job's items computed in numbered shards, resumable, in one process or on Ray.

- :mod:`~deltalift.runner.store`: the shards on disk, the manifest, atomic writes (:class:`ShardStore`).
- :mod:`~deltalift.runner.job`: the job protocol and :func:`run_job` (progress with ETA, resume).
- :mod:`~deltalift.runner.ray_backend`: Ray Data ``map_batches`` over shards with an actor pool.
- :mod:`~deltalift.runner.arrays`: any deltalift method over a folder of ``.npy`` arrays (``deltalift run``).
- :mod:`~deltalift.runner.genomics`: DeepLIFT-SHAP of genome windows (``deltalift genomics attribute --genome``).
- :mod:`~deltalift.runner.npz`: one ``.npz`` written from chunks (bounded memory).
"""

from deltalift.runner.job import RayOptions, RunSummary, ShardJob, compute_shard, run_job
from deltalift.runner.store import SettingsMismatchError, ShardStore

__all__ = ["RayOptions", "RunSummary", "SettingsMismatchError", "ShardJob", "ShardStore", "compute_shard", "run_job"]
