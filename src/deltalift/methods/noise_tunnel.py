"""NoiseTunnel: SmoothGrad, SmoothGrad-squared and VarGrad around any attribution method, with
Captum's interface.

For an attribution method ``A``, ``m`` noise samples ``x + eps_j`` with ``eps_j ~ N(0, sigma^2)``::

    smoothgrad     (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"):
                   1/m sum_j A(x + eps_j)
    smoothgrad_sq  (Hooker et al. 2019, "A Benchmark for Interpretability Methods"):
                   1/m sum_j A(x + eps_j)^2
    vargrad        (Adebayo et al. 2018, "Local Explanation Methods for Deep Neural Networks
                   Lack Sensitivity to Parameter Values"):
                   1/m sum_j A(x + eps_j)^2 - (1/m sum_j A(x + eps_j))^2

``sigma`` is either absolute (``stdevs``, Captum's) or, with ``noise_fraction``, a fraction of each
example's input range, ``sigma = noise_fraction * (max(x) - min(x))`` (SmoothGrad recommends
10-20%).  The noise comes from a ``torch.Generator`` seeded with ``random_state``, and sample ``j``
gets the same noise however the samples are batched.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Union

import torch

from deltalift.inputs import TensorOrTuple, as_tuple, check_inputs
from deltalift.methods.base import Attribution
from deltalift.methods.gradients import repeat_batch, repeat_target

Tensor = torch.Tensor
PerInput = Union[float, tuple[float, ...]]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


class NoiseTunnel:
    """Averages an attribution method over noisy copies of the inputs (Captum's ``NoiseTunnel``).

    Parameters
    ----------
    method:
        Any object with ``.attribute(inputs, **kwargs)`` returning attributions shaped like the
        inputs (or like a layer), e.g. :class:`~deltalift.methods.gradients.Saliency`,
        :class:`~deltalift.methods.integrated_gradients.IntegratedGradients` or
        :class:`~deltalift.DeepLift`.
    """

    def __init__(self, method: Any) -> None:
        if not callable(getattr(method, "attribute", None)):
            raise TypeError(f"NoiseTunnel needs an attribution method with .attribute, got {type(method).__name__}")
        self.method = method

    @property
    def attribution_method(self) -> Any:
        """The wrapped method (Captum's name)."""
        return self.method

    @property
    def multiplies_by_inputs(self) -> bool:
        return bool(getattr(self.method, "multiplies_by_inputs", False))

    def has_convergence_delta(self) -> bool:
        has_delta = getattr(self.method, "has_convergence_delta", None)
        return bool(has_delta()) if callable(has_delta) else False

    def attribute(
        self,
        inputs: TensorOrTuple,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        nt_samples_batch_size: int | None = None,
        stdevs: PerInput = 1.0,
        draw_baseline_from_distrib: bool = False,
        random_state: int | torch.Generator | None = None,
        noise_fraction: PerInput | None = None,
        **method_kwargs: Any,
    ) -> Any:
        """The method's attributions, smoothed over ``nt_samples`` noisy copies of ``inputs``.

        Parameters
        ----------
        inputs:
            The inputs of the method's ``attribute``, which the noise is added to.
        nt_type:
            ``"smoothgrad"`` (mean, default), ``"smoothgrad_sq"`` (mean of squares) or
            ``"vargrad"`` (variance).
        nt_samples:
            Noise samples per example (default 5).
        nt_samples_batch_size:
            Samples per call of the method (``None``: all at once); the result does not depend
            on it for a given ``random_state``.
        stdevs:
            Standard deviation of the Gaussian noise, one for all inputs or one per input.
        draw_baseline_from_distrib:
            Give each noisy copy a baseline drawn at random from the rows of ``baselines``
            (a distribution of references) instead of its example's baseline.
        random_state:
            Seed (or a ``torch.Generator``) for the noise and the baseline draws; ``None`` draws
            from torch's global generator (``torch.manual_seed`` then makes it reproducible).
        noise_fraction:
            If given, replaces ``stdevs``: the noise's standard deviation is this fraction of each
            example's input range ``max - min`` (per input tensor; e.g. 0.15).
        **method_kwargs:
            Passed on to the method's ``attribute`` (``target``, ``baselines``,
            ``additional_forward_args``, ``n_steps``, ...); per-example targets, baselines and
            additional arguments are repeated for the noisy copies.

        Returns
        -------
        The smoothed attributions (a tuple where the method returns one); with
        ``return_convergence_delta=True`` also the method's deltas, one per noisy copy.
        """
        tensors, given_tuple = check_inputs(inputs)
        if nt_type not in NT_TYPES:
            raise ValueError(f"nt_type must be one of {NT_TYPES}, got {nt_type!r}")
        _check_count("nt_samples", nt_samples)
        per_call = nt_samples if nt_samples_batch_size is None else min(nt_samples, nt_samples_batch_size)
        _check_count("nt_samples_batch_size", per_call)
        if noise_fraction is not None:
            fractions = _per_input("noise_fraction", noise_fraction, len(tensors))
            sigmas = tuple(f * _example_range(x) for f, x in zip(fractions, tensors))
        else:
            sigmas = tuple(torch.tensor(s, dtype=torch.float64) for s in _per_input("stdevs", stdevs, len(tensors)))
        generator = _generator(random_state, tensors[0].device)
        delta_wanted = bool(method_kwargs.get("return_convergence_delta", False))

        sums: list[Tensor] = []
        squares: list[Tensor] = []
        deltas: list[Tensor] = []
        is_tuple = given_tuple
        for start in range(0, nt_samples, per_call):
            count = min(per_call, nt_samples - start)
            noisy, picks = _draw(tensors, sigmas, count, generator, method_kwargs, draw_baseline_from_distrib)
            kwargs = _expand_kwargs(method_kwargs, tensors, count, picks)
            result = self.method.attribute(noisy if given_tuple else noisy[0], **kwargs)
            if delta_wanted and self.has_convergence_delta():
                result, delta = result
                deltas.append(delta)
            is_tuple = isinstance(result, tuple)
            _accumulate(sums, squares, as_tuple(result), tensors[0].shape[0], count)
        smoothed = _smooth(sums, squares, nt_samples, nt_type)
        out: Attribution = smoothed if is_tuple else smoothed[0]
        if delta_wanted and self.has_convergence_delta():
            return out, torch.cat(deltas)
        return out


def _accumulate(
    sums: list[Tensor], squares: list[Tensor], attributions: tuple[Tensor, ...], batch: int, count: int
) -> None:
    """Add ``sum_j A_j`` and ``sum_j A_j^2`` over the ``count`` copies of each example."""
    for i, a in enumerate(attributions):
        a = a.detach().reshape((batch, count) + tuple(a.shape[1:]))
        part, part_sq = a.sum(1), (a * a).sum(1)
        if i == len(sums):
            sums.append(part)
            squares.append(part_sq)
        else:
            sums[i] = sums[i] + part
            squares[i] = squares[i] + part_sq


def _smooth(sums: list[Tensor], squares: list[Tensor], n: int, nt_type: str) -> tuple[Tensor, ...]:
    means = tuple(s / n for s in sums)
    mean_squares = tuple(s / n for s in squares)
    if nt_type == "smoothgrad":
        return means
    if nt_type == "smoothgrad_sq":
        return mean_squares
    return tuple(sq - m * m for sq, m in zip(mean_squares, means))


def _draw(
    tensors: tuple[Tensor, ...],
    sigmas: tuple[Tensor, ...],
    count: int,
    generator: torch.Generator | None,
    kwargs: dict[str, Any],
    draw_baselines: bool,
) -> tuple[tuple[Tensor, ...], list[Tensor | None]]:
    """``count`` noisy copies of each example, example-major (row ``n * count + j``), and for
    each input the rows of its baseline distribution drawn for them (``None`` where not drawn).

    Sample ``j`` draws its noise (and baseline rows) in a fixed order, so the stream of random
    numbers is the same however the samples are batched."""
    distributions = _baseline_distributions(kwargs, len(tensors)) if draw_baselines else [None] * len(tensors)
    noise: list[list[Tensor]] = [[] for _ in tensors]
    rows: list[list[Tensor]] = [[] for _ in tensors]
    batch = tensors[0].shape[0]
    for _ in range(count):
        for i, x in enumerate(tensors):
            noise[i].append(torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))
        for i, reference in enumerate(distributions):
            if reference is not None:
                device = tensors[i].device
                rows[i].append(torch.randint(reference.shape[0], (batch,), generator=generator, device=device))
    noisy = tuple(
        (x.unsqueeze(1) + _as_column(s, x) * torch.stack(e, 1)).reshape((-1,) + tuple(x.shape[1:]))
        for x, s, e in zip(tensors, sigmas, noise)
    )
    picks = [torch.stack(r, 1).reshape(-1) if r else None for r in rows]
    return noisy, picks


def _as_column(sigma: Tensor, x: Tensor) -> Tensor:
    """A scalar or per-example standard deviation, shaped to broadcast over ``(batch, count, ...)``."""
    sigma = sigma.to(dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape((-1,) + (1,) * x.ndim)


def _expand_kwargs(
    kwargs: dict[str, Any], tensors: tuple[Tensor, ...], count: int, picks: list[Tensor | None]
) -> dict[str, Any]:
    """The method's arguments for ``count`` copies of each example (repeated element-wise)."""
    batch = tensors[0].shape[0]
    expanded = dict(kwargs)
    if "target" in kwargs:
        expanded["target"] = repeat_target(kwargs["target"], batch, count, interleave=True)
    if kwargs.get("additional_forward_args") is not None:
        extra = repeat_batch(as_tuple(kwargs["additional_forward_args"]), batch, count, interleave=True)
        expanded["additional_forward_args"] = extra
    given = as_tuple(kwargs.get("baselines"))
    if len(given) == len(tensors):  # otherwise the method reports the mismatch
        baselines = tuple(_expand_baseline(b, x, count, pick) for b, x, pick in zip(given, tensors, picks))
        expanded["baselines"] = baselines if isinstance(kwargs["baselines"], (tuple, list)) else baselines[0]
    return expanded


def _expand_baseline(baseline: Any, x: Tensor, count: int, pick: Tensor | None) -> Any:
    if not isinstance(baseline, Tensor):
        return baseline
    if pick is not None:
        return baseline[pick.to(baseline.device)]
    if baseline.ndim == x.ndim and baseline.shape[0] == x.shape[0] and x.shape[0] > 1:
        return baseline.repeat_interleave(count, dim=0)
    return baseline


def _baseline_distributions(kwargs: dict[str, Any], n_inputs: int) -> list[Tensor | None]:
    """Per input, the tensor of references to draw rows from (``None`` for a scalar baseline)."""
    given = as_tuple(kwargs.get("baselines"))
    if not given:
        raise ValueError("draw_baseline_from_distrib=True needs baselines= (a tensor of references per input)")
    if len(given) != n_inputs:
        raise ValueError(f"got {len(given)} baselines for {n_inputs} inputs")
    return [b if isinstance(b, Tensor) and b.ndim > 0 else None for b in given]


def _example_range(x: Tensor) -> Tensor:
    """``max - min`` over each example's features, shape ``(batch,)``."""
    flat = x.detach().reshape(x.shape[0], -1)  # (batch,) inputs too
    return flat.amax(1) - flat.amin(1)


def _per_input(name: str, value: Any, n_inputs: int) -> tuple[float, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n_inputs
    if len(values) != n_inputs:
        raise ValueError(f"{name} has {len(values)} values for {n_inputs} inputs")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real) or v < 0:
            raise ValueError(f"{name} must be a non-negative number (or one per input), got {value!r}")
    return tuple(float(v) for v in values)


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _generator(random_state: int | torch.Generator | None, device: torch.device) -> torch.Generator | None:
    if random_state is None or isinstance(random_state, torch.Generator):
        return random_state
    if isinstance(random_state, bool) or not isinstance(random_state, int):
        raise TypeError(f"random_state must be an int, a torch.Generator or None, got {random_state!r}")
    generator = torch.Generator(device=device)
    generator.manual_seed(random_state)
    return generator
