"""DeepLIFT-SHAP at a layer and for one neuron (Lundberg & Lee 2017 with DeepLIFT, Shrikumar et
al. 2017; Captum's ``LayerDeepLiftShap`` and ``NeuronDeepLiftShap``).

For ``K`` references ``x0_1 .. x0_K`` of an example ``x``:

* ``LayerDeepLiftShap``: the contributions of a layer's activation ``z`` to the target,
  averaged over the references, ``1/K sum_k m(dz, dt)_k * (z(x) - z(x0_k))``;
* ``NeuronDeepLiftShap``: the contributions of the inputs to one neuron ``s(z)`` of the layer,
  ``1/K sum_k m(dx, ds)_k * (x - x0_k)``.

Both run on :class:`~deltalift.methods.deeplift_shap.DeepLiftShap`'s batches of (example,
reference) pairs, with the engine's layer and neuron support; the convergence delta has one
entry per pair, example-major (``i * K + k``), as Captum's.  The layer may be a module, a module
path or a graph node name (functional layers, one call of a reused module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from deltalift.engine import DeepLiftResult
from deltalift.inputs import TargetType, TensorOrTuple
from deltalift.layers import LayerType
from deltalift.methods.base import Model
from deltalift.methods.deeplift_shap import DeepLiftShap, ReferenceSet
from deltalift.methods.neurons import NeuronSelector, select_neuron

Tensor = torch.Tensor


class _DeepLiftShapAt(DeepLiftShap):
    """DeepLiftShap whose every DeepLIFT call is made at a layer (or for a neuron) that the
    current ``attribute`` call sets; every option of :class:`DeepLiftShap` applies."""

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
        self._at: dict[str, Any] = {}

    @contextmanager
    def _calls_at(self, **at: Any) -> Iterator[None]:
        self._at = {"layer": self.layer, **at}
        try:
            yield
        finally:
            self._at = {}

    def _run(
        self, inputs: Any, baselines: Any, target: Any, additional_forward_args: Any, **kwargs: Any
    ) -> DeepLiftResult:
        return super()._run(inputs, baselines, target, additional_forward_args, **{**kwargs, **self._at})


class LayerDeepLiftShap(_DeepLiftShapAt):
    """Contributions of a layer's activation, averaged over references:
    ``1/K sum_k m(dz, dt)_k * (z(x) - z(x0_k))`` (Captum's ``LayerDeepLiftShap``).

    Parameters
    ----------
    model, multiply_by_inputs, eps, **options:
        As :class:`~deltalift.methods.deeplift_shap.DeepLiftShap` (``batch_size``, ``rule``, ...).
    layer:
        A module of the model, a module path (``"features.3"``) or a graph node name.
    """

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        baselines: ReferenceSet,
        target: TargetType | Callable[[Tensor], Tensor] = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        custom_attribution_func: Callable[..., tuple[Tensor, ...]] | None = None,
    ) -> Any:
        """As :meth:`DeepLiftShap.attribute <deltalift.methods.deeplift_shap.DeepLiftShap.attribute>`,
        for the layer's output (or, with ``attribute_to_layer_input=True``, input) activation.

        Returns
        -------
        A tensor shaped like the layer's activation, and the per-pair delta when asked.
        """
        with self._calls_at(layer_input=attribute_to_layer_input):
            result = super().attribute(
                inputs, baselines, target, additional_forward_args, True, custom_attribution_func
            )
        attributions, delta = result
        if isinstance(attributions, tuple) and len(attributions) == 1:  # one tensor at the layer
            (attributions,) = attributions
        return (attributions, delta) if return_convergence_delta else attributions


class NeuronDeepLiftShap(_DeepLiftShapAt):
    """Contributions of the inputs to one neuron of a layer, averaged over references:
    ``1/K sum_k m(dx, ds)_k * (x - x0_k)`` (Captum's ``NeuronDeepLiftShap``).

    Parameters
    ----------
    model, multiply_by_inputs, eps, **options:
        As :class:`~deltalift.methods.deeplift_shap.DeepLiftShap`.
    layer:
        A module of the model, a module path or a graph node name.
    """

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        baselines: ReferenceSet,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        custom_attribution_func: Callable[..., tuple[Tensor, ...]] | None = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """The inputs' contributions to the neuron, averaged over the references.

        Parameters
        ----------
        neuron_selector:
            As Captum's: an int, a tuple of ints and slices (the selected neurons summed where a
            slice is present) or a callable mapping the activation to one value per example
            (:func:`~deltalift.methods.neurons.select_neuron`).
        attribute_to_neuron_input:
            Select the neuron in the activation entering the layer.
        inputs, baselines, additional_forward_args, custom_attribution_func:
            As :meth:`DeepLiftShap.attribute <deltalift.methods.deeplift_shap.DeepLiftShap.attribute>`.
        return_convergence_delta:
            Also return ``sum_i C_i - (s(x) - s(x0_k))`` per pair (not in Captum's signature).
        """
        with self._calls_at(
            layer_input=attribute_to_neuron_input, neuron=lambda activation: select_neuron(activation, neuron_selector)
        ):
            return super().attribute(
                inputs, baselines, None, additional_forward_args, return_convergence_delta, custom_attribution_func
            )
