"""Guided Backprop and DeconvNet: gradients with a modified backward pass through every ReLU.

Both replace the derivative of ``y = relu(x)`` by a rule that keeps only positive signals going
backwards, for an incoming gradient ``g = dt/dy``:

    Guided Backprop (Springenberg et al., ICLR 2015 workshop, "Striving for Simplicity", fig. 1):
        dt/dx := relu(g) * 1{x > 0}
    DeconvNet (Zeiler & Fergus, ECCV 2014, "Visualizing and Understanding CNNs", section 2.1):
        dt/dx := relu(g)

Every other operation keeps its ordinary derivative.  The attribution is the modified gradient of
the target with respect to the inputs (not multiplied by the inputs), as in Captum.

Which operations count as a ReLU: those that reach the captured ATen graph as ``aten.relu`` -
``nn.ReLU`` (also ``inplace=True``), ``F.relu`` (also ``inplace=True``), ``torch.relu``,
``Tensor.relu`` and ``Tensor.relu_``, wherever and however often they run.  ReLU relatives
(``relu6``/``hardtanh``, ``leaky_relu``, ``threshold``, ``clamp(min=0)``) keep their ordinary
derivative: the papers define the rules for the ReLU, and Captum too modifies only ``nn.ReLU``
modules, so results stay comparable.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import torch

from deltalift.engine import Override
from deltalift.inputs import TargetType
from deltalift.methods.base import AttributionMethod, Model
from deltalift.methods.captured_gradient import captured_gradients

Tensor = torch.Tensor
#: A tensor or a tuple of tensors: the attributions have the form of the inputs.
TensorOrTupleT = TypeVar("TensorOrTupleT", Tensor, tuple[Tensor, ...])

#: The ops whose backward the methods modify: everything the graph records as a ReLU.
RELU_OPS: tuple[Any, ...] = (torch.ops.aten.relu,)


class GuidedReLU(torch.autograd.Function):
    """``relu(x)`` forward; backward ``relu(g) * 1{x > 0}`` (Guided Backprop)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return grad_output.clamp(min=0) * (y > 0)  # y > 0 exactly where x > 0


class DeconvReLU(torch.autograd.Function):
    """``relu(x)`` forward; backward ``relu(g)``, whatever the sign of ``x`` (DeconvNet)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        return grad_output.clamp(min=0)


def relu_override(function: type[torch.autograd.Function]) -> Override:
    """An override for :func:`captured_gradients` that runs a one-input op as ``function``."""

    def override(op: Any, args: Any, kwargs: Any) -> Any:
        if len(args) != 1 or kwargs:
            raise ValueError(
                f"{op} was called with {len(args)} arguments and {len(kwargs)} keywords; the override expects one input"
            )
        return function.apply(args[0])

    return override


class ModifiedReluGradient(AttributionMethod):
    """The gradient of the target with ``relu_function``'s backward at every ReLU of the graph.

    Parameters
    ----------
    model:
        An ``nn.Module`` (in eval mode) or a forward function.  It is never modified.
    """

    relu_function: type[torch.autograd.Function] = GuidedReLU

    multiplies_by_inputs_default = False

    def __init__(self, model: Model) -> None:
        super().__init__(model)
        override = relu_override(self.relu_function)
        self.overrides: dict[Any, Override] = {op: override for op in RELU_OPS}

    def attribute(
        self, inputs: TensorOrTupleT, target: TargetType = None, additional_forward_args: Any = None
    ) -> TensorOrTupleT:
        """The modified gradient ``dt/dx`` of ``target`` of ``model(*inputs, *additional_forward_args)``.

        Parameters
        ----------
        inputs, target, additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`.

        Returns
        -------
        One tensor per input, of its shape (a tensor if ``inputs`` was a tensor, else a tuple).
        """
        result = captured_gradients(self.model, inputs, target, additional_forward_args, overrides=self.overrides)
        return cast(TensorOrTupleT, result.gradients if result.given_tuple else result.gradients[0])


class GuidedBackprop(ModifiedReluGradient):
    """Guided Backprop (Springenberg et al. 2015): at every ReLU ``y = relu(x)`` backward passes
    ``relu(dt/dy) * 1{x > 0}``; Captum's ``GuidedBackprop`` interface."""

    relu_function = GuidedReLU


class Deconvolution(ModifiedReluGradient):
    """DeconvNet (Zeiler & Fergus 2014): at every ReLU backward passes ``relu(dt/dy)``, ignoring
    the sign of the ReLU's input; Captum's ``Deconvolution`` interface."""

    relu_function = DeconvReLU
