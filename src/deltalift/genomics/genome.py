"""Sequences of genome windows from an indexed FASTA (pyfaidx), plain or bgzipped.

:class:`Genome` opens a FASTA with pyfaidx (which writes the ``.fai`` index beside it the first time,
as ``samtools faidx``); a bgzipped FASTA (``bgzip genome.fa``) is read through pyfaidx's BGZF support,
which needs Biopython. A plain ``gzip`` file cannot be indexed and is refused with the command that
fixes it. Needs ``pip install 'deltalift[genomics]'``.

Bases outside a chromosome (a window ``"pad"``-ed at an edge, see
:func:`deltalift.genomics.regions.place_windows`) are read as ``N``; lower-case (soft-masked) bases
are read as upper case, and ``N`` and other IUPAC codes become all-zero one-hot columns
(:func:`deltalift.genomics.one_hot.one_hot_encode`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from deltalift.genomics.one_hot import one_hot_encode
from deltalift.genomics.regions import Window

__all__ = ["Genome"]

PathLike = str | os.PathLike[str]


def _pyfaidx() -> Any:
    try:
        import pyfaidx
    except ImportError as exc:
        raise ImportError("reading a genome FASTA needs pyfaidx: pip install 'deltalift[genomics]'") from exc
    return pyfaidx


def _is_gzip(file: Path) -> bool:
    with open(file, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _is_bgzf(file: Path) -> bool:
    """A BGZF block starts with gzip's magic, the FEXTRA flag and the ``BC`` extra subfield (SAM spec, 4.1)."""
    with open(file, "rb") as handle:
        head = handle.read(16)
    return len(head) == 16 and head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC"


class Genome:
    """An indexed genome FASTA: chromosome sizes and the sequences of windows.

    Parameters
    ----------
    path:
        A FASTA file, plain or bgzipped; its ``.fai`` (and for bgzip ``.gzi``) index is made if absent,
        and made again if older than the FASTA (pyfaidx compares the modification times).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A gzip file that is not bgzipped (pyfaidx cannot index it).
    ImportError
        pyfaidx (or, for a bgzipped file, Biopython) is not installed.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"genome FASTA not found: {self.path}")
        if _is_gzip(self.path) and not _is_bgzf(self.path):
            raise ValueError(
                f"{self.path} is gzip-compressed but not bgzipped, so it cannot be indexed: recompress it with "
                f"'zcat {self.path.name} | bgzip > genome.fa.gz' or decompress it"
            )
        pyfaidx = _pyfaidx()
        try:
            # rebuild=True (pyfaidx's default): a .fai older than the FASTA is rebuilt, not trusted
            self._fasta = pyfaidx.Fasta(str(self.path), sequence_always_upper=True, rebuild=True, as_raw=True)
        except pyfaidx.UnsupportedCompressionFormat as exc:  # pragma: no cover - depends on pyfaidx build
            raise ValueError(f"{self.path}: {exc}") from exc
        except ImportError as exc:
            raise ImportError(f"reading the bgzipped {self.path} needs Biopython: pip install biopython") from exc
        self._sizes = {name: len(record) for name, record in self._fasta.records.items()}

    def __enter__(self) -> Genome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the FASTA file."""
        self._fasta.close()

    def chrom_sizes(self) -> dict[str, int]:
        """``{chromosome: length}``, in the FASTA's order."""
        return dict(self._sizes)

    def sequence(self, chrom: str, start: int, end: int) -> str:
        """The bases ``[start, end)`` of ``chrom``, upper case; positions outside the chromosome read as ``N``."""
        if chrom not in self._sizes:
            raise ValueError(f"the genome has no chromosome {chrom!r}")
        if end <= start:
            raise ValueError(f"a window needs start < end, got {chrom}:{start}-{end}")
        size = self._sizes[chrom]
        left, right = max(start, 0), min(end, size)
        if left >= right:
            return "N" * (end - start)
        return "N" * (left - start) + str(self._fasta[chrom][left:right]) + "N" * (end - right)

    def one_hot(self, windows: Sequence[Window], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The windows' sequences one-hot encoded, ``(len(windows), 4, width)`` in ACGT order.

        Raises
        ------
        ValueError
            The windows differ in width, or one is on a chromosome the genome does not have.
        """
        if not windows:
            raise ValueError("no windows to read")
        widths = {w.width for w in windows}
        if len(widths) != 1:
            raise ValueError(f"windows must share one width to be read together, got widths {sorted(widths)}")
        return one_hot_encode([self.sequence(w.chrom, w.start, w.end) for w in windows], dtype=dtype)
