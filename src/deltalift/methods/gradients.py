"""Gradient (saliency) and gradient x input, with Captum's interface, and the helpers that the
other gradient-based methods share: input gradients, and repeating a batch's targets and
additional arguments when the batch is evaluated several times over (path steps, noise
samples, occlusions).

* Saliency (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks"):
  ``S_i(x) = |dt/dx_i|`` (or the signed gradient with ``abs=False``).
* Gradient x input (Shrikumar et al. 2016, "Not Just a Black Box"; DeepLIFT paper, Sec. 2.2):
  ``C_i(x) = x_i * dt/dx_i``.

The gradient is plain autograd on the model as it is, so functional ops and reused modules need
nothing special.
"""

from __future__ import annotations

from typing import Any

import torch

from deltalift.inputs import TargetType, TensorOrTuple, as_tuple, select_target
from deltalift.methods.base import Attribution, AttributionMethod, Model, format_output

Tensor = torch.Tensor


def input_gradients(
    model: Model, inputs: tuple[Tensor, ...], target: TargetType, additional_forward_args: tuple[Any, ...] = ()
) -> tuple[tuple[Tensor, ...], Tensor]:
    """``dt/dx`` for each input (detached), and ``t(x)`` per example.

    ``t`` is the ``target`` column of ``model(*inputs, *additional_forward_args)``; the gradient
    of ``sum_n t_n`` is taken, which is each example's own gradient as examples do not interact.
    An input that the target does not depend on gets a zero gradient.
    """
    leaves = tuple(x.detach().requires_grad_(True) for x in inputs)
    with torch.enable_grad():
        output = model(*leaves, *additional_forward_args)
        t = select_target(output, target, inputs[0].shape[0])
        grads = torch.autograd.grad(t.sum(), leaves, allow_unused=True)
    gradients = tuple(torch.zeros_like(x) if g is None else g.detach() for g, x in zip(grads, leaves))
    return gradients, t.detach()


def repeat_target(target: TargetType, batch: int, times: int, interleave: bool = False) -> TargetType:
    """The target for a batch of ``batch`` examples evaluated ``times`` times over.

    A per-example target (a list of ints or of tuples, or a 1-D tensor, of length ``batch``) is
    tiled (``[t_0 .. t_{N-1}, t_0 ..]``, the layout of :func:`repeat_batch`) or, with
    ``interleave``, repeated element-wise (``[t_0, t_0, .., t_1, ..]``).  One target for all (an
    int, a tuple indexing the output's dimensions, a one-element tensor) is kept as it is.
    """
    if isinstance(target, list) and target and all(isinstance(t, tuple) for t in target):
        if len(target) != batch:
            return target
        return [t for t in target for _ in range(times)] if interleave else list(target) * times
    if isinstance(target, list) or (isinstance(target, Tensor) and target.ndim > 0):
        index = torch.as_tensor(target)
        if index.numel() == 1:
            return index.reshape(())
        if index.ndim == 1 and index.shape[0] == batch:
            return index.repeat_interleave(times) if interleave else index.repeat(times)
    return target


def repeat_batch(values: tuple[Any, ...], batch: int, times: int, interleave: bool = False) -> tuple[Any, ...]:
    """Additional forward arguments for the batch evaluated ``times`` times over.

    Tensors whose first dimension is the batch are tiled along it (or repeated element-wise
    with ``interleave``); anything else is passed on unchanged.
    """
    return tuple(_repeat_rows(v, times, interleave) if _is_batched(v, batch) else v for v in values)


def _is_batched(value: Any, batch: int) -> bool:
    return isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch


def _repeat_rows(value: Tensor, times: int, interleave: bool) -> Tensor:
    if interleave:
        return value.repeat_interleave(times, dim=0)
    return value.repeat((times,) + (1,) * (value.ndim - 1))


class Saliency(AttributionMethod):
    """The gradient of the target with respect to the inputs (Simonyan et al. 2014).

    ``S_i(x) = |dt/dx_i|`` with ``abs=True`` (Captum's default), else ``dt/dx_i``.

    Parameters
    ----------
    model:
        An ``nn.Module`` or a forward function; it is called as it is.
    """

    multiplies_by_inputs_default = False

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        abs: bool = True,
        additional_forward_args: Any = None,
    ) -> Attribution:
        """The (absolute) gradient of ``target`` of ``model(*inputs, *additional_forward_args)``.

        Parameters
        ----------
        inputs, additional_forward_args:
            As :meth:`DeepLift.attribute <deltalift.methods.deeplift.DeepLift.attribute>` (a tensor
            ``(batch, ...)`` or a tuple of them; further arguments of the model, not explained).
        target:
            An int, one int per example (list or tensor), or ``None`` for a model with a single
            output per example (unlike DeepLift's, not a callable).
        abs:
            Return ``|dt/dx|`` (default) rather than the signed gradient.

        Returns
        -------
        Tensors shaped like ``inputs`` (a tuple when a tuple was given).
        """
        tensors, given_tuple = self._format_inputs(inputs)
        gradients, _ = input_gradients(self.model, tensors, target, as_tuple(additional_forward_args))
        result = tuple(g.abs() for g in gradients) if abs else gradients
        return format_output(result, given_tuple)


class InputXGradient(AttributionMethod):
    """Gradient x input (Shrikumar et al. 2016): ``C_i(x) = x_i * dt/dx_i``.

    It equals DeepLIFT and Integrated Gradients with a zero reference on a model that is linear
    in its inputs, and differs from them as soon as a unit saturates or has a threshold.
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Attribution:
        """``inputs * dt/d inputs``; arguments as :meth:`Saliency.attribute`."""
        tensors, given_tuple = self._format_inputs(inputs)
        gradients, _ = input_gradients(self.model, tensors, target, as_tuple(additional_forward_args))
        return format_output(tuple(g * x for g, x in zip(gradients, tensors)), given_tuple)
