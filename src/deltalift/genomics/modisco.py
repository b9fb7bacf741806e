"""Input files for TF-MoDISco (tfmodisco-lite's ``modisco motifs``).

``modisco motifs -s ohe.npz -a attr.npz -n 2000`` loads each file with ``np.load(path)['arr_0']``
when its name ends in ``.npz`` (``np.load(path)`` for ``.npy``), as arrays ``(N, 4, L)`` in ACGT
order: the one-hot sequences and the *hypothetical* contributions (see
:func:`deltalift.genomics.hypothetical_contributions`). It keeps a window of ``-w`` positions
(default 400) around the centre of the sequences, which must be at least that long, casts both to
float32 and transposes them to ``(N, L, 4)`` itself (source: ``modiscolite/cli.py`` and the
``modisco`` script of jmschrei/tfmodisco-lite). TF-MoDISco recovers the actual contributions as
``hyp * one_hot``.

So each file here holds one array, saved under numpy's default name ``arr_0`` by
``np.savez_compressed``, as float32 ``(N, 4, L)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_modisco_inputs", "save_modisco_inputs"]

PathLike = str | os.PathLike[str]


def _as_array(value: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = value.detach().to("cpu", torch.float32).numpy() if isinstance(value, Tensor) else np.asarray(value)
    if array.ndim != 3 or array.shape[1] != 4:
        raise ValueError(f"{what} must be shaped (N, 4, L), got {array.shape}")
    return array.astype(np.float32, copy=False)


def _check_pair(one_hot: np.ndarray, attributions: np.ndarray) -> None:
    if one_hot.shape != attributions.shape:
        raise ValueError(f"one-hot sequences {one_hot.shape} and attributions {attributions.shape} must match")
    if not ((one_hot == 0) | (one_hot == 1)).all() or (one_hot.sum(axis=1) > 1).any():
        raise ValueError("the sequences must be one-hot along dim 1: entries 0 or 1, at most one 1 per column")
    if not np.isfinite(attributions).all():
        raise ValueError("the attributions contain NaN or infinite values")


def _npz_path(path: PathLike) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        # np.savez would add '.npz', and modisco picks its loader from the suffix.
        raise ValueError(f"modisco input files must end in '.npz', got {str(path)!r}")
    return path


def save_modisco_inputs(
    one_hot: Tensor | np.ndarray, attributions: Tensor | np.ndarray, ohe_path: PathLike, attr_path: PathLike
) -> None:
    """Write ``ohe_path`` and ``attr_path`` for ``modisco motifs -s ohe_path -a attr_path``.

    Parameters
    ----------
    one_hot:
        The explained sequences, one-hot ``(N, 4, L)`` in ACGT order (all-zero columns allowed).
    attributions:
        Their hypothetical contributions ``(N, 4, L)``, e.g. DeepLIFT with
        ``custom_attribution_func=hypothetical_contributions`` averaged over shuffled references.
    ohe_path, attr_path:
        ``.npz`` files to write, each holding one float32 array under the key ``arr_0``.

    Raises
    ------
    ValueError
        If the shapes are not ``(N, 4, L)`` or differ, the sequences are not one-hot, the attributions
        are not finite, or a path does not end in ``.npz``.
    """
    sequences, scores = _as_array(one_hot, "one_hot"), _as_array(attributions, "attributions")
    _check_pair(sequences, scores)
    np.savez_compressed(_npz_path(ohe_path), sequences)
    np.savez_compressed(_npz_path(attr_path), scores)


def _load(path: PathLike) -> np.ndarray:
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return np.asarray(archive["arr_0"])
    return np.asarray(np.load(path))


def load_modisco_inputs(ohe_path: PathLike, attr_path: PathLike) -> tuple[Tensor, Tensor]:
    """Read modisco input files (``.npz`` with ``arr_0``, or ``.npy``) as float32 tensors ``(N, 4, L)``.

    Returns ``(one_hot, attributions)`` after the checks of :func:`save_modisco_inputs`.
    """
    sequences, scores = _as_array(_load(ohe_path), "one_hot"), _as_array(_load(attr_path), "attributions")
    _check_pair(sequences, scores)
    return torch.from_numpy(sequences.copy()), torch.from_numpy(scores.copy())
