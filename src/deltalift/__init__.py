"""deltalift: exact DeepLIFT attributions for PyTorch models, on operations rather than modules.

Quick use::

    from deltalift import DeepLift
    attributions, delta = DeepLift(model.eval()).attribute(
        inputs, baselines=0.0, target=3, return_convergence_delta=True)
"""

from deltalift import rules
from deltalift.capture import clear_cache
from deltalift.errors import (
    CaptureError,
    ConvergenceError,
    ConvergenceWarning,
    DeltaliftError,
    MissingRuleError,
    UnsupportedOperationError,
)
from deltalift.methods import (
    LRP,
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    InternalInfluence,
    LayerDeepLift,
    LayerGradCam,
    NeuronDeepLift,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from deltalift.rules import register_rule

__version__ = "0.1.0"

__all__ = [
    "DeepLift",
    "DeepLiftShap",
    "Deconvolution",
    "GuidedBackprop",
    "GuidedGradCam",
    "InputXGradient",
    "IntegratedGradients",
    "InternalInfluence",
    "LayerGradCam",
    "LRP",
    "NoiseTunnel",
    "Occlusion",
    "Saliency",
    "LayerDeepLift",
    "NeuronDeepLift",
    "register_rule",
    "rules",
    "clear_cache",
    "CaptureError",
    "ConvergenceError",
    "ConvergenceWarning",
    "DeltaliftError",
    "MissingRuleError",
    "UnsupportedOperationError",
]
