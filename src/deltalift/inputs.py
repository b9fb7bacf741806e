"""Checking and normalising what users pass: inputs, baselines, targets, additional arguments.

Each check raises an error that names the problem (shapes, dtypes, out-of-range targets, NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Number
from typing import Any, Union

import torch
from torch import nn

Tensor = torch.Tensor
TensorOrTuple = Union[Tensor, Sequence[Tensor]]
BaselineType = Union[None, float, int, Tensor, Sequence[Union[float, int, Tensor]]]
TargetType = Union[None, int, Sequence[int], Tensor]


def as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def check_inputs(inputs: TensorOrTuple) -> tuple[tuple[Tensor, ...], bool]:
    """The inputs as a tuple of floating tensors with one batch size, and whether a tuple was given."""
    given_tuple = isinstance(inputs, (tuple, list))
    tensors = as_tuple(inputs)
    if not tensors:
        raise ValueError("inputs is empty: pass a tensor or a tuple of tensors")
    for i, x in enumerate(tensors):
        name = f"inputs[{i}]" if given_tuple else "inputs"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"{name} has dtype {x.dtype}; DeepLIFT explains floating-point inputs. For token or "
                "index inputs, attribute at the embedding layer's output instead (explain the model "
                "from the embeddings on, e.g. pass the embedded tensor to a model that skips the lookup)."
            )
        if x.ndim == 0:
            raise ValueError(f"{name} is a scalar; inputs need a leading batch dimension")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf values")
        if x.shape[0] != tensors[0].shape[0]:
            raise ValueError(
                f"all inputs need the same batch size: inputs[0] has {tensors[0].shape[0]}, {name} has {x.shape[0]}"
            )
        if x.device != tensors[0].device:
            raise ValueError(
                f"all inputs must be on one device: inputs[0] on {tensors[0].device}, {name} on {x.device}"
            )
    return tensors, given_tuple


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
        if not torch.isfinite(ref).all():
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
    b = b.to(dtype=x.dtype, device=x.device)
    if b.ndim == x.ndim and b.shape[0] == x.shape[0] and x.shape[0] != 1:
        return b.expand_as(x)
    return b.reshape((1,) * (x.ndim - b.ndim) + tuple(b.shape)).expand((1,) + tuple(x.shape[1:]))


def check_model(model: nn.Module, inputs: tuple[Tensor, ...]) -> None:
    """The model's parameters and buffers must have the inputs' dtype and device.

    (Training mode is caught where it matters, in the captured graph: random ops and buffer
    updates are refused there.)"""
    dtype, device = inputs[0].dtype, inputs[0].device
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.is_floating_point() and p.dtype != dtype:
            raise TypeError(
                f"the model's {name} is {p.dtype} but the inputs are {dtype}; convert one to match "
                f"(e.g. model.to({dtype}) or inputs.to({p.dtype}))"
            )
        if p.device != device:
            raise ValueError(f"the model's {name} is on {p.device} but the inputs are on {device}")


def select_target(output: Tensor, target: TargetType, batch_size: int, what: str = "model output") -> Tensor:
    """The target column of a ``(batch, outputs)`` output, one value per example."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the {what} must be a tensor of shape (batch, outputs), got {type(output).__name__}")
    if output.ndim == 0 or output.shape[0] != batch_size or output.ndim > 2:
        raise ValueError(
            f"the {what} has shape {tuple(output.shape)}; deltalift explains outputs of shape "
            f"(batch, outputs) or (batch,) with batch = {batch_size}"
        )
    if output.ndim == 1:
        if target not in (None, 0) and not (isinstance(target, (list, tuple, Tensor)) and _all_zero(target)):
            raise ValueError(f"the {what} has one value per example (shape {tuple(output.shape)}); target must be None")
        return output
    n_outputs = output.shape[1]
    if target is None:
        if n_outputs != 1:
            raise ValueError(
                f"the {what} has {n_outputs} outputs per example; pass target= (an int or one per example)"
            )
        return output[:, 0]
    index = _target_index(target, batch_size, n_outputs, output.device)
    return output.gather(1, index[:, None])[:, 0]


def _all_zero(target: Any) -> bool:
    return bool((torch.as_tensor(target) == 0).all())


def _target_index(target: Any, batch_size: int, n_outputs: int, device: torch.device) -> Tensor:
    if isinstance(target, bool) or (isinstance(target, float)):
        raise TypeError(f"target must be an int or a sequence of ints, got {target!r}")
    if isinstance(target, int):
        index = torch.full((batch_size,), target, dtype=torch.long, device=device)
    else:
        index = torch.as_tensor(target, device=device)
        if index.is_floating_point() or index.dtype == torch.bool:
            raise TypeError(f"target must hold integers, got dtype {index.dtype}")
        if index.ndim == 0:
            index = index.expand(batch_size)
        if index.ndim != 1 or index.shape[0] != batch_size:
            raise ValueError(f"target has shape {tuple(index.shape)}; give one int, or one per example ({batch_size})")
        index = index.long()
    bad = (index < 0) | (index >= n_outputs)
    if bad.any():
        raise ValueError(f"target {index[bad][0].item()} is out of range for a model with {n_outputs} outputs")
    return index
