"""Internal influence (Leino, Sen, Datta, Fredrikson & Li, ITC 2018, "Influence-Directed
Explanations for Deep Convolutional Networks"), with Captum's interface and definition.

The gradient of the target with respect to a layer's activation ``z``, integrated along the
straight path from the baseline to the input::

    II_j(x) = int_0^1 dt/dz_j (z(x0 + a (x - x0))) da  ~  sum_k w_k dt/dz_j (z(x0 + a_k (x - x0)))

with the quadrature ``(a_k, w_k)`` of :mod:`deltalift.methods.integrated_gradients` (Captum's).
The activation is read in the captured graph of ATen operations, so the layer can be a module,
a module path or a graph node name, and a reused module's calls are told apart by node name.
"""

from __future__ import annotations

from typing import Any

import torch

from deltalift.inputs import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    as_tuple,
    check_baselines,
    check_grad_kwargs,
    check_inputs,
    check_model,
)
from deltalift.layers import LayerType
from deltalift.methods.base import AttributionMethod, Model
from deltalift.methods.captured_gradient import captured_gradients
from deltalift.methods.integrated_gradients import integrate_gradients

Tensor = torch.Tensor


class InternalInfluence(AttributionMethod):
    """Path-integrated gradient of the target at a layer (Leino et al. 2018; Captum's
    ``InternalInfluence``).

    Parameters
    ----------
    model:
        An ``nn.Module`` or a forward function that ``torch.export`` can capture.
    layer:
        A module of ``model``, a module path (``"features.3"``) or a graph node name
        (``"relu_1"``; as in ``torch.export``'s printout).
    """

    multiplies_by_inputs_default = False

    def __init__(self, model: Model, layer: LayerType) -> None:
        super().__init__(model)
        self.layer = layer

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        attribute_to_layer_input: bool = False,
        internal_batch_size: int | None = None,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Internal influence of the layer's output (or input) activations on ``target``.

        Parameters
        ----------
        inputs, baselines, target, additional_forward_args, n_steps, method, internal_batch_size:
            As :meth:`IntegratedGradients.attribute
            <deltalift.methods.integrated_gradients.IntegratedGradients.attribute>`.
        attribute_to_layer_input:
            Differentiate with respect to the activation entering the layer instead of the one
            leaving it.
        grad_kwargs:
            Captum's options of the gradient call (:func:`deltalift.inputs.check_grad_kwargs`);
            ``{"materialize_grads": True}`` gives zeros for a layer the output does not use.

        Returns
        -------
        One tensor shaped like the layer's activation for the inputs, ``(batch, ...)``; a tuple
        of them for a module that returns (or takes) several tensors, as Captum's.
        """
        tensors, _ = check_inputs(inputs, allow_integer=True)
        for i, x in enumerate(tensors):
            if not x.is_floating_point():
                raise TypeError(
                    f"inputs[{i}] has dtype {x.dtype}; internal influence integrates along the straight path from "
                    "the baseline to the input, which integer inputs (token ids) do not have. Use "
                    "LayerDeepLift or LayerGradCam at the embedding layer, or integrate at the embedding's "
                    "output (layer integrated gradients)"
                )
        check_model(self._module, tensors)
        references, _ = check_baselines(baselines, tensors)
        check_grad_kwargs(grad_kwargs)

        def layer_gradient(scaled: tuple[Tensor, ...], tgt: TargetType, args: tuple[Any, ...]) -> tuple[Tensor, ...]:
            found = captured_gradients(
                self.model,
                scaled,
                tgt,
                args,
                layer=self.layer,
                layer_input=attribute_to_layer_input,
                grad_kwargs=grad_kwargs,
            )
            return tuple(g.detach() for g in found.layer_gradients)

        influence = integrate_gradients(
            layer_gradient,
            tensors,
            references,
            target,
            as_tuple(additional_forward_args),
            n_steps,
            method,
            internal_batch_size,
        )
        return influence[0] if len(influence) == 1 else influence
