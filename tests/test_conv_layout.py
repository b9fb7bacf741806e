"""The DeepLIFT walk's 1-D convolutions on CPU, run length-major (deltalift.conv_layout), and the
input-side evaluations that keep that layout and DeepLIFT-SHAP's repeated rows (rules.linear).

The walk evaluates a 1-D convolution as the channels-last 2-D convolution of its ``(N, C, 1, L)``
view and keeps the result length-major (strides ``(L * C, 1, C)``) for the next one.  That must
change nothing but speed: the values are ``aten.convolution``'s in every configuration (forward
and transposed, the transpose that serves as the backward pass, both inputs' layouts, three
dtypes); a captured ``view`` of such an output still works; the attributions handed back are
row-major; and they equal those of the walk with oneDNN switched off (the row-major path).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from deltalift import DeepLift, DeepLiftShap, LayerDeepLift
from deltalift.canonical import weighted_op
from deltalift.conv_layout import convolution, runs_length_major
from deltalift.rules.linear import evaluate_both
from deltalift.rules.registry import Pair

aten = torch.ops.aten

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="the length-major path needs oneDNN (mkldnn)"
)

CONFIGURATIONS = list(itertools.product((False, True), (1, 2), (1, 2, 3), (0, 2), (1, 3), (True, False)))
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 5e-2}


@contextmanager
def _onednn_off() -> Iterator[None]:
    """oneDNN switched off: 1-D convolutions run as aten runs them, row-major."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def _length_major(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _is_length_major(t: torch.Tensor) -> bool:
    n, c, length = t.shape
    return t.stride() == (length * c, 1, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("transposed,groups,stride,padding,dilation,bias", CONFIGURATIONS)
def test_values_are_atens_forward_and_transposed(transposed, groups, stride, padding, dilation, bias, dtype):
    g = torch.Generator().manual_seed(stride * 100 + padding * 10 + dilation + groups)
    channels, outputs = 4, 6
    x = torch.randn(3, channels, 17, generator=g).to(dtype)
    shape = (channels, outputs // groups) if transposed else (outputs, channels // groups)
    weight = torch.randn(*shape, 3, generator=g).to(dtype)
    b = torch.randn(outputs, generator=g).to(dtype) if bias else None
    output_padding = [min(stride, dilation) - 1] if transposed else [0]
    args = (weight, b, [stride], [padding], [dilation], transposed, output_padding, groups)
    expected = aten.convolution.default(x, *args)
    for given in (x, _length_major(x)):
        out = convolution(given, *args)
        assert _is_length_major(out)
        torch.testing.assert_close(out, expected, rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("transposed,groups,stride,padding,dilation,bias", CONFIGURATIONS)
def test_transpose_is_autograds_input_gradient(transposed, groups, stride, padding, dilation, bias):
    """The backward pass of the walk's convolution (its transpose, from the input's shape)."""
    g = torch.Generator().manual_seed(stride * 100 + padding * 10 + dilation + groups)
    channels, outputs = 4, 6
    x = torch.randn(2, channels, 15, generator=g, dtype=torch.float64, requires_grad=True)
    shape = (channels, outputs // groups) if transposed else (outputs, channels // groups)
    weight = torch.randn(*shape, 3, generator=g, dtype=torch.float64)
    output_padding = [min(stride, dilation) - 1] if transposed else [0]
    args = (x, weight, None, [stride], [padding], [dilation], transposed, output_padding, groups)
    y = aten.convolution.default(*args)
    s = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (expected,) = torch.autograd.grad(y, x, s)
    op = weighted_op(aten.convolution.default, args, 0, convolution=convolution)
    assert op is not None
    for grad in (s, _length_major(s)):
        torch.testing.assert_close(op.transpose(grad, x), expected, rtol=0, atol=1e-12)


def test_other_convolutions_run_as_aten_does():
    x2 = torch.randn(2, 3, 8, 8)
    weight = torch.randn(5, 3, 3, 3)
    args = (weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    assert not runs_length_major(x2)
    assert convolution(x2, *args).is_contiguous()
    x1, weight1 = torch.randn(2, 3, 8), torch.randn(5, 3, 3)
    assert runs_length_major(x1)
    with _onednn_off():
        assert not runs_length_major(x1)
        assert convolution(x1, weight1, None, [1], [1], [1], False, [0], 1).is_contiguous()


class _FlattenedConv1d(nn.Module):
    """Dilated residual Conv1d layers and a dense head on the flattened (viewed) output."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv1d(4, 8, 5, padding=2)
        self.dilated = nn.ModuleList(nn.Conv1d(8, 8, 3, padding=d, dilation=d) for d in (2, 4))
        self.pool = nn.MaxPool1d(2)
        self.head = nn.Linear(8 * 12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        for conv in self.dilated:
            h = h + torch.relu(conv(h))
        return self.head(self.pool(h).view(x.shape[0], -1))


class _AveragedConv1d(nn.Module):
    """BPNet's shape: residual dilated Conv1d layers, the mean over the length, a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv1d(4, 8, 5, padding=2)
        self.dilated = nn.ModuleList(nn.Conv1d(8, 8, 3, padding=d, dilation=d) for d in (2, 4))
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        for conv in self.dilated:
            h = h + torch.relu(conv(h))
        return self.head(h.mean(-1))


class _SmoothConv1d(_AveragedConv1d):
    """The same with GELU and tanh: Rescale's general rule, its input side on one row too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x))
        for conv in self.dilated:
            h = h + nn.functional.gelu(conv(h))
        return self.head(h.mean(-1))


def _model(kind: type[nn.Module] = _FlattenedConv1d) -> nn.Module:
    torch.manual_seed(0)
    return kind().double().eval()


@pytest.mark.parametrize("backend", ["interpreter", "traced"])
def test_deeplift_through_a_view_equals_the_row_major_walk(backend):
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 24, generator=g, dtype=torch.float64)
    reference = torch.randn(3, 4, 24, generator=g, dtype=torch.float64)
    with _onednn_off():
        expected = DeepLift(model, backend="interpreter").attribute(x, reference, target=1)
    explainer = DeepLift(model, backend=backend)
    for _ in range(2):  # traced: recorded on the first call, replayed on the second
        result = explainer.attribute(x, reference, target=1)
        assert result.is_contiguous()
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-10)


def test_layer_attributions_at_a_convolution_are_row_major():
    model = _model()
    x = torch.randn(2, 4, 24, dtype=torch.float64)
    result = LayerDeepLift(model, model.dilated[0]).attribute(x, torch.zeros_like(x), target=0)
    with _onednn_off():
        expected = LayerDeepLift(model, model.dilated[0]).attribute(x, torch.zeros_like(x), target=0)
    assert result.is_contiguous()
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", [_FlattenedConv1d, _AveragedConv1d, _SmoothConv1d])
@pytest.mark.parametrize("batch_size", [5, 10, 15])
def test_deeplift_shap_with_one_or_several_examples_a_call(batch_size, kind):
    """5 references: one example a call (its input side one row, repeated by stride 0 through
    the convolutions, ReLUs and residual additions), two (copied in the length-major layout),
    three; each equals the row-major walk's average of DeepLift calls on dense inputs."""
    model = _model(kind)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 24, generator=g, dtype=torch.float64)
    references = torch.randn(3, 5, 4, 24, generator=g, dtype=torch.float64)
    with _onednn_off():
        expected = torch.stack(
            [
                DeepLift(model, backend="interpreter")
                .attribute(x[i : i + 1].expand(5, -1, -1), references[i], target=0)
                .mean(0)
                for i in range(3)
            ]
        )
    result = DeepLiftShap(model, batch_size=batch_size).attribute(x, references, target=0)
    assert result.is_contiguous()
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-10)


def _pair(x: torch.Tensor) -> Pair:
    return Pair(x, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dims,keepdim", [([-1], False), ([1, 2], True), ([0], False)])
def test_a_mean_on_the_input_side_is_atens_to_the_bit_with_its_gradient(dims, keepdim, dtype):
    g = torch.Generator().manual_seed(3)
    for x in (torch.randn(6, 5, 40, generator=g).to(dtype) * 7, _length_major(torch.randn(6, 5, 40, generator=g))):
        x = x.to(dtype).requires_grad_(True)
        out = evaluate_both(aten.mean.dim, (_pair(x), dims, keepdim), {})
        expected = aten.mean.dim(x, dims, keepdim)
        assert torch.equal(out.x, expected)
        s = torch.randn(expected.shape, generator=g, dtype=dtype)
        (grad,) = torch.autograd.grad(out.x, x, s)
        (expected_grad,) = torch.autograd.grad(expected, x, s)
        assert torch.equal(grad, expected_grad)


def test_an_addition_of_repeated_rows_runs_on_one_row_and_keeps_each_rows_gradient():
    """Both terms repeat one row (stride 0): the sum is computed once and stays a stride-0
    view, while the gradient of every row (a different one per reference under DeepLIFT-SHAP)
    reaches both terms unsummed."""
    g = torch.Generator().manual_seed(4)
    a_row = torch.randn(1, 3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    b_row = torch.randn(1, 3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    a, b = a_row.expand(5, 3, 7), b_row.expand(5, 3, 7)
    out = evaluate_both(aten.add.Tensor, (_pair(a), _pair(b)), {})
    assert out.x.stride(0) == 0
    torch.testing.assert_close(out.x, a + b, rtol=0, atol=0)
    weights = torch.randn(5, 3, 7, generator=g, dtype=torch.float64)
    grad_a, grad_b = torch.autograd.grad((out.x * weights).sum(), [a, b])
    assert torch.equal(grad_a, weights) and torch.equal(grad_b, weights)
    dense = evaluate_both(aten.add.Tensor, (_pair(a.contiguous()), _pair(b)), {})  # one term dense: ordinary
    assert dense.x.stride(0) != 0


@pytest.mark.parametrize("kind", [_AveragedConv1d, _SmoothConv1d])
def test_float32_one_example_a_call_agrees_with_the_float64_row_major_walk(kind):
    """Conditioning of the length-major, one-row path: float32 DeepLIFT-SHAP within float32's
    rounding of the float64 walk with oneDNN off."""
    model = _model(kind)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 24, generator=g, dtype=torch.float64)
    references = torch.randn(2, 5, 4, 24, generator=g, dtype=torch.float64)
    with _onednn_off():
        expected = DeepLiftShap(model, batch_size=5, backend="interpreter").attribute(x, references, target=0)
    result = DeepLiftShap(model.float(), batch_size=5).attribute(x.float(), references.float(), target=0)
    scale = expected.abs().max().item()
    torch.testing.assert_close(result.double(), expected, rtol=0, atol=1e-5 * scale)
