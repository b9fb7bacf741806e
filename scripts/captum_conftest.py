"""conftest.py for running Captum's own tests (tests/attr/...) against deltalift's classes.

``scripts/peer_suites.sh`` copies this file next to Captum's tests.  Every Captum class that
deltalift offers is replaced, in the Captum module that defines it and in ``captum.attr``, by
deltalift's class of the same name, before the test modules import it; the tests then run
unchanged.  Names deltalift does not offer stay Captum's.
"""

from __future__ import annotations

import importlib

import captum.attr

import deltalift.methods

#: Captum module -> the class names it defines that deltalift may offer.
CAPTUM_HOMES = {
    "captum.attr._core.deep_lift": ["DeepLift", "DeepLiftShap"],
    "captum.attr._core.saliency": ["Saliency"],
    "captum.attr._core.input_x_gradient": ["InputXGradient"],
    "captum.attr._core.integrated_gradients": ["IntegratedGradients"],
    "captum.attr._core.noise_tunnel": ["NoiseTunnel"],
    "captum.attr._core.guided_backprop_deconvnet": ["GuidedBackprop", "Deconvolution"],
    "captum.attr._core.guided_grad_cam": ["GuidedGradCam"],
    "captum.attr._core.occlusion": ["Occlusion"],
    "captum.attr._core.gradient_shap": ["GradientShap"],
    "captum.attr._core.lrp": ["LRP"],
    "captum.attr._core.layer.grad_cam": ["LayerGradCam"],
    "captum.attr._core.layer.internal_influence": ["InternalInfluence"],
    "captum.attr._core.layer.layer_deep_lift": ["LayerDeepLift", "LayerDeepLiftShap"],
    "captum.attr._core.layer.layer_integrated_gradients": ["LayerIntegratedGradients"],
    "captum.attr._core.layer.layer_activation": ["LayerActivation"],
    "captum.attr._core.layer.layer_gradient_x_activation": ["LayerGradientXActivation"],
    "captum.attr._core.neuron.neuron_deep_lift": ["NeuronDeepLift", "NeuronDeepLiftShap"],
    "captum.attr._core.neuron.neuron_guided_backprop_deconvnet": ["NeuronGuidedBackprop", "NeuronDeconvolution"],
}

SWAPPED: list[str] = []
for module_name, names in CAPTUM_HOMES.items():
    module = importlib.import_module(module_name)
    for name in names:
        ours = getattr(deltalift.methods, name, None)
        if ours is None:
            continue
        setattr(module, name, ours)
        setattr(captum.attr, name, ours)
        SWAPPED.append(name)


def pytest_report_header(config: object) -> str:
    return "deltalift swapped in for Captum's " + ", ".join(sorted(SWAPPED))
