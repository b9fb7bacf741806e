"""Gradients through the captured graph, with ops replaced where a method says.

Methods that modify backpropagation (Guided Backprop, DeconvNet, LRP) and methods that read a
layer (Grad-CAM, internal influence) work on the captured ATen graph, so they see every ReLU,
functional or module, and every use of a reused module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from deltalift.capture import as_module, capture
from deltalift.engine import Override, run_plain
from deltalift.inputs import TargetType, as_tuple, check_grad_kwargs, check_inputs, check_model, select_target
from deltalift.layers import LayerType, LayerUnused, capture_with_layers, eager_layer_values

Tensor = torch.Tensor


@dataclass
class CapturedGradients:
    """The result of :func:`captured_gradients`."""

    inputs: tuple[Tensor, ...]  #: the inputs, as leaves (integer inputs as they are)
    gradients: tuple[Tensor, ...]  #: d target / d input (as modified by the overrides)
    target_values: Tensor  #: t(x) per example
    layer: Tensor | None  #: the layer's activation, when a layer was asked for (the first one)
    layer_gradient: Tensor | None  #: d target / d layer activation (the first one)
    given_tuple: bool
    #: every activation tensor of the layer (several for a module returning a tuple) and the
    #: target's gradient at each
    layers: tuple[Tensor, ...] = ()
    layer_gradients: tuple[Tensor, ...] = ()


def captured_gradients(
    model: nn.Module | Any,
    inputs: Any,
    target: TargetType,
    additional_forward_args: Any = None,
    overrides: dict[Any, Override] | None = None,
    layer: LayerType | None = None,
    layer_input: bool = False,
    grad_kwargs: dict[str, Any] | None = None,
) -> CapturedGradients:
    """Capture ``model``, run it on ``inputs`` with ``overrides`` and differentiate ``target``.

    With ``layer``, also returns that layer's activations and the target's gradient there (each
    activation is made a leaf, so nothing flows below it; a module that returns several tensors
    is walked once per tensor).  At a layer, integer inputs (token ids) are accepted when the
    layer's activation is floating point.  ``grad_kwargs``: Captum's options of the gradient
    call (:func:`deltalift.inputs.check_grad_kwargs`); ``{"materialize_grads": True}`` gives a
    zero gradient at a layer the output does not use.
    """
    tensors, given_tuple = check_inputs(inputs, allow_integer=layer is not None)
    options = check_grad_kwargs(grad_kwargs)
    module = as_module(model)
    check_model(module, tensors)
    extra = as_tuple(additional_forward_args)
    batch = tensors[0].shape[0]
    leaves = tuple(x.detach().requires_grad_(True) if x.is_floating_point() else x.detach() for x in tensors)
    if layer is None:
        program = capture(module, tensors + extra, batch)
        with torch.enable_grad():
            (output,) = run_plain(program, module, list(leaves) + list(extra), overrides)
            t = select_target(output, target, batch)
            grads = torch.autograd.grad(t.sum(), leaves, **options)
        gradients = tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))
        return CapturedGradients(leaves, gradients, t.detach(), None, None, given_tuple)
    try:
        program, nodes = capture_with_layers(module, tensors + extra, batch, layer, len(tensors), layer_input)
    except LayerUnused as unused:
        if not options.get("materialize_grads"):
            raise ValueError(
                f"{unused}: its gradient is zero. Pass grad_kwargs={{'materialize_grads': True}} to get zeros "
                "(as Captum), or choose a layer that the output depends on"
            ) from unused
        values, output = eager_layer_values(module, unused.path, tensors + extra, layer_input)
        t = select_target(output, target, batch)
        zeros = tuple(torch.zeros_like(a) for a in values)
        return CapturedGradients(leaves, (), t, values[0], zeros[0], given_tuple, values, zeros)
    activations: list[Tensor] = []
    layer_gradients: list[Tensor] = []
    for node in nodes:  # one walk per activation tensor of the layer
        recorded: list[Tensor] = []
        with torch.enable_grad():
            (output,) = run_plain(
                program, module, list(leaves) + list(extra), overrides, tap=(node, partial(_record, recorded=recorded))
            )
            t = select_target(output, target, batch)
            (grad,) = torch.autograd.grad(t.sum(), recorded, **options)
        activations.append(recorded[0].detach())
        layer_gradients.append(torch.zeros_like(recorded[0]) if grad is None else grad)
    return CapturedGradients(
        leaves,
        (),
        t.detach(),
        activations[0],
        layer_gradients[0],
        given_tuple,
        tuple(activations),
        tuple(layer_gradients),
    )


def _record(value: Any, recorded: list[Tensor]) -> Tensor:
    """A tapped layer's activation, made a fresh leaf."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        what = f"dtype {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"the chosen layer's activation is not one floating tensor ({what}); gradients are taken at a "
            "floating-point activation (for token ids, the embedding layer's output rather than its input)"
        )
    leaf = value.detach().requires_grad_(True)
    recorded.append(leaf)
    return leaf
