"""Shared test helpers."""

from __future__ import annotations

import torch


def relative_delta(delta: torch.Tensor, attributions: torch.Tensor, t: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
    """``|delta| / (|t| + |t0| + sum|C|)``: the convergence delta relative to the rounding scale."""
    scale = attributions.flatten(1).abs().sum(1) + t.abs() + t0.abs() + 1e-30
    return delta.abs() / scale
