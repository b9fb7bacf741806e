"""One-hot encoding of DNA sequences, its inverse, and a small FASTA reader.

The encoding follows the convention of genomics deep learning (Basset, BPNet, tangermeme): a
batch of ``N`` sequences of length ``L`` becomes a tensor ``(N, 4, L)`` whose channel ``c`` is 1
where the sequence has ``alphabet[c]`` (``"ACGT"`` by default) and 0 elsewhere,

    X[n, c, l] = 1  if  upper(s_n[l]) == alphabet[c]  else 0.

Lower-case letters (soft-masked repeats in reference genomes) are read as upper case. ``N`` and any
other character have no channel and become an all-zero column, which :func:`decode_one_hot` reads
back as ``"N"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["decode_one_hot", "one_hot_encode", "one_hot_encode_fasta", "read_fasta"]

PathLike = str | os.PathLike[str]


def _lookup_table(alphabet: str) -> np.ndarray:
    """A table from byte value to channel index, -1 for characters outside ``alphabet``."""
    if len(set(alphabet.upper())) != len(alphabet) or not alphabet.isascii() or not alphabet:
        raise ValueError(f"alphabet must be distinct ASCII characters (case-insensitive), got {alphabet!r}")
    table = np.full(256, -1, dtype=np.int64)
    for index, char in enumerate(alphabet):
        table[ord(char.upper())] = index
        table[ord(char.lower())] = index
    return table


def _check_equal_lengths(sequences: Sequence[str], labels: Sequence[str]) -> None:
    """Raise a ValueError naming the first sequence whose length differs from the first one's."""
    for label, sequence in zip(labels, sequences):
        if len(sequence) != len(sequences[0]):
            raise ValueError(
                f"sequences must all have the same length to be one-hot encoded together: {labels[0]} has "
                f"length {len(sequences[0])} but {label} has length {len(sequence)}"
            )


def one_hot_encode(
    sequences: str | Sequence[str], alphabet: str = "ACGT", dtype: torch.dtype = torch.float32
) -> Tensor:
    """One-hot encode DNA sequences as ``(N, len(alphabet), L)``.

    Parameters
    ----------
    sequences:
        One string (encoded as a batch of one) or a sequence of strings of equal length.
    alphabet:
        The characters of the channels, in order; ``"ACGT"`` by default. Matching ignores case.
    dtype:
        The dtype of the returned tensor.

    Returns
    -------
    Tensor
        ``X[n, c, l] = 1`` where ``sequences[n][l]`` is ``alphabet[c]`` (either case), else 0; characters
        outside the alphabet (``N``, IUPAC codes, gaps) give all-zero columns.

    Raises
    ------
    ValueError
        If the sequences differ in length (the message names the first that differs) or the alphabet
        repeats a character.
    """
    table = _lookup_table(alphabet)
    batch = [sequences] if isinstance(sequences, str) else list(sequences)
    if not batch:
        return torch.zeros(0, len(alphabet), 0, dtype=dtype)
    if not all(isinstance(s, str) for s in batch):
        raise TypeError("sequences must be a string or a sequence of strings")
    _check_equal_lengths(batch, [f"sequence {i}" for i in range(len(batch))])
    # Non-ASCII characters become '?', which is outside any ASCII alphabet and so an all-zero column.
    codes = np.frombuffer("".join(batch).encode("ascii", errors="replace"), dtype=np.uint8)
    indices = table[codes].reshape(len(batch), len(batch[0]))
    channels = np.arange(len(alphabet))[None, :, None]
    return torch.from_numpy(indices[:, None, :] == channels).to(dtype)


def decode_one_hot(X: Tensor | np.ndarray, alphabet: str = "ACGT") -> list[str]:
    """Turn a one-hot tensor ``(N, len(alphabet), L)`` or ``(len(alphabet), L)`` back into strings.

    The inverse of :func:`one_hot_encode` up to case and unknown characters: an all-zero column
    reads as ``"N"`` and every sequence comes back in upper case.

    Raises
    ------
    ValueError
        If a column is not one-hot (an entry other than 0 or 1, or more than one 1); the message
        names the first such sequence and position.
    """
    array = X.detach().cpu().numpy() if isinstance(X, Tensor) else np.asarray(X)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1] != len(alphabet):
        raise ValueError(f"expected a one-hot array (N, {len(alphabet)}, L), got shape {tuple(X.shape)}")
    bad = ~((array == 0) | (array == 1)).all(axis=1) | (array.sum(axis=1) > 1)
    if bad.any():
        n, position = np.argwhere(bad)[0]
        raise ValueError(f"column {position} of sequence {n} is not one-hot: {array[n, :, position].tolist()}")
    letters = np.frombuffer((alphabet.upper() + "N").encode("ascii"), dtype=np.uint8)
    indices = np.where(array.any(axis=1), array.argmax(axis=1), len(alphabet))
    return [row.tobytes().decode("ascii") for row in letters[indices]]


def read_fasta(path: PathLike) -> list[tuple[str, str]]:
    """Read the records of a FASTA file as ``(name, sequence)`` pairs, in file order.

    A record starts at a header line ``>name``; its ``name`` is the rest of that line, stripped of
    surrounding whitespace. The sequence is the concatenation of the following lines up to the next
    header, each stripped of surrounding whitespace, with case kept. Blank lines and ``;`` comment
    lines are skipped.

    Raises
    ------
    ValueError
        If sequence data comes before the first header (the message gives the line number).
    """
    records: list[tuple[str, list[str]]] = []
    with open(path, encoding="ascii", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith(">"):
                records.append((line[1:].strip(), []))
            elif not records:
                raise ValueError(f"{os.fspath(path)}, line {number}: sequence data before the first '>' header")
            else:
                records[-1][1].append(line)
    return [(name, "".join(parts)) for name, parts in records]


def one_hot_encode_fasta(path: PathLike, alphabet: str = "ACGT", dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encode every record of a FASTA file as ``(N, len(alphabet), L)``; see :func:`one_hot_encode`.

    Raises
    ------
    ValueError
        If the records differ in length (the message names the records) or the file is malformed.
    """
    records = read_fasta(path)
    sequences = [sequence for _, sequence in records]
    _check_equal_lengths(sequences, [f"record {name!r}" for name, _ in records])
    return one_hot_encode(sequences, alphabet=alphabet, dtype=dtype)
