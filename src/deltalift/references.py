"""References (baselines) for DeepLIFT, for any kind of input: constants, dataset means and samples, blurs, noise.

DeepLIFT explains ``t(x) - t(x0)`` against a reference ``x0`` chosen to lack what is being looked
for: an all-zero (black) image, the average example, a blurred copy of the image (Shrikumar,
Greenside & Kundaje 2017, section 3.3 "Defining the reference" and the experiments of section 4;
Sturmfels, Lundberg & Lee 2020 compare such baselines for images). Each function here builds one
kind, in a shape that the methods accept directly:

- :func:`zeros`, :func:`constant`: ``(1, ...)``, one reference shared by the batch, for ``DeepLift``.
- :func:`dataset_mean`: ``(1, ...)``, the average example, for ``DeepLift`` (or ``DeepLiftShap``
  with a set of one).
- :func:`gaussian_blur`: ``(N, ...)``, one reference per example, for ``DeepLift``.
- :func:`noise`, :func:`uniform_noise`: ``(N, n, ...)``, ``n`` references per example, for
  ``DeepLiftShap``.
- :func:`sample_from`: ``(n, ...)``, a background set shared by the batch, for ``DeepLiftShap``.

References for one-hot DNA (the expected background frequencies of ACGT, shuffles of each
sequence that keep its composition but destroy its motifs) are in :mod:`deltalift.genomics`:
:func:`~deltalift.genomics.background_frequencies`, :func:`~deltalift.genomics.shuffled` and
:func:`~deltalift.genomics.dinucleotide_shuffled` (module :mod:`deltalift.genomics.references`).

Every result is detached from autograd and has the dtype and device of the tensor it is built from
(``x``, or the dataset). For a model with several inputs, build one reference per input and pass a
tuple. A function with its options bound is also a valid callable ``baselines`` for
``DeepLiftShap``, e.g. ``baselines=functools.partial(noise, n=20, std=0.1, random_state=0)``.

Randomness
----------
``random_state`` follows :mod:`deltalift.random_state`: ``None`` (fresh entropy), an ``int``
seed (``numpy.random.default_rng(seed)``) or a ``numpy.random.Generator``, used and advanced in
place. Random numbers are drawn with numpy, so the same seed gives the same references on any device.

References
----------
Shrikumar A, Greenside P, Kundaje A (2017). Learning Important Features Through Propagating
Activation Differences. ICML.
Sturmfels P, Lundberg S, Lee S-I (2020). Visualizing the Impact of Feature Attribution Baselines.
Distill 5(1):e22.
Lundberg SM, Lee S-I (2017). A Unified Approach to Interpreting Model Predictions. NeurIPS.
Sundararajan M, Taly A, Yan Q (2017). Axiomatic Attribution for Deep Networks. ICML.
Fong RC, Vedaldi A (2017). Interpretable Explanations of Black Boxes by Meaningful Perturbation. ICCV.
Smilkov D, Thorat N, Kim B, Viegas F, Wattenberg M (2017). SmoothGrad: removing noise by adding noise.
arXiv:1706.03825.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deltalift.random_state import RandomState, numpy_generator

__all__ = [
    "RandomState",
    "constant",
    "dataset_mean",
    "gaussian_blur",
    "noise",
    "sample_from",
    "uniform_noise",
    "zeros",
]


# --------------------------------------------------------------------------------------------------
# Constant references
# --------------------------------------------------------------------------------------------------


def zeros(x: Tensor) -> Tensor:
    """The all-zero reference ``x0 = 0``, shared by the batch.

    The reference of the DeepLIFT paper's MNIST experiments (a black image) and Integrated
    Gradients' default (Shrikumar et al. 2017, section 4.1; Sundararajan, Taly & Yan 2017).

    Parameters
    ----------
    x:
        Inputs ``(N, ...)``; only their shape, dtype and device are used.

    Returns
    -------
    Tensor
        ``(1, ...)`` zeros.
    """
    return constant(x, 0.0)


def constant(x: Tensor, value: float) -> Tensor:
    """The constant reference ``x0 = value`` everywhere, shared by the batch.

    Parameters
    ----------
    x:
        Inputs ``(N, ...)``; only their shape, dtype and device are used.
    value:
        A finite number (for a per-channel constant, see :func:`dataset_mean` with ``dim=(0, 2, 3)``).

    Returns
    -------
    Tensor
        ``(1, ...)`` filled with ``value``.
    """
    _check_batch(x, "x")
    value = _finite_number(value, "value")
    return torch.full((1, *x.shape[1:]), value, dtype=x.dtype, device=x.device)


# --------------------------------------------------------------------------------------------------
# Dataset statistics and samples
# --------------------------------------------------------------------------------------------------


def dataset_mean(data: Tensor | np.ndarray | Iterable[Any], dim: int | Sequence[int] = 0) -> Tensor:
    """The mean of a dataset over the examples (and any other dims ``dim`` names), streamed batch by batch.

    ``x0 = 1/|S| sum_{i in S} data_i``, where ``S`` runs over the indices along ``dim``. With the
    default ``dim=0`` this is the average example, shape ``(1, ...)``; ``dim=(0, 2, 3)`` on images
    ``(N, C, H, W)`` gives the per-channel mean ``(1, C, 1, 1)``, which ``DeepLift`` broadcasts.
    The sums are accumulated in float64 (float32 on MPS), so a long stream loses no precision.

    Parameters
    ----------
    data:
        A tensor (or numpy array) ``(N, ...)``, or an iterable of batches ``(B_i, ...)`` along dim 0
        with equal trailing shapes, e.g. a ``DataLoader``: only one batch is held at a time. A batch
        that is a tuple or list (as a ``DataLoader`` over a ``TensorDataset`` yields) contributes
        its first element.
    dim:
        The dim or dims to average over, as keepdim. With an iterable of batches they must include
        dim 0, the dim the batches are stacked along.

    Returns
    -------
    Tensor
        The mean, with size 1 along ``dim``, on the data's device and with its dtype (the default
        float dtype for integer data, e.g. uint8 images).
    """
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    batches: Iterable[Any] = [data] if isinstance(data, Tensor) else data
    if not isinstance(batches, Iterable):
        raise TypeError(f"data must be a tensor or an iterable of batches, got {type(data).__name__}")
    total: Tensor | None = None  # the running sum, on the first batch's device
    count = 0
    dims: tuple[int, ...] = ()
    dtype = torch.get_default_dtype()
    for position, batch in enumerate(batches):
        tensor = _batch_tensor(batch, position)
        if total is None:
            dims = _normalise_dims(dim, tensor.ndim)
            if not isinstance(data, Tensor) and 0 not in dims:
                raise ValueError(f"dim must include 0 (the dim batches are stacked along) for a stream, got {dim!r}")
            trailing, device = tensor.shape[1:], tensor.device
            accumulator = torch.float32 if device.type == "mps" else torch.float64
            dtype = tensor.dtype if tensor.is_floating_point() else dtype
        elif tensor.shape[1:] != trailing:
            raise ValueError(
                f"batch {position} has shape {tuple(tensor.shape)}, unlike the first batch's (..., "
                f"{', '.join(map(str, trailing))}) after dim 0"
            )
        part = tensor.detach().to(device=device, dtype=accumulator).sum(dim=dims, keepdim=True)
        total = part if total is None else total + part
        count += math.prod(tensor.shape[d] for d in dims)
    if total is None or count == 0:
        raise ValueError("data holds no example to average")
    return (total / count).to(dtype)


def sample_from(data: Tensor, n: int, random_state: RandomState = None, *, replace: bool = False) -> Tensor:
    """``n`` examples drawn at random from a dataset: a background set for ``DeepLiftShap``.

    DeepLIFT-SHAP averages DeepLIFT over references drawn from the data distribution, which
    approximates SHAP values of a model with independent features (Lundberg & Lee 2017, section
    4.2; SHAP's ``DeepExplainer`` suggests 100 to 1000 background examples).

    Parameters
    ----------
    data:
        The dataset ``(M, ...)``.
    n:
        How many examples to draw (``>= 1``; at most ``M`` unless ``replace``).
    random_state:
        ``None``, an ``int`` seed, or a ``numpy.random.Generator``.
    replace:
        Draw with replacement. By default every row is drawn at most once.

    Returns
    -------
    Tensor
        ``(n, ...)`` rows of ``data``, in random order, with its dtype and device.
    """
    _check_batch(data, "data")
    _check_count(n)
    if len(data) == 0:
        raise ValueError("data holds no example to sample")
    if not replace and n > len(data):
        raise ValueError(
            f"n = {n} exceeds the {len(data)} examples of data; pass replace=True to draw with replacement"
        )
    rows = numpy_generator(random_state).choice(len(data), size=n, replace=replace)
    return data.detach()[torch.from_numpy(rows).to(data.device)]


# --------------------------------------------------------------------------------------------------
# Gaussian blur
# --------------------------------------------------------------------------------------------------


def gaussian_blur(
    x: Tensor, sigma: float | Sequence[float] = 5.0, kernel_size: int | Sequence[int] | None = None
) -> Tensor:
    """A Gaussian-blurred copy of each example, over its spatial dims: one reference per example.

    A blurred image keeps the colours and coarse shapes of the input but loses the edges and
    textures a classifier looks for; it is one of the references the DeepLIFT seeds suggest for
    vision (Fong & Vedaldi 2017; Sturmfels et al. 2020, "blurred baseline"). With ``r = (k - 1) / 2``
    and ``k`` the kernel size, each spatial dim ``d`` of ``x`` is convolved with

        g_d[i] = exp(-i^2 / (2 sigma_d^2)) / sum_{|j| <= r} exp(-j^2 / (2 sigma_d^2)),   |i| <= r,

    one dim after another (the 2-D Gaussian is separable). The kernel sums to 1, so a constant
    image comes back unchanged. Borders are padded by reflection about the edge
    (``d c b a | a b c d | d c b a``, scipy's ``mode='reflect'``, repeated when ``r`` exceeds the
    size), so the result equals ``scipy.ndimage.gaussian_filter(x, sigma, mode='reflect',
    radius=r)`` over the spatial axes.

    Parameters
    ----------
    x:
        Floating-point inputs ``(N, C, L)`` (1-D signals), ``(N, C, H, W)`` (images) or with more
        spatial dims: every dim after the channel dim is blurred.
    sigma:
        The standard deviation in samples (pixels): one non-negative number for every spatial dim,
        or one per spatial dim. ``0`` leaves a dim as it is.
    kernel_size:
        Odd kernel size, one for all spatial dims or one per dim. By default ``2 * ceil(3 sigma) + 1``
        (the kernel spans three standard deviations on each side; 1 for ``sigma = 0``).

    Returns
    -------
    Tensor
        ``(N, C, ...)``, the shape, dtype and device of ``x``.
    """
    _check_floating(x, "x")
    if x.ndim < 3:
        raise ValueError(f"x must be (N, C, L), (N, C, H, W) or with more spatial dims, got shape {tuple(x.shape)}")
    spatial = x.ndim - 2
    sigmas = _per_dim(sigma, spatial, "sigma")
    for s in sigmas:
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"sigma must be finite and non-negative, got {sigma!r}")
    if kernel_size is None:
        sizes = tuple(2 * math.ceil(3 * s) + 1 for s in sigmas)
    else:
        sizes = tuple(int(k) for k in _per_dim(kernel_size, spatial, "kernel_size"))
        if any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size!r}")
    work = x.detach()
    if x.numel() == 0 or all(k == 1 for k in sizes):
        return work.clone()
    if x.dtype not in (torch.float32, torch.float64):
        work = work.float()  # half-precision convolutions are not available on every device
    for axis, (s, k) in enumerate(zip(sigmas, sizes)):
        work = _blur_along(work, axis + 2, _gaussian_kernel(s, k, work))
    return work.to(x.dtype)


def _gaussian_kernel(sigma: float, size: int, like: Tensor) -> Tensor:
    """The normalised 1-D Gaussian of ``size`` taps (a unit impulse for ``sigma = 0``), as ``like``."""
    radius = (size - 1) // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    if sigma == 0:
        weights = (offsets == 0).to(torch.float64)
    else:
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).to(dtype=like.dtype, device=like.device)


def _reflect_index(size: int, radius: int, device: torch.device) -> Tensor:
    """Indices into ``0 .. size-1`` of the positions ``-radius .. size-1+radius`` reflected about the edges.

    Half-sample symmetric extension, periodic with period ``2 * size``: ``i -> i mod 2size``, then
    ``i -> 2size - 1 - i`` for ``i >= size``."""
    index = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(index < size, index, 2 * size - 1 - index)


def _blur_along(x: Tensor, dim: int, kernel: Tensor) -> Tensor:
    """``x`` correlated with the symmetric ``kernel`` along ``dim``, the borders reflected."""
    if kernel.numel() == 1:
        return x
    size, radius = x.shape[dim], (kernel.numel() - 1) // 2
    padded = x.index_select(dim, _reflect_index(size, radius, x.device)).movedim(dim, -1)
    rows = padded.reshape(-1, 1, padded.shape[-1])
    blurred = F.conv1d(rows, kernel.view(1, 1, -1)).reshape(*padded.shape[:-1], size)
    return blurred.movedim(-1, dim)


# --------------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------------


def noise(x: Tensor, n: int, std: float = 0.1, random_state: RandomState = None) -> Tensor:
    """``n`` noisy copies of each example: ``x0_{i,k} = x_i + std * eps_{i,k}``, ``eps ~ N(0, I)``.

    Averaging DeepLIFT over them (``DeepLiftShap``) explains the input against its neighbourhood,
    the "Gaussian baseline" of Sturmfels et al. (2020); SmoothGrad (Smilkov et al. 2017) perturbs
    inputs the same way.

    Parameters
    ----------
    x:
        Floating-point inputs ``(N, ...)``.
    n:
        Noisy copies per example (``>= 1``).
    std:
        The noise's standard deviation, in the units of ``x`` (non-negative).
    random_state:
        ``None``, an ``int`` seed, or a ``numpy.random.Generator``.

    Returns
    -------
    Tensor
        ``(N, n, ...)``, with the dtype and device of ``x``.
    """
    _check_floating(x, "x")
    _check_count(n)
    std = _finite_number(std, "std")
    if std < 0:
        raise ValueError(f"std must be non-negative, got {std!r}")
    return _plus_draws(x, n, random_state, lambda generator, shape: std * generator.standard_normal(shape))


def uniform_noise(x: Tensor, n: int, low: float, high: float, random_state: RandomState = None) -> Tensor:
    """``n`` copies of each example plus uniform noise: ``x0_{i,k} = x_i + u_{i,k}``, ``u ~ U[low, high)``.

    Each entry of ``u`` is drawn independently. For references drawn uniformly from a range of
    values regardless of the input (Sturmfels et al. 2020's "uniform baseline"), add the noise to
    zeros: ``uniform_noise(torch.zeros_like(x[:1]), n, low, high)[0]`` is a shared set ``(n, ...)``.

    Parameters
    ----------
    x, n, random_state:
        As :func:`noise`.
    low, high:
        The noise's range, finite with ``low <= high``.

    Returns
    -------
    Tensor
        As :func:`noise`: ``(N, n, ...)``.
    """
    _check_floating(x, "x")
    _check_count(n)
    low, high = _finite_number(low, "low"), _finite_number(high, "high")
    if low > high:
        raise ValueError(f"low must not exceed high, got low = {low!r} > high = {high!r}")
    return _plus_draws(x, n, random_state, lambda generator, shape: generator.uniform(low, high, shape))


def _plus_draws(
    x: Tensor,
    n: int,
    random_state: RandomState,
    draw: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray],
) -> Tensor:
    """``x[:, None] + draws`` in the dtype and on the device of ``x``, where ``draws`` is
    ``draw(generator, (N, n, ...))`` with the generator of ``random_state``."""
    draws = draw(numpy_generator(random_state), (x.shape[0], n, *x.shape[1:]))
    offsets = torch.from_numpy(draws).to(dtype=x.dtype, device=x.device)
    return x.detach().unsqueeze(1) + offsets


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _check_batch(x: Any, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dim (N, ...), got a 0-dim tensor")


def _check_floating(x: Any, name: str) -> None:
    _check_batch(x, name)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_count(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")


def _finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _per_dim(value: float | Sequence[float], dims: int, name: str) -> tuple[float, ...]:
    """One number per spatial dim, from one number or a sequence of ``dims`` of them."""
    if isinstance(value, Tensor | np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, Real) and not isinstance(value, bool):
        return (float(value),) * dims
    if isinstance(value, bool) or not isinstance(value, Sequence | Tensor | np.ndarray):
        raise TypeError(f"{name} must be a number or one number per spatial dim, got {type(value).__name__}")
    values = tuple(float(v) for v in value)
    if len(values) != dims:
        raise ValueError(f"{name} must be one number or {dims} (one per spatial dim), got {len(values)}: {value!r}")
    return values


def _normalise_dims(dim: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    dims = (dim,) if isinstance(dim, int | np.integer) else tuple(dim)
    if ndim < 1:
        raise ValueError("data must have a batch dim (N, ...), got a 0-dim tensor")
    if not dims or any(not -ndim <= d < ndim for d in dims):
        raise ValueError(f"dim must name dims of a {ndim}-dim tensor, got {dim!r}")
    normalised = tuple(sorted({int(d) % ndim for d in dims}))
    if len(normalised) != len(dims):
        raise ValueError(f"dim names a dim twice: {dim!r}")
    return normalised


def _batch_tensor(batch: Any, position: int) -> Tensor:
    """The examples of one batch of a stream: the batch itself, or its first element if a tuple or list."""
    if isinstance(batch, tuple | list):
        if not batch:
            raise ValueError(f"batch {position} is an empty {type(batch).__name__}")
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, Tensor):
        raise TypeError(
            f"batch {position} must be a tensor (or a tuple whose first element is), got {type(batch).__name__}"
        )
    if batch.ndim < 1:
        raise ValueError(f"batch {position} must have a batch dim (B, ...), got a 0-dim tensor")
    return batch
