"""References (baselines) for DNA sequence models: a background composition, and shuffles of each sequence.

DeepLIFT explains ``t(x) - t(x0)`` against a reference ``x0`` that lacks what is looked for. For
one-hot DNA ``(N, 4, L)`` in ACGT order the DeepLIFT paper used the expected frequencies of the
letters in the background at every position (Shrikumar, Greenside & Kundaje 2017, section 3.3
"Defining the reference" and section 4.2); current practice explains each sequence against about
20 dinucleotide shuffles of itself, which keep its composition but destroy its motifs, and averages
(DeepLIFT-SHAP, Lundberg & Lee 2017; the ``deeplift`` and ``tangermeme`` packages).

- :func:`background_frequencies`: ``(1, 4, L)``, one reference shared by the batch, for ``DeepLift``.
- :func:`shuffled`, :func:`dinucleotide_shuffled`: ``(N, n, K, L)``, ``n`` references per sequence,
  for ``DeepLiftShap`` (or ``references=`` of :func:`deltalift.genomics.deep_lift_shap`).

They follow the conventions of :mod:`deltalift.references` (detached results with the dtype and
device of ``x``; ``random_state`` as in :mod:`deltalift.random_state`), and check their arguments
as those do. The shuffles are thin wrappers over :mod:`deltalift.genomics.shuffle`, which holds the
algorithms. A function with its options bound is a valid callable ``baselines`` for
``DeepLiftShap``, e.g. ``baselines=functools.partial(dinucleotide_shuffled, n=20, random_state=0)``.
General-purpose references (zeros, constants, dataset means and samples, blur, noise) are in
:mod:`deltalift.references`; for per-position frequencies of a set of sequences, use
:func:`deltalift.references.dataset_mean` of their one-hot encoding.

References
----------
Shrikumar A, Greenside P, Kundaje A (2017). Learning Important Features Through Propagating
Activation Differences. ICML.
Lundberg SM, Lee S-I (2017). A Unified Approach to Interpreting Model Predictions. NeurIPS.
Altschul SF, Erickson BW (1985). Significance of nucleotide sequence alignments. Mol Biol Evol 2(6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from deltalift.genomics.shuffle import dinucleotide_shuffle, shuffle
from deltalift.random_state import RandomState
from deltalift.references import _check_batch, _check_count

__all__ = ["background_frequencies", "dinucleotide_shuffled", "shuffled"]

#: How far the frequencies given to :func:`background_frequencies` may sum from 1.
FREQUENCY_TOLERANCE = 1e-6


def background_frequencies(x: Tensor, frequencies: Sequence[float] | Tensor = (0.3, 0.2, 0.2, 0.3)) -> Tensor:
    """The expected one-hot column of a DNA background at every position, shared by the batch.

    ``x0[0, b, j] = frequencies[b]`` for every letter ``b`` in ACGT order and position ``j``: the
    reference of the DeepLIFT paper's genomics experiments, whose background had the frequencies
    ``(0.3, 0.2, 0.2, 0.3)`` (Shrikumar et al. 2017, section 4.2). For the per-position frequencies
    of a set of sequences, use :func:`deltalift.references.dataset_mean` of their one-hot encoding
    instead.

    Parameters
    ----------
    x:
        One-hot sequences ``(N, 4, L)``; only their length, dtype and device are used.
    frequencies:
        Four non-negative numbers, of A, C, G, T, summing to 1 (within ``1e-6``).

    Returns
    -------
    Tensor
        ``(1, 4, L)``.
    """
    _check_sequences(x, letters=4)
    values = torch.as_tensor(frequencies, dtype=torch.float64).detach().cpu()
    if values.shape != (4,):
        raise ValueError(f"frequencies must be 4 numbers (A, C, G, T), got shape {tuple(values.shape)}")
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"frequencies must be finite and non-negative, got {values.tolist()}")
    if abs(float(values.sum()) - 1.0) > FREQUENCY_TOLERANCE:
        raise ValueError(f"frequencies must sum to 1, got {values.tolist()} summing to {float(values.sum())!r}")
    column = values.to(dtype=x.dtype, device=x.device)
    return column[None, :, None].repeat(1, 1, x.shape[-1])


def shuffled(x: Tensor, n: int = 20, random_state: RandomState = None) -> Tensor:
    """``n`` random permutations of the positions of each one-hot sequence, keeping its letter counts.

    A thin wrapper over :func:`deltalift.genomics.shuffle.shuffle` (all-zero N columns stay in
    place) that also checks the arguments as the other reference generators do.

    Parameters
    ----------
    x:
        One-hot sequences ``(N, K, L)`` (``K = 4`` for DNA in ACGT order).
    n:
        Shuffles per sequence (``>= 1``).
    random_state:
        ``None``, an ``int`` seed, or a ``numpy.random.Generator``.

    Returns
    -------
    Tensor
        ``(N, n, K, L)``, with the dtype and device of ``x``.
    """
    return _shuffles(shuffle, x, n, random_state)


def _shuffles(
    shuffler: Callable[[Tensor, int, RandomState], Tensor], x: Tensor, n: int, random_state: RandomState
) -> Tensor:
    """``shuffler(x, n, random_state)`` once the arguments are checked."""
    _check_sequences(x)
    _check_count(n)
    return shuffler(x.detach(), n, random_state)


def dinucleotide_shuffled(x: Tensor, n: int = 20, random_state: RandomState = None) -> Tensor:
    """``n`` dinucleotide shuffles of each one-hot sequence: the standard references for DNA models.

    Each shuffle keeps the sequence's count of every dinucleotide and its first and last letter, and
    is uniform over the sequences that do (Altschul & Erickson 1985); averaging DeepLIFT over about
    20 of them is the usual practice (the ``deeplift`` and ``tangermeme`` packages). A thin wrapper
    over :func:`deltalift.genomics.shuffle.dinucleotide_shuffle`, whose module docstring gives the
    algorithm, that also checks the arguments as the other reference generators do.

    Parameters
    ----------
    x, n, random_state:
        As :func:`shuffled`.

    Returns
    -------
    Tensor
        As :func:`shuffled`: ``(N, n, K, L)``, with the dtype and device of ``x``.
    """
    return _shuffles(dinucleotide_shuffle, x, n, random_state)


def _check_sequences(x: Any, letters: int | None = None) -> None:
    """``x`` must be a tensor ``(N, K, L)`` (``(N, letters, L)`` when ``letters`` is given)."""
    _check_batch(x, "x")
    if x.ndim != 3 or (letters is not None and x.shape[1] != letters):
        expected = f"(N, {letters}, L)" if letters is not None else "(N, K, L)"
        raise ValueError(f"x must be one-hot sequences {expected}, got shape {tuple(x.shape)}")
