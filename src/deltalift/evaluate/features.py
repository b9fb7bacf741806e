"""Flattening, ranking and erasing features, shared by the erasure, deletion and insertion metrics."""

from __future__ import annotations

import torch

Tensor = torch.Tensor

__all__ = ["as_reference", "feature_order", "replace_features"]


def as_reference(reference: float | Tensor, inputs: Tensor) -> Tensor:
    """The reference as a tensor shaped like ``inputs``: a number, one example ``inputs.shape[1:]``,
    or one per example ``inputs.shape``."""
    if isinstance(reference, int | float):
        return torch.full_like(inputs, float(reference))
    if not isinstance(reference, Tensor):
        raise TypeError(f"reference must be a number or a tensor, got {type(reference).__name__}")
    reference = reference.to(dtype=inputs.dtype, device=inputs.device)
    if reference.shape == inputs.shape:
        return reference
    if reference.shape == inputs.shape[1:]:
        return reference.expand_as(inputs).clone()
    raise ValueError(
        f"reference of shape {tuple(reference.shape)} fits neither the inputs {tuple(inputs.shape)} nor one example"
    )


def feature_order(scores: Tensor, descending: bool = True) -> Tensor:
    """Per example, the flat feature indices sorted by ``scores`` (``(N, ...)``), highest first when
    ``descending``; ties keep the features' order (a stable sort)."""
    flat = scores.detach().reshape(scores.shape[0], -1).double()
    if torch.isnan(flat).any():
        raise ValueError("the attributions hold NaN; features cannot be ranked")
    return torch.sort(-flat if descending else flat, dim=1, stable=True).indices


def replace_features(inputs: Tensor, source: Tensor, index: Tensor, count: Tensor) -> Tensor:
    """``inputs`` with, per example ``n``, the features ``index[n, :count[n]]`` taken from ``source``."""
    n, d = inputs.shape[0], inputs[0].numel()
    chosen = torch.arange(d, device=inputs.device).expand(n, d) < count.reshape(n, 1).to(inputs.device)
    mask = torch.zeros(n, d, dtype=torch.bool, device=inputs.device)
    mask.scatter_(1, index.to(inputs.device), chosen)
    mask = mask.reshape(inputs.shape)
    return torch.where(mask, source, inputs)
