"""Concept explanations: Testing with Concept Activation Vectors (TCAV; Kim et al., ICML 2018).

* :class:`Concept` -- a named set of example inputs (Captum's ``Concept``).
* :class:`TCAV` -- CAVs at any layer of the captured graph and TCAV scores (Captum's interface).
* :func:`tcav_significance` -- the t-test against random concepts, Bonferroni corrected.
* Classifiers: :class:`SGDCAV` (Captum's default), :class:`SVMCAV`, :class:`FastCAV`, :class:`FixedCAV`.
* :class:`CAVCache` -- CAVs on disk, keyed by their settings.
"""

from deltalift.concepts.cache import CAVCache
from deltalift.concepts.classifiers import SGDCAV, SVMCAV, CAVClassifier, CAVFit, FastCAV, FixedCAV
from deltalift.concepts.concept import Concept, concepts_key
from deltalift.concepts.significance import ConceptSignificance, bonferroni, t_test, tcav_significance
from deltalift.concepts.tcav import CAV, TCAV, layer_name

__all__ = [
    "CAV",
    "CAVCache",
    "CAVClassifier",
    "CAVFit",
    "Concept",
    "ConceptSignificance",
    "FastCAV",
    "FixedCAV",
    "SGDCAV",
    "SVMCAV",
    "TCAV",
    "bonferroni",
    "concepts_key",
    "layer_name",
    "t_test",
    "tcav_significance",
]
