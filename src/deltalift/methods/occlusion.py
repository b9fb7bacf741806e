"""Occlusion (Zeiler & Fergus, ECCV 2014, "Visualizing and Understanding Convolutional
Networks"), with Captum's interface and arithmetic.

A window of shape ``w`` slides over each input (without its batch dimension) in steps of
``strides``; window ``p`` covers the positions ``P_p``.  Replacing them by the baseline gives
the occluded input ``x^(p)``, and every position gets the average output change over the
windows that cover it::

    A_i(x) = 1/|{p : i in P_p}| * sum_{p : i in P_p} (t(x) - t(x^(p)))

Along a dimension of size ``d``, windows start at ``0, s, 2s, ...``: ``ceil((d - w) / s) + 1`` of
them, the last one cut off at the edge when ``s`` does not divide ``d - w`` (Captum's layout).
The windows of each input are occluded one input at a time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Union

import torch

from deltalift.inputs import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    as_tuple,
    check_baselines,
    check_inputs,
    check_model,
    select_target,
)
from deltalift.methods.base import Attribution, AttributionMethod, Model, format_output
from deltalift.methods.gradients import repeat_batch, repeat_target

Tensor = torch.Tensor
Shape = tuple[int, ...]
Window = tuple[int, tuple[slice, ...]]  # (input index, the window's slices without the batch dim)
StridesType = Union[None, int, Sequence[Union[int, Sequence[int]]]]


class Occlusion(AttributionMethod):
    """Output change when a sliding window of each input is replaced by the baseline.

    Parameters
    ----------
    model:
        An ``nn.Module`` or a forward function; it is called as it is, without gradients.
    """

    def __init__(self, model: Model) -> None:
        super().__init__(model)

    def attribute(
        self,
        inputs: TensorOrTuple,
        sliding_window_shapes: Shape | Sequence[Shape],
        strides: StridesType = None,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
    ) -> Attribution:
        """Occlusion attributions of ``target`` of ``model(*inputs, *additional_forward_args)``.

        Parameters
        ----------
        inputs:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`; integer
            inputs (token ids, counts) are accepted too, as nothing is differentiated.
        sliding_window_shapes:
            The window's shape without the batch dimension, e.g. ``(3, 8, 8)`` for images
            ``(batch, 3, H, W)``; a tuple of shapes for a tuple of inputs.
        strides:
            Steps of the window: ``None`` (1 everywhere), an int for every dimension, or a tuple
            per dimension; per input for a tuple of inputs.  A stride may not exceed the
            window (positions would be skipped), except along a dimension the window fills.
        baselines:
            What replaces an occluded window: ``None`` (zeros), a number, or a tensor per input
            broadcasting to it (one for the batch or one per example).
        target, additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`.
        perturbations_per_eval:
            How many occluded copies of the batch to evaluate in one forward pass.
        show_progress:
            A tqdm progress bar over the forward passes.

        Returns
        -------
        Attributions shaped like ``inputs`` (a tuple when a tuple was given).
        """
        tensors, given_tuple = check_inputs(inputs, allow_integer=True)  # no gradient: integers are fine
        check_model(self._module, tensors)
        references, _ = check_baselines(baselines, tensors)
        windows_of = _window_shapes(sliding_window_shapes, tensors)
        strides_of = _strides(strides, tensors, windows_of)
        if isinstance(perturbations_per_eval, bool) or not isinstance(perturbations_per_eval, int):
            raise TypeError(f"perturbations_per_eval must be an int, got {perturbations_per_eval!r}")
        if perturbations_per_eval < 1:
            raise ValueError(f"perturbations_per_eval must be >= 1, got {perturbations_per_eval}")
        extra = as_tuple(additional_forward_args)
        batch = tensors[0].shape[0]
        windows = [
            (i, slices)
            for i, x in enumerate(tensors)
            for slices in _positions(x.shape[1:], windows_of[i], strides_of[i])
        ]
        n_evals = math.ceil(len(windows) / perturbations_per_eval) + 1
        progress = _progress(n_evals) if show_progress else None
        with torch.no_grad():
            t = select_target(self.model(*tensors, *extra), target, batch)
            dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()  # an integer model too
            totals = [torch.zeros(x.shape, dtype=dtype, device=x.device) for x in tensors]
            counts = [torch.zeros(x.shape[1:], dtype=dtype, device=x.device) for x in tensors]
            if progress is not None:
                progress.update()
            for start in range(0, len(windows), perturbations_per_eval):
                group = windows[start : start + perturbations_per_eval]
                occluded = _occlude(tensors, references, group)
                k = len(group)
                out = self.model(*occluded, *repeat_batch(extra, batch, k))
                changes = (t.repeat(k) - select_target(out, repeat_target(target, batch, k), k * batch)).view(k, batch)
                for (i, slices), change in zip(group, changes):
                    region = (slice(None),) + slices
                    totals[i][region] += change.reshape((batch,) + (1,) * (tensors[i].ndim - 1))
                    counts[i][slices] += 1
                if progress is not None:
                    progress.update()
        if progress is not None:
            progress.close()
        return format_output(tuple(total / count for total, count in zip(totals, counts)), given_tuple)


def _occlude(tensors: tuple[Tensor, ...], references: tuple[Tensor, ...], group: list[Window]) -> tuple[Tensor, ...]:
    """The batch once per window of ``group`` (window-major), each copy with its window replaced
    by the baseline."""
    k = len(group)
    copies = [x.unsqueeze(0).repeat((k,) + (1,) * x.ndim) for x in tensors]
    for j, (i, slices) in enumerate(group):
        region = (slice(None),) + slices
        copies[i][j][region] = references[i][region].expand_as(copies[i][j][region])
    return tuple(c.reshape((-1,) + tuple(x.shape[1:])) for c, x in zip(copies, tensors))


def _positions(shape: Sequence[int], window: Shape, strides: Shape) -> Iterator[tuple[slice, ...]]:
    """The windows' slices, the first dimension varying fastest (Captum's order)."""
    counts = [math.ceil((d - w) / s) + 1 for d, w, s in zip(shape, window, strides)]
    for reversed_index in itertools.product(*(range(c) for c in reversed(counts))):
        index = reversed_index[::-1]
        yield tuple(slice(k * s, k * s + w) for k, s, w in zip(index, strides, window))


def _window_shapes(shapes: Any, tensors: tuple[Tensor, ...]) -> list[Shape]:
    if not isinstance(shapes, (tuple, list)) or not shapes:
        raise TypeError(f"sliding_window_shapes must be a tuple of ints (per input), got {shapes!r}")
    per_input = [shapes] if isinstance(shapes[0], int) else list(shapes)
    if len(per_input) != len(tensors):
        raise ValueError(f"got {len(per_input)} sliding window shapes for {len(tensors)} inputs")
    result = []
    for i, (window, x) in enumerate(zip(per_input, tensors)):
        window = tuple(window) if isinstance(window, (tuple, list)) else window
        if not isinstance(window, tuple) or len(window) != x.ndim - 1 or not all(_positive(w) for w in window):
            raise ValueError(
                f"sliding window for inputs[{i}] must be {x.ndim - 1} positive ints (the input's shape "
                f"{tuple(x.shape[1:])} without the batch dimension), got {window!r}"
            )
        if any(w > d for w, d in zip(window, x.shape[1:])):
            raise ValueError(f"sliding window {window} exceeds the shape {tuple(x.shape[1:])} of inputs[{i}]")
        result.append(window)
    return result


def _strides(strides: StridesType, tensors: tuple[Tensor, ...], windows: list[Shape]) -> list[Shape]:
    if strides is None:
        given: list[Any] = [1] * len(tensors)
    elif len(tensors) == 1 and not (isinstance(strides, (tuple, list)) and len(strides) == 1):
        given = [strides]
    elif isinstance(strides, (tuple, list)) and len(strides) == len(tensors):
        given = list(strides)
    else:
        raise ValueError(f"strides must be given for each of the {len(tensors)} inputs, got {strides!r}")
    result = []
    for i, (s, x, window) in enumerate(zip(given, tensors, windows)):
        per_dim = (s,) * (x.ndim - 1) if isinstance(s, int) else tuple(s)
        if len(per_dim) != x.ndim - 1 or not all(_positive(v) for v in per_dim):
            raise ValueError(f"stride for inputs[{i}] must be a positive int or {x.ndim - 1} of them, got {s!r}")
        for stride, w, d in zip(per_dim, window, x.shape[1:]):
            if stride > w and d != w:
                raise ValueError(
                    f"stride {per_dim} is larger than the sliding window {window} for inputs[{i}]; "
                    "positions between windows would never be occluded"
                )
        result.append(per_dim)
    return result


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _progress(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover - tqdm is an optional dependency
        raise ImportError("show_progress=True needs tqdm: pip install tqdm") from exc
    return tqdm(total=total, desc="Occlusion attribution", unit="forward")
