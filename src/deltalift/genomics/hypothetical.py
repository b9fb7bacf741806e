"""Hypothetical contributions of one-hot DNA: what each base would contribute if it were there.

With a one-hot input ``x = e_{b*}`` at position ``l``, DeepLIFT's contribution of the position is
``C[l] = sum_c m[c, l] (x[c, l] - x0[c, l])`` for multipliers ``m`` and reference ``x0``. The
*hypothetical* contribution of base ``b`` replaces ``x[:, l]`` by ``e_b`` while keeping the
multipliers (Shrikumar et al. 2018, TF-MoDISco, arXiv:1811.00416):

    hyp[b, l] = sum_c m[c, l] (e_b[c] - x0[c, l]) = m[b, l] - sum_c m[c, l] x0[c, l].

At the observed base it is the actual contribution, ``hyp[b*, l] = C[l]``, so
``(hyp * x).sum(channels)`` gives back DeepLIFT's per-position contributions; TF-MoDISco takes
``hyp`` and the one-hot sequence and does exactly that. The formula is the one of
``deeplift.util.get_hypothetical_contribs_func_onehot`` (kundajelab/deeplift) and of
``tangermeme.deep_lift_shap.hypothetical_attributions``, which loop over the bases; here it is the
closed form on the right. It is an estimate for the other bases, since the multipliers were
computed at the actual input.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hypothetical_contributions"]


def hypothetical_contributions(
    multipliers: tuple[Tensor, ...], inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """Hypothetical contributions ``hyp[:, b, l] = m[:, b, l] - sum_c m[:, c, l] x0[:, c, l]``.

    Meant as ``DeepLift(...).attribute(X, baselines=refs, custom_attribution_func=hypothetical_contributions)``
    (Captum's convention: one tensor per model input in each tuple). Every input is read as one-hot
    along dim 1, e.g. ``(N, 4, L)``; for a model with other, non-sequence inputs, wrap this in a
    function of three arguments that applies it to the sequence input only.

    Parameters
    ----------
    multipliers:
        DeepLIFT multipliers ``m = dC/d(x - x0)``, one tensor ``(N, 4, L)`` per input.
    inputs:
        The explained inputs ``x``; used only to check shapes, as the formula does not depend on them.
    baselines:
        The references ``x0``, broadcastable to the inputs.

    Returns
    -------
    tuple of Tensor
        ``hyp`` for each input, shaped like it. ``(hyp * x).sum(1)`` equals the per-position DeepLIFT
        contributions ``(m * (x - x0)).sum(1)`` wherever ``x`` is one-hot.
    """
    if not (isinstance(multipliers, tuple) and isinstance(inputs, tuple) and isinstance(baselines, tuple)):
        raise TypeError("multipliers, inputs and baselines must be tuples of tensors (Captum's convention)")
    if not len(multipliers) == len(inputs) == len(baselines):
        raise ValueError(
            f"got {len(multipliers)} multipliers, {len(inputs)} inputs and {len(baselines)} baselines; "
            "expected one of each per input"
        )
    result = []
    for m, x, x0 in zip(multipliers, inputs, baselines):
        if m.shape != x.shape or m.ndim < 2:
            raise ValueError(f"multipliers {tuple(m.shape)} must be shaped like the input {tuple(x.shape)}, (N, 4, L)")
        x0 = torch.broadcast_to(x0.to(m.dtype), m.shape)
        result.append(m - (m * x0).sum(dim=1, keepdim=True))
    return tuple(result)
