"""DeepLift's Captum-style interface: inputs, baselines, targets, tuples, deltas, batching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deltalift import DeepLift

DTYPE = torch.float64


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Conv1d(2, 3, 3)
        self.head = nn.Linear(5 + 3 * 4, 4)

    def forward(self, x, y, scale=1.0):
        h = torch.cat([torch.tanh(self.a(x)), torch.relu(self.b(y)).flatten(1)], 1)
        return self.head(h) * scale


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TwoInputs().to(DTYPE).eval()


@pytest.fixture
def inputs():
    torch.manual_seed(1)
    return torch.randn(5, 6, dtype=DTYPE), torch.randn(5, 2, 6, dtype=DTYPE)


def test_tuple_inputs_give_tuple_attributions_that_sum_to_delta(model, inputs):
    attrs, delta = DeepLift(model).attribute(inputs, target=2, return_convergence_delta=True)
    assert isinstance(attrs, tuple) and [a.shape for a in attrs] == [i.shape for i in inputs]
    t = model(*inputs)[:, 2] - model(torch.zeros(1, 6, dtype=DTYPE), torch.zeros(1, 2, 6, dtype=DTYPE))[:, 2]
    torch.testing.assert_close(sum(a.flatten(1).sum(1) for a in attrs), t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(delta, torch.zeros(5, dtype=DTYPE), rtol=0, atol=1e-12)


def test_single_tensor_in_gives_single_tensor_out():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU()).eval()
    attr = DeepLift(model).attribute(torch.randn(4, 3), target=1)
    assert isinstance(attr, torch.Tensor) and attr.shape == (4, 3)


def test_baseline_forms_agree(model, inputs):
    torch.manual_seed(2)
    b0, b1 = torch.randn(6, dtype=DTYPE), torch.randn(2, 6, dtype=DTYPE)
    method = DeepLift(model)
    unbatched = method.attribute(inputs, baselines=(b0, b1), target=1)
    batch_one = method.attribute(inputs, baselines=(b0[None], b1[None]), target=1)
    repeated = method.attribute(inputs, baselines=(b0.expand(5, 6).clone(), b1.expand(5, 2, 6).clone()), target=1)
    for u, o, r in zip(unbatched, batch_one, repeated):
        torch.testing.assert_close(u, o, rtol=0, atol=0)
        torch.testing.assert_close(u, r, rtol=1e-12, atol=1e-13)


def test_scalar_and_none_baselines(model, inputs):
    method = DeepLift(model)
    none = method.attribute(inputs, target=0)
    zero = method.attribute(inputs, baselines=(0.0, 0), target=0)
    for a, b in zip(none, zero):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    half = method.attribute(inputs, baselines=(0.5, -0.5), target=0)
    explicit = method.attribute(
        inputs, baselines=(torch.full((6,), 0.5, dtype=DTYPE), torch.full((2, 6), -0.5, dtype=DTYPE)), target=0
    )
    for a, b in zip(half, explicit):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_per_example_baselines_equal_one_call_per_example(model, inputs):
    torch.manual_seed(3)
    refs = torch.randn(5, 6, dtype=DTYPE), torch.randn(5, 2, 6, dtype=DTYPE)
    targets = [0, 3, 1, 1, 2]
    batched = DeepLift(model).attribute(inputs, baselines=refs, target=targets)
    for i in range(5):
        single = DeepLift(model).attribute(
            tuple(x[i : i + 1] for x in inputs), baselines=tuple(r[i : i + 1] for r in refs), target=targets[i]
        )
        for b, s in zip(batched, single):
            torch.testing.assert_close(b[i : i + 1], s, rtol=1e-12, atol=1e-13)


def test_target_forms_agree(model, inputs):
    method = DeepLift(model)
    as_list = method.attribute(inputs, target=[1, 1, 1, 1, 1])
    as_tensor = method.attribute(inputs, target=torch.tensor([1, 1, 1, 1, 1]))
    as_int = method.attribute(inputs, target=1)
    as_scalar_tensor = method.attribute(inputs, target=torch.tensor(1))
    for a, b, c, d in zip(as_list, as_tensor, as_int, as_scalar_tensor):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def test_additional_forward_args_are_passed_and_not_explained(model, inputs):
    method = DeepLift(model)
    plain = method.attribute(inputs, target=0)
    scaled = method.attribute(inputs, target=0, additional_forward_args=(3.0,))
    for p, s in zip(plain, scaled):
        torch.testing.assert_close(s, 3 * p, rtol=1e-12, atol=1e-14)


def test_multipliers_times_difference_are_contributions(model, inputs):
    refs = tuple(torch.randn_like(x[:1]) for x in inputs)
    contributions = DeepLift(model).attribute(inputs, refs, target=3)
    multipliers = DeepLift(model, multiply_by_inputs=False).attribute(inputs, refs, target=3)
    for c, m, x, r in zip(contributions, multipliers, inputs, refs):
        torch.testing.assert_close(c, m * (x - r), rtol=0, atol=0)
    assert DeepLift(model).multiplies_by_inputs and not DeepLift(model, multiply_by_inputs=False).multiplies_by_inputs


def test_compute_convergence_delta_matches_returned_delta(model, inputs):
    method = DeepLift(model)
    assert method.has_convergence_delta()
    refs = tuple(torch.randn_like(x[:1]) for x in inputs)
    attrs, delta = method.attribute(inputs, refs, target=2, return_convergence_delta=True)
    recomputed = method.compute_convergence_delta(attrs, refs, inputs, target=2)
    torch.testing.assert_close(recomputed, delta, rtol=0, atol=1e-12)
    off = method.compute_convergence_delta(tuple(a * 2 for a in attrs), refs, inputs, target=2)
    torch.testing.assert_close(off, sum(a.flatten(1).sum(1) for a in attrs), rtol=1e-10, atol=1e-12)


def test_batch_sizes_share_one_captured_graph(model, inputs):
    from deltalift import capture

    capture.clear_cache()
    method = DeepLift(model)
    method.attribute(inputs, target=0)
    method.attribute(tuple(x[:3] for x in inputs), target=0)
    method.attribute(tuple(x[:2] for x in inputs), target=0)
    assert len(capture._cache[model]) == 1


def test_float32_and_float64(inputs):
    torch.manual_seed(0)
    model64 = TwoInputs().to(DTYPE).eval()
    model32 = TwoInputs().eval()
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    a64 = DeepLift(model64).attribute(inputs, target=1)
    a32, delta32 = DeepLift(model32).attribute(
        tuple(x.float() for x in inputs), target=1, return_convergence_delta=True
    )
    assert all(a.dtype == torch.float32 for a in a32)
    for x, y in zip(a32, a64):
        torch.testing.assert_close(x.double(), y, rtol=1e-4, atol=1e-5)
    assert delta32.abs().max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(model, inputs):
    cpu = DeepLift(model).attribute(inputs, target=1)
    gpu_model = TwoInputs().to(DTYPE)
    gpu_model.load_state_dict(model.state_dict())
    gpu = DeepLift(gpu_model.cuda().eval()).attribute(tuple(x.cuda() for x in inputs), target=1)
    for c, g in zip(cpu, gpu):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-10, atol=1e-12)


class _ConvFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_inputs_with_other_strides_reuse_the_captured_graph():
    """A graph captured from row-major inputs, then inputs of the same shape whose strides make the
    convolution's output channels-last ((N, 1, 8, 8) with strides (64, 1, 8, 1), as NumPy's
    ``[:, None]`` gives, and a channels-last reference): the captured ``view`` after the
    convolution must still see row-major values."""
    from deltalift import LayerActivation, Saliency

    model = _ConvFlatten().eval()
    x = torch.randn(5, 8, 8, 1).permute(0, 3, 1, 2)
    assert x.stride() == (64, 1, 8, 1) and x.is_contiguous()
    standard = x.contiguous(memory_format=torch.contiguous_format).clone()
    expected = DeepLift(model).attribute(standard, 0.0, target=1)
    reference = torch.randn(1, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(DeepLift(model).attribute(x, 0.0, target=1), expected, rtol=0, atol=0)
    torch.testing.assert_close(
        DeepLift(model).attribute(x, reference, target=1),
        DeepLift(model).attribute(standard, reference.clone(), target=1),
    )
    torch.testing.assert_close(LayerActivation(model, model.fc).attribute(x), model(standard).detach())
    torch.testing.assert_close(Saliency(model).attribute(x, target=1), Saliency(model).attribute(standard, target=1))
