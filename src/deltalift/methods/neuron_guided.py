"""Guided Backprop and DeconvNet for one neuron of a layer (Captum's ``NeuronGuidedBackprop`` and
``NeuronDeconvolution``).

The attribution is the modified gradient ``ds/dx`` of the selected neuron ``s`` of a layer's
activation with respect to the inputs, where at every ReLU ``y = relu(x)`` on the way back the
incoming gradient ``g = ds/dy`` is replaced by (see :mod:`deltalift.methods.guided`)

    Guided Backprop (Springenberg et al., ICLR 2015 workshop, "Striving for Simplicity"):
        relu(g) * 1{x > 0}
    DeconvNet (Zeiler & Fergus, ECCV 2014, "Visualizing and Understanding CNNs"):
        relu(g)

The walk over the captured graph stops at the layer, and every ReLU of the graph counts,
``nn.ReLU`` or functional, each call of a reused module included.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from deltalift.engine import Override, run_plain
from deltalift.inputs import as_tuple
from deltalift.layers import LayerType, capture_with_layer
from deltalift.methods.base import AttributionMethod, Model
from deltalift.methods.grad_cam import _check_layer, _no_device_ids
from deltalift.methods.guided import RELU_OPS, DeconvReLU, GuidedReLU, TensorOrTupleT, relu_override
from deltalift.methods.neurons import NeuronSelector, select_neuron

Tensor = torch.Tensor


class NeuronModifiedReluGradient(AttributionMethod):
    """The gradient of one neuron of a layer with ``relu_function``'s backward at every ReLU.

    Parameters
    ----------
    model:
        An ``nn.Module`` (in eval mode) or a forward function.  It is never modified.
    layer:
        A module of the model, a module path (``"features.3"``) or a graph node name.
    device_ids:
        Captum's DataParallel argument; must be ``None``.
    """

    relu_function: type[torch.autograd.Function] = GuidedReLU

    multiplies_by_inputs_default = False

    def __init__(self, model: Model, layer: LayerType, device_ids: Any = None) -> None:
        _no_device_ids(device_ids)
        _check_layer(layer)
        super().__init__(model)
        self.layer = layer
        self.device_ids = device_ids
        override = relu_override(self.relu_function)
        self.overrides: dict[Any, Override] = {op: override for op in RELU_OPS}

    def attribute(
        self,
        inputs: TensorOrTupleT,
        neuron_selector: NeuronSelector,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
    ) -> TensorOrTupleT:
        """The modified gradient ``ds/dx`` of the selected neuron ``s``.

        Parameters
        ----------
        inputs, additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`.
        neuron_selector:
            As Captum's: an int, a tuple of ints and slices (the selected neurons summed where a
            slice is present) or a callable mapping the activation to one value per example
            (:func:`~deltalift.methods.neurons.select_neuron`).
        attribute_to_neuron_input:
            Select the neuron in the activation entering the layer.

        Returns
        -------
        One tensor per input, of its shape (a tensor if ``inputs`` was a tensor, else a tuple).
        """
        tensors, given_tuple = self._format_inputs(inputs)
        extra = as_tuple(additional_forward_args)
        program, node = capture_with_layer(
            self._module, tensors + extra, tensors[0].shape[0], self.layer, len(tensors), attribute_to_neuron_input
        )
        leaves = tuple(x.detach().requires_grad_(True) for x in tensors)
        with torch.enable_grad():
            activation = run_plain(program, self._module, list(leaves) + list(extra), self.overrides, until=node)
            value = select_neuron(activation, neuron_selector)
            grads = torch.autograd.grad(value.sum(), leaves, allow_unused=True)
        result = tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))
        return cast(TensorOrTupleT, result if given_tuple else result[0])


class NeuronGuidedBackprop(NeuronModifiedReluGradient):
    """Guided Backprop (Springenberg et al. 2015) of one neuron: at every ReLU ``y = relu(x)``
    backward passes ``relu(ds/dy) * 1{x > 0}``; Captum's ``NeuronGuidedBackprop`` interface."""

    relu_function = GuidedReLU


class NeuronDeconvolution(NeuronModifiedReluGradient):
    """DeconvNet (Zeiler & Fergus 2014) of one neuron: at every ReLU backward passes
    ``relu(ds/dy)``, ignoring the sign of the ReLU's input; Captum's ``NeuronDeconvolution``
    interface."""

    relu_function = DeconvReLU
