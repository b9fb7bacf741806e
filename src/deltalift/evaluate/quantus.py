"""A Quantus-compatible ``explain_func``, so Quantus' metrics (Hedström et al. 2023, JMLR) can evaluate deltalift's methods.

Quantus calls ``explain_func(model=model, inputs=x, targets=y, **explain_func_kwargs)`` with numpy
arrays and expects a numpy array of attributions shaped like ``x``::

    import quantus
    from deltalift.evaluate import quantus_explain_func
    from deltalift.methods import DeepLift

    metric = quantus.PixelFlipping(features_in_step=4, perturb_baseline="black")
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=None, device="cpu",
                    explain_func=quantus_explain_func,
                    explain_func_kwargs={"method": DeepLift, "attribute_kwargs": {"baselines": 0.0}})

``method`` is a deltalift method class, a factory ``model -> method``, or an explainer
``(model, inputs, target) -> attributions`` (:mod:`deltalift.evaluate.explainers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.evaluate.explainers import Explain, MethodExplainer, as_explainer, explain_checked, explainer

__all__ = ["quantus_explain_func"]

#: Keyword arguments Quantus itself may add to ``explain_func_kwargs``; they do not change deltalift's answer.
QUANTUS_KEYS = frozenset({"device", "channel_first", "softmax", "model_predict_kwargs"})


def quantus_explain_func(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor | int,
    method: Any = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Attributions of ``targets`` for ``inputs`` as a numpy array (Quantus' ``explain_func``).

    Parameters
    ----------
    model:
        A torch module (Quantus passes the user's model).
    inputs:
        ``(N, ...)`` numpy array or tensor.
    targets:
        One class per example, or an int.
    method:
        A deltalift method class, a factory, or an explainer (required).
    attribute_kwargs:
        Passed to ``attribute`` when ``method`` is a class or factory (e.g. ``{"baselines": 0.0}``).
    kwargs:
        Quantus' own options (``device``, ...); any other keyword is an error.
    """
    unknown = sorted(set(kwargs) - QUANTUS_KEYS)
    if unknown:
        raise TypeError(f"quantus_explain_func got unknown options {unknown}; deltalift options go in attribute_kwargs")
    if method is None:
        raise ValueError("quantus_explain_func needs method= (a deltalift method class, a factory or an explainer)")
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantus_explain_func explains torch modules, got {type(model).__name__}")
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = torch.device(kwargs.get("device") or (parameter.device if parameter is not None else "cpu"))
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs).to(device, dtype)
    y = targets if isinstance(targets, int | np.integer) else torch.as_tensor(np.asarray(targets)).to(device).long()
    if attribute_kwargs:
        if isinstance(method, MethodExplainer) or not callable(method):
            raise TypeError("attribute_kwargs go with a method class or factory, not an explainer")
        explain: Explain = explainer(method, **dict(attribute_kwargs))
    else:
        explain = as_explainer(method)
    was_training = model.training
    model.eval()
    try:
        attributions = explain_checked(explain, model, x, y)
    finally:
        model.train(was_training)
    return (
        attributions.detach()
        .cpu()
        .numpy()
        .astype(np.asarray(inputs).dtype if isinstance(inputs, np.ndarray) else np.float32)
    )
