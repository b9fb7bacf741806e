"""SENN's training losses (Alvarez-Melis & Jaakkola, NeurIPS 2018, sections 3 and 4).

The robustness loss asks the model to be locally linear in its concepts, with the relevances
as coefficients: for ``f(x) = g(theta(x), h(x))`` with ``C`` outputs, ``k`` concepts and ``D``
input features (section 3, eq. 3 and the loss ``L_theta`` after it)::

    L_theta(x) = || J_x f(x) - theta(x)^T J_x h(x) ||_F

with ``J_x f`` the ``C x D`` Jacobian of the outputs (logits), ``J_x h`` the ``k x D`` Jacobian of
the concepts, ``theta(x)^T`` the ``C x k`` relevances.  It vanishes exactly when ``theta`` does
not vary where it matters (for the additive aggregator ``J_x f = theta^T J_x h + sum_i h_i
J_x theta_{i,:}``).  The Jacobians are taken by autograd, one backward pass per output and per
concept, with ``create_graph=True`` so that the loss can be trained; for the identity
conceptizer ``J_x h = I`` is used directly.

The full objective (section 4) is ``L_y(f(x), y) + lambda L_theta + xi L_h`` with the
classification loss ``L_y`` (cross-entropy), and for an autoencoder conceptizer the
reconstruction loss ``L_h = ||x - decode(h(x))||^2`` (mean per feature) plus a sparsity penalty
``zeta mean |h(x)|`` on the concepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deltalift.senn.model import SENN, IdentityConceptizer

Tensor = torch.Tensor

__all__ = ["SENNLoss", "robustness_loss", "senn_loss"]


def _jacobian(outputs: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """``d outputs[n, j] / d x[n]`` for every example: ``(N, J, D)`` (examples are independent)."""
    rows = []
    for j in range(outputs.shape[1]):
        (g,) = torch.autograd.grad(outputs[:, j].sum(), x, create_graph=create_graph, retain_graph=True)
        rows.append(g.flatten(1))
    return torch.stack(rows, 1)


def robustness_loss(model: SENN, x: Tensor, create_graph: bool = True, reduction: str = "mean") -> Tensor:
    """``|| J_x f(x) - theta(x)^T J_x h(x) ||_F`` per example, averaged (``reduction="mean"``) or
    not (``"none"``: ``(N,)``).

    Parameters
    ----------
    model:
        The SENN.
    x:
        Inputs ``(N, ...)``, floating point.
    create_graph:
        Keep the graph so the loss can be differentiated (training); ``False`` for evaluation.
    reduction:
        ``"mean"`` or ``"none"``.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if not x.is_floating_point():
        raise TypeError(f"the inputs must be floating point, got {x.dtype}")
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        explanation = model.explain(leaf)
        jf = _jacobian(explanation.logits, leaf, create_graph)  # (N, C, D)
        relevances = explanation.relevances  # (N, k, C)
        if isinstance(model.conceptizer, IdentityConceptizer):
            linear = relevances.transpose(1, 2)  # theta^T I
        else:
            jh = _jacobian(explanation.concepts, leaf, create_graph)  # (N, k, D)
            linear = torch.einsum("nkc,nkd->ncd", relevances, jh)
        per_example = (jf - linear).flatten(1).norm(dim=1)
    if not create_graph:
        per_example = per_example.detach()
    return per_example.mean() if reduction == "mean" else per_example


@dataclass
class SENNLoss:
    """The terms of SENN's objective for one batch (``total`` is what is minimised)."""

    total: Tensor
    classification: Tensor
    robustness: Tensor
    reconstruction: Tensor
    sparsity: Tensor


def senn_loss(
    model: SENN,
    x: Tensor,
    y: Tensor,
    robustness_weight: float = 0.1,
    reconstruction_weight: float = 1.0,
    sparsity_weight: float = 1e-4,
) -> SENNLoss:
    """``CE(f(x), y) + lambda L_theta + xi L_h + zeta mean|h|`` (section 4); the reconstruction and
    sparsity terms are zero for a conceptizer without ``decode`` or for the identity."""
    for name, w in (("robustness", robustness_weight), ("reconstruction", reconstruction_weight)):
        if w < 0:
            raise ValueError(f"the {name} weight must be >= 0, got {w}")
    if sparsity_weight < 0:
        raise ValueError(f"the sparsity weight must be >= 0, got {sparsity_weight}")
    explanation = model.explain(x)
    classification = F.cross_entropy(explanation.logits, y)
    zero = explanation.logits.new_zeros(())
    robustness = robustness_loss(model, x) if robustness_weight > 0 else zero
    reconstruction, sparsity = zero, zero
    decode = getattr(model.conceptizer, "decode", None)
    if decode is not None and not isinstance(model.conceptizer, IdentityConceptizer):
        reconstruction = F.mse_loss(decode(explanation.concepts), x)
        sparsity = explanation.concepts.abs().mean()
    total = (
        classification
        + robustness_weight * robustness
        + reconstruction_weight * reconstruction
        + sparsity_weight * sparsity
    )
    return SENNLoss(total, classification, robustness, reconstruction, sparsity)
