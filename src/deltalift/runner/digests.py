"""Digests that tell a job's manifest whether a model or input file changed between runs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["file_digest", "model_settings", "module_digest"]


def file_digest(path: Path) -> str:
    """A 128-bit BLAKE2b digest of a file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def module_digest(model: nn.Module) -> str:
    """A 128-bit BLAKE2b digest of a module's class name and its state dict (names, shapes, dtypes, values).

    The values are hashed as their raw bytes (the tensor viewed as ``uint8``), so that every dtype
    works, ``bfloat16`` included (numpy has no bfloat16, so ``.numpy()`` would fail). The one model
    digest of deltalift: the runner's manifests and the CAV cache
    (:func:`deltalift.concepts.cache.model_digest`) both use it.
    """
    digest = hashlib.blake2b(type(model).__qualname__.encode(), digest_size=16)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        if t.numel():
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_settings(model: Any) -> dict[str, str]:
    """What a manifest records of a model: its file and digest, or its class and weights' digest."""
    if isinstance(model, nn.Module):
        return {"module": type(model).__qualname__, "digest": module_digest(model)}
    return {"file": str(Path(model).resolve()), "digest": file_digest(Path(model))}
