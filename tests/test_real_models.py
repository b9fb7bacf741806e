"""Summation-to-delta on real model code: Hugging Face ``transformers``, ``timm`` and ``bpnet-lite``.

The models (tiny builds, random weights, nothing downloaded; see ``real_models.py``) are the
libraries' own classes, explained as their users explain them: text models at their input
embeddings (``inputs_embeds``), image models at their pixels, BPNet / ChromBPNet at the one-hot
sequence through bpnet-lite's own ``CountWrapper`` and ``ProfileWrapper``.

For every model, in float64: one reference shared by the batch (a ``(1, ...)`` tensor) and one
reference per example, under Rescale and RevealCancel; plus one float32 case (a reference per
example, Rescale) for one model of each package.  Checked:

- summation-to-delta, ``|delta| <= 1e-10 |t(x) - t(x0)| + 1e-12`` (float64) or
  ``1e-4 |change| + 1e-5`` (float32), for the delta deltalift returns and for the sum of the
  contributions against ``t(x) - t(x0)`` computed here by calling the model itself on the inputs
  and on the reference broadcast to the batch;
- well-conditioning: no contribution exceeds ``1e4 (|t(x) - t(x0)| + |t(x)| + |t(x0)|)``.

Three Hugging Face models round to float32 inside even when cast to float64 (LlamaRMSNorm, T5's
layer norm, eager attention's ``softmax(dtype=torch.float32)``; ``real_models.FLOAT32_INSIDE``):
their float64 cases are held to float32's tolerance.

A package that is not installed skips only its own models.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from deltalift import DeepLift
from deltalift.errors import CaptureError
from real_models import FLOAT32_MODELS, MODELS, make_input, seed_of

BATCH = 3
RULES = ("rescale", "reveal_cancel")
REFERENCES = ("shared", "per_example")
TOLERANCE = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-4, 1e-5)}
CONDITIONING = 1e4

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # deltalift's convergence warnings: asserted here
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """The models are tiny: intra-op threads only add overhead (and the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def model_of(name: str, dtype: torch.dtype) -> nn.Module:
    """One model object per (model, dtype), so that deltalift's captured graph is reused across
    the references and rules of that model."""
    return MODELS[name].build().to(dtype).eval()


def _cases() -> list[Any]:
    cases = []
    for name in MODELS:
        for reference in REFERENCES:
            for rule in RULES:
                cases.append(
                    pytest.param(name, reference, rule, torch.float64, id=f"{name}-{reference}-{rule}-float64")
                )
        if name in FLOAT32_MODELS:
            cases.append(
                pytest.param(name, "per_example", "rescale", torch.float32, id=f"{name}-per_example-rescale-float32")
            )
    return cases


#: The capture error of each (model, dtype), raised again by its later cases instead of exporting
#: the same model with the same input signature again (deltalift caches graphs, not failures).
_capture_errors: dict[tuple[str, torch.dtype], CaptureError] = {}


@pytest.mark.parametrize(("name", "reference", "rule", "dtype"), _cases())
def test_summation_to_delta(name: str, reference: str, rule: str, dtype: torch.dtype) -> None:
    spec = MODELS[name]
    pytest.importorskip(spec.package)
    model = model_of(name, dtype)
    g = torch.Generator().manual_seed(seed_of(name) + 7)
    x = make_input(spec, BATCH, g, dtype)
    x0 = make_input(spec, 1 if reference == "shared" else BATCH, g, dtype)

    if (name, dtype) in _capture_errors:
        raise _capture_errors[name, dtype]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            attributions, delta = DeepLift(model, rule=rule).attribute(
                x, baselines=x0, target=spec.target, return_convergence_delta=True
            )
        except CaptureError as error:
            _capture_errors[name, dtype] = error
            raise
    with torch.no_grad():
        t = model(x)[:, spec.target]
        t0 = model(x0.expand_as(x).contiguous())[:, spec.target]
    change = t - t0
    total = attributions.flatten(1).sum(1)
    own = total - change  # the delta against the model's own outputs

    assert attributions.shape == x.shape
    assert torch.isfinite(attributions).all(), "non-finite contributions"
    # a model that rounds to float32 inside (real_models.FLOAT32_INSIDE) is held to float32's tolerance
    rel, absolute = TOLERANCE[torch.float32 if spec.float32_inside else dtype]
    bound = rel * change.abs() + absolute
    scale = change.abs().clamp_min(1e-300)
    notes = "; ".join(sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}" for w in caught}))
    assert (delta.abs() <= bound).all() and (own.abs() <= bound).all(), (
        f"summation-to-delta: relative error |delta|/|change| = {(delta.abs() / scale).max().item():.3e} "
        f"(returned delta), {(own.abs() / scale).max().item():.3e} (against the model's own t(x) - t(x0)); "
        f"|change| = {change.abs().tolist()}; warnings: {notes or 'none'}"
    )
    largest = attributions.detach().flatten(1).abs().amax(1)
    limit = CONDITIONING * (change.abs() + t.abs() + t0.abs())
    assert (largest <= limit).all(), (
        f"ill-conditioned: largest |C| / (|change| + |t| + |t0|) = "
        f"{(largest / (change.abs() + t.abs() + t0.abs())).max().item():.3e}; warnings: {notes or 'none'}"
    )
