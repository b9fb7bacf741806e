"""Explainers: the one calling convention every metric of :mod:`deltalift.evaluate` takes.

An *explainer* is any callable ``explain(model, inputs, target) -> attributions`` with ``inputs`` a
tensor ``(N, ...)``, ``target`` an int or one class index per example, and attributions shaped
like ``inputs``.  :func:`explainer` makes one from a deltalift method class (Captum's interface:
``Cls(model, **init).attribute(inputs, target=..., **attribute_kwargs)``), and
:func:`as_explainer` accepts a method class, a factory, or an explainer already.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

Tensor = torch.Tensor
Target = int | Tensor | np.ndarray | list[int]
Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]

__all__ = ["Explain", "MethodExplainer", "as_explainer", "explainer", "target_scores", "target_tensor"]


def target_tensor(target: Any, n: int, device: torch.device | None = None) -> Tensor:
    """``target`` as a ``long`` tensor of ``n`` class indices (an int is repeated)."""
    if isinstance(target, bool):
        raise TypeError("target must be an int or one class index per example, not a bool")
    if isinstance(target, int | np.integer):
        out = torch.full((n,), int(target), dtype=torch.long)
    else:
        out = torch.as_tensor(np.asarray(target) if isinstance(target, list | np.ndarray) else target)
        if out.is_floating_point() or out.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {out.dtype}")
        out = out.long().reshape(-1)
        if out.numel() == 1:
            out = out.expand(n).clone()
        if out.numel() != n:
            raise ValueError(f"target has {out.numel()} entries for {n} examples")
    return out if device is None else out.to(device)


def target_scores(
    model: Callable[[Tensor], Tensor], x: Tensor, target: Tensor, score: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """``out[n, target[n]]`` of ``out = model(x)`` (after ``score``, e.g. a softmax), without gradients.

    A one-dimensional output is returned as it is; ``target`` is repeated when ``x`` holds several
    copies of its batch (``len(x)`` a multiple of ``len(target)``)."""
    with torch.no_grad():
        out = model(x)
        if score is not None:
            out = score(out)
    if out.ndim == 1:
        return out
    out = out.reshape(out.shape[0], -1)
    rows = torch.arange(out.shape[0], device=out.device)
    return out[rows, target.to(out.device).repeat(out.shape[0] // len(target))]


@dataclass(frozen=True)
class MethodExplainer:
    """An explainer made of a method: ``factory(model).attribute(inputs, target=target, **attribute_kwargs)``.

    ``factory`` is a method class (``DeepLift``), a ``functools.partial`` of one
    (``partial(DeepLift, rule="reveal_cancel")``) or any ``model -> method`` callable
    (``lambda m: NoiseTunnel(Saliency(m))``).  ``name`` labels it in tables.
    """

    factory: Callable[[nn.Module], Any]
    attribute_kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    def __call__(self, model: nn.Module, inputs: Tensor, target: Any) -> Tensor:
        method = self.factory(model)
        if not hasattr(method, "attribute"):
            raise TypeError(
                f"the factory of {self.name or 'an explainer'} made a {type(method).__name__} without .attribute"
            )
        targets = target_tensor(target, inputs.shape[0], inputs.device)
        result = method.attribute(inputs, target=targets, **dict(self.attribute_kwargs))
        if isinstance(result, tuple):
            if len(result) != 1:
                raise ValueError(
                    f"{self.name or 'the method'} returned {len(result)} tensors; explainers take one input"
                )
            result = result[0]
        if not isinstance(result, Tensor) or result.shape != inputs.shape:
            shape = getattr(result, "shape", type(result).__name__)
            raise ValueError(
                f"{self.name or 'the method'} returned attributions of shape {shape} for inputs {tuple(inputs.shape)}"
            )
        return result.detach()


def explainer(factory: Callable[[nn.Module], Any], name: str = "", **attribute_kwargs: Any) -> MethodExplainer:
    """An explainer from a method class or factory; ``attribute_kwargs`` go to every ``attribute`` call.

    Example::

        explain = explainer(IntegratedGradients, n_steps=10, baselines=0.0)
        attributions = explain(model, images, labels)
    """
    if not callable(factory):
        raise TypeError(f"factory must be a method class or a callable model -> method, got {type(factory).__name__}")
    label = name or getattr(factory, "__name__", "") or getattr(getattr(factory, "func", None), "__name__", "")
    return MethodExplainer(factory, dict(attribute_kwargs), label)


def _binds(signature: inspect.Signature, n: int) -> bool:
    try:
        signature.bind(*([None] * n))
    except TypeError:
        return False
    return True


def as_explainer(method: Any) -> Explain:
    """``method`` as an explainer.

    - a :class:`MethodExplainer` is returned as it is;
    - a method class (``DeepLift``), a ``functools.partial`` of one
      (``partial(DeepLift, rule="reveal_cancel")``) or a callable with exactly one required
      parameter (``lambda m: NoiseTunnel(Saliency(m))``) is a *factory*: it becomes
      :func:`explainer(method) <explainer>`, called as ``factory(model).attribute(inputs, target=...)``;
    - a callable that takes three positional arguments ``(model, inputs, target)`` is an explainer
      and is returned as it is;
    - anything else raises a ``TypeError``.
    """
    if isinstance(method, MethodExplainer):
        return method
    wrapped = method.func if isinstance(method, functools.partial) else method
    if inspect.isclass(wrapped):
        if not hasattr(wrapped, "attribute"):
            raise TypeError(f"{wrapped.__name__} has no attribute method; pass an explainer (model, inputs, target)")
        return explainer(method)
    if callable(method):
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            required = [
                p
                for p in signature.parameters.values()
                if p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            ]
            if len(required) == 1 and _binds(signature, 1):
                return explainer(method)
            if _binds(signature, 3):
                return method  # type: ignore[no-any-return]
        name = getattr(method, "__name__", type(method).__name__)
        raise TypeError(
            f"{name}{signature if signature is not None else ''} is neither a method factory model -> method "
            "(one required argument) nor an explainer (model, inputs, target) -> attributions (three arguments)"
        )
    raise TypeError(
        f"expected an explainer (model, inputs, target) -> attributions or a method class, got {type(method).__name__}"
    )


def explain_checked(explain: Explain, model: nn.Module, inputs: Tensor, target: Any) -> Tensor:
    """Call ``explain`` and check that it returned a tensor shaped like ``inputs``."""
    result = explain(model, inputs, target)
    if isinstance(result, np.ndarray):
        result = torch.from_numpy(result)
    if not isinstance(result, Tensor):
        raise TypeError(f"an explainer must return a tensor, got {type(result).__name__}")
    if result.shape != inputs.shape:
        raise ValueError(
            f"the explainer returned attributions of shape {tuple(result.shape)} for inputs {tuple(inputs.shape)}"
        )
    return result.detach().to(inputs.dtype)
