"""Self-Explaining Neural Networks (SENN; Alvarez-Melis & Jaakkola, NeurIPS 2018, "Towards Robust
Interpretability with Self-Explaining Neural Networks", section 3).

A SENN is ``f(x) = g(theta(x)_1 h(x)_1, ..., theta(x)_k h(x)_k)``:

* the *conceptizer* ``h : X -> R^k`` maps an input to ``k`` concepts: an autoencoder's code
  (:class:`AutoencoderConceptizer`, trained to reconstruct the input, section 3 "Learning
  interpretable basis concepts") or the input itself for interpretable features
  (:class:`IdentityConceptizer`);
* the *relevance parametrizer* ``theta : X -> R^{k x C}`` gives each concept's relevance to each
  class (:class:`MLPParametrizer`, any network);
* the *aggregator* ``g`` combines them; the additive one (:class:`AdditiveAggregator`, the paper's
  choice) is ``f_c(x) = sum_i theta(x)_{i,c} h(x)_i``.

The explanation of ``f_c`` at ``x`` is the concepts ``h(x)`` with their relevances
``theta(x)_{:,c}``.  Such a model is locally linear in its concepts only when ``theta`` varies
slowly; the robustness loss (:func:`deltalift.senn.losses.robustness_loss`) asks for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

Tensor = torch.Tensor

__all__ = [
    "AdditiveAggregator",
    "AutoencoderConceptizer",
    "IdentityConceptizer",
    "MLPParametrizer",
    "SENN",
    "SENNExplanation",
]


def _size(shape: tuple[int, ...]) -> int:
    if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints (without the batch), got {shape!r}")
    return math.prod(shape)


class AutoencoderConceptizer(nn.Module):
    """Concepts as an autoencoder's code: ``h(x) = encoder(x) in R^k``, with a decoder back to the
    input for the reconstruction loss (SENN, section 3).

    Parameters
    ----------
    input_shape:
        One input's shape, e.g. ``(1, 8, 8)``.
    n_concepts:
        ``k``, the number of concepts.
    hidden:
        Width of the encoder's and decoder's hidden layer.
    """

    def __init__(self, input_shape: tuple[int, ...], n_concepts: int, hidden: int = 64) -> None:
        super().__init__()
        size = _size(input_shape)
        if n_concepts < 1 or hidden < 1:
            raise ValueError(f"n_concepts and hidden must be at least 1, got {n_concepts} and {hidden}")
        self.input_shape = tuple(input_shape)
        self.n_concepts = n_concepts
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, n_concepts))
        self.decoder = nn.Sequential(nn.Linear(n_concepts, hidden), nn.ReLU(), nn.Linear(hidden, size), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        """The concepts ``(N, k)``."""
        return self.encoder(x)

    def decode(self, concepts: Tensor) -> Tensor:
        """The reconstruction ``(N, *input_shape)`` from concepts ``(N, k)``."""
        return self.decoder(concepts).reshape(-1, *self.input_shape)


class IdentityConceptizer(nn.Module):
    """The inputs as concepts, ``h(x) = x`` flattened (for interpretable input features;
    SENN, section 3: "when the input features are themselves interpretable")."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.n_concepts = _size(input_shape)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` flattened to ``(N, k)``."""
        return x.flatten(1)

    def decode(self, concepts: Tensor) -> Tensor:
        """The concepts reshaped back to inputs."""
        return concepts.reshape(-1, *self.input_shape)


class MLPParametrizer(nn.Module):
    """A relevance parametrizer ``theta(x) in R^{k x C}``: a multilayer perceptron with ReLUs."""

    def __init__(
        self, input_shape: tuple[int, ...], n_concepts: int, n_classes: int, hidden: tuple[int, ...] = (64, 64)
    ) -> None:
        super().__init__()
        if n_concepts < 1 or n_classes < 1:
            raise ValueError(f"n_concepts and n_classes must be at least 1, got {n_concepts} and {n_classes}")
        widths = (_size(input_shape), *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], n_concepts * n_classes))
        self.net = nn.Sequential(*layers)
        self.n_concepts, self.n_classes = n_concepts, n_classes

    def forward(self, x: Tensor) -> Tensor:
        """The relevances ``(N, k, C)``."""
        return self.net(x).reshape(-1, self.n_concepts, self.n_classes)


class AdditiveAggregator(nn.Module):
    """``g``: ``f_c = sum_i theta_{i,c} h_i`` (SENN's additive aggregator, section 3)."""

    def forward(self, relevances: Tensor, concepts: Tensor) -> Tensor:
        """Logits ``(N, C)`` from relevances ``(N, k, C)`` and concepts ``(N, k)``."""
        if relevances.ndim != 3 or concepts.ndim != 2 or relevances.shape[:2] != concepts.shape:
            raise ValueError(
                f"relevances must be (N, k, C) and concepts (N, k); got {tuple(relevances.shape)} and "
                f"{tuple(concepts.shape)}"
            )
        return (relevances * concepts.unsqueeze(2)).sum(1)


@dataclass
class SENNExplanation:
    """A SENN's output and explanation for a batch."""

    logits: Tensor  #: (N, C)
    concepts: Tensor  #: h(x), (N, k)
    relevances: Tensor  #: theta(x), (N, k, C)

    def for_class(self, classes: Tensor) -> Tensor:
        """``theta(x)_{:, c_n}`` for one class per example: ``(N, k)``."""
        index = classes.reshape(-1, 1, 1).expand(-1, self.relevances.shape[1], 1)
        return self.relevances.gather(2, index).squeeze(2)


class SENN(nn.Module):
    """A self-explaining network ``f(x) = g(theta(x), h(x))``; ``forward`` returns the logits, so
    the post-hoc methods explain it as any classifier.

    Parameters
    ----------
    conceptizer:
        ``h``: a module mapping inputs to ``(N, k)``; with a ``decode`` method for the
        reconstruction loss (:class:`AutoencoderConceptizer`, :class:`IdentityConceptizer`).
    parametrizer:
        ``theta``: a module mapping inputs to ``(N, k, C)``.
    aggregator:
        ``g`` (default :class:`AdditiveAggregator`).
    """

    def __init__(self, conceptizer: nn.Module, parametrizer: nn.Module, aggregator: nn.Module | None = None) -> None:
        super().__init__()
        self.conceptizer = conceptizer
        self.parametrizer = parametrizer
        self.aggregator = aggregator if aggregator is not None else AdditiveAggregator()

    def explain(self, x: Tensor) -> SENNExplanation:
        """Logits, concepts ``h(x)`` and relevances ``theta(x)``."""
        concepts = self.conceptizer(x)
        relevances = self.parametrizer(x)
        if concepts.ndim != 2:
            raise ValueError(f"the conceptizer must return (N, k) concepts, got shape {tuple(concepts.shape)}")
        return SENNExplanation(self.aggregator(relevances, concepts), concepts, relevances)

    def forward(self, x: Tensor) -> Tensor:
        """The logits ``(N, C)``."""
        return self.explain(x).logits
