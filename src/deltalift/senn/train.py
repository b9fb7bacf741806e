"""Training a SENN on scikit-learn's bundled 8x8 digits (no download).

:func:`train_senn` minimises SENN's objective (:func:`deltalift.senn.losses.senn_loss`) with
Adam (the loop of :func:`deltalift.demo.train_classifier`); :func:`build_digits_senn` makes the digits model (an autoencoder conceptizer with ``k``
concepts, or the pixels themselves as concepts, and a two-layer relevance parametrizer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deltalift.demo import accuracy, train_classifier
from deltalift.senn.losses import senn_loss
from deltalift.senn.model import SENN, AutoencoderConceptizer, IdentityConceptizer, MLPParametrizer

Tensor = torch.Tensor

__all__ = ["SENNTraining", "build_digits_senn", "senn_accuracy", "train_senn"]

DIGITS_SHAPE = (1, 8, 8)


def build_digits_senn(n_concepts: int = 5, conceptizer: str = "autoencoder", seed: int = 0) -> SENN:
    """A SENN for 8x8 digits: ``conceptizer="autoencoder"`` with ``n_concepts`` concepts, or
    ``"identity"`` (the 64 pixels are the concepts); initialised with ``seed`` without touching
    the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if conceptizer == "autoencoder":
            h: AutoencoderConceptizer | IdentityConceptizer = AutoencoderConceptizer(DIGITS_SHAPE, n_concepts)
        elif conceptizer == "identity":
            h = IdentityConceptizer(DIGITS_SHAPE)
        else:
            raise ValueError(f"conceptizer must be 'autoencoder' or 'identity', got {conceptizer!r}")
        k = int(h.n_concepts)
        return SENN(h, MLPParametrizer(DIGITS_SHAPE, k, 10))


@dataclass
class SENNTraining:
    """The mean loss terms of each epoch."""

    total: list[float]
    classification: list[float]
    robustness: list[float]
    reconstruction: list[float]


def train_senn(
    model: SENN,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    robustness_weight: float = 0.1,
    reconstruction_weight: float = 1.0,
    sparsity_weight: float = 1e-4,
    show_progress: bool = True,
) -> SENNTraining:
    """Train ``model`` with Adam on SENN's objective, shuffling with ``seed``; returns each epoch's
    mean losses.  The model is left in eval mode."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    terms: list[list[float]] = []

    def loss_fn(module: nn.Module, batch: Tensor, batch_labels: Tensor) -> Tensor:
        loss = senn_loss(model, batch, batch_labels, robustness_weight, reconstruction_weight, sparsity_weight)
        terms.append([t.item() for t in (loss.total, loss.classification, loss.robustness, loss.reconstruction)])
        return loss.total

    train_classifier(
        model, images, labels, epochs, seed, batch_size, learning_rate, show_progress, loss_fn=loss_fn
    )  # Adam, a reshuffle per epoch with ``seed``; leaves the model in eval mode
    means = np.asarray(terms).reshape(epochs, -(-len(images) // batch_size), 4).mean(1)
    return SENNTraining(*(means[:, i].tolist() for i in range(4)))


def senn_accuracy(model: SENN, images: Tensor, labels: Tensor) -> float:
    """The fraction of ``images`` whose arg-max logit is the label (:func:`deltalift.demo.accuracy`)."""
    return accuracy(model, images, labels)
