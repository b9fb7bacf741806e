"""The statistical test of TCAV scores against random concepts (Kim et al., ICML 2018, section 3.5).

A CAV can be meaningless: a classifier separates any two sets of examples to some degree.  So
the concept's CAV is trained ``R`` times, each against a different random set of examples
(``concept`` vs ``random_r``), giving ``R`` TCAV scores; the null distribution comes from CAVs
between two random sets (``random_r`` vs ``random_{r+1 mod R}``).  A two-sided t-test compares
the two samples of scores, and with several concepts tested the p-values are Bonferroni
corrected (multiplied by the number of concepts, capped at 1): a concept is significant at
level ``alpha`` when its corrected p-value is below ``alpha``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from deltalift.concepts.concept import Concept, concepts_key
from deltalift.concepts.tcav import TCAV
from deltalift.inputs import TargetType

__all__ = ["ConceptSignificance", "bonferroni", "t_test", "tcav_significance"]


@dataclass
class ConceptSignificance:
    """The test of one concept at one layer."""

    concept: str
    layer: str
    scores: list[float]  #: TCAV scores of the concept, one per random set it was trained against
    random_scores: list[float]  #: TCAV scores of random-vs-random CAVs
    p_value: float  #: two-sided t-test, uncorrected
    corrected_p_value: float  #: Bonferroni-corrected over the concepts tested
    significant: bool

    @property
    def mean(self) -> float:
        return float(sum(self.scores) / len(self.scores))

    @property
    def std(self) -> float:
        return float(torch.tensor(self.scores, dtype=torch.float64).std(unbiased=False))


def t_test(a: list[float], b: list[float], equal_var: bool = True) -> float:
    """The two-sided p-value of the t-test of equal means (Student's, or Welch's with
    ``equal_var=False``; scipy's ``ttest_ind``).  Two samples without spread: 0 if their
    means differ, 1 if not (scipy returns NaN there)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the t-test needs at least two scores per sample, got {len(a)} and {len(b)}")
    try:
        from scipy.stats import ttest_ind
    except ImportError as exc:
        raise ImportError("the TCAV significance test needs scipy: pip install 'deltalift[concepts]'") from exc
    spread = max(a) - min(a) + max(b) - min(b)
    if spread == 0:
        return 0.0 if a[0] != b[0] else 1.0
    with warnings.catch_warnings():  # scipy's precision warning for nearly constant samples
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(a, b, equal_var=equal_var).pvalue)
    return 1.0 if math.isnan(p) else p


def bonferroni(p_values: list[float]) -> list[float]:
    """Bonferroni's correction for ``m`` tests: ``min(1, m p)``."""
    m = len(p_values)
    return [min(1.0, m * p) for p in p_values]


def tcav_significance(
    tcav: TCAV,
    inputs: Any,
    concepts: list[Concept],
    random_concepts: list[Concept],
    target: TargetType = None,
    additional_forward_args: Any = None,
    score: str = "sign_count",
    alpha: float = 0.05,
    equal_var: bool = True,
) -> list[ConceptSignificance]:
    """Test each concept's TCAV score against random concepts, at every layer of ``tcav``.

    Parameters
    ----------
    tcav:
        The :class:`~deltalift.concepts.tcav.TCAV` (model, layers, classifier, cache).
    inputs, target, additional_forward_args:
        As :meth:`TCAV.interpret <deltalift.concepts.tcav.TCAV.interpret>`.
    concepts:
        The concepts to test.
    random_concepts:
        ``R >= 3`` random sets of examples (the paper uses many, e.g. 500 runs over 50 sets);
        each concept is trained against each, and the null CAVs pair consecutive random sets.
    score:
        ``"sign_count"`` (the TCAV score) or ``"magnitude"``.
    alpha:
        The level of the Bonferroni-corrected test.
    equal_var:
        Student's t-test (default) or Welch's (``False``).

    Returns
    -------
    One :class:`ConceptSignificance` per layer and concept (layers outermost).
    """
    if score not in ("sign_count", "magnitude"):
        raise ValueError(f"score must be 'sign_count' or 'magnitude', got {score!r}")
    if not concepts:
        raise ValueError("give at least one concept to test")
    if len(random_concepts) < 3:
        raise ValueError(f"the test needs at least 3 random concepts, got {len(random_concepts)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    clash = {c.id for c in concepts} & {r.id for r in random_concepts}
    if clash:
        raise ValueError(f"concept ids {sorted(clash)} are both tested and random")
    r = len(random_concepts)
    concept_sets = [[c, rand] for c in concepts for rand in random_concepts]
    null_sets = [[random_concepts[i], random_concepts[(i + 1) % r]] for i in range(r)]
    scores = tcav.interpret(inputs, concept_sets + null_sets, target, additional_forward_args)
    results: list[ConceptSignificance] = []
    for layer in tcav.layer_names:
        null = [float(scores[concepts_key(s)][layer][score][0]) for s in null_sets]
        per_concept = [
            [float(scores[concepts_key([c, rand])][layer][score][0]) for rand in random_concepts] for c in concepts
        ]
        p_values = [t_test(s, null, equal_var) for s in per_concept]
        for concept, s, p, q in zip(concepts, per_concept, p_values, bonferroni(p_values)):
            results.append(ConceptSignificance(concept.name, layer, s, null, p, q, q < alpha))
    return results
