"""Choosing one neuron of a layer's activation, as Captum's ``neuron_selector`` does.

A selector is

* an ``int``: the neuron ``activation[:, i]`` of a flat layer ``(batch, n)``;
* a tuple of ``int`` and ``slice``: ``activation[(slice(None), *selector)]``; where it holds a
  slice, the selected neurons are summed per example (Captum's ``_verify_select_neuron``), so
  ``(slice(None), 2, 3)`` is the sum over channels at one spatial position;
* a callable: ``selector(activation)``, one value per example.

Integers may leave dimensions out where what is left holds one value per example (an int on a
``(batch, n, 1)`` activation), as Captum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import torch

Tensor = torch.Tensor
NeuronSelector = Union[int, tuple[Union[int, slice], ...], Callable[[Tensor], Tensor]]


def select_neuron(activation: Any, selector: NeuronSelector) -> Tensor:
    """The neuron's value per example, ``(batch,)``, as Captum's ``_verify_select_neuron``.

    An int or a tuple indexes the dimensions after the batch from the first on
    (``activation[:, i, j, ..]``); it may leave dimensions out when what is left holds one value
    per example (an int on a ``(batch, n, 1)`` activation).  Where the tuple holds a slice, the
    selected values are summed per example.  A callable maps the activation to one value per
    example.
    """
    if not isinstance(activation, Tensor):
        raise ValueError("the chosen layer's activation is not one tensor")
    batch = activation.shape[0]
    if callable(selector):
        value = selector(activation)
        if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != batch or value.numel() != batch:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"a callable neuron_selector must return one value per example ({batch}), got {shape}")
        return value.reshape(batch)
    if isinstance(selector, bool) or not isinstance(selector, (int, tuple)):
        raise TypeError(f"neuron_selector must be an int, a tuple of ints and slices, or a callable, got {selector!r}")
    index = (selector,) if isinstance(selector, int) else tuple(selector)
    for k in index:
        if isinstance(k, bool) or not isinstance(k, (int, slice)):
            raise TypeError(f"neuron_selector {selector!r} holds {k!r}; use ints and slices")
    if len(index) > activation.ndim - 1:
        raise ValueError(
            f"neuron_selector {selector!r} has {len(index)} indices but the layer's activation has shape "
            f"{tuple(activation.shape)} ({activation.ndim - 1} without the batch dimension)"
        )
    for i, (k, size) in enumerate(zip(index, activation.shape[1:])):
        if isinstance(k, int) and not -size <= k < size:
            raise ValueError(f"neuron_selector index {k} is out of range for dimension {i + 1} of size {size}")
    selected = activation[(slice(None),) + index]
    if any(isinstance(k, slice) for k in index):
        return selected.reshape(batch, -1).sum(1)
    if selected[0].numel() != 1:
        raise ValueError(
            f"neuron_selector {selector!r} selects {selected[0].numel()} values per example of the layer's "
            f"activation of shape {tuple(activation.shape)}; index every dimension after the batch "
            f"({activation.ndim - 1}), or use a slice to sum the selected values"
        )
    return selected.reshape(batch)
