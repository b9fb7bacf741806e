"""The Ray engine: a genome-wide job resumed on a local Ray instance (2 CPUs, 2 actors) equals a single-process run."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyfaidx")
pytest.importorskip("pyBigWig")

from deltalift.runner import RayOptions  # noqa: E402
from deltalift.runner.genomics import RegionAttributionJob, attribute_regions  # noqa: E402
from test_genome_wide import (  # noqa: E402
    WIDTH,
    K,
    make_inputs,
    one_torch_thread,  # noqa: E402, F401 (an autouse fixture: one torch thread)
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("genome"))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _run(inputs, out, **options):
    root, _ = inputs
    return attribute_regions(
        root / "model.pt",
        root / "genome.fa",
        out,
        WIDTH,
        root / "peaks.narrowPeak",
        n_shuffles=K,
        shard_size=1,
        exclude_chroms=["chrM"],
        show_progress=False,
        **options,
    )


def test_ray_resumes_a_run_and_equals_a_single_process_run(inputs, local_ray, tmp_path, monkeypatch):
    single = _run(inputs, tmp_path / "single")
    original, calls = RegionAttributionJob.compute, []

    def interrupted(self, start, stop):
        calls.append(start)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, start, stop)

    with monkeypatch.context() as patch:
        patch.setattr(RegionAttributionJob, "compute", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _run(inputs, tmp_path / "ray")
    on_ray = _run(inputs, tmp_path / "ray", ray=RayOptions(actors=2))
    assert (on_ray.run.computed, on_ray.run.skipped) == (3, 1)
    for name in ("ohe.npz", "attr.npz", "regions.bed", "deltas.npy"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    for shard in range(4):
        a = np.load(tmp_path / "ray" / "shards" / f"{shard:05d}" / "hypothetical.npy")
        b = np.load(tmp_path / "single" / "shards" / f"{shard:05d}" / "hypothetical.npy")
        assert a.tobytes() == b.tobytes()  # bitwise, shard by shard
    import pyBigWig

    with (
        pyBigWig.open(str(on_ray.files["contributions.bw"])) as x,
        pyBigWig.open(str(single.files["contributions.bw"])) as y,
    ):
        np.testing.assert_array_equal(np.asarray(x.values("chr1", 0, 160)), np.asarray(y.values("chr1", 0, 160)))


def test_ray_options_are_checked(inputs, local_ray, tmp_path):
    with pytest.raises(ValueError, match="num_gpus"):
        _run(inputs, tmp_path / "bad", ray=RayOptions(num_gpus=-1))
