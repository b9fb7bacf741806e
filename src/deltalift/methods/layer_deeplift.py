"""DeepLIFT at a layer: ``LayerDeepLift`` (contributions of a layer's activations) and
``NeuronDeepLift`` (contributions of the inputs to one internal neuron), with Captum's interfaces.

A layer is a module of the model, a module path (``"features.3"``) or a graph node name; its
activations are read in the captured graph, so functional layers and reused modules (picked by
graph node name) work too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import torch

from deltalift.inputs import BaselineType, TargetType, TensorOrTuple
from deltalift.layers import LayerType
from deltalift.methods.base import Model, format_output
from deltalift.methods.deeplift import DeepLift

Tensor = torch.Tensor
NeuronSelector = Union[int, tuple[int, ...], Callable[[Tensor], Tensor]]


class _AtLayer(DeepLift):
    """A DeepLift that also holds a layer (module, module path or graph node name); every
    option of :class:`DeepLift` applies."""

    def __init__(
        self,
        model: Model,
        layer: LayerType,
        multiply_by_inputs: bool = True,
        eps: float = 1e-7,
        **options: Any,
    ) -> None:
        super().__init__(model, multiply_by_inputs, eps, **options)
        self.layer = layer


class LayerDeepLift(_AtLayer):
    """Contributions ``m(da, dt) * (a - a0)`` of a layer's activations ``a`` to the target.

    Summation-to-delta holds at the layer when every path from the inputs to the output runs
    through it (the returned delta says how far it is off otherwise).
    """

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType | Callable[[Tensor], Tensor] = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        custom_attribution_func: Callable[..., tuple[Tensor, ...]] | None = None,
    ) -> Any:
        """As :meth:`DeepLift.attribute`, for the layer's output (or, with
        ``attribute_to_layer_input=True``, its input) activations."""
        result = self._run(
            inputs, baselines, target, additional_forward_args, layer=self.layer, layer_input=attribute_to_layer_input
        )
        (out,) = result.attributions(self.multiplies_by_inputs, custom_attribution_func)
        return (out, result.delta) if return_convergence_delta else out


class NeuronDeepLift(_AtLayer):
    """Contributions of the inputs to one neuron of an internal layer.

    ``neuron_selector`` is an index into the layer's activation without the batch dimension
    (an int for a flat layer, a tuple otherwise) or a callable mapping the activation to one
    value per example.
    """

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        baselines: BaselineType = None,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        custom_attribution_func: Callable[..., tuple[Tensor, ...]] | None = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        result = self._run(
            inputs,
            baselines,
            None,
            additional_forward_args,
            layer=self.layer,
            layer_input=attribute_to_neuron_input,
            neuron=lambda activation: _select_neuron(activation, neuron_selector),
        )
        out = format_output(result.attributions(self.multiplies_by_inputs, custom_attribution_func), result.given_tuple)
        return (out, result.delta) if return_convergence_delta else out


def _select_neuron(activation: Tensor, selector: NeuronSelector) -> Tensor:
    if callable(selector):
        value = selector(activation)
        if not isinstance(value, Tensor) or value.shape != activation.shape[:1]:
            raise ValueError("a callable neuron_selector must return one value per example")
        return value
    index = (selector,) if isinstance(selector, int) else tuple(selector)
    if len(index) != activation.ndim - 1:
        raise ValueError(
            f"neuron_selector {selector!r} has {len(index)} indices but the layer's activation has shape "
            f"{tuple(activation.shape)} ({activation.ndim - 1} without the batch dimension)"
        )
    for i, (k, size) in enumerate(zip(index, activation.shape[1:])):
        if not -size <= k < size:
            raise ValueError(f"neuron_selector index {k} is out of range for dimension {i + 1} of size {size}")
    return activation[(slice(None),) + index]
