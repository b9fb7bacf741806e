"""Shuffled DNA references: dinucleotide shuffles and plain position shuffles of one-hot sequences.

DeepLIFT on DNA models explains a sequence against references that keep its composition but
destroy its motifs, usually about 20 dinucleotide shuffles per sequence, averaging the attributions
over them (Shrikumar et al. 2017; the ``deeplift`` and ``tangermeme`` packages).

Dinucleotide shuffle
--------------------
A sequence ``s_0 s_1 ... s_{L-1}`` is a walk along the edges ``s_j -> s_{j+1}`` of a multigraph
whose vertices are the letters. Every Eulerian path of that multigraph from ``s_0`` (one that uses
each edge once) spells a sequence with the same first letter, the same last letter and the same
count of every dinucleotide. Altschul & Erickson (1985) and Kandel et al. (1996) draw such a path
uniformly over all distinct sequences:

1. For every letter ``v`` other than the last letter ``s_{L-1}``, choose the edge that leaves ``v``
   last, such that these last-exit edges form a tree directed towards ``s_{L-1}`` (an
   arborescence), with probability proportional to the product of the edges' multiplicities. Here
   the tree is drawn with Wilson's algorithm (Wilson 1996, loop-erased random walks), which needs
   no rejection step.
2. Order the other edges leaving each letter uniformly at random, the chosen edge last.
3. Walk from ``s_0``, leaving each letter by its next unused edge. By the BEST theorem the walk
   uses every edge and ends at ``s_{L-1}``.

The ``deeplift`` (``deeplift/dinuc_shuffle.py``) and ``tangermeme``
(``tangermeme.ersatz.dinucleotide_shuffle``) shufflers do steps 2 and 3 but keep, in step 1, the
last-exit edges of the input sequence, so each shuffle keeps the input's last-exit tree and the
shuffles are not uniform over the sequences with the input's dinucleotide counts. Drawing the tree
makes them uniform; this is tested on short sequences by enumerating every such sequence.

The work is vectorised with numpy over all sequences and shuffles at once: the tree is drawn by
walkers that step together, the edge orders by one ``argsort`` of random keys, and the walk by one
loop over positions whose body acts on all ``N * n`` shuffles.

Unknown bases
-------------
An all-zero column (``N``) stays where it is. The shuffle is done separately within each maximal
run of non-N positions, keeping the first and the last base of each run. So every shuffle keeps
the positions of the N columns and the count of every dinucleotide of real bases exactly, and also
the count of every dinucleotide with an N (``xN`` and ``Nx`` pairs only occur at run ends, which
are kept). A padded sequence stays padded in the same place. (tangermeme's ``allow_N=True``
instead shuffles N as a fifth letter, which keeps the same counts but moves the N runs.)

Randomness
----------
``random_state`` is ``None`` (fresh entropy), an ``int`` seed (``numpy.random.default_rng(seed)``)
or a ``numpy.random.Generator``, which is used and advanced in place. The same seed and the same
batch give the same shuffles, on any device. A sequence's shuffles depend on the whole batch it is
shuffled with, not only on itself and the seed.

References
----------
Altschul SF, Erickson BW (1985). Significance of nucleotide sequence alignments: a method for random
sequence permutation that preserves dinucleotide and codon usage. Mol Biol Evol 2(6):526-538.
Kandel D, Matias Y, Unger R, Winkler P (1996). Shuffling biological sequences. Discrete Applied
Mathematics 71:171-185.
Wilson DB (1996). Generating random spanning trees more quickly than the cover time. STOC '96.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deltalift.random_state import RandomState, numpy_generator

__all__ = ["RandomState", "dinucleotide_shuffle", "shuffle"]


def _tokens(X: Tensor) -> tuple[np.ndarray, bool]:
    """The letter index of every column of one-hot ``X`` ((N, K, L) or (K, L)) as (N, L) int64.

    An all-zero column gets index ``K``. Also returns whether ``X`` was a single sequence."""
    if not isinstance(X, Tensor):
        raise TypeError(f"X must be a torch.Tensor, got {type(X).__name__}")
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be one-hot (N, 4, L) or (4, L), got shape {tuple(X.shape)}")
    single = X.ndim == 2
    array = X.detach().to("cpu", torch.float32).numpy()
    array = array[None] if single else array
    if not ((array == 0) | (array == 1)).all() or (array.sum(axis=1) > 1).any():
        raise ValueError("X must be one-hot along dim -2: entries 0 or 1, at most one 1 per column")
    return np.where(array.any(axis=1), array.argmax(axis=1), array.shape[1]), single


def _one_hot(tokens: np.ndarray, like: Tensor, single: bool) -> Tensor:
    """One-hot ``(N, n, K, L)`` (or ``(n, K, L)`` when ``single``) of ``tokens`` (N, n, L), as ``like``."""
    channels = like.shape[-2]
    codes = torch.from_numpy(np.ascontiguousarray(tokens)).to(like.device)
    out = (codes.unsqueeze(-2) == torch.arange(channels, device=like.device)[:, None]).to(like.dtype)
    return out[0] if single else out


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")


def dinucleotide_shuffle(X: Tensor, n: int = 20, random_state: RandomState = None) -> Tensor:
    """``n`` dinucleotide shuffles of each one-hot sequence, uniform over those with its dinucleotide counts.

    Each shuffle ``Y`` of a sequence ``X`` satisfies, for every pair of letters ``(a, b)``,

        #{j : Y[:, j] = e_a, Y[:, j+1] = e_b} = #{j : X[:, j] = e_a, X[:, j+1] = e_b},

    keeps the first and last letter, and is drawn uniformly from all sequences that do
    (Altschul & Erickson 1985); see the module docstring for the algorithm and its sources.

    Parameters
    ----------
    X:
        One-hot sequences ``(N, 4, L)``, or one sequence ``(4, L)``; any number of channels works.
        All-zero columns (N) stay in place and each run of real bases between them is shuffled on
        its own, keeping its first and last base.
    n:
        Shuffles per sequence.
    random_state:
        ``None``, an ``int`` seed, or a ``numpy.random.Generator`` (advanced in place).

    Returns
    -------
    Tensor
        ``(N, n, 4, L)`` (``(n, 4, L)`` for a single sequence), with the dtype and device of ``X``.
        A sequence whose dinucleotide counts allow only itself (e.g. ``L <= 2``, a homopolymer, or
        ``ACGT``) comes back unchanged.
    """
    _check_n(n)
    tokens, single = _tokens(X)
    rng = numpy_generator(random_state)
    return _one_hot(_dinucleotide_shuffle_tokens(tokens, X.shape[-2], n, rng), X, single)


def shuffle(X: Tensor, n: int = 20, random_state: RandomState = None) -> Tensor:
    """``n`` random permutations of the positions of each one-hot sequence.

    Each shuffle keeps the count of every letter (but not of dinucleotides); each is a uniform random
    permutation of the sequence's real-base positions, drawn independently per sequence and shuffle.
    All-zero columns (N) stay in place, as in :func:`dinucleotide_shuffle`.

    Parameters and returns are as for :func:`dinucleotide_shuffle`.
    """
    _check_n(n)
    tokens, single = _tokens(X)
    rng = numpy_generator(random_state)
    channels = X.shape[-2]
    real = tokens < channels
    keys = np.where(real, rng.random((n, *tokens.shape)), np.inf)
    # The real bases in random order, then the N columns; written back onto the real positions in
    # order, then the N positions (the N tokens are all equal, so their order does not matter).
    donors = np.take_along_axis(np.broadcast_to(tokens, keys.shape), np.argsort(keys, axis=-1), axis=-1)
    slots = np.broadcast_to(np.argsort(~real, axis=-1, kind="stable"), keys.shape)
    out = np.empty(keys.shape, dtype=np.int64)
    np.put_along_axis(out, slots, donors, axis=-1)
    return _one_hot(out.transpose(1, 0, 2), X, single)


def _dinucleotide_shuffle_tokens(tokens: np.ndarray, K: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform dinucleotide shuffles of each row of ``tokens`` (N, L), letters ``0..K-1``, ``K`` for N.

    Returns (N, n, L). Vertices of the graph are *groups* ``run * K + letter``: one letter within one
    run of real bases of one sequence, so that runs are shuffled independently. Edges are the
    positions ``j`` where ``tokens[j]`` and ``tokens[j+1]`` are both real; within a sequence they are
    stored in *slots* sorted by source group, so that group ``g``'s out-edges fill the slots
    ``start[g] .. start[g] + count[g] - 1``. Shuffles are *rows* ``row = shuffle * N + sequence``.
    """
    N, L = tokens.shape
    if N == 0 or n == 0 or L < 3:
        return np.repeat(tokens[:, None, :], n, axis=1)
    E, B = L - 1, N * n
    real = tokens < K
    edge = real[:, :-1] & real[:, 1:]
    starts_run = real & ~np.pad(real[:, :-1], ((0, 0), (1, 0)))
    ends_run = real & ~np.pad(real[:, 1:], ((0, 0), (0, 1)))
    run = np.where(real, np.cumsum(starts_run, axis=1) - 1, 0)
    G = (int(starts_run.sum(axis=1).max()) + 1) * K  # one spare run, for indices built from an N token

    # Slots: each sequence's edges sorted by source group (padding, key G, last).
    source = np.where(edge, run[:, :-1] * K + np.minimum(tokens[:, :-1], K - 1), G)
    order = np.argsort(source, axis=1, kind="stable")
    slot_group = np.take_along_axis(source, order, axis=1)
    slot_target = np.take_along_axis(tokens[:, 1:], order, axis=1)
    sequence_index = np.arange(N)[:, None]
    count = np.bincount((sequence_index * G + source)[edge], minlength=N * G).reshape(N, G)
    start = np.cumsum(count, axis=1) - count

    # Step 1: a random last-exit tree per run and shuffle (Wilson's algorithm). Vertices are flat
    # indices row * G + group; the tree holds each run's last letter and every group with no out-edge.
    in_tree = np.repeat((count == 0)[None], n, axis=0)
    end_sequence, end_position = np.nonzero(ends_run)
    in_tree[:, end_sequence, run[end_sequence, end_position] * K + tokens[end_sequence, end_position]] = True
    in_tree = in_tree.reshape(B * G)
    last_exit = np.full(B * G, -1, dtype=np.int64)
    vertices = np.arange(B * G).reshape(B, G // K, K)
    for letter in range(K):
        begin = vertices[..., letter].ravel()
        begin = begin[~in_tree[begin]]
        walkers = begin
        while walkers.size:  # random walks, each remembering the last edge it left a vertex by
            row, group = np.divmod(walkers, G)
            sequence = row % N
            slot = start[sequence, group] + (rng.random(walkers.size) * count[sequence, group]).astype(np.int64)
            last_exit[walkers] = slot
            walkers = walkers - group % K + slot_target[sequence, slot]
            walkers = walkers[~in_tree[walkers]]
        walkers = begin
        while walkers.size:  # add the loop-erased paths to the tree
            in_tree[walkers] = True
            row, group = np.divmod(walkers, G)
            walkers = walkers - group % K + slot_target[row % N, last_exit[walkers]]
            walkers = walkers[~in_tree[walkers]]

    # Step 2: a random order of each group's out-edges, its tree edge last: sort the slots by
    # 2 * group + u with u uniform in [0, 1) for ordinary edges and u = 1 for the tree edge.
    keys = rng.random((B, E))
    keys.reshape(n, N, E)[:] += np.where(slot_group < G, 2.0 * slot_group, np.inf)
    chosen = np.flatnonzero(last_exit >= 0)
    keys[chosen // G, last_exit[chosen]] = 2.0 * (chosen % G) + 1.0
    letter_type = np.int8 if K < 127 else np.int64
    successor = np.empty(B * E + 1, dtype=letter_type)  # a spare entry for pointers of groups with no edge
    successor[:-1].reshape(B, E)[:] = np.take_along_axis(
        np.tile(slot_target.astype(letter_type), (n, 1)), np.argsort(keys, axis=1), axis=1
    )
    successor[-1] = 0

    # Step 3: the walk. pointer[row * G + group] is the flat index of the group's next unused edge.
    pointer = (np.arange(B)[:, None] * E + np.tile(start, (n, 1))).ravel()
    row_base = (np.arange(B) * G).reshape(n, N)
    walk = np.empty((L, n, N), dtype=letter_type)
    current = np.repeat(tokens[None, :, 0], n, axis=0)
    walk[0] = current
    if real.all():
        for j in range(1, L):
            index = row_base + current
            at = pointer[index]
            current = successor[at]
            pointer[index] = at + 1
            walk[j] = current
    else:
        run_base, follows = (run * K).T, edge.T  # a position continues a run iff edge[j - 1]
        for j in range(1, L):
            index = row_base + run_base[j] + current
            at = pointer[index]
            current = np.where(follows[j - 1], successor[at], tokens[:, j])
            pointer[index] = at + follows[j - 1]
            walk[j] = current
    return walk.transpose(2, 1, 0)
