"""Attribution methods, one small class each, with Captum's interface."""

from deltalift.methods.deeplift import DeepLift
from deltalift.methods.deeplift_shap import DeepLiftShap
from deltalift.methods.grad_cam import GuidedGradCam, LayerGradCam, interpolate
from deltalift.methods.gradient_shap import GradientShap
from deltalift.methods.gradients import InputXGradient, Saliency
from deltalift.methods.guided import Deconvolution, GuidedBackprop
from deltalift.methods.integrated_gradients import IntegratedGradients
from deltalift.methods.internal_influence import InternalInfluence
from deltalift.methods.layer_attribution import LayerActivation, LayerGradientXActivation, LayerIntegratedGradients
from deltalift.methods.layer_deeplift import LayerDeepLift, NeuronDeepLift
from deltalift.methods.layer_deeplift_shap import LayerDeepLiftShap, NeuronDeepLiftShap
from deltalift.methods.lrp import LRP
from deltalift.methods.neuron_guided import NeuronDeconvolution, NeuronGuidedBackprop
from deltalift.methods.noise_tunnel import NoiseTunnel
from deltalift.methods.occlusion import Occlusion

__all__ = [
    "DeepLift",
    "DeepLiftShap",
    "Deconvolution",
    "GradientShap",
    "GuidedBackprop",
    "GuidedGradCam",
    "InputXGradient",
    "IntegratedGradients",
    "InternalInfluence",
    "LRP",
    "LayerActivation",
    "LayerDeepLift",
    "LayerDeepLiftShap",
    "LayerGradCam",
    "LayerGradientXActivation",
    "LayerIntegratedGradients",
    "NeuronDeconvolution",
    "NeuronDeepLift",
    "NeuronDeepLiftShap",
    "NeuronGuidedBackprop",
    "NoiseTunnel",
    "Occlusion",
    "Saliency",
    "interpolate",
]
