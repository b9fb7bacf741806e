"""Gradients through the captured graph, with ops replaced where a method says.

Methods that modify backpropagation (Guided Backprop, DeconvNet, LRP) and methods that read a
layer (Grad-CAM) work on the captured ATen graph, so they see every ReLU, functional or module,
and every use of a reused module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deltalift.capture import as_module, capture
from deltalift.engine import Override, run_plain
from deltalift.inputs import TargetType, as_tuple, check_inputs, check_model, select_target
from deltalift.layers import LayerType, capture_with_layer

Tensor = torch.Tensor


@dataclass
class CapturedGradients:
    """The result of :func:`captured_gradients`."""

    inputs: tuple[Tensor, ...]  #: the inputs, as leaves
    gradients: tuple[Tensor, ...]  #: d target / d input (as modified by the overrides)
    target_values: Tensor  #: t(x) per example
    layer: Tensor | None  #: the layer's activation, when a layer was asked for
    layer_gradient: Tensor | None  #: d target / d layer activation
    given_tuple: bool


def captured_gradients(
    model: nn.Module | Any,
    inputs: Any,
    target: TargetType,
    additional_forward_args: Any = None,
    overrides: dict[Any, Override] | None = None,
    layer: LayerType | None = None,
    layer_input: bool = False,
) -> CapturedGradients:
    """Capture ``model``, run it on ``inputs`` with ``overrides`` and differentiate ``target``.

    With ``layer``, also returns that layer's activation and the target's gradient there (the
    activation is made a leaf, so nothing flows below it).
    """
    tensors, given_tuple = check_inputs(inputs)
    module = as_module(model)
    check_model(module, tensors)
    extra = as_tuple(additional_forward_args)
    batch = tensors[0].shape[0]
    if layer is None:
        program, node = capture(module, tensors + extra, batch), None
    else:
        program, node = capture_with_layer(module, tensors + extra, batch, layer, len(tensors), layer_input)
    leaves = tuple(x.detach().requires_grad_(True) for x in tensors)
    recorded: list[Tensor] = []

    def record(value: Any) -> Any:
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise ValueError("the chosen layer's activation is not one floating tensor")
        leaf = value.detach().requires_grad_(True)
        recorded.append(leaf)
        return leaf

    tap = None if node is None else (node, record)
    with torch.enable_grad():
        (output,) = run_plain(program, module, list(leaves) + list(extra), overrides, tap=tap)
        t = select_target(output, target, tensors[0].shape[0])
        wrt = list(recorded) if recorded else list(leaves)
        grads = torch.autograd.grad(t.sum(), wrt, allow_unused=True)
    grads = tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt))
    if recorded:
        return CapturedGradients(leaves, (), t.detach(), recorded[0].detach(), grads[0], given_tuple)
    return CapturedGradients(leaves, grads, t.detach(), None, None, given_tuple)
