"""Self-Explaining Neural Networks (SENN; Alvarez-Melis & Jaakkola, NeurIPS 2018).

* :class:`SENN` -- ``f(x) = g(theta(x), h(x))`` with a conceptizer ``h``
  (:class:`AutoencoderConceptizer`, :class:`IdentityConceptizer`), a relevance parametrizer
  ``theta`` (:class:`MLPParametrizer`) and the :class:`AdditiveAggregator`.
* :func:`robustness_loss`, :func:`senn_loss` -- the training objective.
* :func:`train_senn`, :func:`build_digits_senn` -- training on scikit-learn's digits
  (``deltalift senn train``).
* :func:`concept_prototypes`, :func:`prototypes_figure`, :func:`explanations_figure`.
* :func:`local_lipschitz` -- the stability of an explanation; :func:`stability_comparison`
  compares SENN with DeepLIFT, Integrated Gradients, SmoothGrad, gradient x input and occlusion.
"""

from deltalift.senn.comparison import METHODS, StabilityResult, explanation_functions, stability_comparison
from deltalift.senn.figures import explanations_figure, prototypes_figure
from deltalift.senn.losses import SENNLoss, robustness_loss, senn_loss
from deltalift.senn.model import (
    SENN,
    AdditiveAggregator,
    AutoencoderConceptizer,
    IdentityConceptizer,
    MLPParametrizer,
    SENNExplanation,
)
from deltalift.senn.prototypes import concept_prototypes
from deltalift.senn.stability import local_lipschitz, sample_ball
from deltalift.senn.train import SENNTraining, build_digits_senn, senn_accuracy, train_senn

__all__ = [
    "METHODS",
    "SENN",
    "AdditiveAggregator",
    "AutoencoderConceptizer",
    "IdentityConceptizer",
    "MLPParametrizer",
    "SENNExplanation",
    "SENNLoss",
    "SENNTraining",
    "StabilityResult",
    "build_digits_senn",
    "concept_prototypes",
    "explanation_functions",
    "explanations_figure",
    "local_lipschitz",
    "prototypes_figure",
    "robustness_loss",
    "sample_ball",
    "senn_accuracy",
    "senn_loss",
    "stability_comparison",
    "train_senn",
]
