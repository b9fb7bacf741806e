"""Classifiers that turn concept activations into Concept Activation Vectors (CAVs).

A CAV of concept ``C`` at layer ``l`` is the normal of a hyperplane separating the layer's
activations ``f_l(x)`` of the concept's examples from those of other examples (Kim et al.,
ICML 2018, section 3.2).  Each classifier returns one weight row per class (concept), in the
order of :attr:`CAVFit.classes`; a two-class linear classifier with the normal ``w`` gives the
rows ``(-w, w)``, as Captum's ``DefaultClassifier``.

* :class:`SGDCAV` -- a linear classifier trained by stochastic gradient descent (scikit-learn's
  ``SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)``, Captum's default).
* :class:`SVMCAV` -- a linear support vector machine (scikit-learn's ``LinearSVC``).
* :class:`FastCAV` -- the mean-difference CAV (Schmalwasser et al., ICML 2025, "FastCAV:
  Efficient Computation of Concept Activation Vectors for Explaining Deep Neural Networks",
  section 3): ``v_c = mean_{x in C} f_l(x) - mean_{x in all sets} f_l(x)``, normalised to unit
  length; no iterative training, so it is fast on wide layers.
* :class:`FixedCAV` -- given vectors (to reuse CAVs from elsewhere, or to compare methods on
  the same CAV).

The SGD and SVM classifiers, as Captum's, hold out ``test_split_ratio`` of the examples
(a seeded permutation) and report the held-out accuracy (``stats["accs"]``).  They need
scikit-learn (``pip install 'deltalift[concepts]'``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ["CAVClassifier", "CAVFit", "FastCAV", "FixedCAV", "SGDCAV", "SVMCAV", "make_classifier"]

MISSING_SKLEARN = (
    "the SGD and SVM concept classifiers need scikit-learn, which is not installed. Install it with: "
    "pip install 'deltalift[concepts]' (or use classifier='fastcav')"
)


@dataclass
class CAVFit:
    """A trained concept classifier: one weight row per class and the classes' concept ids."""

    weights: Tensor  #: (n_classes, n_features), row i for classes[i]
    classes: list[int]
    stats: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class CAVClassifier(Protocol):
    """What TCAV needs of a concept classifier."""

    def settings(self) -> dict[str, Any]:
        """The options that change the result (part of a cached CAV's key)."""
        ...

    def fit(self, activations: Tensor, labels: Tensor, seed: int) -> CAVFit:
        """Train on ``activations (N, F)`` with integer ``labels (N,)`` (concept ids)."""
        ...


def _check_training_data(activations: Tensor, labels: Tensor) -> list[int]:
    if activations.ndim != 2:
        raise ValueError(f"activations must be (examples, features), got shape {tuple(activations.shape)}")
    if labels.shape != (activations.shape[0],):
        raise ValueError(f"labels must be ({activations.shape[0]},), got shape {tuple(labels.shape)}")
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(f"a CAV separates at least two concepts; the examples have the labels {classes}")
    if not torch.isfinite(activations).all():
        raise ValueError("the concept activations contain NaN or infinite values")
    return classes


def _split(n: int, test_split_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(test_split_ratio * n)
    return order[n_test:], order[:n_test]


def _held_out_accuracy(
    weights: np.ndarray, bias: np.ndarray, classes: list[int], x: np.ndarray, y: np.ndarray
) -> float:
    if len(y) == 0:
        return float("nan")
    predicted = np.asarray(classes)[np.argmax(x @ weights.T + bias, axis=1)]
    return float(np.mean(predicted == y))


class _SklearnLinear:
    """A scikit-learn linear classifier fitted on a seeded train split."""

    name = ""

    def __init__(self, test_split_ratio: float = 0.33) -> None:
        if not 0.0 <= test_split_ratio < 1.0:
            raise ValueError(f"test_split_ratio must be in [0, 1), got {test_split_ratio}")
        self.test_split_ratio = test_split_ratio

    def _estimator(self, seed: int) -> Any:
        """The scikit-learn linear estimator a subclass fits (each named classifier defines it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define its estimator")

    def settings(self) -> dict[str, Any]:
        return {"classifier": self.name, "test_split_ratio": self.test_split_ratio}

    def fit(self, activations: Tensor, labels: Tensor, seed: int) -> CAVFit:
        classes = _check_training_data(activations, labels)
        x = activations.detach().cpu().double().numpy()
        y = labels.detach().cpu().numpy()
        train, test = _split(len(y), self.test_split_ratio, seed)
        if len(set(y[train].tolist())) < len(classes):
            raise ValueError("the training split lacks a concept; give each concept more examples")
        estimator = self._estimator(seed).fit(x[train], y[train])
        coef, bias = np.asarray(estimator.coef_), np.asarray(estimator.intercept_)
        if coef.shape[0] == 1:  # binary: the normal w points to classes[1]
            coef, bias = np.stack([-coef[0], coef[0]]), np.array([-bias[0], bias[0]])
        accuracy = _held_out_accuracy(coef, bias, classes, x[test], y[test])
        weights = torch.as_tensor(coef, dtype=activations.dtype)
        return CAVFit(weights, [int(c) for c in estimator.classes_], {"accs": accuracy})


class SGDCAV(_SklearnLinear):
    """A linear classifier trained with SGD (hinge loss, L2 penalty ``alpha``): Captum's
    default classifier (``SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)``), seeded."""

    name = "sgd"

    def __init__(
        self, alpha: float = 0.01, max_iter: int = 1000, tol: float = 1e-3, test_split_ratio: float = 0.33
    ) -> None:
        super().__init__(test_split_ratio)
        if alpha <= 0 or max_iter < 1:
            raise ValueError(f"alpha must be positive and max_iter at least 1, got {alpha} and {max_iter}")
        self.alpha, self.max_iter, self.tol = alpha, max_iter, tol

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "alpha": self.alpha, "max_iter": self.max_iter, "tol": self.tol}

    def _estimator(self, seed: int) -> Any:
        try:
            from sklearn.linear_model import SGDClassifier
        except ImportError as exc:
            raise ImportError(MISSING_SKLEARN) from exc
        return SGDClassifier(alpha=self.alpha, max_iter=self.max_iter, tol=self.tol, random_state=seed)


class SVMCAV(_SklearnLinear):
    """A linear support vector machine (scikit-learn's ``LinearSVC``, squared hinge loss,
    penalty ``C``), seeded."""

    name = "svm"

    def __init__(self, C: float = 1.0, max_iter: int = 5000, test_split_ratio: float = 0.33) -> None:
        super().__init__(test_split_ratio)
        if C <= 0 or max_iter < 1:
            raise ValueError(f"C must be positive and max_iter at least 1, got {C} and {max_iter}")
        self.C, self.max_iter = C, max_iter

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "C": self.C, "max_iter": self.max_iter}

    def _estimator(self, seed: int) -> Any:
        try:
            from sklearn.svm import LinearSVC
        except ImportError as exc:
            raise ImportError(MISSING_SKLEARN) from exc
        return LinearSVC(C=self.C, max_iter=self.max_iter, random_state=seed)


class FastCAV:
    """The mean-difference CAV of FastCAV (Schmalwasser et al. 2025, section 3)::

        v_c = mean_{x in C} f_l(x) - mean_{x in all concepts' examples} f_l(x),   v_c <- v_c / ||v_c||

    With two concepts of equal size, ``v_1 = -v_0``, along ``mean(C_1) - mean(C_0)``.  The
    hyperplanes pass through the overall mean; ``stats["accs"]`` is the accuracy of the rule
    ``argmax_c v_c . (f_l(x) - mean)`` on a held-out split (the vectors themselves use all
    examples unless ``test_split_ratio > 0``).
    """

    name = "fastcav"

    def __init__(self, normalize: bool = True, test_split_ratio: float = 0.0) -> None:
        if not 0.0 <= test_split_ratio < 1.0:
            raise ValueError(f"test_split_ratio must be in [0, 1), got {test_split_ratio}")
        self.normalize = normalize
        self.test_split_ratio = test_split_ratio

    def settings(self) -> dict[str, Any]:
        return {"classifier": self.name, "normalize": self.normalize, "test_split_ratio": self.test_split_ratio}

    def fit(self, activations: Tensor, labels: Tensor, seed: int) -> CAVFit:
        classes = _check_training_data(activations, labels)
        x = activations.detach().double()
        train, test = _split(len(labels), self.test_split_ratio, seed)
        train_t, test_t = torch.as_tensor(train), torch.as_tensor(test)
        x_train, y_train = x[train_t], labels[train_t]
        mean = x_train.mean(0)
        rows = []
        for c in classes:
            members = x_train[y_train == c]
            if len(members) == 0:
                raise ValueError(f"the training split has no example of concept {c}; give it more examples")
            rows.append(members.mean(0) - mean)
        weights = torch.stack(rows)
        if self.normalize:
            norms = weights.norm(dim=1, keepdim=True)
            if bool((norms == 0).any()):
                raise ValueError("a concept's mean activation equals the overall mean: its FastCAV is undefined")
            weights = weights / norms
        held_out = x[test_t] if len(test) else x_train
        held_out_labels = labels[test_t] if len(test) else y_train
        w = weights.numpy()
        accuracy = _held_out_accuracy(w, -(w @ mean.numpy()), classes, held_out.numpy(), held_out_labels.cpu().numpy())
        return CAVFit(weights.to(activations.dtype), classes, {"accs": accuracy})


class FixedCAV:
    """Given CAVs: ``weights (n_classes, n_features)`` for the concept ids ``classes`` (in the
    same order), returned whatever the activations; the number of features is checked."""

    name = "fixed"

    def __init__(self, weights: Tensor, classes: list[int]) -> None:
        weights = torch.as_tensor(weights)
        if weights.ndim != 2 or weights.shape[0] != len(classes):
            raise ValueError(
                f"weights must be (len(classes), n_features) = ({len(classes)}, F), got {tuple(weights.shape)}"
            )
        self.weights = weights.detach().clone()
        self.classes = [int(c) for c in classes]

    def settings(self) -> dict[str, Any]:
        weights = self.weights.detach().cpu().double().contiguous()
        digest = hashlib.sha256(weights.numpy().tobytes() + repr((tuple(weights.shape), self.classes)).encode())
        return {"classifier": self.name, "weights_sha256": digest.hexdigest()}

    def fit(self, activations: Tensor, labels: Tensor, seed: int) -> CAVFit:
        _check_training_data(activations, labels)
        if activations.shape[1] != self.weights.shape[1]:
            raise ValueError(
                f"the fixed CAVs have {self.weights.shape[1]} features, the layer's activations {activations.shape[1]}"
            )
        if sorted(set(labels.tolist())) != sorted(self.classes):
            raise ValueError(
                f"the fixed CAVs are for concepts {self.classes}, the examples are of {sorted(set(labels.tolist()))}"
            )
        return CAVFit(self.weights.to(activations.dtype), list(self.classes), {})


ClassifierSpec = Union[str, CAVClassifier]
_NAMED = {"sgd": SGDCAV, "linear": SGDCAV, "svm": SVMCAV, "fastcav": FastCAV}


def make_classifier(spec: ClassifierSpec, **options: Any) -> CAVClassifier:
    """A classifier from its name (``"sgd"`` or ``"linear"``, ``"svm"``, ``"fastcav"``) and
    options, or the given classifier object (which must have ``fit`` and ``settings``)."""
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"unknown CAV classifier {spec!r}; choose one of {sorted(_NAMED)} or pass an object")
        made: CAVClassifier = _NAMED[spec](**options)
        return made
    if options:
        raise ValueError(f"classifier options {sorted(options)} apply to a classifier given by name only")
    if not isinstance(spec, CAVClassifier):
        raise TypeError(
            f"classifier must be a name or an object with fit(activations, labels, seed) and settings(), "
            f"got {type(spec).__name__}"
        )
    return spec
