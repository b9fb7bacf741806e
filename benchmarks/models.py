"""The torchvision models the benchmarks explain, with random weights."""

from __future__ import annotations

import torch
import torchvision


def torchvision_model(name: str) -> torch.nn.Module:
    """``torchvision.models.<name>()`` in eval mode, its zero-initialised weight matrices (ViT's
    classification head) drawn from N(0, 0.02^2): with a zero head every attribution is zero,
    and comparing tools on zeros shows nothing."""
    model = getattr(torchvision.models, name)().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2 and not parameter.any():
                parameter.normal_(0.0, 0.02)
    return model
