"""Attribution methods, one small class each, with Captum's interface."""

from deltalift.methods.deeplift import DeepLift
from deltalift.methods.deeplift_shap import DeepLiftShap
from deltalift.methods.layer_deeplift import LayerDeepLift, NeuronDeepLift

__all__ = ["DeepLift", "DeepLiftShap", "LayerDeepLift", "NeuronDeepLift"]
