"""GradientSHAP (Lundberg & Lee, NeurIPS 2017, "A Unified Approach to Interpreting Model
Predictions"; Captum's ``GradientShap``): expected gradients x (input - baseline) over random
baselines from a set and random points on the path between them.

For an example ``x``, a set of references ``B`` and ``n`` samples ``j``, each drawing a reference
``b_j`` uniformly from ``B``, a point ``a_j ~ U(0, 1)`` on the path and Gaussian noise
``e_j ~ N(0, stdevs^2)``::

    x_j   = x + e_j
    phi(x) = 1/n sum_j (x_j - b_j) * dt/dx (b_j + a_j (x_j - b_j))

(the gradient alone with ``multiply_by_inputs=False``).  In expectation this is Integrated
Gradients averaged over the references (SHAP values of a linear model; expected gradients),
and ``sum_i phi_i ~ t(x) - E_b t(b)``.

The random draws are Captum's, in its order, so that the same seeds give the same result:
the reference rows with ``numpy.random.choice`` (for each input, in turn), the noise with
``torch.normal`` (for each input, in turn; with a float32 standard deviation, as Captum), then the
path points with ``numpy.random.uniform``.  Seed both ``numpy.random.seed`` and
``torch.manual_seed`` to reproduce a result.  As in Captum, each input tensor of a tuple draws
its own reference rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from numbers import Real
from typing import Any, Union

import numpy as np
import torch

from deltalift.inputs import TargetType, TensorOrTuple, as_tuple
from deltalift.methods.base import AttributionMethod, Model, format_output
from deltalift.methods.gradients import input_gradients, repeat_batch, repeat_target

Tensor = torch.Tensor
ReferenceDistribution = Union[Tensor, tuple[Union[Tensor, float, int], ...], Callable[..., Any]]


class GradientShap(AttributionMethod):
    """GradientSHAP (Lundberg & Lee 2017) with Captum's interface and random draws.

    ``phi(x) = E_{b ~ B, a ~ U(0,1), e ~ N(0, s^2)} [(x + e - b) * dt/dx (b + a (x + e - b))]``,
    estimated with ``n_samples`` samples per example.

    Parameters
    ----------
    forward_func:
        The model: an ``nn.Module`` or a forward function; gradients are taken on it as it is.
    multiply_by_inputs:
        ``True`` (default): multiply each sample's gradient by ``x + e - b``; ``False``: the
        gradients alone (Captum's "local" variant).
    """

    returns_convergence_delta = True

    def __init__(self, forward_func: Model, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func, multiply_by_inputs)

    @property
    def forward_func(self) -> Model:
        """The model (Captum's name)."""
        return self.model

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: ReferenceDistribution,
        n_samples: int = 5,
        stdevs: float | tuple[float, ...] = 0.0,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """GradientSHAP attributions of ``target`` of ``model(*inputs, *additional_forward_args)``.

        Parameters
        ----------
        inputs, target:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`.
        baselines:
            The reference distribution: per input, a tensor of references ``(K, ...)`` (or a
            number, used as it is), or a callable returning them, called with ``inputs`` (or
            with nothing, if it takes no argument).
        n_samples:
            Samples per example (default 5).
        stdevs:
            Standard deviation of the Gaussian noise added to the inputs, one for all inputs or
            one per input (default 0: no noise).
        additional_forward_args:
            Further arguments of the model; tensors whose first dimension is the batch are
            repeated for each sample.
        return_convergence_delta:
            Also return, per sample (example-major: row ``i * n_samples + j``),
            ``sum_i phi_ij - (t(x_j) - t(b_j))`` (with the multiplied attributions).

        Returns
        -------
        Attributions shaped like ``inputs`` (a tuple when a tuple was given), and the delta when asked.
        """
        tensors, given_tuple = self._format_inputs(inputs)
        distributions = _reference_distributions(baselines, inputs, tensors)
        _check_samples(n_samples)
        sigmas = _stdevs(stdevs, len(tensors))
        batch, rows = tensors[0].shape[0], tensors[0].shape[0] * n_samples
        # Captum's order of draws: reference rows (numpy), noise (torch), path points (numpy)
        references = tuple(
            b[torch.as_tensor(np.random.choice(b.shape[0], rows).tolist(), device=b.device)]
            if isinstance(b, Tensor)
            else b
            for b in distributions
        )
        noisy = tuple(_noisy(x, s, n_samples) for x, s in zip(tensors, sigmas))
        coefficient = torch.tensor(np.random.uniform(0.0, 1.0, rows), device=noisy[0].device, dtype=noisy[0].dtype)
        points = tuple(_on_path(x, b, coefficient) for x, b in zip(noisy, references))
        rows_target = repeat_target(target, batch, n_samples, interleave=True)
        rows_extra = repeat_batch(as_tuple(additional_forward_args), batch, n_samples, interleave=True)
        gradients, _ = input_gradients(self.model, points, rows_target, rows_extra)
        contributions = tuple(g * (x - b) for g, x, b in zip(gradients, noisy, references))
        per_row = contributions if self.multiplies_by_inputs else gradients
        means = tuple(a.reshape((batch, n_samples) + tuple(a.shape[1:])).mean(1) for a in per_row)
        result = format_output(means, given_tuple)
        if not return_convergence_delta:
            return result
        delta = self.compute_convergence_delta(contributions, _full(references, noisy), noisy, rows_target, rows_extra)
        return result, delta


def _reference_distributions(
    baselines: ReferenceDistribution, given: TensorOrTuple, inputs: tuple[Tensor, ...]
) -> tuple[Tensor | float, ...]:
    """Per input, its references ``(K, ...)`` in the input's dtype and device, or a number."""
    if callable(baselines) and not isinstance(baselines, Tensor):
        baselines = baselines() if not inspect.signature(baselines).parameters else baselines(given)
    sets = as_tuple(baselines)
    if len(sets) != len(inputs):
        raise ValueError(f"got {len(sets)} reference distributions for {len(inputs)} inputs")
    if not isinstance(sets[0], Tensor):
        raise TypeError("the reference distribution must be given as a tensor (K, ...) for the first input at least")
    formatted: list[Tensor | float] = []
    for i, (b, x) in enumerate(zip(sets, inputs)):
        if isinstance(b, Real) and not isinstance(b, bool):
            formatted.append(float(b))
            continue
        if not isinstance(b, Tensor):
            raise TypeError(f"baselines[{i}] must be a tensor of references (K, ...) or a number")
        if b.ndim != x.ndim or b.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"baselines[{i}] of shape {tuple(b.shape)} is not a set of references (K, "
                f"{', '.join(map(str, x.shape[1:]))}) for inputs[{i}] of shape {tuple(x.shape)}"
            )
        if b.shape[0] == 0:
            raise ValueError(f"baselines[{i}] holds no reference")
        b = b.to(dtype=x.dtype, device=x.device)
        if not torch.isfinite(b).all():
            raise ValueError(f"baselines[{i}] contains NaN or inf values")
        formatted.append(b)
    return tuple(formatted)


def _noisy(x: Tensor, sigma: float, n_samples: int) -> Tensor:
    """``n_samples`` copies of each example (example-major) plus ``N(0, sigma^2)`` noise, drawn as
    Captum's ``NoiseTunnel._add_noise_to_input`` draws it (also when ``sigma`` is 0)."""
    shape = (x.shape[0] * n_samples,) + tuple(x.shape[1:])
    noise = torch.normal(0, torch.tensor(sigma, device=x.device).repeat(shape))
    return x.repeat_interleave(n_samples, dim=0) + noise


def _on_path(x: Tensor, reference: Tensor | float, coefficient: Tensor) -> Tensor:
    """``a x + (1 - a) b`` per row, as Captum's ``_scale_input``."""
    a = coefficient.reshape((-1,) + (1,) * (x.ndim - 1))
    return a * x + (1.0 - a) * reference


def _full(references: tuple[Tensor | float, ...], like: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(b if isinstance(b, Tensor) else torch.full_like(x, b) for b, x in zip(references, like))


def _stdevs(stdevs: Any, n_inputs: int) -> tuple[float, ...]:
    values = tuple(stdevs) if isinstance(stdevs, (tuple, list)) else (stdevs,) * n_inputs
    if len(values) != n_inputs:
        raise ValueError(f"stdevs has {len(values)} values for {n_inputs} inputs")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real) or v < 0:
            raise ValueError(f"stdevs must be a non-negative number (or one per input), got {stdevs!r}")
    return tuple(float(v) for v in values)


def _check_samples(n_samples: Any) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
