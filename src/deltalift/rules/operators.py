"""Multiplier computations that take a decision from the data, registered as PyTorch operators
(``torch.ops.deltalift``).

A rule that branches in Python on its data (``if not finite: repair``) becomes a guard of a
recorded program (:mod:`deltalift.fast_path`): a later call whose data would take the other
branch is recomputed by the interpreter and recorded again, and where the branch changes from
batch to batch the program is given up and every call is interpreted.  Computed inside one
operator, the decision belongs to that operator: the recorder sees one call, records it as it
records an ATen op, and each replay takes the branch its own data asks for, with the values of
the Python branch.  The operators write into their first argument and return nothing (so the
arithmetic before them stays ATen ops, which a replay may write into buffers that die there);
they have no autograd formula (the rules compute multipliers under ``no_grad``) and have a fake
implementation, so ``torch.compile`` can trace around them.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

_library = torch.library.Library("deltalift", "DEF")
_library.define("relu_multiplier_repair_(Tensor(a!) m, Tensor x0) -> ()")


def _relu_multiplier_repair_(m: Tensor, x0: Tensor) -> None:
    # On the CPU one reduction tells whether any 0 / 0 needs repairing (the common case: none);
    # on an accelerator reading it back would wait for the device, so the repair always runs.
    if m.numel() and (m.device.type != "cpu" or not bool(torch.isfinite(m.sum()))):
        repair_zero_by_zero(m, x0)


def _writes_only(m: Tensor, x0: Tensor) -> None:
    return None


_library.impl("relu_multiplier_repair_", _relu_multiplier_repair_, "CompositeExplicitAutograd")
torch.library.register_fake("deltalift::relu_multiplier_repair_", _writes_only, lib=_library)


def repair_zero_by_zero(m: Tensor, x0: Tensor) -> Tensor:
    """``m`` with its NaN (``0 / 0`` where ``x == x0``) replaced by ``relu'(x0) = 1{x0 > 0}``,
    in place, without reading which positions they are back from the device."""
    slope = (x0 > 0).to(m.dtype)
    at_nan_one = torch.nan_to_num(m, nan=1.0)
    return m.nan_to_num_(nan=0.0).add_(at_nan_one.sub_(m).mul_(slope))


def relu_multiplier(x: Tensor, x0: Tensor, y: Tensor, y0: Tensor) -> Tensor:
    """Rescale's multiplier of ``y = relu(x)`` (Shrikumar et al. 2017, section 3.5.2)::

        m = (y - y0) / (x - x0),   and relu'(x0) = 1{x0 > 0} where x == x0

    (only ``0 / 0`` needs the derivative; the ReLU rule of :mod:`deltalift.rules.rescale` says
    why).  The secant is computed with ATen ops; the repair is the operator
    ``torch.ops.deltalift.relu_multiplier_repair_``: on the CPU the NaN of ``0 / 0`` shows in
    the multipliers' sum, and only then are those positions repaired; on other devices they
    always are.  ``y = relu(x)`` and ``y0 = relu(x0)`` are given (``y`` may be a broadcast view);
    the result is a new tensor laid out as ``y - y0``.
    """
    m = torch.sub(y, y0).div_(torch.sub(x, x0))
    torch.ops.deltalift.relu_multiplier_repair_(m, x0)
    return m
