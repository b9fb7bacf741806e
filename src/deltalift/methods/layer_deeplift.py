"""DeepLIFT at a layer: ``LayerDeepLift`` (contributions of a layer's activations) and
``NeuronDeepLift`` (contributions of the inputs to one internal neuron), with Captum's interfaces.

A layer is a module of the model, a module path (``"features.3"``) or a graph node name; its
activations are read in the captured graph, so functional layers and reused modules (picked by
graph node name) work too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from deltalift.inputs import BaselineType, TargetType, TensorOrTuple
from deltalift.layers import LayerType
from deltalift.methods.base import Model, format_output
from deltalift.methods.deeplift import DeepLift
from deltalift.methods.neurons import NeuronSelector, select_neuron

Tensor = torch.Tensor


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
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """As :meth:`DeepLift.attribute`, for the layer's output (or, with
        ``attribute_to_layer_input=True``, its input) activations.

        ``inputs`` may be integer (token ids, with integer ``baselines`` such as padding ids)
        when the layer's activation is floating point, e.g. an embedding layer's output.
        ``grad_kwargs``: Captum's options of the gradient call (see
        :func:`deltalift.inputs.check_grad_kwargs`); ``{"materialize_grads": True}`` gives zeros
        for a layer the output does not use.

        Returns one tensor shaped like the layer's activation, or a tuple with one per tensor
        for a module that returns several (or takes several, with
        ``attribute_to_layer_input=True``), as Captum's.
        """
        result = self._run(
            inputs,
            baselines,
            target,
            additional_forward_args,
            layer=self.layer,
            layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        attributions = result.attributions(self.multiplies_by_inputs, custom_attribution_func)
        out = attributions[0] if len(attributions) == 1 else attributions
        return (out, result.delta) if return_convergence_delta else out


class NeuronDeepLift(_AtLayer):
    """Contributions of the inputs to one neuron of an internal layer.

    ``neuron_selector`` is an index into the layer's activation without the batch dimension
    (an int for a flat layer, a tuple otherwise; it may leave out trailing dimensions of size
    one, and a slice sums the values it selects, as Captum's) or a callable mapping the
    activation to one value per example.
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
            neuron=lambda activation: select_neuron(activation, neuron_selector),
        )
        out = format_output(result.attributions(self.multiplies_by_inputs, custom_attribution_func), result.given_tuple)
        return (out, result.delta) if return_convergence_delta else out
