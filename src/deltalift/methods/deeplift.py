"""DeepLIFT (Shrikumar, Greenside & Kundaje, ICML 2017) with Captum's interface.

Contributions ``C(dx_i, dt) = m(dx_i, dt) * (x_i - x0_i)`` with multipliers composed backwards
through the rules of :mod:`deltalift.rules` (Linear, Rescale, the exact product split,
summation-preserving max pooling).  Summation-to-delta ``sum_i C(dx_i, dt) = t(x) - t(x0)`` is
checked for every example.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

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
from deltalift.layers import find_layer
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
    softmax_adjustment:
        Explain ``c_i - mean_j c_j`` instead of the output ``c_i`` (the seeds' adjustment for
        softmax outputs, applied to the logits): ``C'(dx, dc_i) = C(dx, dc_i) - 1/n sum_j
        C(dx, dc_j)``.  It equals explaining logits whose final weights and biases are
        mean-normalised across the ``n`` classes.
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
        softmax_adjustment: bool = False,
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
        self.softmax_adjustment = softmax_adjustment

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType | Callable[[Tensor], Tensor] = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable[..., tuple[Tensor, ...]] | None = None,
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
            An int, one int per example (list or tensor), ``None`` for a model with a single
            output per example, or a callable mapping the model's output to one value per
            example (it is captured with the model, so its own ops get exact rules too).
        additional_forward_args:
            Further arguments of the model, not explained (a value or a tuple).
        return_convergence_delta:
            Also return ``sum_i C_i - (t(x) - t(x0))`` per example.
        custom_attribution_func:
            As Captum: called with ``(multipliers,)``, ``(multipliers, inputs)`` or
            ``(multipliers, inputs, baselines)`` (tuples; chosen by the function's arity) and
            returning the attributions, e.g. hypothetical contributions.

        Returns
        -------
        Attributions shaped like ``inputs`` (a tuple when a tuple was given), and the per-example
        convergence delta when asked.
        """
        result, delta, given_tuple = self._attribute(
            inputs, baselines, target, additional_forward_args, custom_attribution_func
        )
        out: Attribution = result if given_tuple else result[0]
        return (out, delta) if return_convergence_delta else out

    def _attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType,
        target: Any,
        additional_forward_args: Any,
        custom_attribution_func: Callable[..., tuple[Tensor, ...]] | None,
        groups: int = 1,
    ) -> tuple[tuple[Tensor, ...], Tensor, bool]:
        """Attributions (a tuple), the per-example delta, and whether a tuple of inputs was given."""
        walk = self._walk(inputs, baselines, target, additional_forward_args, groups=groups)
        with torch.enable_grad():
            t, t0 = self._targets(walk.output, target, walk.batch)
            grads = torch.autograd.grad(t.sum(), [p.x for p in walk.pairs], allow_unused=True)
        multipliers = tuple(torch.zeros_like(p.x) if g is None else g.detach() for g, p in zip(grads, walk.pairs))
        differences = tuple(p.x.detach() - p.ref for p in walk.pairs)
        contributions = tuple(m * d for m, d in zip(multipliers, differences))
        delta = self._check_summation(contributions, t.detach(), t0.detach())
        result = self._combine(multipliers, contributions, walk.pairs, custom_attribution_func)
        return result, delta, walk.given_tuple

    def _walk(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType,
        target: Any,
        additional_forward_args: Any,
        layer: Any = None,
        layer_input: bool = False,
        stop_at_layer: bool = False,
        groups: int = 1,
    ) -> _Walk:
        """Check the arguments, capture the model and walk its graph for input and reference.

        With ``layer``, the layer's activation Pair is recorded (its input side made a fresh
        leaf, unless ``stop_at_layer``, in which case the walk ends there).  ``groups``: the
        inputs are repeated that many times in a row (DeepLIFT-SHAP's pairs)."""
        tensors, given_tuple = check_inputs(inputs)
        extra = as_tuple(additional_forward_args)
        module = _with_target(self._module, target)
        check_model(module, tensors)
        references, shared = check_baselines(baselines, tensors)
        batch = tensors[0].shape[0]
        program = capture(module, tensors + extra, batch)
        if shared and (not program.batch_dynamic or _has_batched_tensor(extra, batch)):
            references = tuple(r.expand_as(x) for r, x in zip(references, tensors))
        pairs = pair_inputs(tensors, references)
        ctx = RuleContext(
            eps=self.eps,
            maxpool_mode=self.maxpool_mode,
            registry=self.registry,
            input_groups=groups,
            batch_rows=batch,
        )
        plan = make_plan(program, len(tensors), self.rule, self.rule_overrides, ctx)
        walk = _Walk(pairs=pairs, given_tuple=given_tuple, batch=batch)
        tap = until = None
        if layer is not None:
            node = find_layer(program, module, _layer_in(module, layer), len(tensors), layer_input)
            if stop_at_layer:
                until = node
            else:
                tap = (node, walk.record_layer)
        with torch.enable_grad():
            result = run_graph(program, module, list(pairs) + list(extra), ctx, plan, tap=tap, until=until)
        walk.output = result if until is not None else _single_output(result)
        return walk

    def _targets(self, output: Any, target: Any, batch: int) -> tuple[Tensor, Tensor]:
        """``t(x)`` and ``t(x0)`` per example (a callable target is already part of the graph)."""
        if not isinstance(output, Pair) or not isinstance(output.x, Tensor):
            raise ValueError("the model's output does not depend on the explained inputs")
        selected = None if callable(target) and not isinstance(target, Tensor) else target
        reference = output.ref.expand_as(output.x)
        if self.softmax_adjustment:
            centred = Pair(output.x - output.x.mean(1, keepdim=True), reference - reference.mean(1, keepdim=True))
            output, reference = centred, centred.ref
        t = select_target(output.x, selected, batch)
        t0 = select_target(reference, selected, batch, "model output for the reference")
        _check_finite(t, t0)
        return t, t0

    def _combine(
        self,
        multipliers: tuple[Tensor, ...],
        contributions: tuple[Tensor, ...],
        pairs: list[Pair],
        custom: Callable[..., tuple[Tensor, ...]] | None,
    ) -> tuple[Tensor, ...]:
        if custom is None:
            return contributions if self._multiply_by_inputs else multipliers
        inputs = tuple(p.x.detach() for p in pairs)
        references = tuple(p.ref.expand_as(p.x) for p in pairs)
        arity = len(inspect.signature(custom).parameters)
        given = {1: (multipliers,), 2: (multipliers, inputs), 3: (multipliers, inputs, references)}
        if arity not in given:
            raise TypeError(f"custom_attribution_func must take 1, 2 or 3 arguments, it takes {arity}")
        result = custom(*given[arity])
        result = as_tuple(result)
        if len(result) != len(multipliers) or any(r.shape != m.shape for r, m in zip(result, multipliers)):
            raise ValueError("custom_attribution_func must return one tensor per input, shaped like it")
        return tuple(result)

    def _check_summation(self, contributions: tuple[Tensor, ...], t: Tensor, t0: Tensor, warn: bool = True) -> Tensor:
        total = torch.stack([c.flatten(1).sum(1) for c in contributions]).sum(0)
        magnitude = torch.stack([c.flatten(1).abs().sum(1) for c in contributions]).sum(0)
        delta = total - (t - t0)
        tolerance = self.tolerance if self.tolerance is not None else DEFAULT_TOLERANCE.get(t.dtype, 1e-4)
        scale = magnitude + t.abs() + t0.abs() + torch.finfo(t.dtype).tiny
        relative = delta.abs() / scale
        worst = int(relative.argmax())
        if warn and float(relative[worst]) > tolerance:
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


@dataclass
class _Walk:
    """One walk over the graph: the explained inputs, the output and a recorded layer."""

    pairs: list[Pair]
    given_tuple: bool
    batch: int
    output: Any = None
    layer: Pair | None = None

    def record_layer(self, value: Any) -> Any:
        if not isinstance(value, Pair) or not isinstance(value.x, Tensor) or not value.x.is_floating_point():
            raise ValueError("the chosen layer's activation is not one floating tensor that depends on the inputs")
        self.layer = Pair(value.x.detach().requires_grad_(True), value.ref)
        return self.layer


class _TargetModule(nn.Module):
    """``target_fn(model(*args))``: a callable target captured together with the model."""

    def __init__(self, model: nn.Module, target_fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.target_fn = target_fn

    def forward(self, *args: Any) -> Tensor:
        out = self.target_fn(self.model(*args))
        return out[:, None] if isinstance(out, Tensor) and out.ndim == 1 else out


_target_modules: weakref.WeakKeyDictionary[nn.Module, dict[Any, _TargetModule]] = weakref.WeakKeyDictionary()


def _with_target(module: nn.Module, target: Any) -> nn.Module:
    """The module to capture: the model, or the model followed by a callable target."""
    if not callable(target) or isinstance(target, Tensor):
        return module
    per_model = _target_modules.setdefault(module, {})
    if target not in per_model:
        per_model[target] = _TargetModule(module, target)
    return per_model[target]


def _layer_in(module: nn.Module, layer: Any) -> Any:
    """Module paths are relative to the user's model, also when a target wrapper is captured."""
    if isinstance(module, _TargetModule) and isinstance(layer, str):
        if f"model.{layer}" in dict(module.named_modules()):
            return f"model.{layer}"
    return layer


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
