"""DeepLIFT-SHAP for DNA sequence models, in the field's conventions.

Each one-hot sequence ``(4, L)`` is explained against ``K`` references (by default ``K = 20``
dinucleotide-shuffled copies of itself) and the contributions are averaged:
``phi(x) = 1/K sum_k C(x - x0_k)`` (Shrikumar et al. 2017; Lundberg & Lee 2017).  With
``hypothetical=True`` it returns hypothetical contributions, the input TF-MoDISco wants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from deltalift.genomics.hypothetical import hypothetical_contributions
from deltalift.genomics.shuffle import RandomState, dinucleotide_shuffle
from deltalift.methods.deeplift_shap import DeepLiftShap

Tensor = torch.Tensor


def deep_lift_shap(
    model: nn.Module | Callable[..., Tensor],
    X: Tensor,
    target: Any = 0,
    references: Tensor | Callable[[Tensor], Tensor] | None = None,
    n_shuffles: int = 20,
    batch_size: int = 64,
    hypothetical: bool = False,
    random_state: RandomState = None,
    additional_forward_args: Any = None,
    return_convergence_delta: bool = False,
    show_progress: bool = False,
    **options: Any,
) -> Any:
    """DeepLIFT-SHAP contributions of one-hot sequences, ``(N, 4, L)``.

    Parameters
    ----------
    model:
        The sequence model (eval mode), taking ``(N, 4, L)``.
    X:
        One-hot sequences ``(N, 4, L)``, ACGT order.
    target:
        Output index (int, one per sequence, or a callable of the output), as ``DeepLift``.
    references:
        ``None``: ``n_shuffles`` dinucleotide shuffles of each sequence (seeded by
        ``random_state``); a tensor ``(N, K, 4, L)``; or a callable ``X -> (N, K, 4, L)``.
    batch_size:
        (sequence, reference) pairs evaluated at once; the result does not depend on it.
    hypothetical:
        Return hypothetical contributions (what each base would contribute at each position)
        instead of actual ones; ``(hyp * X).sum(1)`` equals the actual contributions per position.
    options:
        Any option of :class:`~deltalift.DeepLift` (``rule="genomics_default"``, ``eps``, ...).

    Returns
    -------
    ``(N, 4, L)`` contributions, and the per-pair convergence delta ``(N * K,)`` when asked.
    """
    if not isinstance(X, Tensor) or X.ndim != 3 or X.shape[1] != 4:
        shape = tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__
        raise ValueError(f"X must be one-hot sequences of shape (N, 4, L), got {shape}")
    if references is None:
        refs = dinucleotide_shuffle(X, n=n_shuffles, random_state=random_state)
    elif callable(references):
        refs = references(X)
    else:
        refs = references
    if not isinstance(refs, Tensor) or refs.ndim != 4 or refs.shape[0] != X.shape[0] or refs.shape[2:] != X.shape[1:]:
        shape = tuple(refs.shape) if isinstance(refs, Tensor) else type(refs).__name__
        raise ValueError(f"references must have shape (N, K, 4, L) = ({X.shape[0]}, K, 4, {X.shape[2]}), got {shape}")
    explainer = DeepLiftShap(model, batch_size=batch_size, show_progress=show_progress, **options)
    return explainer.attribute(
        X,
        refs.to(X.dtype),
        target=target,
        additional_forward_args=additional_forward_args,
        return_convergence_delta=return_convergence_delta,
        custom_attribution_func=hypothetical_contributions if hypothetical else None,
    )
