"""deltalift: exact DeepLIFT attributions for PyTorch models, on operations rather than modules.

Quick use::

    from deltalift import DeepLift
    attributions, delta = DeepLift(model.eval()).attribute(
        inputs, baselines=0.0, target=3, return_convergence_delta=True)
"""

from deltalift import methods, rules
from deltalift.capture import clear_cache
from deltalift.errors import (
    CaptureError,
    ConvergenceError,
    ConvergenceWarning,
    DeltaliftError,
    IllConditionedWarning,
    MissingRuleError,
    UnsupportedOperationError,
)
from deltalift.methods import *  # noqa: F403 (the names of methods.__all__, re-exported below)
from deltalift.notebook import explain
from deltalift.rules import register_rule

__version__ = "0.1.0"

#: The rules, errors and every name of :data:`deltalift.methods.__all__` but Grad-CAM's helper
#: ``interpolate`` (importable from :mod:`deltalift.methods`).
__all__ = [
    "explain",
    "register_rule",
    "rules",
    "clear_cache",
    "CaptureError",
    "ConvergenceError",
    "ConvergenceWarning",
    "DeltaliftError",
    "IllConditionedWarning",
    "MissingRuleError",
    "UnsupportedOperationError",
]
__all__ += methods.__all__
__all__.remove("interpolate")
