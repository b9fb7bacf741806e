"""The log-odds erasure of Shrikumar, Greenside & Kundaje (2017), section 4.1.

To turn an example of class ``c_o`` into class ``c_t``, rank its features by
``S_diff = S(c_o) - S(c_t)`` (the attributions of the two classes' logits), erase (set to the
reference) the features with the highest ``S_diff`` that have ``S_diff > 0``, up to a budget
(the paper: 157 of MNIST's 784 pixels, 20 %), and measure the log-odds before and after::

    log-odds = log p(c_o) / p(c_t) = z_o - z_t       (z: the logits; softmax's normaliser cancels)
    change   = log-odds(x) - log-odds(x_erased)

A larger change means the scores found the features that tell ``c_o`` from ``c_t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deltalift.evaluate.explainers import Explain, as_explainer, explain_checked, target_tensor
from deltalift.evaluate.features import as_reference, feature_order, replace_features

Tensor = torch.Tensor

__all__ = ["ErasureResult", "erase_by_scores", "log_odds", "log_odds_erasure"]


@dataclass
class ErasureResult:
    """Per example: log-odds of ``c_o`` over ``c_t`` before and after erasing, their change
    (``before - after``), the number of features erased, and the erased inputs."""

    before: Tensor
    after: Tensor
    change: Tensor
    n_erased: Tensor
    erased: Tensor


def log_odds(logits: Tensor, original: Tensor, target: Tensor) -> Tensor:
    """``log p(c_o) / p(c_t) = z_o - z_t`` per example, from ``logits (N, C)`` (the softmax's input)."""
    if logits.ndim != 2:
        raise ValueError(f"log_odds needs logits (N, classes), got shape {tuple(logits.shape)}")
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, original] - logits[rows, target]


def erase_by_scores(
    inputs: Tensor, scores: Tensor, budget: int, reference: float | Tensor = 0.0, only_positive: bool = True
) -> tuple[Tensor, Tensor]:
    """Erase, per example, the ``budget`` features of highest ``scores`` (only those with a score
    above zero when ``only_positive``); return the erased inputs and the count erased per example."""
    if scores.shape != inputs.shape:
        raise ValueError(f"scores of shape {tuple(scores.shape)} for inputs {tuple(inputs.shape)}")
    d = inputs[0].numel()
    if not 0 <= budget <= d:
        raise ValueError(f"budget must be between 0 and the {d} features of an example, got {budget}")
    order = feature_order(scores)
    if only_positive:
        positive = (scores.reshape(scores.shape[0], -1) > 0).sum(1)
        count = positive.clamp(max=budget)
    else:
        count = torch.full((inputs.shape[0],), budget, dtype=torch.long)
    return replace_features(inputs, as_reference(reference, inputs), order, count), count


def log_odds_erasure(
    model: nn.Module | Callable[[Tensor], Tensor],
    inputs: Tensor,
    original: Any,
    target: Any,
    explain: Explain | Any = None,
    budget: int | float = 0.2,
    reference: float | Tensor = 0.0,
    only_positive: bool = True,
    s_diff: Tensor | None = None,
) -> ErasureResult:
    """The paper's log-odds erasure of ``inputs`` from class ``original`` towards class ``target``.

    Parameters
    ----------
    model:
        Returns logits ``(N, classes)``.
    inputs:
        Examples ``(N, ...)``.
    original, target:
        ``c_o`` and ``c_t``: an int or one class per example.
    explain:
        An explainer ``(model, inputs, target) -> attributions`` or a method class
        (:func:`~deltalift.evaluate.explainers.as_explainer`); not needed with ``s_diff``.
    budget:
        Features to erase at most: a count, or a fraction of an example's features (default
        0.2: the paper's 157 of 784 pixels).
    reference:
        What an erased feature is set to (the paper: 0, black).
    only_positive:
        Erase only features with ``S_diff > 0`` (the paper).
    s_diff:
        Precomputed ``S(c_o) - S(c_t)`` shaped like ``inputs``, used instead of calling ``explain``
        (e.g. when the attributions of every class are computed once for many class pairs).
    """
    if (explain is None) == (s_diff is None):
        raise TypeError("log_odds_erasure takes either explain or s_diff (precomputed S(c_o) - S(c_t)), not both")
    d = inputs[0].numel()
    if isinstance(budget, float):
        if not 0.0 <= budget <= 1.0:
            raise ValueError(f"a fractional budget must lie in [0, 1], got {budget}")
        count = int(round(budget * d))
    elif isinstance(budget, int) and not isinstance(budget, bool):
        count = budget
    else:
        raise TypeError(f"budget must be an int (features) or a float (fraction), got {type(budget).__name__}")
    n = inputs.shape[0]
    c_o, c_t = target_tensor(original, n, inputs.device), target_tensor(target, n, inputs.device)
    if bool((c_o == c_t).any()):
        raise ValueError("the original and the target class must differ for every example")
    if s_diff is None:
        explain = as_explainer(explain)
        s_diff = explain_checked(explain, model, inputs, c_o) - explain_checked(explain, model, inputs, c_t)  # type: ignore[arg-type]
    elif s_diff.shape != inputs.shape:
        raise ValueError(f"s_diff of shape {tuple(s_diff.shape)} for inputs {tuple(inputs.shape)}")
    erased, n_erased = erase_by_scores(inputs, s_diff, count, reference, only_positive)
    with torch.no_grad():
        before = log_odds(model(inputs), c_o, c_t)
        after = log_odds(model(erased), c_o, c_t)
    return ErasureResult(before, after, before - after, n_erased, erased)
