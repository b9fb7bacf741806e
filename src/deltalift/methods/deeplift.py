"""DeepLIFT (Shrikumar, Greenside & Kundaje, ICML 2017) with Captum's interface.

Contributions ``C(dx_i, dt) = m(dx_i, dt) * (x_i - x0_i)`` with multipliers composed backwards
through the rules of :mod:`deltalift.rules` (Linear, Rescale, the exact product split,
summation-preserving max pooling).  Summation-to-delta ``sum_i C(dx_i, dt) = t(x) - t(x0)`` is
checked for every example.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from deltalift.engine import DeepLiftOptions, DeepLiftResult, deeplift
from deltalift.inputs import BaselineType, TargetType, TensorOrTuple
from deltalift.layers import LayerType
from deltalift.methods.base import AttributionMethod, Model, format_output
from deltalift.rules.registry import RuleRegistry, default_registry

Tensor = torch.Tensor


class DeepLift(AttributionMethod):
    """DeepLIFT attributions on any model that ``torch.export`` can capture.

    Parameters
    ----------
    model:
        An ``nn.Module`` (in eval mode) or a forward function.  It is never modified.
    multiply_by_inputs:
        ``True`` (default) returns contributions ``m * (x - x0)``; ``False`` returns the
        multipliers ``m`` (Captum's "local" attribution).
    eps:
        Where ``|x - x0| <= eps * max(|x|, |x0|)`` at a nonlinearity, its multiplier is the
        derivative at the reference instead of the secant ``dy / dx`` (default ``1e-7``: the
        original package's threshold for values of order one, relative to the values' scale so
        that networks with small activations stay exact).
    maxpool_mode:
        ``"summation"`` (default; keeps summation-to-delta) or ``"gradient"`` (the original
        package's option, routes to the input's arg-max like the gradient).
    strict:
        Raise :class:`~deltalift.errors.ConvergenceError` instead of warning when
        summation-to-delta fails beyond ``tolerance``.  (Contributions that cancel, their
        absolute sum far above the outputs, always warn with
        :class:`~deltalift.errors.IllConditionedWarning`.)
    tolerance:
        Tolerance of that check, relative to the output change ``|t(x) - t(x0)|`` (default per
        dtype: 1e-4 float32, 1e-6 float64), plus the rounding of the outputs themselves.
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
    backend:
        How the walk runs (:mod:`deltalift.fast_path`): ``"interpreter"`` (op by op), ``"traced"``
        (the whole call recorded once as one ATen program and replayed, with guards on the data's
        decisions), ``"compiled"`` (that program through ``torch.compile``), or ``"auto"``
        (default: the fastest measured for the device; ``DELTALIFT_BACKEND`` overrides it).  All
        give the interpreter's values.
    reuse_reference:
        Keep the reference side of a replayed call (the model's dense layers and convolutions at
        the references, and what the rules compute from them alone) for the next call while the
        references and the model's parameters, buffers and constants stay the same: explaining
        batch after batch against one baseline then costs little more than the input side
        (ViT-B/16 on the README's machine: 1.29x an input gradient instead of 1.44x).  A change
        to what the reference side reads is seen by storage, version counter and a fingerprint
        of the values (their bytes as words, and their sum), so writes through ``param.data``
        are seen too, all but a permutation of values within a tensor (or among tensors under
        64 KiB).  It is kept only where computing it takes longer than twice the fingerprint.
        The values are the same either way.  ``None`` (default): where every reference is shared
        by the batch (batch size one), so that what is kept is one example's values; ``True``
        also for per-example references (a batch of them kept); ``False``: never.
    """

    returns_convergence_delta = True

    def __init__(
        self,
        model: Model,
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
        backend: str = "auto",
        reuse_reference: bool | None = None,
    ) -> None:
        super().__init__(model, multiply_by_inputs)
        self.eps = eps
        self.maxpool_mode = maxpool_mode
        self.strict = strict
        self.tolerance = tolerance
        self.registry = registry or default_registry
        self.rule = rule
        self.rule_overrides = dict(rule_overrides or {})
        self.softmax_adjustment = softmax_adjustment
        self.backend = backend
        self.reuse_reference = reuse_reference
        self.options  # noqa: B018 (validates the options now rather than at the first call)

    @property
    def options(self) -> DeepLiftOptions:
        """The engine's options, as this object's attributes now say."""
        return DeepLiftOptions(
            eps=self.eps,
            maxpool_mode=self.maxpool_mode,
            registry=self.registry,
            rule=self.rule,
            rule_overrides=self.rule_overrides,
            softmax_adjustment=self.softmax_adjustment,
            strict=self.strict,
            tolerance=self.tolerance,
            backend=self.backend,
            reuse_reference=self.reuse_reference,
        )

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
        result = self._run(inputs, baselines, target, additional_forward_args)
        out = format_output(result.attributions(self.multiplies_by_inputs, custom_attribution_func), result.given_tuple)
        return (out, result.delta) if return_convergence_delta else out

    def _run(
        self,
        inputs: Any,
        baselines: Any,
        target: Any,
        additional_forward_args: Any,
        *,
        layer: LayerType | None = None,
        layer_input: bool = False,
        neuron: Callable[[Tensor], Tensor] | None = None,
        groups: int = 1,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> DeepLiftResult:
        """The engine's DeepLIFT call with this object's options."""
        return deeplift(
            self._module,
            inputs,
            baselines,
            target,
            additional_forward_args,
            self.options,
            layer=layer,
            layer_input=layer_input,
            neuron=neuron,
            groups=groups,
            grad_kwargs=grad_kwargs,
        )
