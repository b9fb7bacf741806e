"""Genomic regions from BED / narrowPeak files, and the fixed-width windows a sequence model explains.

Coordinates are BED's: 0-based, half-open ``[start, end)`` (UCSC's BED format; ENCODE's narrowPeak
is BED6+4, whose 10th column is the summit as an offset from ``start``, ``-1`` for none).

Windows of the model's input length ``width``:

- :func:`summit_windows`: one window per region, centred on the summit (narrowPeak column 10) or,
  without one, on the region's midpoint ``(start + end) // 2``:
  ``[c - width // 2, c - width // 2 + width)`` for the centre ``c``. For an even width this is
  ChromBPNet's ``[summit - width/2, summit + width/2)`` (its ``extract_loci``).
- :func:`tiled_windows`: every region (or whole chromosome, with :func:`chromosome_regions`) cut
  into tiles of ``step`` bases from its start, ``[start + k step, start + (k + 1) step)`` for the
  tiles that fit, plus ``[end - step, end)`` when these leave a partial tile at the end (a region
  shorter than ``step``: one tile, the region, centred on its midpoint), each explained through the window of ``width`` centred on the tile's centre
  ``start + k step + step // 2`` (``width == step``: plain tiling; ``width = 2114, step = 1000``:
  ChromBPNet's 1 kb output windows of a chromosome).

Windows that leave their chromosome are handled by :func:`place_windows`: ``"drop"`` them (the
default, as ChromBPNet), ``"shift"`` them inside the chromosome, or ``"pad"`` them (the bases
outside read as ``N``, all-zero one-hot columns).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "EDGE_MODES",
    "Region",
    "Window",
    "chromosome_regions",
    "filter_chromosomes",
    "place_windows",
    "read_bed",
    "summit_windows",
    "tiled_windows",
    "write_bed",
]

PathLike = str | os.PathLike[str]

#: How :func:`place_windows` treats a window that leaves its chromosome.
EDGE_MODES = ("drop", "shift", "pad")


@dataclass(frozen=True)
class Region:
    """A BED interval ``[start, end)`` on ``chrom``; ``summit`` is an offset from ``start`` or ``None``."""

    chrom: str
    start: int
    end: int
    name: str = "."
    summit: int | None = None

    def __post_init__(self) -> None:
        if not self.chrom or any(c.isspace() for c in self.chrom):
            raise ValueError(f"a chromosome name must be a non-empty word, got {self.chrom!r}")
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"a region needs 0 <= start < end, got {self.chrom}:{self.start}-{self.end}")
        if self.summit is not None and not 0 <= self.summit < self.end - self.start:
            raise ValueError(
                f"the summit offset {self.summit} of {self.chrom}:{self.start}-{self.end} is outside the region"
            )


@dataclass(frozen=True)
class Window:
    """A window ``[start, end)`` the model reads; it may leave its chromosome (``start < 0`` when padded).

    ``region`` is the row (0-based) of the region it came from in the regions given.
    """

    chrom: str
    start: int
    end: int
    region: int
    name: str = "."

    @property
    def width(self) -> int:
        return self.end - self.start


#: A region or a window (anything with a chromosome).
Located = TypeVar("Located", Region, Window)


def _integer(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{where}: the {what} column must be a whole number, got {text!r}") from None


def read_bed(path: PathLike) -> list[Region]:
    """The regions of a BED file (BED3 and wider; narrowPeak's summit column read when there are 10).

    Lines starting with ``#``, ``track`` or ``browser`` and blank lines are skipped; columns are
    separated by tabs (or, failing tabs, by whitespace). A gzipped file (``.gz``) is read as text.

    Returns
    -------
    list[Region]
        In the file's order. ``name`` is column 4 (``"."`` without one); ``summit`` is column 10
        when the line has exactly 10 columns (narrowPeak, BED6+4, ENCODE's format) and it is not
        ``-1``. Lines of any other width (BED12, whose column 10 is ``blockCount``; BED6+N) have no
        summit, so their windows are centred on the midpoint.

    Raises
    ------
    ValueError
        A line with fewer than 3 columns, non-integer coordinates, ``start >= end``, a negative start,
        or a summit outside its region; the message names the file and line.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"BED file not found: {file}")
    if file.suffix == ".gz":
        import gzip

        with gzip.open(file, "rt") as handle:
            lines = handle.read().splitlines()
    else:
        lines = file.read_text().splitlines()
    regions: list[Region] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        where = f"{file}, line {number}"
        fields = line.rstrip("\n").split("\t") if "\t" in line else line.split()
        if len(fields) < 3:
            raise ValueError(f"{where}: a BED line needs at least 3 columns (chrom, start, end), got {len(fields)}")
        start, end = _integer(fields[1], "start", where), _integer(fields[2], "end", where)
        name = fields[3] if len(fields) > 3 and fields[3] else "."
        # only narrowPeak (BED6+4) has exactly 10 columns; in BED12 column 10 is blockCount, not a summit
        summit = _integer(fields[9], "summit (10th)", where) if len(fields) == 10 else -1
        try:
            regions.append(Region(fields[0], start, end, name, None if summit == -1 else summit))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return regions


def filter_chromosomes(
    regions: Iterable[Located], chroms: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> list[Located]:
    """The regions (or windows) on ``chroms`` (all when ``None``) and not on ``exclude``, in their order.

    Raises
    ------
    ValueError
        A chromosome is both kept and excluded.
    """
    keep = None if chroms is None else set(chroms)
    drop = set(exclude)
    if keep is not None and keep & drop:
        raise ValueError(f"chromosomes both kept and excluded: {sorted(keep & drop)}")
    return [r for r in regions if (keep is None or r.chrom in keep) and r.chrom not in drop]


def chromosome_regions(chrom_sizes: Mapping[str, int], chroms: Sequence[str] | None = None) -> list[Region]:
    """Whole chromosomes ``[0, size)`` as regions (``chroms``: these, in this order; default all)."""
    names = list(chrom_sizes) if chroms is None else list(chroms)
    missing = [c for c in names if c not in chrom_sizes]
    if missing:
        raise ValueError(f"chromosomes not in the genome: {missing}")
    return [Region(c, 0, int(chrom_sizes[c]), c) for c in names]


def _check_width(width: int, what: str = "width") -> int:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"{what} must be a positive int, got {width!r}")
    return width


def summit_windows(regions: Sequence[Region], width: int) -> list[Window]:
    """One window of ``width`` per region, centred on its summit (else its midpoint ``(start + end) // 2``).

    The centre ``c = start + summit`` gives ``[c - width // 2, c - width // 2 + width)``.
    """
    _check_width(width)
    windows = []
    for index, region in enumerate(regions):
        centre = region.start + region.summit if region.summit is not None else (region.start + region.end) // 2
        left = centre - width // 2
        windows.append(Window(region.chrom, left, left + width, index, region.name))
    return windows


def tiled_windows(regions: Sequence[Region], width: int, step: int | None = None) -> list[Window]:
    """Tiles of ``step`` bases (default ``width``) from each region's start, each read through the window
    of ``width`` centred on the tile: tile ``k`` is ``[start + k step, start + (k + 1) step)``, for the
    tiles inside the region, and its window starts at ``start + k step + step // 2 - width // 2``.

    The region's end is covered too (the rule): when the tiles do not reach ``end`` (the last tile
    would be partial, ``(end - start) % step != 0``), one more tile ``[end - step, end)`` aligned
    to the region's end is added (it overlaps the tile before it), read through its centred window
    ``[end - step + step // 2 - width // 2, ... + width)``. A region shorter than ``step`` (no tile
    fits) gets one window centred on its midpoint, ``(start + end) // 2 - width // 2``, as
    :func:`summit_windows` gives a region without a summit. So every base of a region lies in a
    tile, and every region gets at least one window. Windows that leave the chromosome are then
    handled by :func:`place_windows`'s edge policy, as the others.
    """
    _check_width(width)
    step = width if step is None else _check_width(step, "step")
    windows = []
    for index, region in enumerate(regions):
        if region.end - region.start < step:
            centres = [(region.start + region.end) // 2]
        else:
            tiles = list(range(region.start, region.end - step + 1, step))
            if tiles[-1] + step < region.end:
                tiles.append(region.end - step)
            centres = [tile + step // 2 for tile in tiles]
        for centre in centres:
            left = centre - width // 2
            windows.append(Window(region.chrom, left, left + width, index, region.name))
    return windows


def place_windows(
    windows: Sequence[Window], chrom_sizes: Mapping[str, int], edges: str = "drop"
) -> tuple[list[Window], int]:
    """Windows checked against the chromosome sizes; those leaving their chromosome handled by ``edges``.

    Parameters
    ----------
    windows:
        From :func:`summit_windows` or :func:`tiled_windows`.
    chrom_sizes:
        Chromosome lengths (e.g. :meth:`deltalift.genomics.genome.Genome.chrom_sizes`).
    edges:
        ``"drop"`` (default) leaves such windows out; ``"shift"`` moves them to ``[0, width)`` or
        ``[size - width, size)``; ``"pad"`` keeps them as they are (the genome reads the bases outside
        the chromosome as ``N``).

    Returns
    -------
    (windows, n_dropped)
        The windows kept, in order, and how many were dropped (``"drop"``, or ``"shift"`` on a
        chromosome shorter than the window).

    Raises
    ------
    ValueError
        An unknown ``edges``, or a window on a chromosome the genome does not have (name given).
    """
    if edges not in EDGE_MODES:
        raise ValueError(f"edges must be one of {EDGE_MODES}, got {edges!r}")
    kept: list[Window] = []
    dropped = 0
    for window in windows:
        if window.chrom not in chrom_sizes:
            raise ValueError(
                f"region {window.region} is on {window.chrom!r}, which the genome does not have "
                f"(it has {len(chrom_sizes)} chromosomes, e.g. {list(chrom_sizes)[:3]}); filter it out"
            )
        size = int(chrom_sizes[window.chrom])
        if 0 <= window.start and window.end <= size or edges == "pad":
            kept.append(window)
        elif edges == "shift" and window.width <= size:
            left = 0 if window.start < 0 else size - window.width
            kept.append(Window(window.chrom, left, left + window.width, window.region, window.name))
        else:
            dropped += 1
    return kept, dropped


def write_bed(windows: Iterable[Window], path: PathLike) -> None:
    """Write windows as BED5: chrom, start, end, name, and the 0-based row of the region each came from.

    Padded windows are written as given, clipped at 0 on the left (BED has no negative coordinates).
    """
    with open(path, "w") as handle:
        for w in windows:
            handle.write(f"{w.chrom}\t{max(w.start, 0)}\t{w.end}\t{w.name}\t{w.region}\n")
