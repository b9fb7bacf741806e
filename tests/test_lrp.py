"""LRP on the captured graph against Zennit (float64), relevance conservation, and the graph's
advantages (functional and reused ReLUs).

Zennit is run through ``zennit.attribution.Gradient`` with the output relevance set to the target
logit (``attr_output = output * one_hot``), which is what deltalift distributes.  Zennit's
``SequentialMergeBatchNorm`` leaves each merged batch norm computing ``x / sqrt(1 + eps)``
instead of the identity, so its canonized forward pass differs from the model by a factor
``(1 + eps)^-1/2`` per batch norm; the batch-norm models below use ``eps = 0`` to compare exactly.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift.errors import UnsupportedOperationError
from deltalift.methods.lrp import LRP
from deltalift.methods.lrp.composites import (
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
)
from deltalift.methods.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Gradient, WSquare, ZBox, ZPlus, as_rule

zennit = pytest.importorskip("zennit")
from zennit import canonizers as zcan  # noqa: E402
from zennit import composites as zcomp  # noqa: E402
from zennit import rules as zrules  # noqa: E402
from zennit.attribution import Gradient as ZennitGradient  # noqa: E402
from zennit.layer import Sum as ZennitSum  # noqa: E402
from zennit.types import Activation, AvgPool, BatchNorm, Convolution  # noqa: E402
from zennit.types import Linear as AnyLinear  # noqa: E402

DTYPE = torch.float64
RTOL = 1e-8


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The models are small: one thread is several times faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# models and helpers


@functools.cache  # one instance per kind, so that its captured graph is reused (capturing takes seconds)
def small_vgg(bias: bool = True) -> nn.Sequential:
    """Convs + ReLU + MaxPool + average pooling + dense layers, VGG-style."""
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 32, bias=bias),
            nn.ReLU(),
            nn.Linear(32, 10, bias=bias),
        )
        .to(DTYPE)
        .eval()
    )


@functools.cache
def bn_vgg() -> nn.Sequential:
    """Conv -> BatchNorm -> ReLU blocks and a dense -> BatchNorm1d block, with non-trivial statistics."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = 0.0  # see the module docstring
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.2)
    return model.to(DTYPE).eval()


def images(n: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    return torch.randn(n, 3, size, size, dtype=DTYPE), torch.tensor([1, 4, 7, 2, 9][:n])


def zennit_lrp(model: nn.Module, composite: object, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Zennit's relevance with the target logit as output relevance."""
    x = x.clone().requires_grad_(True)
    with ZennitGradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(target, out.shape[1]).to(out))
    return relevance.detach()


def zennit_layer_map(conv: object, dense: object) -> list[tuple[object, object]]:
    """Zennit's shared base map with ``conv``/``dense`` rules (what deltalift's Composite does)."""
    return [
        (Activation, zrules.Pass()),
        (ZennitSum, zrules.Norm()),
        (AvgPool, zrules.Norm()),
        (BatchNorm, zrules.Pass()),
        (Convolution, conv),
        (nn.Linear, dense),
    ]


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    scale = theirs.abs().max()
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=RTOL * float(scale))


# --------------------------------------------------------------------------------------------------
# single rules on conv and dense layers, against Zennit


RULES = {
    "epsilon": (lambda: zrules.Epsilon(1e-6), lambda: Epsilon(1e-6)),
    "epsilon_large": (lambda: zrules.Epsilon(0.5), lambda: Epsilon(0.5)),
    "epsilon_zero_bias": (lambda: zrules.Epsilon(0.01, zero_params=["bias"]), lambda: Epsilon(0.01, ["bias"])),
    "zplus": (lambda: zrules.ZPlus(), lambda: ZPlus()),
    "alpha1beta0": (lambda: zrules.AlphaBeta(1, 0), lambda: AlphaBeta(1, 0)),
    "alpha2beta1": (lambda: zrules.AlphaBeta(2, 1), lambda: AlphaBeta(2, 1)),
    "gamma": (lambda: zrules.Gamma(0.25), lambda: Gamma(0.25)),
    "gamma_large": (lambda: zrules.Gamma(2.0, zero_params=["bias"]), lambda: Gamma(2.0, zero_params=["bias"])),
}


@pytest.mark.parametrize("name", RULES)
def test_rule_on_all_layers_matches_zennit(name: str) -> None:
    theirs_rule, ours_rule = RULES[name]
    model = small_vgg()
    x, target = images()
    theirs = zennit_lrp(model, zcomp.LayerMapComposite(zennit_layer_map(theirs_rule(), theirs_rule())), x, target)
    ours = LRP(model, Composite(layer_map={("conv", "dense"): ours_rule()})).attribute(x, target=target)
    assert_same(ours, theirs)


FIRST_RULES = {
    "zbox": (lambda: zrules.ZBox(-3.0, 3.0), lambda: ZBox(-3.0, 3.0)),
    "zbox_per_channel": (
        lambda: zrules.ZBox(torch.tensor([-2.0, -3.0, -4.0]).reshape(1, 3, 1, 1), 3.0),
        lambda: ZBox(torch.tensor([-2.0, -3.0, -4.0]).reshape(1, 3, 1, 1), 3.0),
    ),
    "flat": (lambda: zrules.Flat(), lambda: Flat()),
    "wsquare": (lambda: zrules.WSquare(), lambda: WSquare()),
}


@pytest.mark.parametrize("name", FIRST_RULES)
def test_input_layer_rule_matches_zennit(name: str) -> None:
    theirs_rule, ours_rule = FIRST_RULES[name]
    model = small_vgg()
    x, target = images()
    layer_map = zennit_layer_map(zrules.ZPlus(), zrules.Epsilon())
    theirs_composite = zcomp.SpecialFirstLayerMapComposite(layer_map, [(AnyLinear, theirs_rule())])
    theirs = zennit_lrp(model, theirs_composite, x, target)
    composite = Composite(layer_map={"conv": ZPlus(), "dense": Epsilon()}, first_map={("conv", "dense"): ours_rule()})
    ours = LRP(model, composite).attribute(x, target=target)
    assert_same(ours, theirs)


# --------------------------------------------------------------------------------------------------
# composites, against Zennit's composites of the same names


COMPOSITES = {
    "epsilon_plus": (lambda c: zcomp.EpsilonPlus(canonizers=c), lambda m: EpsilonPlus(merge_batch_norm=m)),
    "epsilon_alpha2_beta1": (
        lambda c: zcomp.EpsilonAlpha2Beta1(canonizers=c),
        lambda m: EpsilonAlpha2Beta1(merge_batch_norm=m),
    ),
    "epsilon_plus_flat": (lambda c: zcomp.EpsilonPlusFlat(canonizers=c), lambda m: EpsilonPlusFlat(merge_batch_norm=m)),
    "epsilon_alpha2_beta1_flat": (
        lambda c: zcomp.EpsilonAlpha2Beta1Flat(canonizers=c),
        lambda m: EpsilonAlpha2Beta1Flat(merge_batch_norm=m),
    ),
    "epsilon_gamma_box": (
        lambda c: zcomp.EpsilonGammaBox(low=-3.0, high=3.0, canonizers=c),
        lambda m: EpsilonGammaBox(low=-3.0, high=3.0, merge_batch_norm=m),
    ),
}


@pytest.mark.parametrize("name", COMPOSITES)
def test_composite_matches_zennit(name: str) -> None:
    theirs_composite, ours_composite = COMPOSITES[name]
    model = small_vgg()
    x, target = images()
    assert_same(
        LRP(model, ours_composite(True)).attribute(x, target=target), zennit_lrp(model, theirs_composite([]), x, target)
    )


@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"])
def test_batch_norm_merged_as_zennit_canonizer(name: str) -> None:
    theirs_composite, ours_composite = COMPOSITES[name]
    model = bn_vgg()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, target = images(2)
    ours = LRP(model, ours_composite(True)).attribute(x, target=target)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # merged in copies only
    theirs = zennit_lrp(model, theirs_composite([zcan.SequentialMergeBatchNorm()]), x, target)
    assert_same(ours, theirs)


def test_batch_norm_unmerged_passes_relevance_as_zennit_without_canonizer() -> None:
    model = bn_vgg()
    x, target = images(2)
    theirs = zennit_lrp(model, zcomp.EpsilonPlus(), x, target)
    ours = LRP(model, EpsilonPlus(merge_batch_norm=False)).attribute(x, target=target)
    assert_same(ours, theirs)
    merged = LRP(model, EpsilonPlus()).attribute(x, target=target)
    assert (merged - ours).abs().max() > 1e-3 * ours.abs().max()  # the choice matters


def test_name_map_matches_zennit_name_map() -> None:
    model = small_vgg()
    x, target = images()
    theirs_composite = zcomp.NameLayerMapComposite(
        name_map=[(("0",), zrules.Flat()), (("5", "12"), zrules.AlphaBeta(1, 0))],
        layer_map=zennit_layer_map(zrules.Gamma(0.5), zrules.Epsilon(0.1)),
    )
    theirs = zennit_lrp(model, theirs_composite, x, target)
    composite = Composite(
        layer_map={"conv": Gamma(0.5), "dense": Epsilon(0.1)},
        name_map={"0": "flat", ("5", "12"): "alpha1beta0"},
    )
    assert_same(LRP(model, composite).attribute(x, target=target), theirs)


def test_torchvision_vgg11_matches_zennit() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    model = torchvision.models.vgg11_bn(num_classes=10)
    # the 25088 x 4096 dense layers are replaced by small ones to keep float64 on CPU fast
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 16),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(16, 16),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(16, 10),
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
            module.running_var.uniform_(0.5, 2.0)
    model = model.to(DTYPE).eval()
    x = torch.randn(1, 3, 32, 32, dtype=DTYPE)
    target = torch.tensor([3])
    theirs = zennit_lrp(model, zcomp.EpsilonPlusFlat(canonizers=[zcan.SequentialMergeBatchNorm()]), x, target)
    assert_same(LRP(model, "epsilon_plus_flat").attribute(x, target=target), theirs)


def test_torchvision_resnet18_matches_zennit_resnet_canonizer() -> None:
    """Residual additions get Norm (Zennit needs its ResNet canonizer to turn them into ``Sum``
    modules; on the graph they are additions of two activations) and batch norms are merged."""
    torchvision = pytest.importorskip("torchvision")
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(10)
    model = torchvision.models.resnet18(num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.normal_(0, 0.1)
    model = model.to(DTYPE).eval()
    x = torch.randn(1, 3, 32, 32, dtype=DTYPE)
    target = torch.tensor([5])
    theirs = zennit_lrp(model, zcomp.EpsilonGammaBox(-3.0, 3.0, canonizers=[ResNetCanonizer()]), x, target)
    assert_same(LRP(model, EpsilonGammaBox(-3.0, 3.0)).attribute(x, target=target), theirs)


@pytest.mark.parametrize("name", ["epsilon_gamma_box", "epsilon_alpha2_beta1"])
def test_other_layer_types_match_zennit(name: str) -> None:
    """Transposed and 1-d convolutions, average pooling, a dense layer without bias."""
    torch.manual_seed(11)

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2)
            self.up = nn.ConvTranspose2d(4, 4, 3, stride=2)
            self.pool = nn.AvgPool2d(2)
            self.line = nn.Conv1d(4, 6, 3)
            self.fc = nn.Linear(6 * 6, 4, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.pool(F.relu(self.up(F.relu(self.conv(x)))))  # (N, 4, 7, 7)
            h = F.relu(self.line(h.flatten(2)))[:, :, ::9]  # (N, 6, 6)
            return self.fc(h.flatten(1))

    model = Mixed().to(DTYPE).eval()
    x = torch.randn(2, 3, 15, 15, dtype=DTYPE)
    target = torch.tensor([0, 3])
    theirs_composite, ours_composite = COMPOSITES[name]
    assert_same(
        LRP(model, ours_composite(True)).attribute(x, target=target), zennit_lrp(model, theirs_composite([]), x, target)
    )


def test_input_layer_rule_reaches_inputs_equal_to_zero() -> None:
    """Flat/z^B relevance is not proportional to the input: pixels equal to zero (most of an
    MNIST digit) get relevance too, through the flatten before the first dense layer."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).to(DTYPE).eval()
    x = torch.rand(2, 1, 8, 8, dtype=DTYPE) * (torch.rand(2, 1, 8, 8) > 0.6)
    target = torch.tensor([0, 2])
    for theirs_rule, ours_rule in [(zrules.Flat(), Flat()), (zrules.ZBox(0.0, 1.0), ZBox(0.0, 1.0))]:
        theirs_composite = zcomp.SpecialFirstLayerMapComposite(
            zennit_layer_map(zrules.ZPlus(), zrules.Epsilon()), [(AnyLinear, theirs_rule)]
        )
        theirs = zennit_lrp(model, theirs_composite, x, target)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = LRP(model, Composite(layer_map={"dense": Epsilon()}, first_map={"dense": ours_rule})).attribute(
                x, target=target
            )
        assert_same(ours, theirs)
        assert (ours[x == 0] != 0).all()


# --------------------------------------------------------------------------------------------------
# conservation


@pytest.mark.parametrize(
    "rule", [ZPlus(1e-14), AlphaBeta(1, 0, 1e-14), AlphaBeta(2, 1, 1e-14), Gamma(0.5, 1e-14)], ids=repr
)
def test_rules_conserve_relevance_on_bias_free_relu_nets(rule: object) -> None:
    model = small_vgg(bias=False)
    x, target = images()
    composite = Composite(layer_map={("conv", "dense"): rule}, stabilizer=1e-14)  # Norm at the average pooling
    relevance, delta = LRP(model, composite).attribute(x, target=target, return_convergence_delta=True)
    t = model(x).detach().gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(relevance.flatten(1).sum(1), t, rtol=1e-9, atol=0)
    torch.testing.assert_close(delta, torch.zeros_like(delta), rtol=0, atol=1e-9 * float(t.abs().max()))


def test_flat_and_zplus_composite_conserves_on_bias_free_nets() -> None:
    model = small_vgg(bias=False)
    x, target = images()
    _, delta = LRP(model, EpsilonPlusFlat(epsilon=1e-14, stabilizer=1e-14)).attribute(
        x, target=target, return_convergence_delta=True
    )
    t = model(x).detach().gather(1, target[:, None])[:, 0]
    assert (delta.abs() <= 1e-9 * t.abs()).all()


def test_epsilon_conserves_approximately_and_biases_absorb_relevance() -> None:
    x, target = images()
    model = small_vgg(bias=False)
    t = model(x).detach().gather(1, target[:, None])[:, 0]
    _, delta = LRP(model, Composite(layer_map={("conv", "dense"): Epsilon(1e-9)}, stabilizer=1e-9)).attribute(
        x, target=target, return_convergence_delta=True
    )
    assert (delta.abs() <= 1e-4 * t.abs()).all()
    _, delta_large = LRP(model, Composite(layer_map={("conv", "dense"): Epsilon(1.0)})).attribute(
        x, target=target, return_convergence_delta=True
    )
    assert (delta_large.abs() > 1e-3 * t.abs()).all()  # a large epsilon absorbs relevance
    with_bias = small_vgg()
    _, delta_bias = LRP(with_bias, "epsilon").attribute(x, target=target, return_convergence_delta=True)
    assert (delta_bias.abs() > 1e-6).all()


class Gated(nn.Module):
    """``last(relu(W1 x) * (W2 x))``: a product of two activations."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second, self.last = (nn.Linear(6, 5, bias=False), nn.Linear(6, 5, bias=False), nn.Linear(5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(torch.relu(self.first(x)) * self.second(x))


def test_uniform_rule_conserves_through_products() -> None:
    """Each factor of a product gets half its relevance (AttnLRP's uniform rule)."""
    torch.manual_seed(5)
    model = Gated().to(DTYPE).eval()
    model.last.bias.data.zero_()
    x = torch.randn(4, 6, dtype=DTYPE)
    composite = Composite(layer_map={"dense": Gradient(), "product": "uniform"})
    relevance, delta = LRP(model, composite).attribute(x, target=2, return_convergence_delta=True)
    assert delta.abs().max() < 1e-12
    assert relevance.abs().sum() > 0
    with pytest.raises(UnsupportedOperationError, match="'uniform' gives each factor half"):
        LRP(model).attribute(x, target=2)


# --------------------------------------------------------------------------------------------------
# operations, not modules


class ModulePerUse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(6 * 8 * 8, 12), nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


class FunctionalAndReused(ModulePerUse):
    """The same network with ``F.relu`` once and one ReLU module used twice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv2(F.relu(self.conv1(x)))))
        return self.fc2(self.relu1(self.fc1(x.flatten(1))))


@functools.cache
def twins() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(6)
    twin = ModulePerUse().to(DTYPE).eval()
    model = FunctionalAndReused().to(DTYPE).eval()
    model.load_state_dict(twin.state_dict())
    return model, twin


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon"])
def test_functional_and_reused_relu_same_as_module_per_use(name: str) -> None:
    model, twin = twins()
    x, _ = images(3)
    target = torch.tensor([0, 3, 4])
    ours = LRP(model, name).attribute(x, target=target)
    assert_same(ours, LRP(twin, name).attribute(x, target=target))
    theirs_composite = {
        "epsilon_plus_flat": zcomp.EpsilonPlusFlat,
        "epsilon_alpha2_beta1": zcomp.EpsilonAlpha2Beta1,
        "epsilon": lambda: zcomp.LayerMapComposite(zennit_layer_map(zrules.Epsilon(), zrules.Epsilon())),
    }[name]()
    assert_same(ours, zennit_lrp(twin, theirs_composite, x, target))


# --------------------------------------------------------------------------------------------------
# a slow re-derivation from the formulas


def test_slow_rederivation_of_zplus_and_epsilon_on_a_dense_net() -> None:
    """``R_i = sum_j a_i w_ij+ / sum_i' a_i' w_i'j+ R_j`` (z+, Montavon et al. 2017) in the first
    layer and ``R_j = sum_k a_j w_jk / (z_k + eps sign z_k) R_k`` (epsilon) in the second, by loops."""
    torch.manual_seed(7)
    first, second = nn.Linear(4, 3, bias=False).to(DTYPE), nn.Linear(3, 2).to(DTYPE)
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    x = torch.rand(1, 4, dtype=DTYPE)
    eps = 0.1
    a = torch.relu(first(x))[0]
    z = second(a[None])[0]
    r_out = torch.zeros(2, dtype=DTYPE)
    r_out[1] = z[1]
    r_hidden = torch.zeros(3, dtype=DTYPE)
    for j in range(3):
        for k in range(2):
            r_hidden[j] += a[j] * second.weight[k, j] / (z[k] + eps * (1 if z[k] >= 0 else -1)) * r_out[k]
    r_in = torch.zeros(4, dtype=DTYPE)
    w_pos = first.weight.clamp(min=0)
    for i in range(4):
        for j in range(3):
            r_in[i] += x[0, i] * w_pos[j, i] / sum(x[0, m] * w_pos[j, m] for m in range(4)) * r_hidden[j]
    composite = Composite(layer_map={"dense": Epsilon(eps)}, first_map={"dense": ZPlus(0.0)})
    ours = LRP(model, composite).attribute(x, target=1)
    torch.testing.assert_close(ours[0], r_in.detach(), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------------------------------
# interface and errors


def test_tuple_inputs_additional_arguments_and_model_unchanged() -> None:
    torch.manual_seed(8)

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out = (
                nn.Linear(3, 4, bias=False),
                nn.Linear(2, 4, bias=False),
                nn.Linear(4, 2, bias=False),
            )

        def forward(self, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.a(x) + self.b(y))) * scale

    model = TwoInputs().to(DTYPE).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(5, 3, dtype=DTYPE), torch.rand(5, 2, dtype=DTYPE)
    scale = torch.tensor(2.0, dtype=DTYPE)
    (rx, ry), delta = LRP(model, Composite(layer_map={"dense": "gradient"}, stabilizer=1e-14)).attribute(
        (x, y), target=1, additional_forward_args=(scale,), return_convergence_delta=True
    )
    assert rx.shape == x.shape and ry.shape == y.shape
    assert delta.abs().max() < 1e-12
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model.training


def test_composite_and_rule_names() -> None:
    assert isinstance(as_rule("alpha2beta1"), AlphaBeta)
    model = small_vgg()
    x, target = images(1)
    by_name = LRP(model, "epsilon_alpha2_beta1").attribute(x, target=target)
    assert_same(by_name, LRP(model, EpsilonAlpha2Beta1()).attribute(x, target=target))
    assert_same(LRP(model).attribute(x, target=target), LRP(model, "epsilon").attribute(x, target=target))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: as_rule("zeta"), "unknown LRP rule 'zeta'; known rule names: alpha1beta0"),
        (lambda: as_rule("zbox"), "needs the input bounds"),
        (lambda: LRP(small_vgg(), "epsilon_pls"), "unknown LRP composite 'epsilon_pls'"),
        (lambda: LRP(small_vgg(), "epsilon_gamma_box"), "needs the input bounds"),
        (lambda: Composite(layer_map={"convolution": ZPlus()}), "unknown op kind 'convolution'"),
        (lambda: Composite(layer_map={"pool": ZPlus()}), "ZPlus cannot be given to 'pool' ops"),
        (lambda: Composite(name_map={"0": "zplush"}), "unknown LRP rule 'zplush'"),
        (lambda: AlphaBeta(3, 1), "alpha - beta must be 1"),
        (lambda: Epsilon(-1.0), "epsilon must be a number >= 0"),
    ],
)
def test_clear_errors(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()  # type: ignore[operator]


def test_name_map_errors_name_the_entry() -> None:
    x, target = images(1)
    with pytest.raises(ValueError, match="name_map entry 'features.0' names no module"):
        LRP(small_vgg(), Composite(name_map={"features.0": "flat"})).attribute(x, target=target)
    with pytest.raises(ValueError, match="suits none of its ops"):
        LRP(small_vgg(), Composite(name_map={"1": "zplus"})).attribute(x, target=target)  # "1" is a ReLU
