"""Contribution tracks as bigWig files (pyBigWig), one value per base, for a genome browser.

Each window's per-base contribution (DeepLIFT-SHAP's actual contribution at each position,
``sum_c hyp[c, l] * onehot[c, l]``, the track ChromBPNet and BPNet write) is placed at its genome
coordinates. Where windows overlap, ``overlap`` decides:

- ``"mean"`` (default): the mean of the values of all windows covering the base;
- ``"nearest"``: the value of the window whose centre ``(start + end) / 2`` is nearest the base
  (ties: the window that starts first, then the one given first).

Bases no window covers have no entry; bases of a padded window outside its chromosome are left out.
The windows are swept chromosome by chromosome in the order of ``chrom_sizes`` and by start, so
memory holds only the windows overlapping the current one, whatever the genome's size. Needs
``pip install 'deltalift[genomics]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from deltalift.genomics.regions import Window

__all__ = ["OVERLAP_MODES", "write_contribution_bigwig"]

#: How :func:`write_contribution_bigwig` resolves overlapping windows.
OVERLAP_MODES = ("mean", "nearest")


def _pybigwig() -> Any:
    try:
        import pyBigWig
    except ImportError as exc:
        raise ImportError("writing bigWig files needs pyBigWig: pip install 'deltalift[genomics]'") from exc
    return pyBigWig


class _Sweep:
    """The bases of one chromosome from ``origin`` on that windows still to come may cover."""

    def __init__(self, overlap: str) -> None:
        self.overlap = overlap
        self.origin = 0
        self.total = np.zeros(0)  # "mean": sum of values; "nearest": the value
        self.score = np.zeros(0)  # "mean": windows covering; "nearest": distance to the centre (inf: none)

    def flush(self, before: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Remove and return ``(origin, values, covered)`` of the bases before ``before``."""
        n = max(0, min(before - self.origin, len(self.total)))
        origin, total, score = self.origin, self.total[:n], self.score[:n]
        self.total, self.score = self.total[n:], self.score[n:]
        self.origin += n
        if len(self.total) == 0:
            self.origin = max(self.origin, before)
        if self.overlap == "mean":
            covered = score > 0
            return origin, np.divide(total, score, out=np.zeros_like(total), where=covered), covered
        return origin, total, np.isfinite(score)

    def add(self, start: int, values: np.ndarray, centre: float) -> None:
        end = start + len(values)
        if start < self.origin:
            raise AssertionError("windows must be added by start")  # the caller sorts them
        grow = end - self.origin - len(self.total)
        if grow > 0:
            self.total = np.concatenate([self.total, np.zeros(grow)])
            self.score = np.concatenate(
                [self.score, np.zeros(grow) if self.overlap == "mean" else np.full(grow, np.inf)]
            )
        part = slice(start - self.origin, end - self.origin)
        if self.overlap == "mean":
            self.total[part] += values
            self.score[part] += 1
        else:
            distance = np.abs(np.arange(start, end) + 0.5 - centre)
            better = distance < self.score[part]
            self.total[part] = np.where(better, values, self.total[part])
            self.score[part] = np.where(better, distance, self.score[part])


def _write_runs(bw: Any, chrom: str, origin: int, values: np.ndarray, covered: np.ndarray) -> None:
    """Add the covered bases as runs of consecutive positions (fixed-step entries, span 1)."""
    if not covered.any():
        return
    edges = np.flatnonzero(np.diff(np.concatenate([[0], covered.astype(np.int8), [0]])))
    for first, stop in zip(edges[::2], edges[1::2]):
        bw.addEntries(chrom, int(origin + first), values=values[first:stop].astype(np.float64), span=1, step=1)


def write_contribution_bigwig(
    path: str | os.PathLike[str],
    windows: Sequence[Window],
    contributions: Callable[[int], np.ndarray] | np.ndarray,
    chrom_sizes: Mapping[str, int],
    overlap: str = "mean",
) -> None:
    """Write the per-base contributions of ``windows`` as a bigWig track.

    Parameters
    ----------
    path:
        The ``.bw`` file to write.
    windows:
        The windows explained (any order), all of one width ``L``.
    contributions:
        ``(len(windows), L)`` per-base values, or a function ``i -> (L,)`` giving window ``i``'s
        (read lazily, e.g. from memory-mapped shards).
    chrom_sizes:
        The genome's chromosome lengths (the bigWig header: the chromosomes with windows, in this order).
    overlap:
        ``"mean"`` or ``"nearest"``; see the module docstring.

    Raises
    ------
    ValueError
        An unknown ``overlap``, a window on a chromosome not in ``chrom_sizes``, or values of the
        wrong length or not finite.
    """
    if overlap not in OVERLAP_MODES:
        raise ValueError(f"overlap must be one of {OVERLAP_MODES}, got {overlap!r}")
    if isinstance(contributions, np.ndarray):
        if contributions.shape[0] != len(windows):
            raise ValueError(f"contributions has {contributions.shape[0]} rows for {len(windows)} windows")
        array = contributions
        contributions = lambda i: array[i]  # noqa: E731
    rank = {chrom: i for i, chrom in enumerate(chrom_sizes)}
    unknown = sorted({w.chrom for w in windows} - set(rank))
    if unknown:
        raise ValueError(f"windows on chromosomes not in chrom_sizes: {unknown}")
    order = sorted(range(len(windows)), key=lambda i: (rank[windows[i].chrom], windows[i].start, i))
    used = list(dict.fromkeys(windows[i].chrom for i in order))
    bw = _pybigwig().open(os.fspath(path), "w")
    try:
        bw.addHeader([(c, int(chrom_sizes[c])) for c in used], maxZooms=10)
        sweep, chrom = _Sweep(overlap), None
        for i in order:
            window = windows[i]
            values = np.asarray(contributions(i), dtype=np.float64)
            if values.shape != (window.width,):
                raise ValueError(f"window {i} has {values.shape} values; expected ({window.width},)")
            if not np.isfinite(values).all():
                raise ValueError(f"the contributions of window {i} ({window.chrom}:{window.start}) are not finite")
            if window.chrom != chrom:
                if chrom is not None:
                    _write_runs(bw, chrom, *sweep.flush(int(chrom_sizes[chrom])))
                sweep, chrom = _Sweep(overlap), window.chrom
            left, right = max(window.start, 0), min(window.end, int(chrom_sizes[chrom]))
            _write_runs(bw, chrom, *sweep.flush(left))
            if left < right:
                sweep.add(left, values[left - window.start : right - window.start], (window.start + window.end) / 2)
        if chrom is not None:
            _write_runs(bw, chrom, *sweep.flush(int(chrom_sizes[chrom])))
    finally:
        bw.close()
