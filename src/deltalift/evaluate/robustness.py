"""Infidelity and max-sensitivity of explanations (Yeh et al. 2019, *On the (In)fidelity and
Sensitivity of Explanations*, NeurIPS, sections 2 and 3).

Infidelity (their definition 2.1), for perturbations ``I`` drawn from ``mu_I``::

    INFD(Phi, f, x) = E_I[ (I . Phi(x) - (f(x) - f(x - I)))^2 ]

with ``I ~ N(0, sigma^2)`` per feature by default (Captum's ``infidelity`` convention: the
perturbed input is ``x - I``).  ``normalize=True`` first scales ``I . Phi`` by the least-squares
factor ``beta = E[I.Phi (f(x) - f(x-I))] / E[(I.Phi)^2]`` (as Captum's ``normalize``).

Max-sensitivity (their definition 3.1), estimated by Monte Carlo over the ``L_inf`` ball of
radius ``r`` (uniform draws, as Captum's ``sensitivity_max``)::

    SENS_max(Phi, f, x, r) = max_{|y - x|_inf <= r} ||Phi(y) - Phi(x)||_2 / ||Phi(x)||_2

(the division by ``||Phi(x)||`` as Captum; ``relative=False`` omits it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.evaluate.explainers import Explain, as_explainer, explain_checked, target_scores, target_tensor
from deltalift.random_state import RandomState, numpy_generator

Tensor = torch.Tensor

__all__ = ["infidelity", "max_sensitivity"]


def infidelity(
    model: nn.Module | Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Any,
    attributions: Tensor,
    n_perturb: int = 16,
    noise_std: float = 0.1,
    perturbations: Tensor | None = None,
    normalize: bool = False,
    random_state: RandomState = 0,
) -> np.ndarray:
    """Per example, Yeh et al.'s infidelity of ``attributions`` for ``target`` of ``model``.

    Parameters
    ----------
    perturbations:
        ``(K, N, ...)`` perturbations ``I`` to use instead of ``n_perturb`` Gaussian draws of
        standard deviation ``noise_std`` (seeded by ``random_state``).
    """
    if attributions.shape != inputs.shape:
        raise ValueError(f"attributions of shape {tuple(attributions.shape)} for inputs {tuple(inputs.shape)}")
    n = inputs.shape[0]
    targets = target_tensor(target, n, inputs.device)
    if perturbations is None:
        if n_perturb < 1 or noise_std <= 0:
            raise ValueError(f"n_perturb must be positive and noise_std above zero, got {n_perturb} and {noise_std}")
        draws = numpy_generator(random_state).normal(0.0, noise_std, size=(n_perturb, *inputs.shape))
        perturbations = torch.from_numpy(draws).to(inputs.dtype)
    if perturbations.ndim != inputs.ndim + 1 or perturbations.shape[1:] != inputs.shape:
        raise ValueError(f"perturbations must be (K, *inputs.shape), got {tuple(perturbations.shape)}")
    k = perturbations.shape[0]
    fx = target_scores(model, inputs, targets).double()
    perturbed = (inputs.unsqueeze(0) - perturbations).reshape(k * n, *inputs.shape[1:])
    fxi = target_scores(model, perturbed, targets.repeat(k)).double().reshape(k, n)
    explained = (perturbations.double() * attributions.double().unsqueeze(0)).reshape(k, n, -1).sum(2)
    differences = fx.unsqueeze(0) - fxi
    if normalize:
        numerator = (explained * differences).mean(0)
        denominator = (explained * explained).mean(0)
        beta = torch.where(denominator > 0, numerator / torch.where(denominator > 0, denominator, 1.0), 0.0)
        explained = explained * beta
    return ((explained - differences) ** 2).mean(0).cpu().numpy()


def max_sensitivity(
    model: nn.Module,
    inputs: Tensor,
    target: Any,
    explain: Explain | Any,
    radius: float = 0.02,
    n_samples: int = 10,
    perturbed_inputs: Tensor | None = None,
    relative: bool = True,
    random_state: RandomState = 0,
) -> np.ndarray:
    """Per example, the largest change of the explanation over ``n_samples`` points drawn
    uniformly from the ``L_inf`` ball of ``radius`` around it (or over ``perturbed_inputs``
    ``(K, N, ...)``), in the ``L_2`` norm, divided by ``||Phi(x)||`` when ``relative``."""
    explain = as_explainer(explain)
    n = inputs.shape[0]
    if perturbed_inputs is None:
        if n_samples < 1 or radius <= 0:
            raise ValueError(f"n_samples must be positive and radius above zero, got {n_samples} and {radius}")
        noise = numpy_generator(random_state).uniform(-radius, radius, size=(n_samples, *inputs.shape))
        perturbed_inputs = inputs.unsqueeze(0) + torch.from_numpy(noise).to(inputs.dtype)
    if perturbed_inputs.ndim != inputs.ndim + 1 or perturbed_inputs.shape[1:] != inputs.shape:
        raise ValueError(f"perturbed_inputs must be (K, *inputs.shape), got {tuple(perturbed_inputs.shape)}")
    k = perturbed_inputs.shape[0]
    base = explain_checked(explain, model, inputs, target).reshape(n, -1).double()
    targets = target_tensor(target, n, inputs.device)
    flat = perturbed_inputs.reshape(k * n, *inputs.shape[1:])
    after = explain_checked(explain, model, flat, targets.repeat(k)).reshape(k, n, -1).double()
    change = torch.linalg.vector_norm(after - base.unsqueeze(0), dim=2).max(0).values
    if relative:
        norm = torch.linalg.vector_norm(base, dim=1)
        change = change / torch.where(norm > 0, norm, 1.0)
    return change.cpu().numpy()
