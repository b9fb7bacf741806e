"""Guided Backprop, DeconvNet, Grad-CAM and Guided Grad-CAM on the captured graph.

Checked four ways:

- against Captum (float64, tight tolerance) where Captum is right: each ReLU an ``nn.ReLU`` module
  used once (small CNNs, a two-input model, torchvision's vgg11 with its ``ReLU(inplace=True)``);
- against the formulas re-derived by hand: the backward pass of a small MLP written out layer by
  layer with the rules at the ReLUs, and Grad-CAM from a hand-written forward split at the layer;
- on models Captum's module hooks get wrong (``F.relu``, a reused ``nn.ReLU``): the result must
  equal that of a twin with one ``nn.ReLU`` module per use, and Captum's must not;
- on torchvision's resnet18 (each block's ``self.relu`` runs twice), against an eager run where
  every ReLU call goes through an autograd function written here.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution as CaptumDeconvolution
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from captum.attr import LayerAttribution
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import nn

from deltalift.methods.grad_cam import GuidedGradCam, LayerGradCam, interpolate
from deltalift.methods.guided import Deconvolution, GuidedBackprop

torchvision = pytest.importorskip("torchvision")

DTYPE = torch.float64
TIGHT: dict[str, Any] = {"rtol": 1e-10, "atol": 1e-12}
Example = tuple[nn.Sequential, torch.Tensor, list[int]]
CAPTUM: dict[type, type] = {
    GuidedBackprop: CaptumGuidedBackprop,
    Deconvolution: CaptumDeconvolution,
    LayerGradCam: CaptumLayerGradCam,
    GuidedGradCam: CaptumGuidedGradCam,
}


def captum(cls: type, *args: Any, **kwargs: Any) -> Any:
    """Captum's twin of deltalift's ``cls``, built from ``args`` and run with ``kwargs``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CAPTUM[cls](*args).attribute(**kwargs)


def plain_gradient(model: nn.Module, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[torch.arange(len(target)), target].sum(), x)
    return grad


# ----------------------------------------------------------------------------------------------
# Models


def small_cnn() -> nn.Sequential:
    """Each ReLU an nn.ReLU module used once, one of them in place."""
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 16),
            nn.ReLU(),
            nn.Linear(16, 5),
        )
        .to(DTYPE)
        .eval()
    )


class SplitNet(nn.Module):
    """``head(features(x))``: Grad-CAM at ``features`` can be re-derived from the two halves."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 7, 3, padding=1))
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(7 * 6 * 6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FunctionalNet(nn.Module):
    """``F.relu`` after conv1 and one ``nn.ReLU`` module used twice (after conv2 and after fc1).

    Graph nodes: ``relu`` (the F.relu), ``relu_1`` and ``relu_2`` (the two calls of ``self.relu``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc1 = nn.Linear(6 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, 5)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = self.relu(self.conv2(x))
        x = self.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class ModulePerUseNet(FunctionalNet):
    """The same function with one ``nn.ReLU`` module per use: Captum is right on this one."""

    def __init__(self) -> None:
        super().__init__()
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.relu1(self.conv1(x)), 2)
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.fc1(x.flatten(1)))
        return self.fc2(x)


class TwoInputNet(nn.Module):
    """Two image inputs and an additional (not attributed) scale argument."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(1, 4, 3, padding=1)
        self.relu_a, self.relu_b, self.relu_c = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        x = self.relu_a(self.conv_a(a)) + scale * self.relu_b(self.conv_b(b))
        return self.fc(self.relu_c(self.conv(x)).flatten(1))


class VectorAndImageNet(nn.Module):
    """An image and a flat vector: Grad-CAM cannot be resized to the vector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu, self.relu_v = nn.ReLU(), nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8 + 5, 3)

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.relu(self.conv(image)).flatten(1), self.relu_v(vector)], 1))


@pytest.fixture(scope="module")
def twins() -> Twins:
    torch.manual_seed(1)
    functional = FunctionalNet().to(DTYPE).eval()
    per_use = ModulePerUseNet().to(DTYPE).eval()
    per_use.load_state_dict(functional.state_dict())
    return functional, per_use


Twins = tuple[FunctionalNet, ModulePerUseNet]
TwoInputs = tuple[TwoInputNet, torch.Tensor, torch.Tensor, torch.Tensor]


def small_vgg11() -> Any:
    """torchvision's VGG-11: its ``features`` (``make_layers(cfgs["A"])``, eight convolutions with
    ``ReLU(inplace=True)``, five max pools), its ``AdaptiveAvgPool2d(7)`` and forward, with the
    classifier narrowed from 4096 to 32 units (same layers) so that float64 weights stay small and
    quick to initialise."""
    vgg = torchvision.models.vgg
    with torch.device("meta"):
        model = vgg.vgg11()
    torch.manual_seed(2)
    model.features = vgg.make_layers(vgg.cfgs["A"])
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 32),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(32, 32),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(32, 10),
    )
    return model.to(DTYPE).eval()


class HandRuleReLU(torch.autograd.Function):
    """ReLU with the rule written out here: backward ``relu(g)``, times ``1{x > 0}`` if guided."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, guided: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.guided = guided
        return torch.where(x > 0, x, torch.zeros_like(x))

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        passed = torch.where(g > 0, g, torch.zeros_like(g))
        if ctx.guided:
            passed = torch.where(x > 0, passed, torch.zeros_like(passed))
        return passed, None


class HandRuleModule(nn.Module):
    def __init__(self, guided: bool) -> None:
        super().__init__()
        self.guided = guided

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return HandRuleReLU.apply(x, self.guided)


def eager_with_hand_rule(model: nn.Module, guided: bool) -> nn.Module:
    """A copy of ``model`` whose every ``nn.ReLU`` module runs :class:`HandRuleReLU` at each call."""
    copied = copy.deepcopy(model)
    for name, module in list(copied.named_modules()):
        if isinstance(module, nn.ReLU):
            parent, _, attr = name.rpartition(".")
            setattr(copied.get_submodule(parent) if parent else copied, attr, HandRuleModule(guided))
    return copied


# ----------------------------------------------------------------------------------------------
# Guided Backprop and DeconvNet


@pytest.fixture(scope="module")
def cnn() -> Example:
    model = small_cnn()
    torch.manual_seed(3)
    return model, torch.randn(4, 3, 8, 8, dtype=DTYPE), [0, 2, 4, 1]


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
def test_modified_relu_gradients_match_captum(cnn: Example, method: type) -> None:
    model, x, target = cnn
    ours = method(model).attribute(x, target=target)
    theirs = captum(method, model, inputs=x, target=target)
    torch.testing.assert_close(ours, theirs, **TIGHT)
    # the rule changed something: neither equals the plain gradient
    assert (ours - plain_gradient(model, x, target)).abs().max() > 1e-3


def test_guided_backprop_and_deconvnet_differ(cnn: Example) -> None:
    model, x, target = cnn
    guided = GuidedBackprop(model).attribute(x, target=target)
    deconv = Deconvolution(model).attribute(x, target=target)
    assert (guided - deconv).abs().max() > 1e-3


@pytest.fixture(scope="module")
def two_inputs() -> TwoInputs:
    torch.manual_seed(4)
    model = TwoInputNet().to(DTYPE).eval()
    a, b, scale = (
        torch.randn(3, 3, 8, 8, dtype=DTYPE),
        torch.randn(3, 1, 8, 8, dtype=DTYPE),
        torch.tensor(0.7, dtype=DTYPE),
    )
    return model, a, b, scale


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
def test_tuple_inputs_and_additional_args_match_captum(two_inputs: TwoInputs, method: type) -> None:
    model, a, b, scale = two_inputs
    ours = method(model).attribute((a, b), target=[2, 0, 1], additional_forward_args=(scale,))
    theirs = captum(method, model, inputs=(a, b), target=[2, 0, 1], additional_forward_args=(scale,))
    assert isinstance(ours, tuple) and len(ours) == 2
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, **TIGHT)


def hand_mlp_backward(
    weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor, t: int, guided: bool
) -> torch.Tensor:
    """``W3 relu(W2 relu(W1 x + b1) + b2) + b3`` differentiated by hand, layer by layer, with the
    rule at each ReLU: ``g_z = relu(g_h) * 1{z > 0}`` (guided) or ``relu(g_h)`` (DeconvNet)."""
    z1 = x @ weights[0].T + biases[0]
    z2 = torch.relu(z1) @ weights[1].T + biases[1]
    g = weights[2][t].expand(x.shape[0], -1)  # d y_t / d h2
    for z, w in ((z2, weights[1]), (z1, weights[0])):
        g = g.clamp(min=0) * (z > 0) if guided else g.clamp(min=0)
        g = g @ w  # d / d (layer input)
    return g


@pytest.mark.parametrize("method, guided", [(GuidedBackprop, True), (Deconvolution, False)])
def test_functional_mlp_matches_hand_derived_backward(method: type, guided: bool) -> None:
    torch.manual_seed(5)
    sizes = [(7, 6), (9, 7), (4, 9)]
    weights = [torch.randn(o, i, dtype=DTYPE) for o, i in sizes]
    biases = [torch.randn(o, dtype=DTYPE) for o, _ in sizes]

    def forward(x: torch.Tensor) -> torch.Tensor:  # the in-place functional forms of ReLU
        h = F.relu(x @ weights[0].T + biases[0], inplace=True)
        h = (h @ weights[1].T + biases[1]).relu_()
        return h @ weights[2].T + biases[2]

    x = torch.randn(5, 6, dtype=DTYPE)
    ours = method(forward).attribute(x, target=3)
    torch.testing.assert_close(ours, hand_mlp_backward(weights, biases, x, 3, guided), **TIGHT)


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
def test_relu_relatives_keep_their_derivative(method: type) -> None:
    """leaky_relu, relu6 (hardtanh) and threshold are not ReLUs here (nor in Captum)."""
    torch.manual_seed(16)
    weights = [torch.randn(8, 6, dtype=DTYPE), torch.randn(8, 8, dtype=DTYPE), torch.randn(3, 8, dtype=DTYPE)]

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(F.leaky_relu(x @ weights[0].T, 0.1) * 3)
        return F.threshold(h @ weights[1].T, 0.2, 0.0) @ weights[2].T

    x = torch.randn(4, 6, dtype=DTYPE)
    x_leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(forward(x_leaf)[:, 1].sum(), x_leaf)
    torch.testing.assert_close(method(forward).attribute(x, target=1), expected, **TIGHT)


@pytest.mark.parametrize("method, guided", [(GuidedBackprop, True), (Deconvolution, False)])
def test_functional_and_reused_relus_equal_module_per_use_twin(twins: Twins, method: type, guided: bool) -> None:
    functional, per_use = twins
    torch.manual_seed(6)
    x, target = torch.randn(3, 2, 8, 8, dtype=DTYPE), [4, 0, 2]
    ours = method(functional).attribute(x, target=target)
    twin = method(per_use).attribute(x, target=target)
    torch.testing.assert_close(ours, twin, **TIGHT)
    torch.testing.assert_close(twin, captum(method, per_use, inputs=x, target=target), **TIGHT)
    by_hand = plain_gradient(eager_with_hand_rule(per_use, guided), x, target)
    torch.testing.assert_close(ours, by_hand, **TIGHT)
    # evidence: Captum's hooks miss the F.relu of the functional model
    wrong = captum(method, functional, inputs=x, target=target)
    assert (wrong - ours).abs().max() > 1e-2 * ours.abs().max()


@pytest.fixture(scope="module")
def resnet18() -> tuple[Any, torch.Tensor, list[int]]:
    torch.manual_seed(7)
    model = torchvision.models.resnet18(num_classes=10).to(DTYPE).eval()
    return model, torch.randn(2, 3, 32, 32, dtype=DTYPE), [3, 8]


@pytest.mark.parametrize("method, guided", [(GuidedBackprop, True), (Deconvolution, False)])
def test_resnet18_with_reused_relu_matches_eager_hand_rule(
    resnet18: tuple[Any, torch.Tensor, list[int]], method: type, guided: bool
) -> None:
    model, x, target = resnet18
    ours = method(model).attribute(x, target=target)
    expected = plain_gradient(eager_with_hand_rule(model, guided), x, target)
    torch.testing.assert_close(ours, expected, **TIGHT)
    assert (ours - plain_gradient(model, x, target)).abs().max() > 1e-3 * ours.abs().max()


def test_vgg11_with_inplace_relus_matches_captum() -> None:
    model = small_vgg11()
    torch.manual_seed(8)
    x, target = torch.randn(2, 3, 32, 32, dtype=DTYPE), [1, 7]
    for method in (GuidedBackprop, Deconvolution):
        ours = method(model).attribute(x, target=target)
        torch.testing.assert_close(ours, captum(method, model, inputs=x, target=target), **TIGHT)
    last_conv = model.features[18]  # 512 channels at 2 x 2, followed by ReLU(inplace=True)
    cam = LayerGradCam(model, last_conv).attribute(x, target=target)
    assert cam.shape == (2, 1, 2, 2)
    torch.testing.assert_close(cam, captum(LayerGradCam, model, last_conv, inputs=x, target=target), **TIGHT)
    guided_cam = GuidedGradCam(model, "features.18").attribute(x, target=target, interpolate_mode="bilinear")
    theirs = captum(GuidedGradCam, model, last_conv, inputs=x, target=target, interpolate_mode="bilinear")
    torch.testing.assert_close(guided_cam, theirs, **TIGHT)
    assert guided_cam.abs().max() > 0


# ----------------------------------------------------------------------------------------------
# Grad-CAM


@pytest.mark.parametrize("index", [0, 1, 3, 4])
@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("relu, summation", [(False, True), (True, True), (False, False)])
def test_layer_grad_cam_matches_captum(cnn: Example, index: int, to_input: bool, relu: bool, summation: bool) -> None:
    model, x, target = cnn
    options = {"attribute_to_layer_input": to_input, "relu_attributions": relu, "attr_dim_summation": summation}
    ours = LayerGradCam(model, model[index]).attribute(x, target=target, **options)
    theirs = captum(LayerGradCam, model, model[index], inputs=x, target=target, **options)
    torch.testing.assert_close(ours, theirs, **TIGHT)


def test_grad_cam_of_a_flat_layer_uses_the_gradient_itself(cnn: Example) -> None:
    model, x, target = cnn
    ours = LayerGradCam(model, model[7]).attribute(x, target=target)  # (batch, 16): no spatial dims
    torch.testing.assert_close(ours, captum(LayerGradCam, model, model[7], inputs=x, target=target), **TIGHT)
    assert ours.shape == (4, 1)


def hand_grad_cam(model: SplitNet, x: torch.Tensor, target: list[int], relu: bool, summation: bool) -> torch.Tensor:
    """Grad-CAM from the two halves: ``A = features(x)``, ``G = d head(A)_t / dA``, weights the
    spatial mean of ``G`` per channel, map ``sum_c w_c A_c`` (written as a loop), then ReLU."""
    activation = model.features(x).detach().requires_grad_(True)
    outputs = model.head(activation)
    (gradient,) = torch.autograd.grad(outputs[torch.arange(len(target)), target].sum(), activation)
    activation = activation.detach()
    _, channels, height, width = activation.shape
    weights = gradient.sum(dim=(2, 3)) / (height * width)  # global average pooling, (n, channels)
    maps = [weights[:, c, None, None] * activation[:, c] for c in range(channels)]  # (n, height, width) each
    if summation:
        cam = torch.zeros_like(maps[0])
        for channel_map in maps:
            cam = cam + channel_map
        cam = cam[:, None]
    else:
        cam = torch.stack(maps, 1)
    return torch.relu(cam) if relu else cam


@pytest.fixture(scope="module")
def split_net() -> SplitNet:
    torch.manual_seed(9)
    return SplitNet().to(DTYPE).eval()


@pytest.mark.parametrize("relu, summation", [(True, True), (False, True), (True, False)])
def test_grad_cam_equals_hand_derivation(split_net: SplitNet, relu: bool, summation: bool) -> None:
    model = split_net
    torch.manual_seed(15)
    x, target = torch.randn(3, 3, 6, 6, dtype=DTYPE), [0, 3, 1]
    ours = LayerGradCam(model, model.features).attribute(
        x, target=target, relu_attributions=relu, attr_dim_summation=summation
    )
    expected = hand_grad_cam(model, x, target, relu, summation)
    torch.testing.assert_close(ours, expected, **TIGHT)
    if relu:
        assert (ours > 0).any() and (ours == 0).any()  # the ReLU cut something and kept something


def test_guided_grad_cam_equals_its_parts_by_hand(split_net: SplitNet) -> None:
    model = split_net
    torch.manual_seed(10)
    x, target = torch.randn(3, 3, 6, 6, dtype=DTYPE), [2, 2, 0]
    guided = plain_gradient(eager_with_hand_rule(model, guided=True), x, target)
    cam = hand_grad_cam(model, x, target, relu=True, summation=True)
    ours = GuidedGradCam(model, "features").attribute(x, target=target)
    torch.testing.assert_close(ours, guided * cam, **TIGHT)  # same spatial size: nearest is the identity


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "area"])
@pytest.mark.parametrize("index", [3, 4])
def test_guided_grad_cam_matches_captum(cnn: Example, mode: str, index: int) -> None:
    model, x, target = cnn
    ours = GuidedGradCam(model, model[index]).attribute(x, target=target, interpolate_mode=mode)
    theirs = captum(GuidedGradCam, model, model[index], inputs=x, target=target, interpolate_mode=mode)
    torch.testing.assert_close(ours, theirs, **TIGHT)
    assert ours.shape == x.shape and ours.abs().max() > 0


def test_guided_grad_cam_on_tuple_inputs_matches_captum(two_inputs: TwoInputs) -> None:
    model, a, b, scale = two_inputs
    kwargs: dict[str, Any] = {"target": [0, 1, 2], "additional_forward_args": (scale,)}
    ours = GuidedGradCam(model, model.conv).attribute((a, b), **kwargs)
    theirs = captum(GuidedGradCam, model, model.conv, inputs=(a, b), **kwargs)
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, **TIGHT)


def test_guided_grad_cam_gives_empty_tensor_where_it_cannot_resize_like_captum() -> None:
    torch.manual_seed(12)
    model = VectorAndImageNet().to(DTYPE).eval()
    image, vector = torch.randn(2, 3, 8, 8, dtype=DTYPE), torch.randn(2, 5, dtype=DTYPE)
    with pytest.warns(UserWarning, match=r"cannot resize the Grad-CAM map .* inputs\[1\]"):
        ours = GuidedGradCam(model, model.conv).attribute((image, vector), target=1)
    theirs = captum(GuidedGradCam, model, model.conv, inputs=(image, vector), target=1)
    torch.testing.assert_close(ours[0], theirs[0], **TIGHT)
    assert ours[1].numel() == 0 and theirs[1].numel() == 0


def test_grad_cam_on_functional_and_reused_layers_equals_module_per_use_twin(twins: Twins) -> None:
    """A functional op's output and each call of a reused module are picked by graph node name."""
    functional, per_use = twins
    torch.manual_seed(13)
    x, target = torch.randn(3, 2, 8, 8, dtype=DTYPE), [1, 3, 0]
    with pytest.raises(ValueError, match="both a module path and a graph node name"):
        LayerGradCam(functional, "relu").attribute(x, target=target)
    for node, twin_layer in (("node:relu", per_use.relu1), ("relu_1", per_use.relu2), ("relu_2", per_use.relu3)):
        ours = LayerGradCam(functional, node).attribute(x, target=target)
        twin = LayerGradCam(per_use, twin_layer).attribute(x, target=target)
        torch.testing.assert_close(ours, twin, **TIGHT)
        torch.testing.assert_close(twin, captum(LayerGradCam, per_use, twin_layer, inputs=x, target=target), **TIGHT)
    ours = GuidedGradCam(functional, functional.conv2).attribute(x, target=target)
    twin = GuidedGradCam(per_use, per_use.conv2).attribute(x, target=target)
    torch.testing.assert_close(ours, twin, **TIGHT)
    torch.testing.assert_close(twin, captum(GuidedGradCam, per_use, per_use.conv2, inputs=x, target=target), **TIGHT)
    wrong = captum(GuidedGradCam, functional, functional.conv2, inputs=x, target=target)
    assert (wrong - ours).abs().max() > 1e-2 * ours.abs().max()


def test_guided_grad_cam_on_resnet18_matches_hand_rule_and_captum_grad_cam(
    resnet18: tuple[Any, torch.Tensor, list[int]],
) -> None:
    model, x, target = resnet18
    ours = GuidedGradCam(model, "layer3").attribute(x, target=target, interpolate_mode="bilinear")
    guided = plain_gradient(eager_with_hand_rule(model, guided=True), x, target)
    cam = captum(LayerGradCam, model, model.layer3, inputs=x, target=target, relu_attributions=True)  # layer3 runs once
    expected = guided * F.interpolate(cam, size=x.shape[2:], mode="bilinear")
    torch.testing.assert_close(ours, expected, **TIGHT)
    assert ours.abs().max() > 0


def test_layer_by_module_path_and_node_name_agree(cnn: Example) -> None:
    model, x, target = cnn
    by_module = LayerGradCam(model, model[4]).attribute(x, target=target)
    by_path = LayerGradCam(model, "4").attribute(x, target=target)
    by_node = LayerGradCam(model, "relu_1").attribute(x, target=target)  # the second aten.relu of the graph
    torch.testing.assert_close(by_path, by_module, rtol=0, atol=0)
    torch.testing.assert_close(by_node, by_module, rtol=0, atol=0)
    by_node_input = LayerGradCam(model, "relu_1").attribute(x, target=target, attribute_to_layer_input=True)
    torch.testing.assert_close(by_node_input, LayerGradCam(model, model[3]).attribute(x, target=target), **TIGHT)


# ----------------------------------------------------------------------------------------------
# interpolate and errors


def test_interpolate_helpers() -> None:
    torch.manual_seed(14)
    cam = torch.randn(2, 1, 3, 4, dtype=DTYPE)
    torch.testing.assert_close(interpolate(cam, (6, 8)), F.interpolate(cam, (6, 8), mode="bilinear"), rtol=0, atol=0)
    torch.testing.assert_close(
        LayerGradCam.interpolate(cam, (6, 8)), LayerAttribution.interpolate(cam, (6, 8)), rtol=0, atol=0
    )
    torch.testing.assert_close(interpolate(cam, (6, 8), "nearest")[..., ::2, ::2], cam, rtol=0, atol=0)
    with pytest.raises(ValueError, match="mode 'bilinear' resizes tensors with 4 dimensions"):
        interpolate(cam[:, :, 0], 5)
    with pytest.raises(ValueError, match="mode must be one of"):
        interpolate(cam, (6, 8), "cubic")


def test_layer_errors(cnn: Example) -> None:
    model, x, target = cnn
    with pytest.raises(ValueError, match="not a submodule of the model"):
        LayerGradCam(model, nn.Conv2d(3, 3, 1)).attribute(x, target=target)
    with pytest.raises(ValueError, match="layer no.such.layer does not run any operation"):
        LayerGradCam(model, "no.such.layer").attribute(x, target=target)
    with pytest.raises(TypeError, match="layer must be a module of the model, a module path"):
        LayerGradCam(model, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="layer must be"):
        GuidedGradCam(model, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device_ids"):
        LayerGradCam(model, model[0], device_ids=[0])
    with pytest.raises(ValueError, match="interpolate_mode must be one of"):
        GuidedGradCam(model, model[3]).attribute(x, target=target, interpolate_mode="cubic")


def test_reused_module_as_layer_names_its_calls(twins: Twins) -> None:
    functional, _ = twins
    x = torch.randn(3, 2, 8, 8, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"module relu runs 2 times .* graph node name .*relu_1, relu_2"):
        LayerGradCam(functional, functional.relu).attribute(x, target=0)
    with pytest.raises(ValueError, match="runs 2 times"):
        GuidedGradCam(functional, functional.relu).attribute(x, target=0)


def test_target_errors_are_deltalifts(cnn: Example) -> None:
    model, x, _ = cnn
    with pytest.raises(ValueError, match="target 5 is out of range"):
        GuidedBackprop(model).attribute(x, target=5)
    with pytest.raises(ValueError, match="pass target="):
        LayerGradCam(model, model[0]).attribute(x)
