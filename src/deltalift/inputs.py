"""Checking and normalising what users pass: inputs, baselines, targets, additional arguments.

Each check raises an error that names the problem (shapes, dtypes, out-of-range targets, NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Number
from typing import Any, Union

import torch
from torch import nn

Tensor = torch.Tensor
TensorOrTuple = Union[Tensor, Sequence[Tensor]]
BaselineType = Union[None, float, int, Tensor, Sequence[Union[float, int, Tensor]]]
TargetType = Union[None, int, tuple[int, ...], Sequence[int], Sequence[tuple[int, ...]], Tensor]


def as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def row_major(x: Tensor) -> Tensor:
    """``x`` with row-major strides (a copy only when its strides are others).

    The captured graph is reused for every input of the same shapes and dtypes, but the memory
    layout of an input decides that of the convolutions' outputs: a channels-last input, or a
    tensor with a size-1 dimension that is "contiguous" with other strides (``(64, 1, 8, 1)`` for
    ``(N, 1, 8, 8)``, as NumPy's ``[:, None]`` gives), makes them channels-last, and a captured
    ``view`` of them fails.  Inputs and references are therefore given row-major strides."""
    expected, step = [], 1
    for size in reversed(x.shape):
        expected.append(step)
        step *= size
    if tuple(reversed(expected)) == x.stride():
        return x
    return torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x)


def check_inputs(inputs: TensorOrTuple, allow_integer: bool = False) -> tuple[tuple[Tensor, ...], bool]:
    """The inputs as a tuple of tensors with one batch size and device, and whether a tuple was given.

    The inputs must be floating point, unless ``allow_integer`` (methods that attribute to a
    layer's floating-point activation, such as an embedding's output, and methods that never
    differentiate, such as occlusion, accept token ids and other integer inputs).  They are
    returned with row-major strides (:func:`row_major`)."""
    given_tuple = isinstance(inputs, (tuple, list))
    tensors = as_tuple(inputs)
    if not tensors:
        raise ValueError("inputs is empty: pass a tensor or a tuple of tensors")
    for i, x in enumerate(tensors):
        name = f"inputs[{i}]" if given_tuple else "inputs"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point() and not allow_integer:
            raise TypeError(
                f"{name} has dtype {x.dtype}; attributions to the inputs need floating-point inputs (they are "
                "differentiated or scaled). For token or index inputs, attribute at the embedding layer's output "
                "instead: LayerDeepLift(model, model.embedding).attribute(ids, baselines=reference_ids) (or pass "
                "the embedded tensor to a model that skips the lookup)."
            )
        if x.ndim == 0:
            raise ValueError(f"{name} is a scalar; inputs need a leading batch dimension")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf values")
        if x.shape[0] != tensors[0].shape[0]:
            raise ValueError(
                f"all inputs need the same batch size: inputs[0] has {tensors[0].shape[0]}, {name} has {x.shape[0]}"
            )
        if x.device != tensors[0].device:
            raise ValueError(
                f"all inputs must be on one device: inputs[0] on {tensors[0].device}, {name} on {x.device}"
            )
    return tuple(row_major(x) for x in tensors), given_tuple


def check_baselines(baselines: BaselineType, inputs: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], bool]:
    """One reference per input, of batch size one (shared) or the input's batch size.

    Returns the references and whether they are all shared by the batch.  A scalar becomes a
    constant reference; a tensor must broadcast to its input's shape.
    """
    if baselines is None:
        given: tuple[Any, ...] = (0.0,) * len(inputs)
    else:
        given = as_tuple(baselines)
    if len(given) != len(inputs):
        raise ValueError(f"got {len(given)} baselines for {len(inputs)} inputs")
    references = []
    shared = True
    for i, (b, x) in enumerate(zip(given, inputs)):
        if isinstance(b, Number):
            ref = torch.full((1,) + tuple(x.shape[1:]), float(b), dtype=x.dtype, device=x.device)  # type: ignore[arg-type]
        elif isinstance(b, torch.Tensor):
            ref = _broadcast_baseline(b, x, i)
        else:
            raise TypeError(f"baselines[{i}] must be a number or a tensor, got {type(b).__name__}")
        if ref.is_floating_point() and not torch.isfinite(ref).all():
            raise ValueError(f"baselines[{i}] contains NaN or inf values")
        shared = shared and ref.shape[0] == 1
        references.append(ref)
    if not shared:
        references = [r.expand_as(x).contiguous() for r, x in zip(references, inputs)]
    return tuple(references), shared


def _broadcast_baseline(b: Tensor, x: Tensor, i: int) -> Tensor:
    if not b.is_floating_point():
        b = b.to(x.dtype)
    try:
        full = torch.broadcast_shapes(b.shape, x.shape)
    except RuntimeError:
        full = None
    if full != x.shape:
        raise ValueError(
            f"baselines[{i}] of shape {tuple(b.shape)} does not broadcast to inputs[{i}] of shape {tuple(x.shape)}; "
            f"give one reference of shape {tuple(x.shape[1:])} or (1, ...), or one per example of shape {tuple(x.shape)}"
        )
    b = row_major(b.to(dtype=x.dtype, device=x.device))
    if b.ndim == x.ndim and b.shape[0] == x.shape[0] and x.shape[0] != 1:
        return b.expand_as(x)
    return b.reshape((1,) * (x.ndim - b.ndim) + tuple(b.shape)).expand((1,) + tuple(x.shape[1:]))


def check_model(model: nn.Module, inputs: tuple[Tensor, ...]) -> None:
    """The model's floating parameters and buffers must have the floating inputs' dtype (when
    there are floating inputs), and everything must be on the inputs' device.

    (Training mode is caught where it matters, in the captured graph: random ops and buffer
    updates are refused there.)"""
    floating = [x for x in inputs if x.is_floating_point()]
    dtype, device = (floating[0].dtype if floating else None), inputs[0].device
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if dtype is not None and p.is_floating_point() and p.dtype != dtype:
            raise TypeError(
                f"the model's {name} is {p.dtype} but the inputs are {dtype}; convert one to match "
                f"(e.g. model.to({dtype}) or inputs.to({p.dtype}))"
            )
        if p.device != device:
            raise ValueError(f"the model's {name} is on {p.device} but the inputs are on {device}")


def select_target(output: Tensor, target: Any, batch_size: int, what: str = "model output") -> Tensor:
    """The value that ``target`` picks from each example's output, shape ``(batch,)``.

    Captum's rules (``captum._utils.common._select_targets``), for an output ``(batch, ...)``:

    * ``None``: the output itself, which must hold one value per example (``(batch,)``,
      ``(batch, 1)``, ``(batch, 1, 1, 1)``, ...);
    * an int ``t`` (or a one-element tensor): ``output[:, t]``;
    * a tuple of ints ``(i, j, ..)``: ``output[:, i, j, ..]``, indexing the dimensions after the batch;
    * a list of ints or a 1-D tensor, one per example: ``output[n, t_n]``;
    * a list of tuples, one per example: ``output[n, i_n, j_n, ..]``.

    What is left must be one value per example (dimensions of size one are dropped).  Unlike
    Captum, negative indices are refused rather than counted from the end, and a per-example
    target may index an output of more than two dimensions (as a list of 1-tuples can in Captum).
    A ``(batch,)`` output also accepts the target 0.
    """
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the {what} must be a tensor of shape (batch, outputs), got {type(output).__name__}")
    if output.ndim == 0 or output.shape[0] != batch_size:
        raise ValueError(
            f"the {what} has shape {tuple(output.shape)}; deltalift explains outputs with the batch first, "
            f"(batch, outputs) or (batch, ...) with batch = {batch_size}"
        )
    selected = _select(output, target, batch_size, what)
    if math.prod(selected.shape[1:]) != 1:
        if target is None and output.ndim == 2:
            raise ValueError(
                f"the {what} has {output.shape[1]} outputs per example; pass target= (an int or one per example)"
            )
        raise ValueError(
            f"the {what} has shape {tuple(output.shape)} and target={_describe(target)} leaves "
            f"{math.prod(selected.shape[1:])} values per example (shape {tuple(selected.shape)}); deltalift explains "
            "one value per example: pass target= an int for outputs (batch, outputs), or a tuple indexing every "
            "dimension after the batch for outputs (batch, ...)"
        )
    return selected.reshape(batch_size)


def _describe(target: Any) -> str:
    if isinstance(target, Tensor):
        return f"a tensor of shape {tuple(target.shape)}"
    if isinstance(target, list) and len(target) > 4:
        return f"a list of {len(target)}"
    return repr(target)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _select(output: Tensor, target: Any, batch_size: int, what: str) -> Tensor:
    if target is None:
        return output
    if isinstance(target, bool) or isinstance(target, float):
        raise TypeError(f"target must be an int, a tuple of ints or one per example, got {target!r}")
    if _is_int(target):
        return _index_all(output, (int(target),), what)
    if isinstance(target, tuple):
        if not all(_is_int(k) for k in target):
            raise TypeError(f"target {target!r} must hold ints (a tuple indexes the dimensions after the batch)")
        return _index_all(output, tuple(int(k) for k in target), what)
    if isinstance(target, list) and target and all(isinstance(t, tuple) for t in target):
        if len(target) != batch_size:
            raise ValueError(f"target has {len(target)} tuples; give one per example ({batch_size})")
        lengths = {len(t) for t in target}
        if len(lengths) != 1 or not all(_is_int(k) for t in target for k in t):
            raise TypeError("a list of tuple targets must hold tuples of ints of one length")
        columns = [torch.tensor([t[d] for t in target], dtype=torch.long) for d in range(lengths.pop())]
        return _index_each(output, columns, what)
    if isinstance(target, list) and any(isinstance(t, tuple) for t in target):
        raise TypeError("target mixes tuples with other values; give one int or one tuple per example")
    try:
        index = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"target must be an int, a tuple of ints or one per example, got {_describe(target)}") from exc
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"target must hold integers, got dtype {index.dtype}")
    if index.numel() == 1 and not (isinstance(target, list) and batch_size != 1):
        return _index_all(output, (int(index.reshape(())),), what)
    if index.ndim != 1 or index.shape[0] != batch_size:
        raise ValueError(f"target has shape {tuple(index.shape)}; give one int, or one per example ({batch_size})")
    return _index_each(output, [index.long()], what)


def _index_all(output: Tensor, index: tuple[int, ...], what: str) -> Tensor:
    """``output[:, *index]``."""
    if output.ndim == 1:
        if any(index):
            raise ValueError(f"the {what} has one value per example (shape {tuple(output.shape)}); target must be None")
        return output
    _check_dims(output, len(index), index, what)
    for d, k in enumerate(index):
        _check_range(output, d, torch.tensor([k]), what)
    return output[(slice(None),) + index]


def _index_each(output: Tensor, columns: list[Tensor], what: str) -> Tensor:
    """``output[n, columns[0][n], columns[1][n], ..]`` for each example ``n``."""
    if output.ndim == 1:
        if any(bool((c != 0).any()) for c in columns):
            raise ValueError(f"the {what} has one value per example (shape {tuple(output.shape)}); target must be None")
        return output
    _check_dims(output, len(columns), "one per example", what)
    for d, column in enumerate(columns):
        _check_range(output, d, column, what)
    rows = torch.arange(output.shape[0], device=output.device)
    return output[(rows,) + tuple(c.to(output.device) for c in columns)]


def _check_dims(output: Tensor, n: int, target: Any, what: str) -> None:
    if n > output.ndim - 1:
        raise ValueError(
            f"target {target!r} has {n} indices but the {what} has shape {tuple(output.shape)} "
            f"({output.ndim - 1} dimensions after the batch)"
        )


def _check_range(output: Tensor, dim: int, index: Tensor, what: str) -> None:
    size = output.shape[dim + 1]
    bad = (index < 0) | (index >= size)
    if bad.any():
        k = index[bad][0].item()
        if output.ndim == 2:
            raise ValueError(f"target {k} is out of range for a model with {size} outputs")
        raise ValueError(
            f"target {k} is out of range for dimension {dim + 1} (of size {size}) of the {what} of shape "
            f"{tuple(output.shape)}"
        )


#: The keyword arguments of ``torch.autograd.grad`` that apply to deltalift's gradient calls.
GRAD_KWARGS = ("allow_unused", "materialize_grads", "retain_graph")


def check_grad_kwargs(grad_kwargs: Any) -> dict[str, Any]:
    """Captum's ``grad_kwargs`` (keyword arguments of ``torch.autograd.grad``) as the keyword
    arguments of deltalift's own gradient call.

    ``allow_unused``, ``materialize_grads`` and ``retain_graph`` keep their meaning (by default
    deltalift allows unused inputs and returns zeros for them, as ``materialize_grads=True``
    does; ``materialize_grads=True`` also gives zeros for a layer the model does not use, where
    Captum needs it).  ``create_graph`` and ``is_grads_batched`` may only be false, and
    ``grad_outputs`` is not accepted: deltalift differentiates the target once, with respect to
    each example, and returns detached attributions.
    """
    options: dict[str, Any] = {"allow_unused": True}
    if grad_kwargs is None:
        return options
    if not isinstance(grad_kwargs, Mapping):
        raise TypeError(
            f"grad_kwargs must be a dict of torch.autograd.grad's options, got {type(grad_kwargs).__name__}"
        )
    for key, value in grad_kwargs.items():
        if key in GRAD_KWARGS:
            options[key] = value
        elif key in ("create_graph", "is_grads_batched") and not value:
            continue
        else:
            raise ValueError(
                f"grad_kwargs[{key!r}] = {value!r} does not apply here: deltalift differentiates the target once "
                f"and returns detached attributions; it accepts {', '.join(GRAD_KWARGS)} (and create_graph or "
                "is_grads_batched set to False)"
            )
    return options
