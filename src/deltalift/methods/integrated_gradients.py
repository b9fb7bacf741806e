"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017, "Axiomatic Attribution for Deep
Networks"), with Captum's interface and integration rules.

For an input ``x``, a baseline ``x0`` and the straight path ``x(a) = x0 + a (x - x0)``::

    IG_i(x) = (x_i - x0_i) * int_0^1 dt/dx_i (x(a)) da
            ~ (x_i - x0_i) * sum_k w_k dt/dx_i (x(a_k))

Completeness, ``sum_i IG_i = t(x) - t(x0)``, holds for the integral; the convergence delta
measures how far the quadrature ``(a_k, w_k)`` is from it.  The quadratures are Captum's
(``captum.attr._utils.approximation_methods``):

==================  ==========================================  ==============================
method              nodes ``a_k`` (k = 0 .. n-1)                 weights ``w_k``
==================  ==========================================  ==============================
riemann_left        ``k / n``                                    ``1 / n``
riemann_right       ``(k + 1) / n``                              ``1 / n``
riemann_middle      ``(k + 1/2) / n``                            ``1 / n``
riemann_trapezoid   ``k / (n - 1)``                              ``1 / n``, halved at both ends
gausslegendre       ``(1 + xi_k) / 2``                           ``omega_k / 2``
==================  ==========================================  ==============================

with ``(xi_k, omega_k)`` the ``n``-point Gauss-Legendre nodes and weights on ``[-1, 1]``.  (The
trapezoid weights sum to ``1 - 1/n``, as Captum's.)  Nodes and weights are computed in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from deltalift.convergence import convergence_delta
from deltalift.inputs import BaselineType, TargetType, TensorOrTuple, as_tuple, check_baselines
from deltalift.methods.base import AttributionMethod, Model, format_output
from deltalift.methods.gradients import input_gradients, repeat_batch, repeat_target

Tensor = torch.Tensor
#: ``gradient_fn(scaled_inputs, target, additional_forward_args)`` -> gradients, one per output,
#: each ``(steps * batch, ...)``.
GradientFn = Callable[[tuple[Tensor, ...], TargetType, tuple[Any, ...]], tuple[Tensor, ...]]

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def approximation_parameters(method: str, n_steps: int) -> tuple[Tensor, Tensor]:
    """Step sizes ``w_k`` and nodes ``a_k`` (float64) of the quadrature ``method`` on ``[0, 1]``.

    The same values as Captum's ``approximation_parameters(method)`` (see the module docstring).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int):
        raise TypeError(f"n_steps must be an int, got {n_steps!r}")
    if method == "gausslegendre":
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1 for gausslegendre, got {n_steps}")
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return torch.from_numpy(0.5 * weights), torch.from_numpy(0.5 * (1.0 + nodes))
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2 for the Riemann methods, got {n_steps}")
    n = n_steps
    steps = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if method == "riemann_trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
        return steps, torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    first, last = {
        "riemann_left": (0.0, 1.0 - 1.0 / n),
        "riemann_right": (1.0 / n, 1.0),
        "riemann_middle": (1.0 / (2 * n), 1.0 - 1.0 / (2 * n)),
    }[method]
    return steps, torch.linspace(first, last, n, dtype=torch.float64)


def steps_per_chunk(internal_batch_size: int | None, batch: int, n_steps: int) -> int:
    """How many path steps to evaluate at once: all of them, or ``internal_batch_size // batch``
    (at least one, with a warning when ``internal_batch_size < batch``, as Captum)."""
    if internal_batch_size is None:
        return n_steps
    if isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int) or internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be a positive int or None, got {internal_batch_size!r}")
    if internal_batch_size < batch:
        warnings.warn(
            f"internal_batch_size {internal_batch_size} is less than the number of examples {batch}; "
            f"evaluating one path step ({batch} examples) at a time",
            stacklevel=4,
        )
    return max(1, internal_batch_size // batch)


def integrate_gradients(
    gradient_fn: GradientFn,
    inputs: tuple[Tensor, ...],
    references: tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: tuple[Any, ...],
    n_steps: int,
    method: str,
    internal_batch_size: int | None,
) -> tuple[Tensor, ...]:
    """``sum_k w_k g(x0 + a_k (x - x0))`` for each gradient ``g`` that ``gradient_fn`` returns.

    The scaled inputs of a chunk of ``s`` steps form one batch of ``s * batch`` rows, step-major
    (row ``j * batch + n`` is example ``n`` at the chunk's ``j``-th step), as Captum's.
    """
    steps, alphas = approximation_parameters(method, n_steps)
    batch = inputs[0].shape[0]
    chunk = steps_per_chunk(internal_batch_size, batch, n_steps)
    totals: list[Tensor] | None = None
    for start in range(0, n_steps, chunk):
        a, w = alphas[start : start + chunk], steps[start : start + chunk]
        scaled = tuple(_path_points(x, r, a) for x, r in zip(inputs, references))
        k = len(a)
        grads = gradient_fn(scaled, repeat_target(target, batch, k), repeat_batch(additional_forward_args, batch, k))
        weighted = [_weighted_sum(g, w, batch) for g in grads]
        totals = weighted if totals is None else [t + s for t, s in zip(totals, weighted)]
    assert totals is not None
    return tuple(totals)


def _path_points(x: Tensor, reference: Tensor, alphas: Tensor) -> Tensor:
    """``x0 + a_k (x - x0)`` for each ``a_k``, as ``(len(alphas) * batch, ...)`` (step-major)."""
    a = alphas.to(dtype=x.dtype, device=x.device).reshape((-1,) + (1,) * x.ndim)
    return (reference + a * (x - reference)).reshape((-1,) + tuple(x.shape[1:]))


def _weighted_sum(gradient: Tensor, step_sizes: Tensor, batch: int) -> Tensor:
    """``sum_k w_k g_k`` over the steps of a step-major ``(steps * batch, ...)`` gradient."""
    g = gradient.reshape((len(step_sizes), batch) + tuple(gradient.shape[1:]))
    w = step_sizes.to(dtype=g.dtype, device=g.device).reshape((-1,) + (1,) * (g.ndim - 1))
    return (w * g).sum(0)


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al. 2017), as Captum's ``IntegratedGradients``.

    ``IG_i = (x_i - x0_i) int_0^1 dt/dx_i(x0 + a (x - x0)) da``, approximated by the quadrature
    ``method`` with ``n_steps`` nodes (see the module docstring).

    Parameters
    ----------
    model:
        An ``nn.Module`` or a forward function; it is called as it is.
    multiply_by_inputs:
        ``True`` (default): the attributions above; ``False``: the path-averaged gradient
        ``int_0^1 dt/dx_i da`` alone (Captum's "local" variant).
    """

    returns_convergence_delta = True

    def __init__(self, model: Model, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, multiply_by_inputs)

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """Integrated gradients of ``target`` of ``model(*inputs, *additional_forward_args)``.

        Parameters
        ----------
        inputs, target:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`.
        baselines:
            As :meth:`DeepLift.attribute <deltalift.methods.deeplift.DeepLift.attribute>`.
        additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`; tensors
            whose first dimension is the batch are repeated along the path, anything else is passed
            as it is.
        n_steps:
            Number of quadrature nodes (default 50).
        method:
            ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``
            or ``"gausslegendre"`` (default).
        internal_batch_size:
            At most this many of the ``n_steps * batch`` scaled inputs per forward/backward pass
            (whole steps: ``internal_batch_size // batch`` steps at a time); ``None``: all at once.
        return_convergence_delta:
            Also return ``sum_i IG_i - (t(x) - t(x0))`` per example (with the multiplied
            attributions ``IG_i`` also when ``multiply_by_inputs=False``: the delta measures the
            quadrature's error either way).

        Returns
        -------
        Attributions shaped like ``inputs`` (a tuple when a tuple was given), and the delta when
        asked.
        """
        tensors, given_tuple = self._format_inputs(inputs)
        references, _ = check_baselines(baselines, tensors)
        extra = as_tuple(additional_forward_args)

        def gradients(scaled: tuple[Tensor, ...], tgt: TargetType, args: tuple[Any, ...]) -> tuple[Tensor, ...]:
            return input_gradients(self.model, scaled, tgt, args)[0]

        averaged = integrate_gradients(
            gradients, tensors, references, target, extra, n_steps, method, internal_batch_size
        )
        contributions = tuple(g * (x - r) for g, x, r in zip(averaged, tensors, references))
        result = format_output(contributions if self._multiply_by_inputs else averaged, given_tuple)
        if not return_convergence_delta:
            return result
        delta = convergence_delta(self.model, contributions, references, tensors, target, extra)
        return result, delta
