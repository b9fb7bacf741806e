"""Sequence models for genome-wide attribution: model files, and bpnet-lite's count and profile heads.

:func:`load_sequence_model` reads a whole PyTorch module (``torch.save(model, path)``), a
``torch.export`` program (``.pt2``), or a bpnet-lite ``BPNet`` / ``ChromBPNet`` (bpnet-lite saves
these whole with ``torch.save``), and :func:`sequence_head` picks the scalar explained:

- a plain model's outputs ``(N, n_outputs)`` are explained at a column (``target``);
- a bpnet-lite model returns ``(profile logits (N, S, L_out), log counts (N, 1))``: it is wrapped as
  bpnet-lite's own attribution does (its ``bpnetlite.bpnet`` wrappers, used as they are):
  ``ControlWrapper`` feeds all-zero control tracks when the model expects some, then
  ``CountWrapper`` returns the log counts, or ``ProfileWrapper`` the profile's weighted softmax,
  ``sum_j (z_j - mean(z)) * softmax(z - mean(z))_j`` over the flattened profile logits ``z`` (BPNet,
  Avsec et al. 2021, Methods, "contribution scores" of the profile head).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from deltalift.files import load_model

__all__ = ["HEADS", "chrombpnet_sized", "is_bpnet_lite", "load_sequence_model", "sequence_head"]

#: The heads of a bpnet-lite model.
HEADS = ("count", "profile")


def is_bpnet_lite(model: nn.Module) -> bool:
    """Whether ``model`` is a bpnet-lite ``BPNet``, ``BasePairNet`` or ``ChromBPNet`` (two outputs, control tracks)."""
    return type(model).__module__.startswith("bpnetlite.") and hasattr(model, "n_control_tracks")


def _bpnet_wrappers() -> Any:
    try:
        from bpnetlite import bpnet
    except ImportError as exc:  # pragma: no cover - a bpnet-lite model cannot be unpickled without it
        raise ImportError("bpnet-lite models need bpnet-lite: pip install bpnet-lite") from exc
    return bpnet


def sequence_head(model: nn.Module, head: str | None = None) -> nn.Module:
    """``model`` with the head explained: bpnet-lite models wrapped by ``head``, others as they are.

    Parameters
    ----------
    model:
        The sequence model.
    head:
        ``"count"`` (the default for a bpnet-lite model) or ``"profile"``; must be ``None`` for any
        other model (explain a column of its output with ``target``).

    Raises
    ------
    ValueError
        An unknown head, or a head for a model that is not a bpnet-lite model.
    """
    if not is_bpnet_lite(model):
        if head is not None:
            raise ValueError(
                f"head={head!r} applies to bpnet-lite BPNet/ChromBPNet models; {type(model).__name__} is "
                "explained at an output column (target) instead"
            )
        return model
    head = "count" if head is None else head
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    bpnet = _bpnet_wrappers()
    wrapper = bpnet.CountWrapper if head == "count" else bpnet.ProfileWrapper
    return wrapper(bpnet.ControlWrapper(model)).eval()


def load_sequence_model(path: str | os.PathLike[str], head: str | None = None, device: str = "cpu") -> nn.Module:
    """A model file (``.pt`` module, ``.pt2`` program, bpnet-lite model) with its head (:func:`sequence_head`)."""
    return sequence_head(load_model(Path(path), device=device), head)


def chrombpnet_sized(seed: int = 0, accessibility_filters: int = 512, accessibility_layers: int = 8) -> nn.Module:
    """A ChromBPNet of the published size with random weights: input 2114 bp, output 1000 bp.

    The accessibility model is a BPNet of 512 filters and 8 dilated layers, the bias model one of
    128 filters and 4 layers (ChromBPNet's defaults), both trimmed to a 1000 bp profile; for benchmarks.
    """
    import torch
    from bpnetlite.bpnet import BPNet
    from bpnetlite.chrombpnet import ChromBPNet

    torch.manual_seed(seed)
    trimming = (2114 - 1000) // 2
    bias = BPNet(n_filters=128, n_layers=4, n_outputs=1, n_control_tracks=0, trimming=trimming, verbose=False)
    accessibility = BPNet(
        n_filters=accessibility_filters,
        n_layers=accessibility_layers,
        n_outputs=1,
        n_control_tracks=0,
        trimming=trimming,
        verbose=False,
    )
    return ChromBPNet(bias, accessibility).eval()
