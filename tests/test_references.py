"""Reference generators: shapes, exact values, blur against scipy, seeds, streaming, shuffles, use as baselines."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from deltalift import DeepLift, DeepLiftShap, references
from deltalift.genomics import background_frequencies, dinucleotide_shuffled, shuffled

DTYPE = torch.float64


def one_hot(n: int, length: int, seed: int) -> torch.Tensor:
    tokens = torch.from_numpy(np.random.default_rng(seed).integers(0, 4, (n, length)))
    return torch.nn.functional.one_hot(tokens, 4).transpose(1, 2).to(DTYPE)


def dinucleotide_counts(x: torch.Tensor) -> torch.Tensor:
    """``counts[..., a, b] = #{j : x[..., a, j] = 1 and x[..., b, j+1] = 1}``, by a plain sum."""
    return torch.einsum("...aj,...bj->...ab", x[..., :-1], x[..., 1:])


# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_zeros_and_constant_values_shapes_dtypes(dtype: torch.dtype) -> None:
    x = torch.randn(5, 3, 7, 6).to(dtype)
    z = references.zeros(x)
    c = references.constant(x, -2.5)
    assert z.shape == c.shape == (1, 3, 7, 6)
    assert z.dtype == c.dtype == dtype and z.device == x.device
    assert torch.equal(z, torch.zeros(1, 3, 7, 6, dtype=dtype))
    assert torch.equal(c, torch.full((1, 3, 7, 6), -2.5, dtype=dtype))


def test_constant_rejects_non_finite_and_non_tensors() -> None:
    with pytest.raises(ValueError, match="value must be finite"):
        references.constant(torch.zeros(2, 3), float("nan"))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        references.zeros(np.zeros((2, 3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch dim"):
        references.zeros(torch.tensor(1.0))


def test_background_frequencies_exact() -> None:
    x = one_hot(3, 11, seed=0)
    ref = background_frequencies(x)
    assert ref.shape == (1, 4, 11) and ref.dtype == DTYPE
    expected = torch.tensor([0.3, 0.2, 0.2, 0.3], dtype=DTYPE)
    for j in range(11):
        assert torch.equal(ref[0, :, j], expected)
    custom = background_frequencies(x.float(), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert custom.dtype == torch.float32
    assert torch.equal(custom, torch.tensor([0.1, 0.2, 0.3, 0.4])[None, :, None].expand(1, 4, 11))


@pytest.mark.parametrize(
    "frequencies, message",
    [
        ((0.3, 0.2, 0.2, 0.2), "sum to 1"),
        ((0.5, 0.5, 0.0), "4 numbers"),
        ((0.5, 0.5, 0.5, -0.5), "non-negative"),
        ((0.25, 0.25, float("nan"), 0.25), "finite"),
    ],
)
def test_background_frequencies_validation(frequencies: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        background_frequencies(one_hot(2, 5, seed=0), frequencies)


def test_background_frequencies_needs_four_channels() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4, L\)"):
        background_frequencies(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match=r"\(N, 4, L\)"):
        background_frequencies(torch.zeros(4, 8))


# --------------------------------------------------------------------------------------------------
# Dataset mean and samples
# --------------------------------------------------------------------------------------------------


def test_dataset_mean_of_tensor_equals_torch_mean() -> None:
    data = torch.randn(50, 3, 4, 5, dtype=DTYPE)
    mean = references.dataset_mean(data)
    assert mean.shape == (1, 3, 4, 5) and mean.dtype == DTYPE
    torch.testing.assert_close(mean, data.mean(0, keepdim=True), rtol=1e-14, atol=1e-14)
    per_channel = references.dataset_mean(data, dim=(0, 2, -1))
    assert per_channel.shape == (1, 3, 1, 1)
    torch.testing.assert_close(per_channel, data.mean((0, 2, 3), keepdim=True), rtol=1e-14, atol=1e-14)


def test_dataset_mean_streams_batches_of_uneven_size() -> None:
    torch.manual_seed(0)
    data = torch.randn(103, 2, 9) + 3.0
    consumed = []

    def stream() -> Iterator[torch.Tensor]:
        for start in range(0, 103, 10):  # 10 batches of 10 and one of 3
            consumed.append(start)
            yield data[start : start + 10]

    mean = references.dataset_mean(stream())
    assert len(consumed) == 11
    assert mean.shape == (1, 2, 9) and mean.dtype == torch.float32
    torch.testing.assert_close(mean, data.double().mean(0, keepdim=True).float(), rtol=1e-6, atol=1e-6)
    per_channel = references.dataset_mean(iter(data.split(7)), dim=(0, 2))
    torch.testing.assert_close(per_channel, data.mean((0, 2), keepdim=True), rtol=1e-5, atol=1e-5)


def test_dataset_mean_takes_a_dataloader_of_tuples_and_integer_data() -> None:
    data = torch.randint(0, 256, (40, 3, 2, 2), dtype=torch.uint8)
    labels = torch.arange(40)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, labels), batch_size=16)
    mean = references.dataset_mean(loader)
    assert mean.dtype == torch.get_default_dtype()
    torch.testing.assert_close(mean, data.double().mean(0, keepdim=True).to(mean.dtype))


def test_dataset_mean_validation() -> None:
    with pytest.raises(ValueError, match="no example"):
        references.dataset_mean(iter([]))
    with pytest.raises(ValueError, match="no example"):
        references.dataset_mean(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="batch 1 has shape"):
        references.dataset_mean([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="must include 0"):
        references.dataset_mean([torch.zeros(2, 3)], dim=1)
    with pytest.raises(ValueError, match="dim must name dims"):
        references.dataset_mean(torch.zeros(2, 3), dim=2)


def test_sample_from_draws_distinct_rows_reproducibly() -> None:
    data = torch.arange(30, dtype=DTYPE).reshape(10, 3)
    sample = references.sample_from(data, 6, random_state=0)
    assert sample.shape == (6, 3) and sample.dtype == DTYPE
    rows = (sample[:, 0] / 3).long()
    assert len(set(rows.tolist())) == 6  # without replacement
    assert torch.equal(sample, data[rows])
    assert torch.equal(sample, references.sample_from(data, 6, random_state=0))
    assert not torch.equal(sample, references.sample_from(data, 6, random_state=1))
    assert references.sample_from(data, 25, np.random.default_rng(0), replace=True).shape == (25, 3)
    with pytest.raises(ValueError, match="exceeds"):
        references.sample_from(data, 11)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        references.sample_from(data, 0)


# --------------------------------------------------------------------------------------------------
# Gaussian blur
# --------------------------------------------------------------------------------------------------


def blur_slowly(signal: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """1-D blur written out: mirror the index about the edges, weight by the normalised Gaussian."""
    size = len(signal)
    weights = np.array([math.exp(-(i**2) / (2 * sigma**2)) for i in range(-radius, radius + 1)])
    weights /= weights.sum()
    out = np.zeros(size)
    for j in range(size):
        for i, w in zip(range(-radius, radius + 1), weights):
            k = j + i
            while not 0 <= k < size:  # reflect about the edge: -1 -> 0, size -> size - 1
                k = -k - 1 if k < 0 else 2 * size - 1 - k
            out[j] += w * signal[k]
    return out


@pytest.mark.parametrize("sigma, length", [(1.0, 20), (2.5, 7), (3.0, 4)])
def test_blur_1d_matches_a_written_out_convolution(sigma: float, length: int) -> None:
    x = torch.randn(2, 3, length, dtype=DTYPE)
    blurred = references.gaussian_blur(x, sigma=sigma)
    radius = math.ceil(3 * sigma)
    for i in range(2):
        for c in range(3):
            np.testing.assert_allclose(
                blurred[i, c].numpy(), blur_slowly(x[i, c].numpy(), sigma, radius), rtol=1e-12, atol=1e-12
            )


@pytest.mark.parametrize(
    "shape, sigma, kernel_size",
    [
        ((2, 3, 16, 12), 1.5, None),
        ((2, 3, 16, 12), (2.0, 0.7), None),
        ((1, 2, 9, 10), 1.0, (7, 3)),
        ((1, 1, 5, 6), 4.0, None),  # radius 12: the reflection wraps more than once
        ((2, 2, 40), 3.0, None),
        ((1, 2, 5, 6, 7), (1.0, 0.0, 2.0), None),
    ],
)
def test_blur_matches_scipy_gaussian_filter(
    shape: tuple[int, ...], sigma: float | tuple[float, ...], kernel_size: tuple[int, ...] | None
) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=DTYPE)
    blurred = references.gaussian_blur(x, sigma=sigma, kernel_size=kernel_size)
    spatial = x.ndim - 2
    sigmas = (sigma,) * spatial if isinstance(sigma, float) else sigma
    if kernel_size is None:
        radii = tuple(math.ceil(3 * s) for s in sigmas)
    else:
        radii = tuple((k - 1) // 2 for k in kernel_size)
    expected = ndimage.gaussian_filter(
        x.numpy(), sigma=sigmas, mode="reflect", radius=radii, axes=tuple(range(2, x.ndim))
    )
    assert blurred.shape == x.shape and blurred.dtype == DTYPE
    np.testing.assert_allclose(blurred.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_blur_matches_scipy_with_truncate() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.randn(1, 1, 30, 30, dtype=DTYPE)
    sigma, kernel_size = 2.0, 9  # radius 4 = truncate * sigma with truncate = 2
    expected = ndimage.gaussian_filter(x[0, 0].numpy(), sigma, mode="reflect", truncate=4 / sigma)
    blurred = references.gaussian_blur(x, sigma, kernel_size)
    np.testing.assert_allclose(blurred[0, 0].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_blur_keeps_constant_images_and_the_mean_of_symmetric_ones() -> None:
    image = torch.full((2, 3, 17, 13), 0.7, dtype=DTYPE)
    torch.testing.assert_close(references.gaussian_blur(image, sigma=3.0), image, rtol=1e-14, atol=1e-14)
    x = torch.randn(1, 1, 64, dtype=DTYPE)
    assert not torch.allclose(references.gaussian_blur(x, sigma=2.0), x)  # it does blur
    assert references.gaussian_blur(x, sigma=2.0).std() < x.std()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_blur_with_zero_or_tiny_sigma_gives_the_input_back(dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 8, 9).to(dtype)
    same = references.gaussian_blur(x, sigma=0.0)
    assert torch.equal(same, x) and same.dtype == dtype
    same[0, 0, 0, 0] += 1.0
    assert not torch.equal(same, x)  # a copy, not a view
    assert torch.equal(references.gaussian_blur(x, sigma=0.0, kernel_size=5), x)
    tiny = references.gaussian_blur(x, sigma=1e-3)
    assert tiny.dtype == dtype and torch.equal(tiny, x)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"sigma": -1.0}, ValueError, "non-negative"),
        ({"sigma": float("inf")}, ValueError, "finite"),
        ({"sigma": (1.0, 2.0, 3.0)}, ValueError, "one per spatial dim"),
        ({"sigma": 1.0, "kernel_size": 4}, ValueError, "odd"),
        ({"sigma": 1.0, "kernel_size": (3,)}, ValueError, "one per spatial dim"),
    ],
)
def test_blur_validation(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        references.gaussian_blur(torch.zeros(1, 1, 4, 4), **kwargs)


def test_blur_rejects_wrong_shapes_and_integer_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, L\)"):
        references.gaussian_blur(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="floating-point"):
        references.gaussian_blur(torch.zeros(1, 1, 4, 4, dtype=torch.long))


# --------------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        functools.partial(references.noise, std=0.5),
        functools.partial(references.uniform_noise, low=-0.2, high=0.3),
    ],
)
def test_noise_shapes_and_seeds(make: Callable[..., torch.Tensor]) -> None:
    x = torch.randn(4, 2, 5).float()
    refs = make(x, 7, random_state=3)
    assert refs.shape == (4, 7, 2, 5) and refs.dtype == torch.float32
    assert torch.equal(refs, make(x, 7, random_state=3))
    assert not torch.equal(refs, make(x, 7, random_state=4))
    rng = np.random.default_rng(3)
    first, second = make(x, 7, random_state=rng), make(x, 7, random_state=rng)
    assert torch.equal(first, refs) and not torch.equal(first, second)  # a Generator is advanced
    assert not torch.equal(make(x, 7), make(x, 7))  # None: fresh entropy


def test_noise_statistics() -> None:
    x = torch.linspace(-1, 1, 6, dtype=DTYPE).reshape(2, 3)
    gaussian = references.noise(x, 20000, std=0.5, random_state=0) - x[:, None]
    torch.testing.assert_close(gaussian.mean(1), torch.zeros(2, 3, dtype=DTYPE), atol=0.02, rtol=0)
    torch.testing.assert_close(gaussian.std(1), torch.full((2, 3), 0.5, dtype=DTYPE), atol=0.02, rtol=0)
    uniform = references.uniform_noise(x, 20000, -0.2, 0.6, random_state=0) - x[:, None]
    assert uniform.min() >= -0.2 - 1e-12 and uniform.max() <= 0.6 + 1e-12
    torch.testing.assert_close(uniform.mean(1), torch.full((2, 3), 0.2, dtype=DTYPE), atol=0.01, rtol=0)
    assert torch.equal(references.noise(x, 3, std=0.0), x[:, None].expand(2, 3, 3))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: references.noise(x, 0), "n must be an int >= 1"),
        (lambda x: references.noise(x, 2.5), "n must be an int >= 1"),  # type: ignore[arg-type]
        (lambda x: references.noise(x, 3, std=-0.1), "std must be non-negative"),
        (lambda x: references.uniform_noise(x, 3, 1.0, 0.0), "low must not exceed high"),
        (lambda x: references.uniform_noise(x, 3, 0.0, float("inf")), "high must be finite"),
        (lambda x: references.noise(x.long(), 3), "floating-point"),
    ],
)
def test_noise_validation(call: Callable[[torch.Tensor], torch.Tensor], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(torch.zeros(2, 3))


# --------------------------------------------------------------------------------------------------
# Shuffles
# --------------------------------------------------------------------------------------------------


def test_shuffles_keep_letter_and_dinucleotide_counts() -> None:
    x = one_hot(3, 40, seed=1)
    mono = shuffled(x, 5, random_state=0)
    di = dinucleotide_shuffled(x, 5, random_state=0)
    for refs in (mono, di):
        assert refs.shape == (3, 5, 4, 40) and refs.dtype == DTYPE
        assert torch.equal(refs.sum(-1), x.sum(-1)[:, None].expand(3, 5, 4))
        assert not torch.equal(refs, x[:, None].expand_as(refs))
    assert torch.equal(dinucleotide_counts(di), dinucleotide_counts(x)[:, None].expand(3, 5, 4, 4))
    assert torch.equal(di, dinucleotide_shuffled(x, 5, random_state=0))
    assert not torch.equal(di, dinucleotide_shuffled(x, 5, random_state=1))


@pytest.mark.parametrize("make", [shuffled, dinucleotide_shuffled])
def test_shuffle_validation(make: Callable[..., torch.Tensor]) -> None:
    with pytest.raises(ValueError, match=r"\(N, K, L\)"):
        make(one_hot(1, 10, seed=0)[0], 3)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        make(one_hot(1, 10, seed=0), 0)


# --------------------------------------------------------------------------------------------------
# As baselines of DeepLift and DeepLiftShap
# --------------------------------------------------------------------------------------------------


@functools.cache
def image_model() -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        .to(DTYPE)
        .eval()
    )


@functools.cache
def sequence_model() -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(nn.Conv1d(4, 6, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 20, 2), nn.Sigmoid())
        .to(DTYPE)
        .eval()
    )


IMAGES = torch.randn(3, 3, 8, 8, dtype=DTYPE, generator=torch.Generator().manual_seed(5))
SEQUENCES = one_hot(3, 20, seed=7)

SINGLE = {
    "zeros": (image_model, IMAGES, lambda x: references.zeros(x)),
    "constant": (image_model, IMAGES, lambda x: references.constant(x, 0.5)),
    "dataset_mean": (image_model, IMAGES, lambda x: references.dataset_mean(torch.randn(20, 3, 8, 8, dtype=DTYPE))),
    "channel_mean": (image_model, IMAGES, lambda x: references.dataset_mean(x, dim=(0, 2, 3))),
    "gaussian_blur": (image_model, IMAGES, lambda x: references.gaussian_blur(x, sigma=1.5)),
    "background": (sequence_model, SEQUENCES, lambda x: background_frequencies(x)),
}
SETS = {
    "noise": (image_model, IMAGES, lambda x: references.noise(x, 4, std=0.3, random_state=0)),
    "uniform_noise": (image_model, IMAGES, lambda x: references.uniform_noise(x, 4, -0.5, 0.5, random_state=0)),
    "sample_from": (image_model, IMAGES, lambda x: references.sample_from(torch.randn(10, 3, 8, 8, dtype=DTYPE), 5, 0)),
    "dataset_mean": (image_model, IMAGES, lambda x: references.dataset_mean(torch.randn(10, 3, 8, 8, dtype=DTYPE))),
    "shuffled": (sequence_model, SEQUENCES, lambda x: shuffled(x, 4, random_state=0)),
    "dinucleotide_shuffled": (sequence_model, SEQUENCES, lambda x: dinucleotide_shuffled(x, 4, 0)),
}


@pytest.mark.parametrize("name", list(SINGLE))
def test_single_references_work_with_deeplift(name: str) -> None:
    make_model, x, make_reference = SINGLE[name]
    model = make_model()
    reference = make_reference(x)
    target = 1
    attributions, delta = DeepLift(model).attribute(
        x, baselines=reference, target=target, return_convergence_delta=True
    )
    with torch.no_grad():
        expected = model(x)[:, target] - model(reference.expand_as(x))[:, target]
    assert attributions.shape == x.shape
    assert delta.abs().max() < 1e-10
    torch.testing.assert_close(attributions.flatten(1).sum(1), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(SETS))
def test_reference_sets_work_with_deeplift_shap(name: str) -> None:
    make_model, x, make_references = SETS[name]
    model = make_model()
    refs = make_references(x)
    per_example = refs.ndim == x.ndim + 1
    n_refs = refs.shape[1] if per_example else refs.shape[0]
    attributions, delta = DeepLiftShap(model).attribute(x, baselines=refs, target=0, return_convergence_delta=True)
    with torch.no_grad():
        ref_rows = refs.flatten(0, 1) if per_example else refs.repeat(len(x), *([1] * (refs.ndim - 1)))
        mean_reference_output = model(ref_rows)[:, 0].reshape(len(x), n_refs).mean(1)
        expected = model(x)[:, 0] - mean_reference_output
    assert attributions.shape == x.shape
    assert delta.shape == (len(x) * n_refs,) and delta.abs().max() < 1e-10
    torch.testing.assert_close(attributions.flatten(1).sum(1), expected, rtol=1e-10, atol=1e-10)


def test_bound_generator_is_a_callable_baseline() -> None:
    model = sequence_model()
    bound = functools.partial(dinucleotide_shuffled, n=3, random_state=0)
    from_callable = DeepLiftShap(model).attribute(SEQUENCES, baselines=bound, target=0)
    from_tensor = DeepLiftShap(model).attribute(SEQUENCES, baselines=bound(SEQUENCES), target=0)
    torch.testing.assert_close(from_callable, from_tensor, rtol=0, atol=0)


def test_references_are_detached_from_autograd() -> None:
    x = torch.randn(3, 4, 10, dtype=DTYPE, requires_grad=True)
    made = [
        references.zeros(x),
        references.dataset_mean(x),
        references.gaussian_blur(x, 1.0),
        references.gaussian_blur(x, 0.0),
        references.noise(x, 2, random_state=0),
        references.uniform_noise(x, 2, 0.0, 1.0, random_state=0),
        references.sample_from(x, 2, random_state=0),
    ]
    assert not any(r.requires_grad for r in made)
