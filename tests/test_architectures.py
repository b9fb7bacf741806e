"""Summation-to-delta on a broad matrix of architectures, with random weights and random inputs.

For every model, input, reference and target the contributions must sum, per example, to the change
of the target output: ``sum_i C_i = f(x)[t] - f(x0)[t]``, to ``1e-10`` (float64) or ``1e-4``
(float32) relative to ``|f(x)[t] - f(x0)[t]| + |f(x)[t]| + |f(x0)[t]|`` (the change and the
outputs' own rounding; not the contributions' magnitude, which would let cancelling contributions
hide their error).
``f`` is evaluated here by calling the model itself, not through deltalift's captured graph.

These are the models that hook-based implementations (Captum, SHAP's DeepExplainer) get wrong
silently (docs/engine.md): functional ops, a module used twice, in-place activations, a ReLU
feeding a MaxPool, overlapping pooling windows, gates, recurrent cells, attention, norms, softmax
inside the network, division by an activation, maximum/minimum of two activations; and real
torchvision architectures (some at reduced depth or width, which keeps their blocks but cuts the
time ``torch.export`` takes).  Weights are re-drawn where default initialisation leaves a layer
trivial (zero-initialised heads and biases, constant norm weights), and batch-norm statistics are
set from a random batch, so that every op sees non-zero, input-dependent values.

Also checked on a few models: batch invariance (a batch explained at once equals each example
explained alone) and that one reference shared by the batch equals the same reference repeated per
example.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift import DeepLift

torchvision = pytest.importorskip("torchvision")
from torchvision import models as tvm  # noqa: E402
from torchvision.models.convnext import CNBlockConfig  # noqa: E402
from torchvision.models.efficientnet import FusedMBConvConfig, MBConvConfig  # noqa: E402
from torchvision.models.mobilenetv3 import InvertedResidualConfig  # noqa: E402
from torchvision.models.regnet import BlockParams  # noqa: E402

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}
BATCH = 3

# torch.export's note on nn.LSTM/nn.GRU's cached flat weights; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes .*_flat_weights.*:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """The models are tiny: intra-op threads only add overhead (and contention under pytest -n)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# helpers


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw what default initialisation leaves trivial: constant norm weights and biases, and
    all-zero parameters (biases, ViT's head).  With them a zero reference would give exactly zero
    activations everywhere; random values make every op see a non-trivial input and reference."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.ndim == 1 and bool((p == p[0]).all()):
                    if name == "weight":
                        p.uniform_(0.5, 1.5, generator=g)
                    else:
                        p.normal_(0.0, 0.2, generator=g)
                elif bool((p == 0).all()):
                    p.normal_(0.0, p.shape[1] ** -0.5 if p.ndim >= 2 else 0.2, generator=g)
    return model


def calibrate_batch_norm_(model: nn.Module, inputs: tuple[torch.Tensor, ...], extra: Any) -> None:
    """Set batch-norm running statistics to those of a random batch (as training would), so that
    in eval mode every channel is normalised to the spread of its input-dependent activations
    (with the default statistics 0 and 1 the signal of deep random networks can vanish)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, the batch's statistics
    model.train()
    with torch.no_grad():
        model(*inputs, *as_tuple(extra))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def select(output: torch.Tensor, target: Any) -> torch.Tensor:
    if output.ndim == 1:
        return output
    index = torch.as_tensor(target).expand(output.shape[0]).long()
    return output.gather(1, index[:, None])[:, 0]


def full_references(baselines: Any, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The references as full tensors shaped like the inputs (zeros for ``None``)."""
    given = as_tuple(baselines) if baselines is not None else (0.0,) * len(inputs)
    return tuple(
        torch.full_like(x, float(b)) if not isinstance(b, torch.Tensor) else b.to(x.dtype).expand_as(x)
        for b, x in zip(given, inputs)
    )


def explain(model: nn.Module, inputs: Any, baselines: Any, target: Any, extra: Any = None, **options: Any) -> Any:
    return DeepLift(model, **options).attribute(
        inputs, baselines=baselines, target=target, additional_forward_args=extra, return_convergence_delta=True
    )


def check_summation(
    model: nn.Module, inputs: Any, baselines: Any, target: Any, extra: Any = None, rule: str = "rescale"
) -> tuple[torch.Tensor, ...]:
    """Explain and check summation-to-delta against the model's own outputs; return the attributions."""
    xs = as_tuple(inputs)
    dtype = xs[0].dtype
    tolerance = TOLERANCE[dtype]
    # strict: deltalift's own check must not fire either
    attributions, delta = explain(model, inputs, baselines, target, extra, strict=True, rule=rule)
    attributions = as_tuple(attributions)
    assert len(attributions) == len(xs)
    for a, x in zip(attributions, xs):
        assert a.shape == x.shape and a.dtype == dtype
        assert torch.isfinite(a).all()
    with torch.no_grad():
        t = select(model(*xs, *as_tuple(extra)), target)
        t0 = select(model(*full_references(baselines, xs), *as_tuple(extra)), target)
    total = sum(a.flatten(1).sum(1) for a in attributions)
    scale = (t - t0).abs() + t.abs() + t0.abs()
    assert bool(((t - t0).abs() > 1e-6 * (t.abs() + t0.abs())).all()), "degenerate case: the target does not change"
    relative = ((total - (t - t0)).abs() / scale).max()
    assert relative <= tolerance, f"summation-to-delta fails: relative error {float(relative):.2e}"
    # the convergence delta deltalift returns is the same quantity
    assert delta.shape == (xs[0].shape[0],)
    assert float((delta.abs() / scale).max()) <= tolerance
    return attributions


def make_baselines(kind: str, inputs: tuple[torch.Tensor, ...], seed: int) -> Any:
    """``zero``: None (deltalift's default); ``random``: one random reference per example;
    ``shared``: one random reference of batch size one for the whole batch."""
    if kind == "zero":
        return None
    g = torch.Generator().manual_seed(seed + 1000)
    batch = inputs[0].shape[0] if kind == "random" else 1
    refs = tuple(torch.randn((batch,) + x.shape[1:], generator=g, dtype=x.dtype) for x in inputs)
    return refs if len(refs) > 1 else refs[0]


# --------------------------------------------------------------------------------------------------
# small models


class MLP(nn.Module):
    """Linear -> act -> Linear -> act -> Linear; ``act`` is a function or one module used twice."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor], d_in: int = 6, hidden: int = 8, d_out: int = 4):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(d_in, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, d_out)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.act(self.l2(self.act(self.l1(x)))))


#: Element-wise nonlinearities called as functions (a hook-based tool sees none of them).
FUNCTIONAL = {
    "F.relu": F.relu,
    "torch.sigmoid": torch.sigmoid,
    "torch.tanh": torch.tanh,
    "torch.exp": torch.exp,
    "F.gelu": F.gelu,
    "F.gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "F.silu": F.silu,
    "F.elu": F.elu,
    "F.selu": F.selu,
    "F.celu": functools.partial(F.celu, alpha=0.7),
    "F.softplus": F.softplus,
    "F.softplus_beta_threshold": functools.partial(F.softplus, beta=2.0, threshold=1.0),
    "F.hardswish": F.hardswish,
    "F.hardsigmoid": F.hardsigmoid,
    "F.mish": F.mish,
    "F.leaky_relu": functools.partial(F.leaky_relu, negative_slope=0.1),
    "F.relu6": F.relu6,
    "F.hardtanh": F.hardtanh,
    "F.logsigmoid": F.logsigmoid,
    "F.softsign": F.softsign,
    "F.tanhshrink": F.tanhshrink,
    "F.hardshrink": functools.partial(F.hardshrink, lambd=0.3),
    "F.softshrink": functools.partial(F.softshrink, lambd=0.3),
    "F.threshold": functools.partial(F.threshold, threshold=0.1, value=-1.0),
    "torch.erf": torch.erf,
    "torch.sin": torch.sin,
    "torch.abs": torch.abs,
    "torch.square": torch.square,
    "pow3": lambda x: x**3,
    "torch.clamp": functools.partial(torch.clamp, min=-0.5, max=0.5),
    "sqrt(x^2+1)": lambda x: torch.sqrt(x * x + 1),
    "rsqrt(x^2+1)": lambda x: torch.rsqrt(x.pow(2) + 1),
    "log(1+x^2)": lambda x: torch.log(1 + x.pow(2)),
    "reciprocal(1+x^2)": lambda x: torch.reciprocal(1 + x.pow(2)),
    "x*sigmoid(x)": lambda x: x * torch.sigmoid(x),
    "F.glu": lambda x: F.glu(torch.cat([x, x.flip(-1)], dim=-1), dim=-1),
}

#: The same nonlinearities as modules; each instance is used twice in the MLP.
MODULES = {
    "nn.ReLU": nn.ReLU,
    "nn.Sigmoid": nn.Sigmoid,
    "nn.Tanh": nn.Tanh,
    "nn.GELU": nn.GELU,
    "nn.SiLU": nn.SiLU,
    "nn.ELU": nn.ELU,
    "nn.Softplus": nn.Softplus,
    "nn.Hardswish": nn.Hardswish,
    "nn.Mish": nn.Mish,
    "nn.LeakyReLU": functools.partial(nn.LeakyReLU, 0.2),
    "nn.PReLU": functools.partial(nn.PReLU, init=0.3),
    "nn.ReLU(inplace)": functools.partial(nn.ReLU, inplace=True),
    "nn.SiLU(inplace)": functools.partial(nn.SiLU, inplace=True),
    "nn.Hardswish(inplace)": functools.partial(nn.Hardswish, inplace=True),
}


class ReluIntoMaxPool(nn.Module):
    """conv -> ReLU -> MaxPool2d directly (the case hook-based tools get wrong), optionally with
    overlapping windows."""

    def __init__(self, kernel: int = 2, stride: int = 2, padding: int = 0, ceil_mode: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.LazyLinear(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu(self.conv(x)))
        h = self.pool(torch.tanh(self.conv2(h)))
        return self.head(h.flatten(1))


class Pooling(nn.Module):
    """Average, adaptive average and adaptive max pooling (non-divisible sizes: overlapping windows)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.adaptive_max = nn.AdaptiveMaxPool2d((3, 3))
        self.adaptive_avg = nn.AdaptiveAvgPool2d((2, 3))
        self.head = nn.Linear(4 * 9 + 4 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        a = self.adaptive_max(F.softplus(self.avg(h)))
        b = self.adaptive_avg(torch.sigmoid(h))
        return self.head(torch.cat([a.flatten(1), b.flatten(1)], dim=1))


class Pooling1d(nn.Module):
    """MaxPool1d with overlapping windows, AvgPool1d, AdaptiveMaxPool1d/AdaptiveAvgPool1d, global max."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5, padding=2)
        self.head = nn.Linear(6 * 3 + 6 * 2 + 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        h = F.max_pool1d(h, 3, stride=1, padding=1)
        h = F.avg_pool1d(h, 2)
        a = F.adaptive_max_pool1d(h, 3)
        b = F.adaptive_avg_pool1d(torch.tanh(h), 2)
        c = h.amax(dim=-1)
        return self.head(torch.cat([a.flatten(1), b.flatten(1), c], dim=1))


class ResidualBlock(nn.Module):
    """Two conv-BN-ReLU residual blocks sharing one ReLU module, with in-place ops."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.stem(x))
        for _ in range(2):
            out = self.relu(self.bn1(self.conv1(h)))
            out = self.bn2(self.conv2(out))
            out += h
            h = self.relu(out)
        return self.head(self.pool(h).flatten(1))


class InPlace(nn.Module):
    """In-place ops on activations: ``relu_``, ``sigmoid_``, ``mul_``, ``sub_``, ``leaky_relu(inplace=True)``,
    ``clamp_``."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.l1(x).relu_()
        b = self.l2(x)
        b.sigmoid_()
        a.mul_(b).sub_(0.3 * x[:, :1])
        F.leaky_relu(a, 0.1, inplace=True)
        return self.l3(a.clamp_(max=0.8))


class Gate(nn.Module):
    """Gated units: ``sigmoid(a) * tanh(b)`` (WaveNet/LSTM style), squeeze-excitation channel gating,
    and a product of two activations (a bilinear term)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv1d(4, 6, 3, padding=1), nn.Conv1d(4, 6, 3, padding=1)
        self.se1, self.se2 = nn.Linear(6, 3), nn.Linear(3, 6)
        self.p, self.q = nn.Linear(6 * 10, 5), nn.Linear(6 * 10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.a(x)) * torch.tanh(self.b(x))
        scale = torch.sigmoid(self.se2(F.relu(self.se1(h.mean(-1)))))
        h = h * scale[:, :, None]
        flat = h.flatten(1)
        return self.p(flat) * F.softplus(self.q(flat))


class Recurrent(nn.Module):
    """``nn.LSTM`` or ``nn.GRU`` (batch_first), taking the last step, then a linear head."""

    def __init__(self, kind: str, layers: int = 1, bidirectional: bool = False) -> None:
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(4, 6, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(6 * (2 if bidirectional else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class Cells(nn.Module):
    """``nn.LSTMCell`` and ``nn.GRUCell`` unrolled by hand over the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.gru = nn.LSTMCell(4, 5), nn.GRUCell(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = g = x.new_zeros(x.shape[0], 5)
        for step in range(x.shape[1]):
            h, c = self.lstm(x[:, step], (h, c))
            g = self.gru(h, g)
        return self.head(g)


class Transformer(nn.Module):
    """``nn.TransformerEncoderLayer`` (batch_first) and mean pooling, optionally with a padding mask
    passed as an additional forward argument."""

    def __init__(self, norm_first: bool = False, activation: str = "relu") -> None:
        super().__init__()
        self.embed = nn.Linear(5, 16)
        self.layer = nn.TransformerEncoderLayer(
            16, 2, dim_feedforward=32, dropout=0.1, activation=activation, batch_first=True, norm_first=norm_first
        )
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.layer(self.embed(x), src_key_padding_mask=padding_mask)
        return self.head(h.mean(1))


class Attention(nn.Module):
    """Self-attention written out (matmul of two activations, softmax, matmul with a third), then
    ``nn.MultiheadAttention`` (batch_first) and ``F.scaled_dot_product_attention``."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(5, 8), nn.Linear(5, 8), nn.Linear(5, 8)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        weights = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1)
        h = weights @ v
        h, _ = self.mha(h, h, h, need_weights=False)
        h = F.scaled_dot_product_attention(h, h, h)
        return self.head(h.sum(1))


class Norms(nn.Module):
    """BatchNorm1d (eval), LayerNorm, GroupNorm, RMSNorm, InstanceNorm1d and ``F.normalize``."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.ln = nn.LayerNorm(8)
        self.conv = nn.Conv1d(1, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.inorm = nn.InstanceNorm1d(4, affine=True)
        self.rms = nn.RMSNorm(8)
        self.head = nn.Linear(8 + 4 * 8 + 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.ln(torch.tanh(self.bn(self.l1(x)))))
        c = self.conv(h[:, None, :])
        c = F.silu(self.inorm(F.silu(self.gn(c))))
        r = F.normalize(self.rms(h) + 0.5, dim=-1)
        return self.head(torch.cat([h, c.flatten(1), r], dim=1))


class BatchNorm2d(nn.Module):
    """conv -> BatchNorm2d (eval) -> ELU -> conv -> BatchNorm2d -> Mish -> global mean."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ELU(), nn.Conv2d(4, 4, 3, stride=2), nn.BatchNorm2d(4), nn.Mish()
        )
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


class SoftmaxInside(nn.Module):
    """softmax, log_softmax and logsumexp inside the network, and softmax-weighted pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.score = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 1)
        self.head = nn.Linear(8 + 8 + 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.l1(x), dim=-1)
        lp = F.log_softmax(self.l2(p), dim=-1)
        lse = torch.logsumexp(lp * 3, dim=-1, keepdim=True)
        tokens = torch.stack([p, lp, p * lp], dim=1)  # (batch, 3, 8)
        weights = torch.softmax(self.score(tokens), dim=1)
        pooled = (weights * tokens).sum(1)
        return self.head(torch.cat([pooled, p, lse], dim=1))


class Division(nn.Module):
    """Division by an activation, ``a / b`` with both input-dependent, and by a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.a(x)) / (F.softplus(self.b(x)) + 0.5)
        h = h / (1 + h.abs().sum(-1, keepdim=True)) / 3.0
        return self.head(h)


class MaxMin(nn.Module):
    """``torch.maximum``/``torch.minimum`` of two activations, ``torch.max(x, dim)``, ``amin``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8 + 8 + 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = F.relu(self.a(x)), torch.tanh(self.b(x))
        top = torch.maximum(a, b)
        bottom = torch.minimum(a, F.silu(b))
        values, _ = torch.max(a.view(-1, 2, 4), dim=-1)
        return self.head(torch.cat([top, bottom, values - b.amin(-1, keepdim=True)], dim=1))


class Shapes(nn.Module):
    """Transposed and grouped convolutions, upsampling, pixel shuffle, padding, concatenation,
    slicing, chunking, flip and roll."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.shuffle = nn.Conv2d(8, 16, 1)
        self.head = nn.LazyLinear(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.down(x))
        h = F.hardswish(self.grouped(F.pad(h, (1, 1, 1, 1), mode="reflect")))[:, :, 1:-1, 1:-1]
        a = torch.sigmoid(self.up(h))
        b = F.interpolate(h[:, :4], scale_factor=2, mode="bilinear", align_corners=False)
        c = F.pixel_shuffle(self.shuffle(h), 2)
        left, right = torch.chunk(torch.cat([a, b, c.flip(-1)], dim=1), 2, dim=1)
        h = F.elu(left) - torch.roll(right, 1, dims=-1)
        h = F.max_pool2d(h, 2) + F.interpolate(h, size=(4, 4), mode="nearest")
        return self.head(h.flatten(1))


class DNAConv(nn.Module):
    """A BPNet/Basenji-style model on one-hot DNA ``(N, 4, L)``: a wide convolution, dilated residual
    convolutions (dilation 2, 4, 8), then global max and average pooling."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.first = nn.Conv1d(4, channels, 7, padding=3)
        self.dilated = nn.ModuleList(nn.Conv1d(channels, channels, 3, padding=d, dilation=d) for d in (2, 4, 8))
        self.bn = nn.BatchNorm1d(channels)
        self.head = nn.Linear(2 * channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.first(x))
        for conv in self.dilated:
            h = h + F.gelu(self.bn(conv(h)))
        h = F.max_pool1d(h, 3, stride=2)
        return self.head(torch.cat([h.amax(-1), h.mean(-1)], dim=1))


class TwoInputs(nn.Module):
    """Two explained inputs (an image and a vector) and additional arguments: a per-example tensor
    that scales the image branch, and a Python number."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.vec = nn.Linear(5, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, image: torch.Tensor, vector: torch.Tensor, scale: torch.Tensor, power: float) -> torch.Tensor:
        a = F.relu(self.conv(image)).mean((2, 3)) * scale
        b = torch.sigmoid(self.vec(vector)) ** power
        return self.head(a * b + a)


class ScalarOutput(nn.Module):
    """One output per example (shape ``(batch,)``), target ``None``."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP(nn.SiLU(), d_out=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)[:, 0]


# --------------------------------------------------------------------------------------------------
# torchvision models


def _vgg11_bn() -> nn.Module:
    """vgg11_bn with a narrower classifier (its 25088x4096 float64 layer alone is 800 MB)."""
    model = tvm.vgg11_bn(num_classes=10)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
        nn.Linear(32, 10),
    )  # fmt: skip
    return model


def _mobilenet_v3() -> nn.Module:
    """MobileNetV3 (hardswish, squeeze-excitation with hardsigmoid) with 4 of mobilenet_v3_small's blocks."""
    setting = [
        InvertedResidualConfig(16, 3, 16, 16, True, "RE", 2, 1, 1.0),
        InvertedResidualConfig(16, 3, 72, 24, False, "RE", 2, 1, 1.0),
        InvertedResidualConfig(24, 5, 96, 24, True, "HS", 1, 1, 1.0),
        InvertedResidualConfig(24, 5, 96, 40, True, "HS", 2, 1, 1.0),
    ]
    return tvm.MobileNetV3(setting, last_channel=64, num_classes=10)


def _efficientnet() -> nn.Module:
    """EfficientNet (MBConv with squeeze-excitation and SiLU, stochastic depth) with 4 blocks."""
    setting = [MBConvConfig(1, 3, 1, 16, 16, 1), MBConvConfig(6, 3, 2, 16, 24, 2), MBConvConfig(4, 5, 2, 24, 32, 1)]
    return tvm.EfficientNet(setting, dropout=0.2, num_classes=10)


def _efficientnet_v2() -> nn.Module:
    """EfficientNetV2-style: fused MBConv blocks, then an MBConv block."""
    setting = [
        FusedMBConvConfig(1, 3, 1, 16, 16, 1),
        FusedMBConvConfig(4, 3, 2, 16, 24, 1),
        MBConvConfig(4, 3, 2, 24, 32, 1),
    ]
    return tvm.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=64)


def _convnext() -> nn.Module:
    """ConvNeXt (depthwise 7x7 conv, LayerNorm on channels-last, GELU, layer scale) with 2 stages."""
    return tvm.ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], layer_scale=0.5, num_classes=10)


def _vit() -> nn.Module:
    """VisionTransformer at 32x32, patch 8, 2 layers, 2 heads, width 32 (class token, position embedding)."""
    return tvm.VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)


def _swin() -> nn.Module:
    """Swin Transformer (shifted windows with attention masks, relative position bias, patch merging)."""
    return tvm.SwinTransformer([4, 4], 16, depths=[2, 1], num_heads=[2, 2], window_size=[4, 4], num_classes=10)


def _regnet() -> nn.Module:
    """RegNetY (grouped convolutions, squeeze-excitation) with 3 blocks."""
    params = BlockParams.from_init_params(depth=3, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return tvm.RegNet(params, num_classes=10, stem_width=16)


def _shufflenet() -> nn.Module:
    """ShuffleNetV2 (channel split and shuffle) with one unit per stage."""
    return tvm.ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 128], num_classes=10)


def _densenet() -> nn.Module:
    """DenseNet (dense concatenation, BN-ReLU-conv, transition average pooling), 3 blocks of 2 layers."""
    return tvm.DenseNet(growth_rate=8, block_config=(2, 2, 2), num_init_features=16, bn_size=2, num_classes=10)


TORCHVISION: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: tvm.resnet18(num_classes=10),
    "squeezenet1_1": lambda: tvm.squeezenet1_1(num_classes=10),
    "vgg11_bn": _vgg11_bn,
    "mobilenet_v3": _mobilenet_v3,
    "efficientnet": _efficientnet,
    "efficientnet_v2": _efficientnet_v2,
    "convnext": _convnext,
    "vit": _vit,
    "swin": _swin,
    "regnet_y": _regnet,
    "shufflenet_v2": _shufflenet,
    "densenet": _densenet,
}


# --------------------------------------------------------------------------------------------------
# the matrix


@dataclass
class Case:
    """A model and how to call it: ``inputs(generator, dtype)`` gives the explained inputs,
    ``extra(inputs)`` the additional forward arguments."""

    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator, torch.dtype], tuple[torch.Tensor, ...]]
    target: Any = 1
    extra: Callable[[tuple[torch.Tensor, ...]], Any] = field(default=lambda inputs: None)
    baselines: tuple[str, ...] = ("zero", "random", "shared")


def _randn(*shape: int) -> Callable[[torch.Generator, torch.dtype], tuple[torch.Tensor, ...]]:
    def make(g: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return (torch.randn(shape, generator=g, dtype=dtype),)

    return make


def _one_hot_dna(g: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    bases = torch.randint(0, 4, (BATCH, 40), generator=g)
    return (F.one_hot(bases, 4).transpose(1, 2).to(dtype),)


def _two_inputs(g: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return torch.randn(BATCH, 3, 6, 6, generator=g, dtype=dtype), torch.randn(BATCH, 5, generator=g, dtype=dtype)


def _padding_mask(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    mask = torch.zeros(inputs[0].shape[:2], dtype=torch.bool)
    mask[0, -2:] = True  # the last two tokens of the first example are padding
    return mask


PER_EXAMPLE_TARGET = list(range(BATCH))

CASES: dict[str, Case] = {
    **{f"functional:{name}": Case(functools.partial(MLP, fn), _randn(BATCH, 6)) for name, fn in FUNCTIONAL.items()},
    **{f"module_twice:{name}": Case(lambda m=m: MLP(m()), _randn(BATCH, 6)) for name, m in MODULES.items()},
    "relu_into_maxpool": Case(ReluIntoMaxPool, _randn(BATCH, 3, 8, 8), target=PER_EXAMPLE_TARGET),
    "maxpool_3_stride1": Case(lambda: ReluIntoMaxPool(3, 1), _randn(BATCH, 3, 8, 8)),
    "maxpool_3_stride2_pad1": Case(lambda: ReluIntoMaxPool(3, 2, padding=1), _randn(BATCH, 3, 9, 9)),
    "maxpool_3_stride2_ceil": Case(lambda: ReluIntoMaxPool(3, 2, ceil_mode=True), _randn(BATCH, 3, 8, 8)),
    "pooling_2d": Case(Pooling, _randn(BATCH, 3, 7, 7)),
    "pooling_1d": Case(Pooling1d, _randn(BATCH, 4, 12)),
    "residual_shared_inplace_relu": Case(ResidualBlock, _randn(BATCH, 3, 6, 6), target=PER_EXAMPLE_TARGET),
    "inplace_methods": Case(InPlace, _randn(BATCH, 6)),
    "gates": Case(Gate, _randn(BATCH, 4, 10)),
    "lstm": Case(lambda: Recurrent("lstm"), _randn(BATCH, 5, 4)),
    "lstm_2layers": Case(lambda: Recurrent("lstm", layers=2), _randn(BATCH, 3, 4)),
    "gru": Case(lambda: Recurrent("gru"), _randn(BATCH, 5, 4)),
    "gru_bidirectional": Case(lambda: Recurrent("gru", bidirectional=True), _randn(BATCH, 3, 4)),
    "lstm_gru_cells": Case(Cells, _randn(BATCH, 3, 4)),
    "transformer_encoder": Case(Transformer, _randn(BATCH, 6, 5)),
    "transformer_encoder_norm_first_gelu": Case(lambda: Transformer(True, "gelu"), _randn(BATCH, 6, 5)),
    "transformer_encoder_padding_mask": Case(Transformer, _randn(BATCH, 6, 5), extra=_padding_mask),
    "attention": Case(Attention, _randn(BATCH, 6, 5)),
    "norms": Case(Norms, _randn(BATCH, 6)),
    "batchnorm2d": Case(BatchNorm2d, _randn(BATCH, 3, 9, 9)),
    "softmax_inside": Case(SoftmaxInside, _randn(BATCH, 6)),
    "division_by_activation": Case(Division, _randn(BATCH, 6)),
    "maximum_minimum": Case(MaxMin, _randn(BATCH, 6)),
    "shapes": Case(Shapes, _randn(BATCH, 3, 8, 8)),
    "dna_dilated_conv": Case(DNAConv, _one_hot_dna, target=[0, 1, 1]),
    "two_inputs_additional_args": Case(
        TwoInputs,
        _two_inputs,
        target=2,
        extra=lambda inputs: (torch.linspace(0.5, 2.0, BATCH, dtype=inputs[0].dtype)[:, None], 2.0),
    ),
    "scalar_output": Case(ScalarOutput, _randn(BATCH, 6), target=None),
    **{
        f"torchvision:{name}": Case(build, _randn(2, 3, 32, 32), target="argmax", baselines=("zero", "random"))
        for name, build in TORCHVISION.items()
    },
}

#: Cases also run in float32 (a representative subset: every rule family appears at least once).
FLOAT32 = [
    "functional:F.relu",
    "functional:torch.exp",
    "functional:F.gelu",
    "module_twice:nn.Mish",
    "maxpool_3_stride1",
    "residual_shared_inplace_relu",
    "gates",
    "lstm",
    "norms",
    "softmax_inside",
    "division_by_activation",
    "maximum_minimum",
    "dna_dilated_conv",
    "two_inputs_additional_args",
    "torchvision:resnet18",
    "torchvision:vit",
]


@functools.cache
def built(name: str, dtype: torch.dtype) -> tuple[nn.Module, tuple[torch.Tensor, ...], Any, Any]:
    """The case's model (eval mode, seeded random weights) and inputs; cached, so that each model is
    captured by torch.export once per dtype."""
    case = CASES[name]
    torch.manual_seed(0)
    model = case.build()
    g = torch.Generator().manual_seed(1)
    inputs = case.inputs(g, dtype)
    if any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules()):
        probe = tuple(x.float() for x in inputs)
        with torch.no_grad():
            model(*probe, *as_tuple(case.extra(probe)))  # materialise lazy layers
    randomize_(model)
    probe = case.inputs(torch.Generator().manual_seed(2), torch.float32)
    calibrate_batch_norm_(model, probe, case.extra(probe))
    model = model.to(dtype).eval()
    target = case.target
    if target == "argmax":  # the predicted class: alive for models whose logits pass a ReLU
        with torch.no_grad():
            target = model(*inputs, *as_tuple(case.extra(inputs))).argmax(1).tolist()
    return model, inputs, case.extra(inputs), target


def _matrix() -> list[Any]:
    params = []
    for name, case in CASES.items():
        for dtype in (torch.float64, torch.float32) if name in FLOAT32 else (torch.float64,):
            for kind in case.baselines:
                params.append(pytest.param(name, dtype, kind, id=f"{name}-{str(dtype)[6:]}-{kind}"))
    return params


@pytest.mark.parametrize(("name", "dtype", "baseline_kind"), _matrix())
def test_summation_to_delta(name: str, dtype: torch.dtype, baseline_kind: str) -> None:
    model, inputs, extra, target = built(name, dtype)
    baselines = make_baselines(baseline_kind, inputs, seed=zlib.crc32(name.encode()))
    if name == "dna_dilated_conv" and baseline_kind == "random":  # other one-hot sequences
        g = torch.Generator().manual_seed(7)
        baselines = inputs[0][torch.randperm(BATCH, generator=g)][:, :, torch.randperm(40, generator=g)]
    given = inputs if len(inputs) > 1 else inputs[0]
    check_summation(model, given, baselines, target, extra)


@pytest.mark.parametrize("rule", ["reveal_cancel", "genomics_default"])
@pytest.mark.parametrize("name", list(CASES))
def test_summation_to_delta_other_rules(name: str, rule: str) -> None:
    """RevealCancel (everywhere a dense or conv layer feeds a nonlinearity, or after dense layers
    only) keeps summation-to-delta on the whole matrix, float64, one random reference per example."""
    model, inputs, extra, target = built(name, torch.float64)
    kind = "random" if "random" in CASES[name].baselines else CASES[name].baselines[0]
    baselines = make_baselines(kind, inputs, seed=zlib.crc32(name.encode()))
    check_summation(model, inputs if len(inputs) > 1 else inputs[0], baselines, target, extra, rule=rule)


def test_float32_subset_is_in_the_matrix() -> None:
    assert set(FLOAT32) <= set(CASES)


def test_dna_uniform_background_reference() -> None:
    """One-hot DNA against the uniform background 0.25 (a scalar reference)."""
    model, inputs, _, target = built("dna_dilated_conv", torch.float64)
    check_summation(model, inputs[0], 0.25, target)


# --------------------------------------------------------------------------------------------------
# batch invariance and shared references

INVARIANCE_MODELS = ["torchvision:resnet18", "torchvision:vit", "lstm", "transformer_encoder_padding_mask"]


@pytest.mark.parametrize("name", INVARIANCE_MODELS)
def test_batch_invariance(name: str) -> None:
    """Explaining a batch at once gives each example's attributions alone (per-example references)."""
    model, inputs, extra, target = built(name, torch.float64)
    (x,) = inputs
    baselines = make_baselines("random", inputs, seed=3)
    target = torch.as_tensor(target).expand(x.shape[0]).tolist()
    together, delta = explain(model, x, baselines, target, extra)
    for i in range(x.shape[0]):
        extra_alone = tuple(
            e[i : i + 1] if isinstance(e, torch.Tensor) and e.ndim and e.shape[0] == x.shape[0] else e
            for e in as_tuple(extra)
        )
        alone, delta_alone = explain(model, x[i : i + 1], baselines[i : i + 1], target[i], extra_alone)
        torch.testing.assert_close(alone, together[i : i + 1], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(delta_alone, delta[i : i + 1], rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "name",
    INVARIANCE_MODELS
    + ["torchvision:convnext", "two_inputs_additional_args", "attention", "gru_bidirectional", "norms"],
)
def test_shared_reference_equals_repeated_reference(name: str) -> None:
    """One reference of batch size one (evaluated once) gives what the same reference repeated for
    every example gives."""
    model, inputs, extra, target = built(name, torch.float64)
    shared = make_baselines("shared", inputs, seed=5)
    repeated = tuple(r.expand_as(x).clone() for r, x in zip(as_tuple(shared), inputs))
    given = inputs if len(inputs) > 1 else inputs[0]
    a_shared, d_shared = explain(model, given, shared, target, extra)
    a_repeated, d_repeated = explain(model, given, repeated if len(inputs) > 1 else repeated[0], target, extra)
    for a, b in zip(as_tuple(a_shared), as_tuple(a_repeated)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d_shared, d_repeated, rtol=0, atol=1e-10)
