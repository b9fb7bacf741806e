"""Localisation of attributions against a known ground truth (e.g. the positions of embedded motifs).

Per example, with the attribution ``a_i`` of each feature and ``g_i`` in {0, 1} the ground truth:

- AUROC: the probability that a random ground-truth feature scores above a random other one,
  ties counting one half (the Mann-Whitney U statistic over ``n_1 n_0``; Hanley & McNeil 1982);
- AUPRC: average precision, ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds
  from the highest down (scikit-learn's ``average_precision_score``);
- mass inside: ``sum_{g_i=1} |a_i| / sum_i |a_i|`` (or with ``max(a_i, 0)`` when ``positive_only``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deltalift.evaluate.statistics import rank

__all__ = ["LocalisationResult", "auprc", "auroc", "localisation", "mass_inside"]


def _pair(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    truth = np.asarray(truth).ravel()
    if scores.shape != truth.shape:
        raise ValueError(f"scores ({scores.size}) and ground truth ({truth.size}) differ in size")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("the ground truth must be 0/1 (or boolean)")
    if np.isnan(scores).any():
        raise ValueError("the scores hold NaN")
    return scores, truth.astype(bool)


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """The area under the ROC curve of ``scores`` for the 0/1 ``truth``; ``nan`` if one class is absent."""
    scores, truth = _pair(scores, truth)
    n1, n0 = int(truth.sum()), int((~truth).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rank(scores)
    return float((ranks[truth].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auprc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of ``scores`` for the 0/1 ``truth`` (ties as one threshold); ``nan`` without positives."""
    scores, truth = _pair(scores, truth)
    if truth.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], truth[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    true_positives = np.cumsum(t)[last_of_threshold]
    predicted = last_of_threshold + 1
    precision = true_positives / predicted
    recall = true_positives / truth.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mass_inside(scores: np.ndarray, truth: np.ndarray, positive_only: bool = False) -> float:
    """The share of attribution mass on the ground truth: ``sum_{g=1} |a| / sum |a|`` (``max(a, 0)``
    when ``positive_only``); ``nan`` when there is no mass."""
    scores, truth = _pair(scores, truth)
    mass = np.maximum(scores, 0.0) if positive_only else np.abs(scores)
    total = mass.sum()
    return float(mass[truth].sum() / total) if total > 0 else float("nan")


@dataclass
class LocalisationResult:
    """Per example: AUROC, AUPRC, the share of attribution mass inside the ground truth."""

    auroc: np.ndarray
    auprc: np.ndarray
    mass_inside: np.ndarray

    def summary(self) -> dict[str, float]:
        """The means over the examples (NaN entries, examples without ground truth, skipped)."""
        out = {}
        for key in ("auroc", "auprc", "mass_inside"):
            values = np.asarray(getattr(self, key), dtype=np.float64)
            finite = values[~np.isnan(values)]
            out[key] = float(finite.mean()) if finite.size else float("nan")
        return out


def localisation(
    attributions: torch.Tensor | np.ndarray, ground_truth: torch.Tensor | np.ndarray, positive_only: bool = False
) -> LocalisationResult:
    """AUROC, AUPRC and mass inside for each example of ``attributions (N, ...)`` against the 0/1
    ``ground_truth`` of the same shape (features flattened per example)."""
    a = attributions.detach().cpu().numpy() if isinstance(attributions, torch.Tensor) else np.asarray(attributions)
    g = ground_truth.detach().cpu().numpy() if isinstance(ground_truth, torch.Tensor) else np.asarray(ground_truth)
    if a.shape != g.shape:
        raise ValueError(f"attributions {a.shape} and ground truth {g.shape} differ in shape")
    a, g = a.reshape(a.shape[0], -1), g.reshape(g.shape[0], -1)
    return LocalisationResult(
        np.array([auroc(x, y) for x, y in zip(a, g)]),
        np.array([auprc(x, y) for x, y in zip(a, g)]),
        np.array([mass_inside(x, y, positive_only) for x, y in zip(a, g)]),
    )
