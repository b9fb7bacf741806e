"""Grad-CAM and Guided Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391), Captum's interfaces.

For a layer activation ``A`` of shape ``(batch, channels, *spatial)`` and target ``t``
(Selvaraju et al., eqs. 1-2):

    alpha_c = mean over spatial positions of dt/dA_c          (global-average-pooled gradients)
    L       = relu(sum_c alpha_c * A_c)                       (ReLU optional here, as in Captum)

and Guided Grad-CAM (section 3, "Guided Grad-CAM") is the element-wise product of the Guided
Backprop attribution with ``L`` upsampled to the input's spatial size.

A string that is both a graph node name and a module path (``"relu"`` in a model with a
``self.relu`` and an ``F.relu``) is refused as ambiguous: pass the module itself for the module,
``"node:relu"`` for the graph node.

The layer is read in the captured ATen graph: it may be a module, a module path
(``"features.3"``) or a graph node name (``"relu_2"``), so the output of a functional op or one
call of a module that runs twice can be chosen too (a module that runs twice must be picked by
node name; the error lists the candidates).
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from deltalift.inputs import TargetType, TensorOrTuple, check_inputs
from deltalift.layers import LayerType
from deltalift.methods.base import AttributionMethod, Model
from deltalift.methods.captured_gradient import captured_gradients
from deltalift.methods.guided import GuidedBackprop, TensorOrTupleT

Tensor = torch.Tensor

#: ``F.interpolate``'s modes, by the number of dimensions of the tensor they accept.
INTERPOLATE_MODES = {
    "nearest": (3, 4, 5),
    "nearest-exact": (3, 4, 5),
    "area": (3, 4, 5),
    "linear": (3,),
    "bilinear": (4,),
    "bicubic": (4,),
    "trilinear": (5,),
}


def interpolate(attributions: Tensor, size: int | tuple[int, ...], mode: str = "bilinear") -> Tensor:
    """Resize a layer attribution ``(batch, channels, *spatial)`` to ``size`` (e.g. the input's
    spatial shape), with ``F.interpolate``; Captum's ``LayerAttribution.interpolate``.

    The default ``"bilinear"`` is what the Grad-CAM paper uses for 2-d maps (Captum's default is
    ``"nearest"``; :meth:`LayerGradCam.interpolate` keeps Captum's arguments and default).
    """
    if mode not in INTERPOLATE_MODES:
        raise ValueError(f"mode must be one of {sorted(INTERPOLATE_MODES)}, got {mode!r}")
    if attributions.ndim not in INTERPOLATE_MODES[mode]:
        raise ValueError(
            f"mode {mode!r} resizes tensors with {' or '.join(map(str, INTERPOLATE_MODES[mode]))} dimensions "
            f"(batch, channels, *spatial); got shape {tuple(attributions.shape)}"
        )
    return F.interpolate(attributions, size, mode=mode)


def grad_cam(activation: Tensor, gradient: Tensor, attr_dim_summation: bool = True, relu: bool = False) -> Tensor:
    """Grad-CAM from a layer's activation ``A`` and the target's gradient ``G = dt/dA`` there.

    ``sum_c mean_spatial(G_c) * A_c`` over dimension 1 (kept, of size 1), or per channel with
    ``attr_dim_summation=False``; ``relu`` applies a final ReLU.  A layer without spatial
    dimensions (``ndim <= 2``) uses ``G`` itself as the weights, as Captum; a ``(batch,)``
    layer has no channels to sum, and gives ``G * A`` (where Captum fails).
    """
    spatial = tuple(range(2, gradient.ndim))
    weights = gradient.mean(dim=spatial, keepdim=True) if spatial else gradient
    scaled = weights * activation
    if attr_dim_summation and scaled.ndim > 1:
        scaled = scaled.sum(dim=1, keepdim=True)
    return torch.relu(scaled) if relu else scaled


def _no_device_ids(device_ids: Any) -> None:
    if device_ids is not None:
        raise ValueError(
            "device_ids is for Captum's DataParallel support; deltalift captures the model itself, "
            "so pass the module inside DataParallel (model.module) and leave device_ids=None"
        )


def _check_layer(layer: Any) -> None:
    if not isinstance(layer, (nn.Module, str)):
        raise TypeError(
            f"layer must be a module of the model, a module path such as 'features.3' or a graph node "
            f"name such as 'relu_2', got {type(layer).__name__}"
        )


class LayerGradCam(AttributionMethod):
    """Grad-CAM at a layer: ``sum_c mean_spatial(dt/dA_c) * A_c`` (Selvaraju et al. 2017).

    Parameters
    ----------
    forward_func:
        The model (Captum's name for it), as ``model`` of
        :class:`~deltalift.methods.deeplift.DeepLift`.
    layer:
        A module of the model, a module path (``"features.3"``) or a graph node name.
    device_ids:
        Captum's DataParallel argument; must be ``None``.
    """

    #: Grad-CAM weighs activations by pooled gradients; it is not multiplied by ``inputs -
    #: baselines`` (Captum's ``multiplies_by_inputs`` is ``False``).
    multiplies_by_inputs_default = False

    def __init__(self, forward_func: Model, layer: LayerType, device_ids: Any = None) -> None:
        _no_device_ids(device_ids)
        _check_layer(layer)
        super().__init__(forward_func)
        self.layer = layer

    @property
    def forward_func(self) -> Model:
        """The model (Captum's name)."""
        return self.model

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims: Any, interpolate_mode: str = "nearest") -> Tensor:
        """Captum's ``LayerAttribution.interpolate``: :func:`interpolate` with Captum's argument
        names and default mode ``"nearest"``."""
        return interpolate(layer_attribution, interpolate_dims, interpolate_mode)

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Grad-CAM of ``target`` at the layer's output (or input) activation.

        Parameters
        ----------
        inputs, target, additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`;
            integer inputs (token ids) are accepted when the layer's activation is floating point.
        attribute_to_layer_input:
            Use the activation entering the layer instead of the one leaving it.
        relu_attributions:
            Apply the final ReLU of the paper's eq. 2 (off by default, as in Captum).
        attr_dim_summation:
            Sum over channels (dimension 1, kept with size 1); ``False`` returns per-channel maps.
        grad_kwargs:
            Captum's options of the gradient call (:func:`deltalift.inputs.check_grad_kwargs`);
            ``{"materialize_grads": True}`` gives zeros for a layer the output does not use.

        Returns
        -------
        A tensor of the activation's shape, with dimension 1 of size 1 when summed; a tuple of
        them for a module that returns (or takes) several tensors, as Captum's.
        """
        result = captured_gradients(
            self.forward_func,
            inputs,
            target,
            additional_forward_args,
            layer=self.layer,
            layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        cams = tuple(
            grad_cam(a, g, attr_dim_summation, relu_attributions) for a, g in zip(result.layers, result.layer_gradients)
        )
        return cams[0] if len(cams) == 1 else cams


class GuidedGradCam(AttributionMethod):
    """Guided Grad-CAM: Guided Backprop attributions times ``relu`` Grad-CAM upsampled to each
    input's spatial size (Selvaraju et al. 2017, section 3).

    Parameters
    ----------
    model:
        An ``nn.Module`` (in eval mode) or a forward function.  It is never modified.
    layer:
        The Grad-CAM layer (usually the last convolution): a module, a module path or a graph
        node name.
    device_ids:
        Captum's DataParallel argument; must be ``None``.
    """

    #: Not multiplied by ``inputs - baselines`` (Captum's ``multiplies_by_inputs`` is ``False``).
    multiplies_by_inputs_default = False

    def __init__(self, model: Model, layer: LayerType, device_ids: Any = None) -> None:
        self.grad_cam = LayerGradCam(model, layer, device_ids)
        self.guided_backprop = GuidedBackprop(model)
        super().__init__(model)

    def attribute(
        self,
        inputs: TensorOrTupleT,
        target: TargetType = None,
        additional_forward_args: Any = None,
        interpolate_mode: str = "nearest",
        attribute_to_layer_input: bool = False,
    ) -> TensorOrTupleT:
        """``GuidedBackprop(x) * interpolate(relu(GradCAM), x.shape[2:], interpolate_mode)`` per input.

        An input whose shape the Grad-CAM map cannot be resized to (a different number of
        dimensions, or a mode that does not fit them) gets an empty tensor and a warning, as in
        Captum.

        Parameters
        ----------
        inputs, target, additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`.
        interpolate_mode:
            ``F.interpolate``'s mode (default ``"nearest"``, as Captum; the paper uses bilinear).
        attribute_to_layer_input:
            Grad-CAM at the activation entering the layer instead of the one leaving it.
        """
        if interpolate_mode not in INTERPOLATE_MODES:
            raise ValueError(f"interpolate_mode must be one of {sorted(INTERPOLATE_MODES)}, got {interpolate_mode!r}")
        tensors, given_tuple = check_inputs(inputs)
        cam = self.grad_cam.attribute(
            tensors,
            target,
            additional_forward_args,
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=True,
        )
        if isinstance(cam, tuple):
            raise ValueError(
                f"the Grad-CAM layer has {len(cam)} activation tensors; Guided Grad-CAM upsamples one map: "
                "pass one of them by graph node name"
            )
        guided = self.guided_backprop.attribute(tensors, target, additional_forward_args)
        results = tuple(_times_upsampled(g, cam, interpolate_mode, i) for i, g in enumerate(guided))
        return cast(TensorOrTupleT, results if given_tuple else results[0])


def _times_upsampled(guided: Tensor, cam: Tensor, mode: str, index: int) -> Tensor:
    if guided.ndim != cam.ndim or guided.ndim not in INTERPOLATE_MODES[mode]:
        warnings.warn(
            f"Guided Grad-CAM: cannot resize the Grad-CAM map of shape {tuple(cam.shape)} to inputs[{index}] of "
            f"shape {tuple(guided.shape)} with mode {mode!r}; returning an empty tensor for that input",
            stacklevel=3,
        )
        return torch.empty(0, dtype=guided.dtype, device=guided.device)
    return guided * interpolate(cam, tuple(guided.shape[2:]), mode)
