"""Evaluating attribution methods: metrics that take any method of deltalift (or any explainer).

An explainer is ``explain(model, inputs, target) -> attributions``; :func:`explainer` wraps a
method class (``explainer(DeepLift, baselines=0.0)``).

- :func:`log_odds_erasure`: the log-odds change when turning class ``c_o`` into ``c_t``
  (Shrikumar et al. 2017, section 4.1);
- :func:`deletion_curve`, :func:`insertion_curve`, :func:`aopc`: perturbation curves, MoRF/LeRF;
- :func:`model_randomisation`: Adebayo et al.'s cascading and independent randomisation;
- :func:`infidelity`, :func:`max_sensitivity`: Yeh et al. 2019;
- :func:`axiom_report`: completeness, sensitivity (a) and (b), dummy, implementation invariance,
  linearity, symmetry preservation, each pass/fail with its value;
- :func:`localisation`: AUROC, AUPRC and mass inside a known ground truth;
- :func:`quantus_explain_func`: deltalift's methods as a Quantus ``explain_func``.
"""

from deltalift.evaluate.axioms import AxiomCheck, axiom_report
from deltalift.evaluate.curves import PerturbationCurve, aopc, curve_area, deletion_curve, insertion_curve
from deltalift.evaluate.erasure import ErasureResult, erase_by_scores, log_odds, log_odds_erasure
from deltalift.evaluate.explainers import Explain, MethodExplainer, as_explainer, explainer
from deltalift.evaluate.localisation import LocalisationResult, auprc, auroc, localisation, mass_inside
from deltalift.evaluate.quantus import quantus_explain_func
from deltalift.evaluate.robustness import infidelity, max_sensitivity
from deltalift.evaluate.sanity import RandomisationResult, model_randomisation, parameter_layers, randomise_layer
from deltalift.evaluate.statistics import BootstrapInterval, bootstrap_mean, rank, spearman

__all__ = [
    "AxiomCheck",
    "BootstrapInterval",
    "ErasureResult",
    "Explain",
    "LocalisationResult",
    "MethodExplainer",
    "PerturbationCurve",
    "RandomisationResult",
    "aopc",
    "as_explainer",
    "auprc",
    "auroc",
    "axiom_report",
    "bootstrap_mean",
    "curve_area",
    "deletion_curve",
    "erase_by_scores",
    "explainer",
    "infidelity",
    "insertion_curve",
    "localisation",
    "log_odds",
    "log_odds_erasure",
    "mass_inside",
    "max_sensitivity",
    "model_randomisation",
    "parameter_layers",
    "quantus_explain_func",
    "randomise_layer",
    "rank",
    "spearman",
]
