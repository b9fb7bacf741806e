"""Layer attributions with Captum's interfaces: ``LayerActivation``, ``LayerGradientXActivation``
and ``LayerIntegratedGradients``.

For a layer activation ``z(x)`` (output or, with ``attribute_to_layer_input``, input of the layer)
and target ``t``:

* ``LayerActivation``: ``z(x)`` itself.
* ``LayerGradientXActivation`` (gradient x input at a layer; Shrikumar et al. 2016, "Not Just a
  Black Box"): ``z_j(x) * dt/dz_j (x)``, or the gradient alone with ``multiply_by_inputs=False``.
* ``LayerIntegratedGradients`` (Integrated Gradients, Sundararajan, Taly & Yan, ICML 2017, at a
  layer; Captum's semantics): the layer's activation is interpolated between its value for the
  baselines and for the inputs, ``z(a) = z(x0) + a (z(x) - z(x0))``, the rest of the network runs
  from ``z(a)``, and::

      LIG_j(x) = (z_j(x) - z_j(x0)) * int_0^1 dt/dz_j (z(a)) da
               ~ (z_j(x) - z_j(x0)) * sum_k w_k dt/dz_j (z(a_k))

  with the quadrature ``(a_k, w_k)`` of :mod:`deltalift.methods.integrated_gradients`.  The
  integral is over the layer's activations, not over the inputs, so the inputs may be integer
  token ids: the usual way to explain a text model is ``LayerIntegratedGradients(model,
  model.embedding)``, the layer's output being float.  Completeness holds for the layer when
  every path from the inputs to the output runs through it, ``sum_j LIG_j = t(x) - t(x0)`` up to
  the quadrature's error (the convergence delta).

The activations are read (and, for Integrated Gradients, replaced) in the captured ATen graph, so
the layer may be a module, a module path (``"features.3"``) or a graph node name (``"linear_1"``,
``"embedding"``): functional layers and one call of a reused module can be chosen.  Along the
path, the inputs are repeated once per step (step-major, as Captum), so sizes the model reads
from the batch stay consistent, and the layer's node is given the interpolated activations.
Paths that bypass the layer see the actual inputs, as with Captum's hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from deltalift.capture import CapturedProgram
from deltalift.convergence import per_example_sum
from deltalift.engine import run_plain
from deltalift.inputs import BaselineType, TargetType, TensorOrTuple, as_tuple, check_baselines, select_target
from deltalift.layers import LayerType, capture_with_layer
from deltalift.methods.base import AttributionMethod, Model
from deltalift.methods.grad_cam import _check_layer, _no_device_ids, interpolate
from deltalift.methods.integrated_gradients import integrate_gradients

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------------
# walks at a layer, with inputs of any dtype (token ids too)


def capture_layer(
    module: nn.Module, inputs: tuple[Tensor, ...], extra: tuple[Any, ...], layer: LayerType, layer_input: bool
) -> tuple[CapturedProgram, torch.fx.Node]:
    """The captured ``module(*inputs, *extra)`` and the node of the layer's output (or input)."""
    return capture_with_layer(module, inputs + extra, inputs[0].shape[0], layer, len(inputs), layer_input)


def layer_activation(
    module: nn.Module, inputs: tuple[Tensor, ...], extra: tuple[Any, ...], layer: LayerType, layer_input: bool
) -> Tensor:
    """The layer's activation for ``inputs`` (no autograd; the walk stops at the layer)."""
    program, node = capture_layer(module, inputs, extra, layer, layer_input)
    with torch.no_grad():
        value = run_plain(program, module, list(inputs) + list(extra), until=node)
    if not isinstance(value, Tensor):
        raise ValueError(f"the chosen layer's activation ({node.name}) is not one tensor")
    return value


def layer_gradient(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    extra: tuple[Any, ...],
    layer: LayerType,
    layer_input: bool,
    target: TargetType,
    replace: Callable[[Tensor], Tensor] | None = None,
    grad_kwargs: dict[str, Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """The layer's activation (detached) and ``dt/dz`` there.

    The activation is made a leaf, so nothing is differentiated below the layer; ``replace``
    maps the activation the inputs give to the one the rest of the graph runs from (the path
    points of Integrated Gradients).  ``grad_kwargs`` go to ``torch.autograd.grad``.
    """
    program, node = capture_layer(module, inputs, extra, layer, layer_input)
    recorded: list[Tensor] = []

    def tap(value: Any) -> Tensor:
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise ValueError(f"the chosen layer's activation ({node.name}) is not one floating tensor")
        leaf = (value if replace is None else replace(value)).detach().requires_grad_(True)
        recorded.append(leaf)
        return leaf

    with torch.enable_grad():
        outputs = run_plain(program, module, list(inputs) + list(extra), tap=(node, tap))
        if len(outputs) != 1:
            raise ValueError(f"the model returns {len(outputs)} tensors; explain a model with one output tensor")
        t = select_target(outputs[0], target, inputs[0].shape[0])
        (grad,) = torch.autograd.grad(t.sum(), recorded, **{"allow_unused": True, **(grad_kwargs or {})})
    (leaf,) = recorded
    return leaf.detach(), torch.zeros_like(leaf) if grad is None else grad


def target_change(
    model: Model,
    inputs: tuple[Tensor, ...],
    references: tuple[Tensor, ...],
    target: TargetType,
    extra: tuple[Any, ...],
) -> Tensor:
    """``t(x) - t(x0)`` per example, the model evaluated as it is (inputs of any dtype)."""
    batch = inputs[0].shape[0]
    with torch.no_grad():
        t_end = select_target(model(*inputs, *extra), target, batch)
        t_start = select_target(model(*references, *extra), target, batch)
    return t_end - t_start


def full_references(baselines: BaselineType, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """One reference per input and example, in the input's dtype (integer baselines for token
    ids: a number is the id of the reference token)."""
    references, _ = check_baselines(baselines, inputs)
    return tuple(r.to(x.dtype).expand_as(x).contiguous() for r, x in zip(references, inputs))


class _LayerMethod(AttributionMethod):
    """A method at one layer: the model (Captum's ``forward_func``) and the layer."""

    def __init__(
        self, forward_func: Model, layer: LayerType, device_ids: Any = None, multiply_by_inputs: bool | None = None
    ) -> None:
        _no_device_ids(device_ids)
        _check_layer(layer)
        super().__init__(forward_func, multiply_by_inputs)
        self.layer = layer
        self.device_ids = device_ids

    @property
    def forward_func(self) -> Model:
        """The model (Captum's name)."""
        return self.model

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims: Any, interpolate_mode: str = "nearest") -> Tensor:
        """Captum's ``LayerAttribution.interpolate``: resize a layer attribution with ``F.interpolate``."""
        return interpolate(layer_attribution, interpolate_dims, interpolate_mode)


# --------------------------------------------------------------------------------------------------
# the methods


class LayerActivation(_LayerMethod):
    """The activation of a layer (Captum's ``LayerActivation``).

    Parameters
    ----------
    forward_func:
        The model: an ``nn.Module`` or a forward function that ``torch.export`` can capture.
    layer:
        A module of the model, a module path (``"features.3"``) or a graph node name
        (``"relu_1"``, as in ``torch.export``'s printout).  One layer (Captum's list of layers
        is not supported).
    device_ids:
        Captum's DataParallel argument; must be ``None``.
    """

    multiplies_by_inputs_default = False

    def __init__(self, forward_func: Model, layer: LayerType, device_ids: Any = None) -> None:
        super().__init__(forward_func, layer, device_ids)

    def attribute(
        self,
        inputs: TensorOrTuple,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
    ) -> Tensor:
        """The layer's output (or, with ``attribute_to_layer_input``, input) activation for
        ``model(*inputs, *additional_forward_args)``; inputs may be of any dtype (token ids too).

        Returns
        -------
        A tensor ``(batch, ...)`` shaped like the activation.
        """
        tensors, _ = self._format_inputs(inputs, allow_integer=True)
        extra = as_tuple(additional_forward_args)
        return layer_activation(self._module, tensors, extra, self.layer, attribute_to_layer_input)


class LayerGradientXActivation(_LayerMethod):
    """Gradient x activation at a layer: ``z_j(x) * dt/dz_j (x)`` (Captum's
    ``LayerGradientXActivation``; gradient x input, Shrikumar et al. 2016, at a layer).

    Parameters
    ----------
    forward_func, layer, device_ids:
        As :class:`LayerActivation`.
    multiply_by_inputs:
        ``True`` (default): gradient x activation; ``False``: the gradient ``dt/dz`` alone.
    memory_efficient:
        Captum's option to save memory on its hooks; accepted for compatibility, with no effect
        here (the captured graph is walked once either way).
    """

    def __init__(
        self,
        forward_func: Model,
        layer: LayerType,
        device_ids: Any = None,
        multiply_by_inputs: bool = True,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)
        self.memory_efficient = memory_efficient

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Tensor:
        """``z * dt/dz`` at the layer's output (or input) activation.

        Parameters
        ----------
        inputs, target, additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`;
            inputs may be integer (token ids), the layer's activation must be floating.
        attribute_to_layer_input:
            Use the activation entering the layer instead of the one leaving it.
        grad_kwargs:
            Further keyword arguments of ``torch.autograd.grad``.

        Returns
        -------
        A tensor shaped like the layer's activation.
        """
        tensors, _ = self._format_inputs(inputs, allow_integer=True)
        extra = as_tuple(additional_forward_args)
        activation, gradient = layer_gradient(
            self._module, tensors, extra, self.layer, attribute_to_layer_input, target, grad_kwargs=grad_kwargs
        )
        return gradient * activation if self.multiplies_by_inputs else gradient


class LayerIntegratedGradients(_LayerMethod):
    """Integrated Gradients at a layer (Sundararajan et al. 2017; Captum's
    ``LayerIntegratedGradients``)::

        LIG_j(x) = (z_j(x) - z_j(x0)) * int_0^1 dt/dz_j (z(x0) + a (z(x) - z(x0))) da

    with the layer's activation ``z`` for the inputs ``x`` and for the baselines ``x0``.  The
    inputs may be integer token ids (``LayerIntegratedGradients(model, model.embedding)``).

    Parameters
    ----------
    forward_func, layer, device_ids:
        As :class:`LayerActivation`.
    multiply_by_inputs:
        ``True`` (default) multiplies by ``z(x) - z(x0)``; ``False`` returns the path-averaged
        gradient alone (Captum's "local" variant).
    """

    returns_convergence_delta = True

    def __init__(
        self, forward_func: Model, layer: LayerType, device_ids: Any = None, multiply_by_inputs: bool = True
    ) -> None:
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)

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
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Integrated gradients of ``target`` at the layer's output (or input) activation.

        Parameters
        ----------
        inputs:
            A tensor ``(batch, ...)`` or a tuple of them, of any dtype (token ids too).
        baselines:
            As :meth:`DeepLift.attribute <deltalift.methods.deeplift.DeepLift.attribute>`, in the
            inputs' dtype: for token ids, the reference ids (e.g. padding tokens), one sequence
            for all or one per example; a number is one id for every position.
        target, additional_forward_args, n_steps, method, internal_batch_size:
            As :meth:`IntegratedGradients.attribute
            <deltalift.methods.integrated_gradients.IntegratedGradients.attribute>`
            (``internal_batch_size`` counts the rows of the repeated inputs).
        return_convergence_delta:
            Also return ``sum_j LIG_j - (t(x) - t(x0))`` per example (with the multiplied
            attributions, whatever ``multiply_by_inputs`` says).
        attribute_to_layer_input:
            Integrate over the activation entering the layer instead of the one leaving it.
        grad_kwargs:
            Further keyword arguments of ``torch.autograd.grad``.

        Returns
        -------
        A tensor shaped like the layer's activation, and the delta when asked.
        """
        tensors, _ = self._format_inputs(inputs, allow_integer=True)
        extra = as_tuple(additional_forward_args)
        references = full_references(baselines, tensors)
        module, layer, n = self._module, self.layer, len(tensors)
        z_input = layer_activation(module, tensors, extra, layer, attribute_to_layer_input)
        z_reference = layer_activation(module, references, extra, layer, attribute_to_layer_input)
        if not z_input.is_floating_point():
            raise ValueError(
                f"the layer's activation has dtype {z_input.dtype}; Integrated Gradients needs a floating "
                "activation (for token ids, attribute at the embedding's output)"
            )

        def gradient_at_layer(scaled: tuple[Tensor, ...], tgt: TargetType, args: tuple[Any, ...]) -> tuple[Tensor, ...]:
            (points,) = scaled

            def path_point(value: Tensor) -> Tensor:
                if value.shape != points.shape:
                    raise ValueError(
                        f"the layer's activation for the repeated inputs has shape {tuple(value.shape)}, "
                        f"expected {tuple(points.shape)} (steps x examples): the layer must keep the batch "
                        "dimension first"
                    )
                return points.to(value.dtype)

            _, grad = layer_gradient(
                module, args[:n], args[n:], layer, attribute_to_layer_input, tgt, path_point, grad_kwargs
            )
            return (grad,)

        (averaged,) = integrate_gradients(
            gradient_at_layer,
            (z_input,),
            (z_reference,),
            target,
            tensors + extra,
            n_steps,
            method,
            internal_batch_size,
        )
        contributions = averaged * (z_input - z_reference)
        result = contributions if self.multiplies_by_inputs else averaged
        if not return_convergence_delta:
            return result
        delta = per_example_sum((contributions,)) - target_change(module, tensors, references, target, extra)
        return result, delta
