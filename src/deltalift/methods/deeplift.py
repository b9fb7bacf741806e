"""DeepLIFT (Shrikumar, Greenside & Kundaje, ICML 2017) with Captum's interface.

Contributions ``C(dx_i, dt) = m(dx_i, dt) * (x_i - x0_i)`` with multipliers composed backwards
through the rules of :mod:`deltalift.rules` (Linear, Rescale, the exact product split,
summation-preserving max pooling).  Summation-to-delta ``sum_i C(dx_i, dt) = t(x) - t(x0)`` is
checked for every example.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Union

import torch
from torch import nn

from deltalift.capture import as_module, capture
from deltalift.engine import RULE_CHOICES, make_plan, pair_inputs, run_graph
from deltalift.errors import ConvergenceError, ConvergenceWarning
from deltalift.inputs import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    as_tuple,
    check_baselines,
    check_inputs,
    check_model,
    select_target,
)
from deltalift.rules.registry import Pair, RuleContext, RuleRegistry, default_registry

Tensor = torch.Tensor
Attribution = Union[Tensor, tuple[Tensor, ...]]

#: Relative tolerance of the summation-to-delta check, per dtype, relative to
#: ``|t(x)| + |t(x0)| + sum_i |C_i|`` (the scale of the rounding error).
DEFAULT_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


class DeepLift:
    """DeepLIFT attributions on any model that ``torch.export`` can capture.

    Parameters
    ----------
    model:
        An ``nn.Module`` (in eval mode) or a forward function.  It is never modified.
    multiply_by_inputs:
        ``True`` (default) returns contributions ``m * (x - x0)``; ``False`` returns the
        multipliers ``m`` (Captum's "local" attribution).
    eps:
        Where ``|x - x0| <= eps`` at a nonlinearity, its multiplier is the derivative at the
        reference instead of the secant ``dy / dx`` (default ``1e-7``, as the original package).
    maxpool_mode:
        ``"summation"`` (default; keeps summation-to-delta) or ``"gradient"`` (the original
        package's option, routes to the input's arg-max like the gradient).
    strict:
        Raise :class:`~deltalift.errors.ConvergenceError` instead of warning when
        summation-to-delta fails beyond ``tolerance``.
    tolerance:
        Relative tolerance of that check (default per dtype: 1e-4 float32, 1e-6 float64).
    registry:
        Rules to use (default: the global registry, extended with ``register_rule``).
    rule:
        The rule of nonlinearities fed by a dense or convolution layer: ``"rescale"``
        (default), ``"reveal_cancel"``, or ``"genomics_default"`` (RevealCancel after dense
        layers, Rescale after convolutions, as the original package).  Nonlinearities in any
        other position always use Rescale.
    rule_overrides:
        ``{module path or graph node name: "rescale" | "reveal_cancel"}``; a module's entry
        applies to the nonlinearities inside it, and wins over ``rule``.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Tensor],
        multiply_by_inputs: bool = True,
        eps: float = 1e-7,
        *,
        maxpool_mode: str = "summation",
        strict: bool = False,
        tolerance: float | None = None,
        registry: RuleRegistry | None = None,
        rule: str = "rescale",
        rule_overrides: dict[str, str] | None = None,
    ) -> None:
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if maxpool_mode not in ("summation", "gradient"):
            raise ValueError(f"maxpool_mode must be 'summation' or 'gradient', got {maxpool_mode!r}")
        self.model = model
        self._module = as_module(model)
        self._multiply_by_inputs = multiply_by_inputs
        self.eps = eps
        self.maxpool_mode = maxpool_mode
        self.strict = strict
        self.tolerance = tolerance
        self.registry = registry or default_registry
        if rule not in RULE_CHOICES:
            raise ValueError(f"rule must be one of {RULE_CHOICES}, got {rule!r}")
        self.rule = rule
        self.rule_overrides = dict(rule_overrides or {})

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """Attribute ``target`` of ``model(*inputs, *additional_forward_args)`` to ``inputs``.

        Parameters
        ----------
        inputs:
            A tensor ``(batch, ...)`` or a tuple of them.
        baselines:
            References: ``None`` (zeros), a number, or a tensor per input that broadcasts to
            it: one reference for the whole batch (``(...)`` or ``(1, ...)``) or one per example.
        target:
            An int, one int per example (list or tensor), or ``None`` for a model with a
            single output per example.
        additional_forward_args:
            Further arguments of the model, not explained (a value or a tuple).
        return_convergence_delta:
            Also return ``sum_i C_i - (t(x) - t(x0))`` per example.

        Returns
        -------
        Attributions shaped like ``inputs`` (a tuple when a tuple was given), and the per-example
        convergence delta when asked.
        """
        tensors, given_tuple = check_inputs(inputs)
        extra = as_tuple(additional_forward_args)
        module = self._module
        check_model(module, tensors)
        references, shared = check_baselines(baselines, tensors)
        multipliers, contributions, delta = self._explain(module, tensors, references, shared, target, extra)
        result = contributions if self._multiply_by_inputs else multipliers
        out: Attribution = result if given_tuple else result[0]
        return (out, delta) if return_convergence_delta else out

    def _explain(
        self,
        module: nn.Module,
        inputs: tuple[Tensor, ...],
        references: tuple[Tensor, ...],
        shared: bool,
        target: TargetType,
        extra: tuple[Any, ...],
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], Tensor]:
        batch = inputs[0].shape[0]
        program = capture(module, inputs + extra, batch)
        if shared and (not program.batch_dynamic or _has_batched_tensor(extra, batch)):
            references = tuple(r.expand_as(x) for r, x in zip(references, inputs))
        pairs = pair_inputs(inputs, references)
        ctx = RuleContext(eps=self.eps, maxpool_mode=self.maxpool_mode, registry=self.registry)
        plan = make_plan(program, len(inputs), self.rule, self.rule_overrides, ctx)
        with torch.enable_grad():
            outputs = run_graph(program, module, list(pairs) + list(extra), ctx, plan)
            output = _single_output(outputs)
            t = select_target(output.x, target, batch)
            t0 = select_target(output.ref.expand_as(output.x), target, batch, "model output for the reference")
            _check_finite(t, t0)
            grads = torch.autograd.grad(t.sum(), [p.x for p in pairs], allow_unused=True)
        multipliers = tuple(
            torch.zeros_like(p.x) if g is None else g.detach() for g, p in zip(grads, pairs)
        )
        contributions = tuple(m * (p.x.detach() - p.ref) for m, p in zip(multipliers, pairs))
        delta = self._check_summation(contributions, t.detach(), t0.detach())
        return multipliers, contributions, delta

    def _check_summation(self, contributions: tuple[Tensor, ...], t: Tensor, t0: Tensor) -> Tensor:
        total = sum(c.flatten(1).sum(1) for c in contributions)
        magnitude = sum(c.flatten(1).abs().sum(1) for c in contributions)
        delta = total - (t - t0)
        tolerance = self.tolerance if self.tolerance is not None else DEFAULT_TOLERANCE.get(t.dtype, 1e-4)
        scale = magnitude + t.abs() + t0.abs() + torch.finfo(t.dtype).tiny
        relative = delta.abs() / scale
        worst = int(relative.argmax())
        if float(relative[worst]) > tolerance:
            message = (
                f"summation-to-delta fails for example {worst}: contributions sum to "
                f"{float(total[worst]):.6g} but t(x) - t(x0) = {float((t - t0)[worst]):.6g} "
                f"(relative error {float(relative[worst]):.2e} > tolerance {tolerance:.0e}). "
                "The model may contain an op whose registered rule is not exact."
            )
            if self.strict:
                raise ConvergenceError(message)
            warnings.warn(message, ConvergenceWarning, stacklevel=4)
        return delta

    def compute_convergence_delta(
        self,
        attributions: TensorOrTuple,
        start_point: BaselineType,
        end_point: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """Captum's check: ``sum(attributions) - (t(end_point) - t(start_point))`` per example."""
        ends, _ = check_inputs(end_point)
        starts, _ = check_baselines(start_point, ends)
        extra = as_tuple(additional_forward_args)
        batch = ends[0].shape[0]
        with torch.no_grad():
            t_end = select_target(self.model(*ends, *extra), target, batch)
            t_start = select_target(self.model(*(s.expand_as(e) for s, e in zip(starts, ends)), *extra), target, batch)
        total = sum(a.flatten(1).sum(1) for a in as_tuple(attributions))
        return total - (t_end - t_start)


def _single_output(outputs: list[Any]) -> Pair:
    if len(outputs) != 1:
        raise ValueError(f"the model returns {len(outputs)} tensors; deltalift explains a model with one output tensor")
    (output,) = outputs
    if not isinstance(output, Pair):
        raise ValueError("the model's output does not depend on the explained inputs")
    return output


def _has_batched_tensor(values: tuple[Any, ...], batch: int) -> bool:
    return any(isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch and batch > 1 for v in values)


def _check_finite(t: Tensor, t0: Tensor) -> None:
    if not torch.isfinite(t).all():
        raise FloatingPointError("the model's output for the inputs is NaN or inf")
    if not torch.isfinite(t0).all():
        raise FloatingPointError("the model's output for the reference is NaN or inf")
