"""Deletion and insertion curves and their areas (AOPC).

Deletion (Samek et al. 2017, *Evaluating the visualization of what a deep neural network has
learned*, IEEE TNNLS; Petsiuk et al. 2018, RISE): replace features by the reference, most
relevant first (MoRF) or least relevant first (LeRF), and follow the target's score. Insertion:
start from the reference and put back the features, most relevant first.  With ``x^(k)`` the
input after ``k`` of ``L`` steps (Samek et al. 2017, eq. 12)::

    AOPC = 1 / (L + 1) * sum_{k=0..L} ( f(x^(0)) - f(x^(k)) )

and the area under the curve is the trapezoid rule over the fraction of features changed in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.evaluate.explainers import target_scores, target_tensor
from deltalift.evaluate.features import as_reference, feature_order, replace_features

Tensor = torch.Tensor

__all__ = ["PerturbationCurve", "aopc", "curve_area", "deletion_curve", "insertion_curve"]

Score = Callable[[Tensor], Tensor]


@dataclass
class PerturbationCurve:
    """``scores[n, k]``: example ``n``'s target score after changing ``counts[k]`` features
    (``fractions[k]`` of them); ``kind`` is ``"deletion"`` or ``"insertion"``, ``order`` ``"morf"`` or ``"lerf"``."""

    fractions: np.ndarray
    counts: np.ndarray
    scores: np.ndarray
    kind: str
    order: str

    def aopc(self) -> np.ndarray:
        """Per example, ``1/(L+1) sum_k (f(x^(0)) - f(x^(k)))`` (Samek et al. 2017, eq. 12)."""
        return aopc(self.scores)

    def area(self) -> np.ndarray:
        """Per example, the area under the curve over the fraction changed (trapezoid rule)."""
        return curve_area(self.fractions, self.scores)


def aopc(scores: np.ndarray) -> np.ndarray:
    """``1/(L+1) sum_{k=0..L} (s_0 - s_k)`` per row of ``scores (N, L+1)``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be (examples, steps + 1), got shape {scores.shape}")
    return np.mean(scores[:, :1] - scores, axis=1)


def curve_area(fractions: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The trapezoid area under each row of ``scores`` over ``fractions``."""
    fractions, scores = np.asarray(fractions, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != fractions.shape[0]:
        raise ValueError(f"scores {scores.shape} do not match {fractions.shape[0]} fractions")
    widths = np.diff(fractions)
    return np.sum(widths * (scores[:, 1:] + scores[:, :-1]) / 2.0, axis=1)


def _curve(
    kind: str,
    model: nn.Module | Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Any,
    attributions: Tensor,
    order: str,
    n_steps: int,
    reference: float | Tensor,
    score: Score | None,
    batch_size: int,
) -> PerturbationCurve:
    if attributions.shape != inputs.shape:
        raise ValueError(f"attributions of shape {tuple(attributions.shape)} for inputs {tuple(inputs.shape)}")
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' (most relevant first) or 'lerf' (least relevant first), got {order!r}")
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    n, d = inputs.shape[0], inputs[0].numel()
    targets = target_tensor(target, n, inputs.device)
    ranking = feature_order(attributions, descending=order == "morf")
    counts = np.unique(np.round(np.linspace(0, d, n_steps + 1)).astype(np.int64))
    ref = as_reference(reference, inputs)
    start, source = (inputs, ref) if kind == "deletion" else (ref, inputs)
    scores = np.empty((n, len(counts)))
    steps_per_batch = max(1, batch_size // max(n, 1))
    for first in range(0, len(counts), steps_per_batch):
        chunk = counts[first : first + steps_per_batch]
        batch = torch.cat(
            [replace_features(start, source, ranking, torch.full((n,), int(c), dtype=torch.long)) for c in chunk]
        )
        values = target_scores(model, batch, targets, score).reshape(len(chunk), n).double().cpu().numpy()
        scores[:, first : first + len(chunk)] = values.T
    return PerturbationCurve(counts / d, counts, scores, kind, order)


def deletion_curve(
    model: nn.Module | Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Any,
    attributions: Tensor,
    order: str = "morf",
    n_steps: int = 20,
    reference: float | Tensor = 0.0,
    score: Score | None = None,
    batch_size: int = 512,
) -> PerturbationCurve:
    """The target's score as features are replaced by ``reference`` in the order of ``attributions``.

    Parameters
    ----------
    model:
        Returns ``(N, classes)`` (or ``(N,)``).
    target:
        An int or one class per example.
    attributions:
        Shaped like ``inputs``; features are ranked per example.
    order:
        ``"morf"``: highest attribution first; ``"lerf"``: lowest first.
    n_steps:
        ``L``: the curve has ``L + 1`` points from 0 to all features (fewer if an example has
        fewer features than steps).
    score:
        Applied to the model's output before the target is read (e.g. ``lambda z: z.softmax(1)``).
    batch_size:
        Perturbed inputs per forward pass (about).
    """
    return _curve("deletion", model, inputs, target, attributions, order, n_steps, reference, score, batch_size)


def insertion_curve(
    model: nn.Module | Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Any,
    attributions: Tensor,
    order: str = "morf",
    n_steps: int = 20,
    reference: float | Tensor = 0.0,
    score: Score | None = None,
    batch_size: int = 512,
) -> PerturbationCurve:
    """The target's score as features are put back into the reference in the order of
    ``attributions``; arguments as :func:`deletion_curve`."""
    return _curve("insertion", model, inputs, target, attributions, order, n_steps, reference, score, batch_size)
