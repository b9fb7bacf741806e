"""DeepLIFT RevealCancel re-derived from its formulas, slowly and obviously, against the engine.

Shrikumar et al. 2017, section 3.5.3.  A sequential network is rewritten as a list of steps on flat vectors, one
example at a time:

* a dense or convolution layer becomes an explicit matrix ``W`` and offset ``b`` with ``z = W x + b``
  (for a convolution, column ``i`` of ``W`` is the convolution of the ``i``-th basis image, without
  bias); an eval-mode batch norm right after it is folded in, ``W <- diag(s) W``,
  ``b <- s (b - mean) + beta`` with ``s = gamma / sqrt(var + eps)`` (``s`` may be negative);
* other affine layers (average pooling) become a matrix too, but are not "weighted inputs";
* an element-wise nonlinearity keeps ``f`` and its derivative ``f'``, written out by hand.

The input and the reference are pushed through the steps with these matrices.  The multipliers
are composed backwards from the one-hot row of the target: ``g <- W^T g`` through an affine step,
and through a nonlinearity ``y = f(z)``:

* fed directly by a dense / conv step ``z = W x + b`` (and the rule asks for it), RevealCancel on
  the pair (nonlinearity, feeding step), with ``dx = x - x0`` and the explicit positive and
  negative parts::

      dz+ = W+ dx+ + W- dx-            dz- = W+ dx- + W- dx+
      dy+ = 1/2 (f(z0 + dz+) - f(z0)) + 1/2 (f(z0 + dz- + dz+) - f(z0 + dz-))
      dy- = 1/2 (f(z0 + dz-) - f(z0)) + 1/2 (f(z0 + dz+ + dz-) - f(z0 + dz+))
      m+ = dy+ / dz+,  m- = dy- / dz-  (where |dz+| <= 1e-7 |z|-scale, the limit
      (f'(z0) + f'(z0 + dz-)) / 2, symmetrically for m-)

  and input ``i`` of the feeding step gets ``sum_j W+_ji g_j m+_j + W-_ji g_j m-_j`` if
  ``dx_i > 0``, ``sum_j W-_ji g_j m+_j + W+_ji g_j m-_j`` if ``dx_i < 0``, and
  ``1/2 sum_j W_ji (g_j m+_j + g_j m-_j)`` if ``dx_i = 0``;
* otherwise Rescale: ``g <- g * (f(z) - f(z0)) / (z - z0)`` (``f'(z0)`` where
  ``|z - z0| <= 1e-7 max(|z|, |z0|)``).

``rule="genomics_default"`` uses RevealCancel only where the feeding step is dense.  The
contributions are ``g * (x - x0)`` on the network input.  No deltalift code, hook or autograd is
involved in the re-derivation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift import DeepLift

DTYPE = torch.float64
RTOL, ATOL = 1e-10, 1e-12
EPS = 1e-7
Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------------
# the re-derivation: steps on flat vectors


def _sigmoid(z: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-z))


#: ``(f, f')`` of each nonlinearity, written out (``f'(0)`` of ReLU is 0, as PyTorch's).
FUNCTIONS: dict[type, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    nn.ReLU: (lambda z: z * (z > 0), lambda z: (z > 0).to(z.dtype)),
    nn.Sigmoid: (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    nn.Tanh: (torch.tanh, lambda z: 1.0 - torch.tanh(z) ** 2),
}


@dataclass
class Affine:
    """``z = weight @ x + bias`` on flat vectors; ``kind`` is "dense", "conv" or "other"."""

    weight: Tensor  # (out, in)
    bias: Tensor  # (out,)
    kind: str
    channel: Tensor  # (out,) the output channel of each output element (for batch norm folding)


@dataclass
class Nonlinearity:
    f: Callable[[Tensor], Tensor]
    df: Callable[[Tensor], Tensor]


Step = Affine | Nonlinearity


def conv_as_matrix(conv: nn.Conv1d | nn.Conv2d, in_shape: tuple[int, ...]) -> tuple[Affine, tuple[int, ...]]:
    """The explicit dense matrix of ``conv`` on inputs of shape ``in_shape`` (channels first):
    column ``i`` is the bias-free convolution of the ``i``-th basis image."""
    assert conv.padding_mode == "zeros"
    n_in = math.prod(in_shape)
    basis = torch.eye(n_in, dtype=DTYPE).reshape(n_in, *in_shape)
    conv_fn = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
    with torch.no_grad():
        images = conv_fn(basis, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    out_shape = tuple(images.shape[1:])
    weight = images.reshape(n_in, -1).T.clone()
    spatial = math.prod(out_shape[1:])
    channel = torch.arange(out_shape[0]).repeat_interleave(spatial)
    bias = conv.bias.detach()[channel].clone() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=DTYPE)
    return Affine(weight, bias, "conv", channel), out_shape


def avg_pool_as_matrix(pool: nn.AvgPool2d, in_shape: tuple[int, ...]) -> tuple[Affine, tuple[int, ...]]:
    n_in = math.prod(in_shape)
    basis = torch.eye(n_in, dtype=DTYPE).reshape(n_in, *in_shape)
    images = pool(basis)
    out_shape = tuple(images.shape[1:])
    weight = images.reshape(n_in, -1).T.clone()
    channel = torch.arange(out_shape[0]).repeat_interleave(math.prod(out_shape[1:]))
    return Affine(weight, torch.zeros(weight.shape[0], dtype=DTYPE), "other", channel), out_shape


def fold_batch_norm(step: Affine, bn: nn.modules.batchnorm._BatchNorm) -> Affine:
    """``bn(W x + b) = diag(s) W x + s (b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``."""
    assert not bn.training
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    s, mean, beta = s[step.channel], bn.running_mean[step.channel], bn.bias.detach()[step.channel]
    return Affine(s[:, None] * step.weight, s * (step.bias - mean) + beta, step.kind, step.channel)


def as_steps(model: nn.Sequential, in_shape: tuple[int, ...]) -> list[Step]:
    steps: list[Step] = []
    shape = in_shape
    for layer in model:
        if isinstance(layer, nn.Linear):
            assert len(shape) == 1
            bias = layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features, dtype=DTYPE)
            steps.append(Affine(layer.weight.detach(), bias, "dense", torch.arange(layer.out_features)))
            shape = (layer.out_features,)
        elif isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            step, shape = conv_as_matrix(layer, shape)
            steps.append(step)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            previous = steps[-1]
            assert isinstance(previous, Affine) and previous.kind in ("dense", "conv")
            steps[-1] = fold_batch_norm(previous, layer)
        elif isinstance(layer, nn.AvgPool2d):
            step, shape = avg_pool_as_matrix(layer, shape)
            steps.append(step)
        elif isinstance(layer, nn.Flatten):
            shape = (math.prod(shape),)  # steps already work on row-major flat vectors
        else:
            steps.append(Nonlinearity(*FUNCTIONS[type(layer)]))
    return steps


def forward(steps: list[Step], x: Tensor) -> list[Tensor]:
    """All activations of one example: ``acts[k]`` is the input of step ``k``."""
    acts = [x.flatten()]
    for step in steps:
        a = acts[-1]
        acts.append(step.weight @ a + step.bias if isinstance(step, Affine) else step.f(a))
    return acts


def secant(dy: Tensor, dz: Tensor, limit: Tensor, scale: Tensor) -> Tensor:
    """``dy / dz`` element by element, ``limit`` where ``|dz| <= EPS * scale``."""
    dy_, dz_, limit_, scale_ = dy.tolist(), dz.tolist(), limit.tolist(), scale.tolist()
    m = [limit_[j] if abs(dz_[j]) <= EPS * scale_[j] else dy_[j] / dz_[j] for j in range(len(dy_))]
    return torch.tensor(m, dtype=DTYPE)


def rescale_backward(step: Nonlinearity, z: Tensor, z0: Tensor, g: Tensor) -> Tensor:
    m = secant(step.f(z) - step.f(z0), z - z0, step.df(z0), torch.maximum(z.abs(), z0.abs()))
    return g * m


def reveal_cancel_backward(step: Nonlinearity, feeder: Affine, x: Tensor, x0: Tensor, g: Tensor) -> Tensor:
    """Multipliers on ``x`` for ``y = f(W x + b)`` under RevealCancel, from ``g`` on ``y``."""
    f, W = step.f, feeder.weight
    z0 = W @ x0 + feeder.bias
    dx = x - x0
    dx_pos, dx_neg = dx * (dx > 0), dx * (dx < 0)
    W_pos, W_neg = W * (W > 0), W * (W < 0)
    dz_pos = W_pos @ dx_pos + W_neg @ dx_neg
    dz_neg = W_pos @ dx_neg + W_neg @ dx_pos
    dy_pos = 0.5 * (f(z0 + dz_pos) - f(z0)) + 0.5 * (f(z0 + dz_neg + dz_pos) - f(z0 + dz_neg))
    dy_neg = 0.5 * (f(z0 + dz_neg) - f(z0)) + 0.5 * (f(z0 + dz_pos + dz_neg) - f(z0 + dz_pos))
    scale = torch.maximum((W @ x + feeder.bias).abs(), z0.abs())
    m_pos = secant(dy_pos, dz_pos, 0.5 * (step.df(z0) + step.df(z0 + dz_neg)), scale)  # the limit as dz+ -> 0
    m_neg = secant(dy_neg, dz_neg, 0.5 * (step.df(z0) + step.df(z0 + dz_pos)), scale)
    gp, gn = g * m_pos, g * m_neg
    rising = (W_pos.T @ gp + W_neg.T @ gn).tolist()  # what an input with dx_i > 0 gets
    falling = (W_neg.T @ gp + W_pos.T @ gn).tolist()  # ... dx_i < 0
    still = (0.5 * (W.T @ gp + W.T @ gn)).tolist()  # ... dx_i = 0
    gx = []
    for i, d in enumerate(dx.tolist()):
        gx.append(rising[i] if d > 0 else falling[i] if d < 0 else still[i])
    return torch.tensor(gx, dtype=DTYPE)


def uses_reveal_cancel(feeder: Step, rule: str) -> bool:
    if not isinstance(feeder, Affine):
        return False
    if rule == "reveal_cancel":
        return feeder.kind in ("dense", "conv")
    if rule == "genomics_default":
        return feeder.kind == "dense"
    return False


def multipliers_one(steps: list[Step], x: Tensor, x0: Tensor, target: int, rule: str) -> Tensor:
    """Multipliers of output ``target`` on the flat input of one example."""
    acts, refs = forward(steps, x), forward(steps, x0)
    g = torch.zeros_like(acts[-1])
    g[target] = 1.0
    k = len(steps) - 1
    while k >= 0:
        step = steps[k]
        if isinstance(step, Affine):
            g = step.weight.T @ g
            k -= 1
        elif k > 0 and uses_reveal_cancel(steps[k - 1], rule):
            feeder = steps[k - 1]
            assert isinstance(feeder, Affine)
            g = reveal_cancel_backward(step, feeder, acts[k - 1], refs[k - 1], g)
            k -= 2  # the feeding step is done too
        else:
            g = rescale_backward(step, acts[k], refs[k], g)
            k -= 1
    return g


def rederive(
    model: nn.Sequential, x: Tensor, ref: Tensor, targets: list[int], rule: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Multipliers, contributions and (my own) summation-to-delta error, per example."""
    steps = as_steps(model, tuple(x.shape[1:]))
    ref = ref.expand_as(x)
    ms, deltas = [], []
    for n in range(x.shape[0]):
        m = multipliers_one(steps, x[n], ref[n], targets[n], rule)
        ms.append(m.reshape(x.shape[1:]))
        dt = forward(steps, x[n])[-1][targets[n]] - forward(steps, ref[n])[-1][targets[n]]
        deltas.append((m * (x[n] - ref[n]).flatten()).sum() - dt)
    multipliers = torch.stack(ms)
    return multipliers, multipliers * (x - ref), torch.stack(deltas)


# --------------------------------------------------------------------------------------------------
# random networks


def randomize_batch_norms(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                c = layer.num_features
                layer.running_mean.copy_(torch.randn(c, generator=generator, dtype=DTYPE) * 0.5)
                layer.running_var.copy_(torch.rand(c, generator=generator, dtype=DTYPE) + 0.5)
                weight = torch.randn(c, generator=generator, dtype=DTYPE)
                weight[0] = -weight[0].abs() - 0.3  # at least one negative scale
                weight[-1] = weight[-1].abs() + 0.3  # and one positive
                layer.weight.copy_(weight)
                layer.bias.copy_(torch.randn(c, generator=generator, dtype=DTYPE) * 0.5)


@functools.cache  # one instance per name, so that deltalift captures each network once
def make_model(name: str) -> tuple[nn.Sequential, tuple[int, ...]]:
    torch.manual_seed(sum(map(ord, name)))
    L, C1, C2 = nn.Linear, nn.Conv1d, nn.Conv2d
    nets: dict[str, tuple[list[nn.Module], tuple[int, ...]]] = {
        "dense_relu": ([L(5, 7), nn.ReLU(), L(7, 6), nn.ReLU(), L(6, 3)], (5,)),
        "dense_sigmoid_tanh_nobias": (
            [L(5, 7, bias=False), nn.Sigmoid(), L(7, 6), nn.Tanh(), L(6, 3, bias=False)],
            (5,),
        ),
        "dense_batchnorm": (
            [L(5, 7), nn.BatchNorm1d(7), nn.ReLU(), L(7, 6, bias=False), nn.BatchNorm1d(6), nn.Sigmoid(), L(6, 3)],
            (5,),
        ),
        "conv2d_relu": (
            [C2(1, 3, 3), nn.ReLU(), C2(3, 4, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten()]
            + [L(16, 5), nn.ReLU(), L(5, 3)],
            (1, 6, 6),
        ),
        "conv2d_batchnorm_groups": (
            [C2(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), C2(4, 4, 2, groups=2), nn.Sigmoid(), nn.Flatten()]
            + [L(36, 5), nn.BatchNorm1d(5), nn.ReLU(), L(5, 3)],
            (2, 6, 6),
        ),
        # the Tanh's are fed by an average pool and by a ReLU, not by a conv / dense layer:
        # Rescale there under every rule
        "conv2d_avgpool": (
            [C2(1, 3, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Tanh(), nn.Flatten()]
            + [L(12, 5), nn.ReLU(), nn.Tanh(), L(5, 3)],
            (1, 6, 6),
        ),
        "conv1d_relu": (
            [C1(4, 3, 3), nn.ReLU(), C1(3, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), L(6, 5), nn.ReLU(), L(5, 3)],
            (4, 10),
        ),
        "conv1d_batchnorm": (
            [C1(4, 5, 5, padding=2), nn.BatchNorm1d(5), nn.ReLU(), C1(5, 3, 3, dilation=2), nn.Sigmoid()]
            + [nn.Flatten(), L(18, 4), nn.Tanh(), L(4, 3)],
            (4, 10),
        ),
    }
    layers, in_shape = nets[name]
    model = nn.Sequential(*layers).to(DTYPE)
    generator = torch.Generator().manual_seed(sum(map(ord, name)) + 1)
    randomize_batch_norms(model, generator)
    return model.eval(), in_shape


MODELS = [
    "dense_relu",
    "dense_sigmoid_tanh_nobias",
    "dense_batchnorm",
    "conv2d_relu",
    "conv2d_batchnorm_groups",
    "conv2d_avgpool",
    "conv1d_relu",
    "conv1d_batchnorm",
]
TARGETS = [0, 2, 1, 2, 0]


def make_data(in_shape: tuple[int, ...], reference: str, seed: int) -> tuple[Tensor, Tensor]:
    """A batch of 5 inputs and references.  Example 1 equals its reference (every difference is
    zero: the derivative fallback); example 2 shares some features with it (``dx_i = 0``)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(5, *in_shape, generator=generator, dtype=DTYPE)
    if reference == "per_example":
        ref = torch.randn(5, *in_shape, generator=generator, dtype=DTYPE) * 0.7
    elif reference == "shared":
        ref = torch.randn(1, *in_shape, generator=generator, dtype=DTYPE) * 0.7
    else:
        assert reference == "zeros"
        ref = torch.zeros(1, *in_shape, dtype=DTYPE)
    full = ref.expand_as(x)
    x[1] = full[1]
    x[2].view(-1)[::3] = full[2].reshape(-1)[::3]
    return x, ref


# --------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("reference", ["per_example", "shared"])
@pytest.mark.parametrize("rule", ["reveal_cancel", "genomics_default"])
@pytest.mark.parametrize("name", MODELS)
def test_random_network_matches_rederivation(name, rule, reference):
    model, in_shape = make_model(name)
    x, ref = make_data(in_shape, reference, seed=len(name))
    expected_m, expected_c, my_delta = rederive(model, x, ref, TARGETS, rule)

    contributions, delta = DeepLift(model, rule=rule).attribute(
        x, baselines=ref, target=TARGETS, return_convergence_delta=True
    )
    multipliers = DeepLift(model, rule=rule, multiply_by_inputs=False).attribute(x, baselines=ref, target=TARGETS)

    torch.testing.assert_close(contributions, expected_c, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(multipliers, expected_m, rtol=RTOL, atol=ATOL)
    assert my_delta.abs().max() < 1e-12
    assert delta.abs().max() < 1e-12


@pytest.mark.parametrize("name", ["dense_batchnorm", "conv2d_relu", "conv1d_batchnorm"])
def test_unbatched_and_zero_references(name):
    model, in_shape = make_model(name)
    x, ref = make_data(in_shape, "shared", seed=7)
    _, expected, _ = rederive(model, x, ref, TARGETS, "reveal_cancel")
    got = DeepLift(model, rule="reveal_cancel").attribute(x, baselines=ref[0], target=TARGETS)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)

    x, zeros = make_data(in_shape, "zeros", seed=8)
    _, expected, _ = rederive(model, x, zeros, TARGETS, "reveal_cancel")
    got = DeepLift(model, rule="reveal_cancel").attribute(x, baselines=None, target=TARGETS)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", MODELS)
def test_rederivation_reproduces_the_model_and_sums_to_delta(name):
    """The matrices reproduce the model's outputs, and my re-derivation keeps summation-to-delta
    under every rule."""
    model, in_shape = make_model(name)
    x, ref = make_data(in_shape, "per_example", seed=3)
    steps = as_steps(model, in_shape)
    with torch.no_grad():
        outputs = model(x)
    for n in range(x.shape[0]):
        torch.testing.assert_close(forward(steps, x[n])[-1], outputs[n], rtol=1e-13, atol=1e-14)
    for rule in ("rescale", "reveal_cancel", "genomics_default"):
        _, contributions, my_delta = rederive(model, x, ref, TARGETS, rule)
        assert my_delta.abs().max() < 1e-12, rule
        with torch.no_grad():
            dt = model(x)[range(5), TARGETS] - model(ref.expand_as(x))[range(5), TARGETS]
        torch.testing.assert_close(contributions.flatten(1).sum(1), dt, rtol=1e-12, atol=1e-12)


def test_reveal_cancel_differs_from_rescale_on_these_networks():
    """Guard against a vacuous comparison: the rules do give different answers here."""
    model, in_shape = make_model("conv2d_relu")
    x, ref = make_data(in_shape, "per_example", seed=11)
    results = {rule: rederive(model, x, ref, TARGETS, rule)[1] for rule in ("rescale", "reveal_cancel")}
    results["genomics_default"] = rederive(model, x, ref, TARGETS, "genomics_default")[1]
    assert (results["rescale"] - results["reveal_cancel"]).abs().max() > 1e-3
    assert (results["genomics_default"] - results["reveal_cancel"]).abs().max() > 1e-3
    assert (results["genomics_default"] - results["rescale"]).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------------
# the worked examples of Shrikumar et al. 2017, sections 2-3


def _dense_relu() -> nn.Sequential:
    dense = nn.Linear(4, 1).to(DTYPE)
    with torch.no_grad():
        dense.weight.copy_(torch.tensor([[1.0, -2.0, -3.0, 4.0]]))
        dense.bias.fill_(1.0)
    return nn.Sequential(dense, nn.ReLU()).eval()


@pytest.mark.parametrize("rule", ["reveal_cancel", "genomics_default"])
def test_worked_example_dense_relu(rule):
    """w = (1, -2, -3, 4), b = 1, x = (-1, -1, 1, 1), reference 0.  By hand: z0 = 1, z = 3,
    dz+ = 4*1 + (-2)(-1) = 6, dz- = 1*(-1) + (-3)*1 = -4,
    dy+ = (relu(7) - relu(1))/2 + (relu(3) - relu(-3))/2 = 4.5, m+ = 0.75,
    dy- = (relu(-3) - relu(1))/2 + (relu(3) - relu(7))/2 = -2.5, m- = 0.625,
    multipliers (dx<0: W-^T m+ + W+^T m-, dx>0: W+^T m+ + W-^T m-) = (0.625, -1.5, -1.875, 3.0),
    contributions m * dx = (-0.625, 1.5, -1.875, 3.0), sum 2 = relu(3) - relu(1).
    These numbers are consistent with contributions = multipliers * dx (Shrikumar et al. 2017, section 3.5.3)."""
    model = _dense_relu()
    x = torch.tensor([[-1.0, -1.0, 1.0, 1.0]], dtype=DTYPE)
    ref = torch.zeros_like(x)
    expected_m = torch.tensor([[0.625, -1.5, -1.875, 3.0]], dtype=DTYPE)
    expected_c = torch.tensor([[-0.625, 1.5, -1.875, 3.0]], dtype=DTYPE)

    my_m, my_c, my_delta = rederive(model, x, ref, [0], rule)
    torch.testing.assert_close(my_m, expected_m, rtol=0, atol=1e-15)
    torch.testing.assert_close(my_c, expected_c, rtol=0, atol=1e-15)
    assert my_delta.abs().max() < 1e-15

    contributions, delta = DeepLift(model, rule=rule).attribute(x, baselines=ref, return_convergence_delta=True)
    multipliers = DeepLift(model, rule=rule, multiply_by_inputs=False).attribute(x, baselines=ref)
    torch.testing.assert_close(multipliers, expected_m, rtol=0, atol=1e-15)
    torch.testing.assert_close(contributions, expected_c, rtol=0, atol=1e-15)
    assert contributions.sum().item() == pytest.approx(2.0, abs=1e-15)
    assert delta.abs().max() < 1e-15


def test_worked_example_dense_relu_rescale_for_contrast():
    model = _dense_relu()
    x = torch.tensor([[-1.0, -1.0, 1.0, 1.0]], dtype=DTYPE)
    _, my_c, _ = rederive(model, x, torch.zeros_like(x), [0], "rescale")
    torch.testing.assert_close(my_c, torch.tensor([[-1.0, 2.0, -3.0, 4.0]], dtype=DTYPE), rtol=0, atol=1e-15)


class Min(nn.Module):
    """min(i1, i2) = i1 - relu(i1 - i2), the inner i1 - i2 a dense layer without bias."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(2, 1, bias=False).to(DTYPE)
        with torch.no_grad():
            self.dense.weight.copy_(torch.tensor([[1.0, -1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :1] - torch.relu(self.dense(x))


@pytest.mark.parametrize(
    "rule, expected", [("reveal_cancel", [0.5, 0.5]), ("genomics_default", [0.5, 0.5]), ("rescale", [0.0, 1.0])]
)
def test_worked_example_min(rule, expected):
    """At (3, 1), reference (0, 0), RevealCancel by hand: z0 = 0, dz+ = 3, dz- = -1,
    dy+ = (relu(3) - relu(0))/2 + (relu(2) - relu(-1))/2 = 2.5, m+ = 5/6,
    dy- = (relu(-1) - relu(0))/2 + (relu(2) - relu(3))/2 = -0.5, m- = 1/2;
    the relu's contributions are (1 * m+ * 3, -1 * m- * 1) = (2.5, -0.5), so min(i1, i2) gets
    (3 - 2.5, 0 + 0.5) = (0.5, 0.5).  Rescale: m = 2/2 = 1, relu gets (3, -1), min gets (0, 1)."""
    model = Min().eval()
    x = torch.tensor([[3.0, 1.0]], dtype=DTYPE)
    ref = torch.zeros_like(x)

    # the re-derivation, by hand for this two-branch network: g_x = e_1 - (relu's multipliers)
    relu = Nonlinearity(*FUNCTIONS[nn.ReLU])
    dense = Affine(model.dense.weight.detach(), torch.zeros(1, dtype=DTYPE), "dense", torch.arange(1))
    one = torch.ones(1, dtype=DTYPE)
    if rule == "rescale":
        through_relu = dense.weight.T @ rescale_backward(relu, dense.weight @ x[0], dense.weight @ ref[0], one)
    else:
        through_relu = reveal_cancel_backward(relu, dense, x[0], ref[0], one)
    my_c = (torch.tensor([1.0, 0.0], dtype=DTYPE) - through_relu) * (x[0] - ref[0])
    torch.testing.assert_close(my_c, torch.tensor(expected, dtype=DTYPE), rtol=0, atol=1e-15)
    assert my_c.sum().item() == pytest.approx(1.0, abs=1e-15)  # min(3, 1) - min(0, 0)

    contributions, delta = DeepLift(model, rule=rule).attribute(x, baselines=ref, return_convergence_delta=True)
    torch.testing.assert_close(contributions, torch.tensor([expected], dtype=DTYPE), rtol=0, atol=1e-15)
    assert delta.abs().max() < 1e-15
