"""Concept prototypes: the inputs that activate each concept most (Alvarez-Melis & Jaakkola,
NeurIPS 2018, section 3, "the concepts are represented by the inputs that maximally activate
them"), among a given set of inputs."""

from __future__ import annotations

import torch

from deltalift.senn.model import SENN

Tensor = torch.Tensor

__all__ = ["concept_prototypes"]


def concept_prototypes(model: SENN, inputs: Tensor, k: int = 6, batch_size: int = 512) -> Tensor:
    """Indices ``(n_concepts, k)`` of the ``k`` inputs with the largest ``h_i(x)`` for each concept
    ``i``, largest first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if inputs.shape[0] < k:
        raise ValueError(f"asked for {k} prototypes among {inputs.shape[0]} inputs")
    with torch.no_grad():
        concepts = torch.cat([model.conceptizer(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])
    return concepts.topk(k, dim=0).indices.T.contiguous()
