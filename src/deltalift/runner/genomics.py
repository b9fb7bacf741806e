"""Genome-wide DeepLIFT-SHAP: windows of a genome explained shard by shard, then TF-MoDISco files and a bigWig.

:class:`RegionAttributionJob` is the :class:`~deltalift.runner.job.ShardJob` of
``deltalift genomics attribute --genome``: the windows of a shard are read from the genome, one-hot
encoded and explained with :func:`deltalift.genomics.deep_lift_shap` (hypothetical contributions
against ``n_shuffles`` dinucleotide shuffles of each window). With ``reverse_complement`` each
window ``x`` is also explained as its reverse complement ``rc(x)`` (``x`` flipped along both the
channel axis, ACGT -> TGCA, and the position axis) and the two are averaged after mapping the second
back, ``(hyp(x) + flip(hyp(rc(x)))) / 2`` (BPNet and ChromBPNet's practice).

``deep_lift_shap`` seeds each window's shuffles from its own sequence and ``random_state``, so a
window's result does not depend on the shard it is in or the worker that computes it.

:func:`attribute_regions` runs the job and :func:`finish_region_attribution` writes, from the shards
(one at a time):

- ``ohe.npz`` / ``attr.npz``: one-hot windows and hypothetical contributions ``(N, 4, L)``, float32
  under ``arr_0``, for ``modisco motifs -s ohe.npz -a attr.npz``;
- ``regions.bed``: the windows explained, in the order of those arrays (BED5: the 5th column is
  the row of the input region each came from);
- ``deltas.npy``: the convergence delta of every (window, reference) pair ``(N, K)`` (``2K`` with
  the reverse complement, its references after the forward ones);
- ``contributions.bw``: the per-base contributions ``sum_c hyp * onehot`` as a bigWig
  (:mod:`deltalift.genomics.bigwig`, overlaps resolved by ``overlap``).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.genomics.attribute import deep_lift_shap
from deltalift.genomics.bigwig import OVERLAP_MODES, write_contribution_bigwig
from deltalift.genomics.genome import Genome
from deltalift.genomics.models import load_sequence_model, sequence_head
from deltalift.genomics.regions import (
    Region,
    Window,
    chromosome_regions,
    filter_chromosomes,
    place_windows,
    read_bed,
    summit_windows,
    tiled_windows,
    write_bed,
)
from deltalift.runner.digests import model_settings
from deltalift.runner.job import RayOptions, RunSummary, run_job
from deltalift.runner.npz import write_npz_from_chunks
from deltalift.runner.store import ShardStore

__all__ = [
    "GenomeWideResult",
    "RegionAttributionJob",
    "attribute_regions",
    "finish_region_attribution",
    "make_windows",
    "reverse_complement",
]

PathLike = str | os.PathLike[str]


def reverse_complement(X: torch.Tensor) -> torch.Tensor:
    """Reverse complements of one-hot ``(N, 4, L)`` ACGT sequences: both axes flipped (A<->T, C<->G)."""
    if X.ndim != 3 or X.shape[1] != 4:
        raise ValueError(f"reverse complements need one-hot ACGT sequences (N, 4, L), got {tuple(X.shape)}")
    return X.flip(1, 2)


def _genome_settings(path: Path) -> dict[str, Any]:
    """The genome file's path, size and modification time (hashing a genome's gigabytes would take minutes)."""
    stat = path.stat()
    return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _windows_digest(windows: Sequence[Window]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for w in windows:
        digest.update(f"{w.chrom}\t{w.start}\t{w.end}\t{w.region}\n".encode())
    return digest.hexdigest()


#: The most (sequence, reference) pairs a call explains by default.
MAX_PAIRS_PER_CALL = 64


def pairs_per_call(batch_size: int | None, n_shuffles: int) -> int:
    """The (sequence, reference) pairs explained per call: ``batch_size``, or by default one
    sequence's ``n_shuffles`` references (at most :data:`MAX_PAIRS_PER_CALL` a call), which keeps
    the input side one row through the network (:class:`deltalift.DeepLiftShap`).  On a 2-core
    CPU a ChromBPNet region with 20 shuffles took 7.2 s so, and 9.0 s with two regions a call
    (``benchmarks/bench_genome_wide.py``; the earlier default, 64 pairs, holds three)."""
    return min(n_shuffles, MAX_PAIRS_PER_CALL) if batch_size is None else batch_size


@dataclass
class RegionAttributionJob:
    """DeepLIFT-SHAP of genome windows, shard by shard (see the module docstring).

    ``model`` is a model file (loaded once per process, so that Ray actors load their own copy) or
    a module; ``head`` picks a bpnet-lite model's head (:func:`deltalift.genomics.models.sequence_head`).
    The other fields are those of :func:`deltalift.genomics.deep_lift_shap`.
    """

    model: PathLike | nn.Module
    genome: PathLike
    windows: Sequence[Window]
    head: str | None = None
    target: int = 0
    n_shuffles: int = 20
    batch_size: int | None = None
    random_state: int = 0
    rule: str = "rescale"
    reverse_complement: bool = False
    device: str = "cpu"
    kind: str = "genomics-attribute"
    _loaded: nn.Module | None = field(default=None, repr=False, compare=False)
    _genome: Genome | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, int) or self.random_state < 0:
            raise ValueError(
                f"random_state must be an int >= 0 (a seed makes shards reproducible), got {self.random_state!r}"
            )
        if not self.windows:
            raise ValueError("no windows to explain (all regions filtered out or dropped at the edges?)")
        if len({w.width for w in self.windows}) != 1:
            raise ValueError("the windows must all have the model's input length")
        if isinstance(self.model, nn.Module):
            self._loaded = sequence_head(self.model, self.head)

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_genome"] = None
        if not isinstance(self.model, nn.Module):
            state["_loaded"] = None  # each process loads the file itself
        return state

    def settings(self) -> dict[str, Any]:
        return {
            "model": model_settings(self.model),
            "head": self.head,
            "genome": _genome_settings(Path(self.genome)),
            "windows": {
                "count": len(self.windows),
                "width": self.windows[0].width,
                "digest": _windows_digest(self.windows),
            },
            "target": self.target,
            "n_shuffles": self.n_shuffles,
            "batch_size": self.batch_size,
            "random_state": self.random_state,
            "rule": self.rule,
            "reverse_complement": self.reverse_complement,
        }

    def loaded_model(self) -> nn.Module:
        if self._loaded is None:
            assert not isinstance(self.model, nn.Module)
            self._loaded = load_sequence_model(self.model, self.head, device=self.device)
        return self._loaded

    def sequences(self, start: int, stop: int) -> torch.Tensor:
        """The one-hot windows ``[start, stop)``, ``(n, 4, L)``."""
        if self._genome is None:
            self._genome = Genome(self.genome)
        return self._genome.one_hot(self.windows[start:stop])

    def compute(self, start: int, stop: int) -> dict[str, np.ndarray]:
        X = self.sequences(start, stop)
        model = self.loaded_model()
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        inputs = torch.cat([X, reverse_complement(X)]) if self.reverse_complement else X
        hypothetical, deltas = deep_lift_shap(
            model,
            inputs.to(dtype),
            target=self.target,
            n_shuffles=self.n_shuffles,
            batch_size=pairs_per_call(self.batch_size, self.n_shuffles),
            hypothetical=True,
            random_state=self.random_state,
            device=self.device,
            rule=self.rule,
            warning_threshold=None,
            return_convergence_delta=True,
        )
        deltas = deltas.reshape(len(inputs), self.n_shuffles)
        n = len(X)
        if self.reverse_complement:
            hypothetical = (hypothetical[:n] + reverse_complement(hypothetical[n:])) / 2
            deltas = torch.cat([deltas[:n], deltas[n:]], dim=1)
        hyp = hypothetical.to(torch.float32).numpy()
        one_hot = X.to(torch.uint8).numpy()
        windows = self.windows[start:stop]
        return {
            "one_hot": one_hot,
            "hypothetical": hyp,
            "contributions": (hyp * one_hot).sum(axis=1, dtype=np.float32),
            "deltas": deltas.to(torch.float32).numpy(),
            "window": np.arange(start, stop, dtype=np.int64),
            "region": np.asarray([w.region for w in windows], dtype=np.int64),
        }


def make_windows(
    genome: Genome,
    width: int,
    regions: PathLike | Sequence[Region] | None = None,
    windows: str = "summit",
    step: int | None = None,
    chroms: Sequence[str] | None = None,
    exclude_chroms: Sequence[str] = (),
    edges: str = "drop",
) -> tuple[list[Window], int]:
    """The windows to explain and how many were dropped at chromosome edges.

    ``regions``: a BED / narrowPeak file or regions (``None``: whole chromosomes, tiled);
    ``windows``: ``"summit"`` (:func:`~deltalift.genomics.regions.summit_windows`) or ``"tiled"``
    (:func:`~deltalift.genomics.regions.tiled_windows` with ``step``); then the chromosome filters
    and :func:`~deltalift.genomics.regions.place_windows` with ``edges``.
    """
    if windows not in ("summit", "tiled"):
        raise ValueError(f"windows must be 'summit' or 'tiled', got {windows!r}")
    sizes = genome.chrom_sizes()
    if regions is None:
        if windows != "tiled":
            raise ValueError("without regions, whole chromosomes are tiled: pass windows='tiled'")
        chosen = chromosome_regions(sizes, chroms)
    else:
        chosen = read_bed(regions) if isinstance(regions, str | os.PathLike) else list(regions)
    made = summit_windows(chosen, width) if windows == "summit" else tiled_windows(chosen, width, step)
    # filtered after they are made, so that each window keeps the row of its region in the file
    return place_windows(filter_chromosomes(made, chroms, exclude_chroms), sizes, edges)


@dataclass(frozen=True)
class GenomeWideResult:
    """What :func:`attribute_regions` wrote: the files, the windows, dropped windows, and the run."""

    out: Path
    windows: list[Window]
    dropped: int
    run: RunSummary
    files: dict[str, Path]


def finish_region_attribution(
    store: ShardStore,
    windows: Sequence[Window],
    chrom_sizes: Mapping[str, int],
    out: PathLike,
    bigwig: bool = True,
    overlap: str = "mean",
) -> dict[str, Path]:
    """Write ``ohe.npz``, ``attr.npz``, ``regions.bed``, ``deltas.npy`` and ``contributions.bw`` from the shards."""
    out = Path(out)
    n, width = len(windows), windows[0].width
    files = {name: out / name for name in ("ohe.npz", "attr.npz", "regions.bed", "deltas.npy")}
    write_npz_from_chunks(files["ohe.npz"], store.iter_arrays("one_hot"), (n, 4, width), np.float32)
    write_npz_from_chunks(files["attr.npz"], store.iter_arrays("hypothetical"), (n, 4, width), np.float32)
    write_bed(windows, files["regions.bed"])
    np.save(files["deltas.npy"], store.concatenate("deltas"))
    if bigwig:
        files["contributions.bw"] = out / "contributions.bw"
        size = store.shard_size
        shard_of = functools.lru_cache(maxsize=64)(lambda k: store.read(k, "contributions", mmap=True))

        def contribution(i: int) -> np.ndarray:
            return np.asarray(shard_of(i // size)[i % size])

        write_contribution_bigwig(files["contributions.bw"], windows, contribution, chrom_sizes, overlap=overlap)
    return files


def attribute_regions(
    model: PathLike | nn.Module,
    genome: PathLike,
    out: PathLike,
    width: int,
    regions: PathLike | Sequence[Region] | None = None,
    *,
    windows: str = "summit",
    step: int | None = None,
    chroms: Sequence[str] | None = None,
    exclude_chroms: Sequence[str] = (),
    edges: str = "drop",
    head: str | None = None,
    target: int = 0,
    n_shuffles: int = 20,
    batch_size: int | None = None,
    random_state: int = 0,
    rule: str = "rescale",
    reverse_complement: bool = False,
    device: str = "cpu",
    shard_size: int = 256,
    overwrite: bool = False,
    ray: RayOptions | None = None,
    bigwig: bool = True,
    overlap: str = "mean",
    show_progress: bool = True,
) -> GenomeWideResult:
    """Explain genome windows with DeepLIFT-SHAP, resumably, in one process or on Ray.

    Parameters
    ----------
    model:
        A model file (``.pt`` module, ``.pt2`` program, bpnet-lite model) or a module.
    genome:
        An indexed (or indexable) genome FASTA, plain or bgzipped.
    out:
        The output folder: shards, manifest, then the files listed in the module docstring. A rerun
        into the same folder skips finished shards; other settings raise unless ``overwrite``.
    width:
        The model's input length (2114 for ChromBPNet).
    regions, windows, step, chroms, exclude_chroms, edges:
        Which windows (:func:`make_windows`).
    head:
        ``"count"`` / ``"profile"`` for a bpnet-lite model (default count); ``None`` otherwise.
    target, n_shuffles, batch_size, random_state, rule:
        As :func:`deltalift.genomics.deep_lift_shap` (``random_state`` an int seed);
        ``batch_size`` by default :func:`pairs_per_call`: one window's shuffles a call.
    reverse_complement:
        Average with the reverse complement's attributions, mapped back.
    device:
        Where each worker computes (``"cuda"`` on GPU actors).
    shard_size:
        Windows per shard: the unit of resumption and of Ray's work.
    ray:
        :class:`~deltalift.runner.job.RayOptions` to run on Ray; ``None``: in this process.
    bigwig, overlap:
        Write ``contributions.bw``, overlapping windows resolved by ``overlap`` (``"mean"`` or ``"nearest"``).
    show_progress:
        A progress bar over the windows with an ETA.
    """
    if overlap not in OVERLAP_MODES:
        raise ValueError(f"overlap must be one of {OVERLAP_MODES}, got {overlap!r}")
    with Genome(genome) as opened:
        chosen, dropped = make_windows(opened, width, regions, windows, step, chroms, exclude_chroms, edges)
        sizes = opened.chrom_sizes()
    job = RegionAttributionJob(
        model,
        genome,
        chosen,
        head=head,
        target=target,
        n_shuffles=n_shuffles,
        batch_size=batch_size,
        random_state=random_state,
        rule=rule,
        reverse_complement=reverse_complement,
        device=device,
    )
    summary = run_job(job, out, shard_size=shard_size, overwrite=overwrite, ray=ray, show_progress=show_progress)
    files = finish_region_attribution(summary.store, chosen, sizes, out, bigwig=bigwig, overlap=overlap)
    return GenomeWideResult(Path(out), chosen, dropped, summary, files)
