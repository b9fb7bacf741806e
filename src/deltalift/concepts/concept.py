"""Concepts: named sets of example inputs (Kim et al., ICML 2018, "Interpretability Beyond
Feature Attribution: Quantitative Testing with Concept Activation Vectors (TCAV)", section 3.1).

A :class:`Concept` has Captum's fields (``id``, ``name``, ``data_iter``).  Its examples may be a
tensor ``(N, ...)`` or any iterable of batches (a ``DataLoader``, a list of tensors); they are
read once and kept.  :meth:`Concept.fingerprint` hashes the examples' contents, so a cached CAV
is found again only for the same data (:mod:`deltalift.concepts.cache`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Union

import torch

from deltalift.inputs import row_major

Tensor = torch.Tensor
ConceptData = Union[Tensor, Iterable[Any]]

__all__ = ["Concept", "concepts_key"]


class Concept:
    """A concept: an integer id, a name, and example inputs (Captum's ``Concept``).

    Parameters
    ----------
    id:
        The concept's integer id, unique among the concepts used together; it is the class label
        of the concept's examples when a CAV is trained.
    name:
        A readable name (``"loops"``, ``"random_3"``).
    data_iter:
        The examples: a tensor ``(N, ...)`` (batch first), or an iterable of such tensors (a
        ``DataLoader`` yielding input batches, as Captum's), or of ``(inputs, label)`` pairs,
        whose first element is taken.
    """

    def __init__(self, id: int, name: str, data_iter: ConceptData) -> None:
        if isinstance(id, bool) or not isinstance(id, int):
            raise TypeError(f"a concept's id must be an int, got {type(id).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a concept's name must be a non-empty string, got {name!r}")
        if data_iter is None:
            raise ValueError(f"concept {name!r} has no examples (data_iter is None)")
        self.id = id
        self.name = name
        self.data_iter = data_iter
        self._examples: Tensor | None = None
        self._fingerprint: str | None = None

    @property
    def identifier(self) -> str:
        """``"name-id"``, as Captum's."""
        return f"{self.name}-{self.id}"

    def __repr__(self) -> str:
        return f"Concept({self.id!r}, {self.name!r})"

    def examples(self) -> Tensor:
        """All the concept's examples as one tensor ``(N, ...)`` (read once, then kept)."""
        if self._examples is None:
            self._examples = _collect(self.data_iter, self.name)
        return self._examples

    def fingerprint(self) -> str:
        """A SHA-256 digest of the id, name, shape, dtype and values of the examples."""
        if self._fingerprint is None:
            x = self.examples().detach().cpu().contiguous()
            digest = hashlib.sha256()
            digest.update(f"{self.id}|{self.name}|{tuple(x.shape)}|{x.dtype}".encode())
            digest.update(x.view(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b"")
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def concepts_key(concepts: list[Concept]) -> str:
    """The key of an experimental set in TCAV's results: the ids joined by ``-`` (Captum's
    ``concepts_to_str``)."""
    return "-".join(str(c.id) for c in concepts)


def _collect(data: ConceptData, name: str) -> Tensor:
    if isinstance(data, Tensor):
        batches = [data]
    else:
        try:
            items = list(data)
        except TypeError:
            raise TypeError(
                f"concept {name!r}: data_iter must be a tensor or an iterable of tensors, got {type(data).__name__}"
            ) from None
        batches = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    if not batches:
        raise ValueError(f"concept {name!r} has no examples")
    for batch in batches:
        if not isinstance(batch, Tensor):
            raise TypeError(f"concept {name!r}: expected tensors of examples, got {type(batch).__name__}")
        if batch.ndim == 0:
            raise ValueError(f"concept {name!r}: a batch of examples must have a batch dimension, got a scalar")
    shapes = {tuple(b.shape[1:]) for b in batches}
    if len(shapes) != 1:
        raise ValueError(f"concept {name!r}: the batches have different example shapes {sorted(shapes)}")
    examples = torch.cat([b.detach() for b in batches])
    if examples.shape[0] == 0:
        raise ValueError(f"concept {name!r} has no examples")
    return row_major(examples)
