"""The one table of attribution methods by name, shared by ``deltalift explain`` and :func:`deltalift.explain`.

Each :class:`MethodSpec` maps a name (``"deeplift"``, ``"ig"``, ``"gradcam"``, ...) and the
common :class:`MethodOptions` to a deltalift class and its arguments.  Every method is run the
same way, :func:`MethodSpec.build` giving a function ``(inputs, baseline, target) ->
(attributions, delta or None)``, so that all methods see the same inputs, references and targets.

The methods and the papers they come from:

- ``deeplift``: :class:`~deltalift.DeepLift` with ``rule`` (Shrikumar et al. 2017, sections
  3.5-3.6: Rescale, RevealCancel); delta ``sum_i C_i - (t(x) - t(x0))``.
- ``deeplift-shap``: :class:`~deltalift.DeepLiftShap`, the mean of DeepLIFT over a background
  (Lundberg & Lee 2017, section 4.2) that does not depend on the other inputs: the rows of a
  reference of several rows ``(K, ...)``, else ``shap_references`` draws of the reference plus
  seeded Gaussian noise (:meth:`Context.shap_background`); delta averaged over the references.
- ``gradient-shap``: :class:`~deltalift.GradientShap` on the same background (Lundberg & Lee 2017),
  ``nt_samples`` draws per example, example ``i`` seeded with ``seed + i`` (so the result does
  not depend on the batch size).
- ``ig``: :class:`~deltalift.IntegratedGradients` with ``n_steps`` (Sundararajan et al. 2017,
  section 3); delta ``sum_i IG_i - (t(x) - t(x0))``.
- ``saliency`` (Simonyan et al. 2014, section 3.1), ``input-x-gradient`` (Shrikumar et al. 2016).
- ``smoothgrad``, ``smoothgrad-sq``, ``vargrad``: :class:`~deltalift.NoiseTunnel` over the
  signed gradient with ``nt_samples`` noisy copies of standard deviation ``stdevs`` (or
  ``noise_fraction`` of each input's range), example ``i`` seeded with ``seed + i`` (Smilkov et
  al. 2017, section 3; Adebayo et al. 2018).
- ``guided-backprop`` (Springenberg et al. 2015), ``deconvolution`` (Zeiler & Fergus 2014).
- ``gradcam`` (upsampled bilinearly to the input's size) and ``guided-gradcam`` at ``layer``
  (default: the last convolution module to run in the forward, else the last convolution of the captured graph, as
  ``"node:NAME"``; ``--layer`` takes a module path or ``node:NAME``) (Selvaraju et al. 2017, section 3).
- ``occlusion``: windows of ``window`` pixels (all channels) every ``stride`` pixels, replaced by
  the reference (Zeiler & Fergus 2014, section 4.2).
- ``lrp-epsilon``, ``lrp-epsilon-plus``, ``lrp-alpha-beta`` (alpha 2, beta 1),
  ``lrp-epsilon-plus-flat``, ``lrp-epsilon-alpha2-beta1-flat``, ``lrp-epsilon-gamma-box`` (bounds:
  the inputs' minimum and maximum): :class:`~deltalift.LRP` with the composites of
  :mod:`deltalift.methods.lrp.composites` (Bach et al. 2015; Montavon et al. 2019); delta
  ``sum_i R_i - t(x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.methods import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
    interpolate,
)
from deltalift.methods.lrp import LRP
from deltalift.methods.lrp.composites import EpsilonGammaBox
from deltalift.plan import RULE_CHOICES

__all__ = [
    "METHODS",
    "MethodOptions",
    "MethodSpec",
    "last_conv_layer",
    "last_conv_node",
    "method_names",
    "parse_methods",
]

Tensor = torch.Tensor
Baseline = float | Tensor
#: ``(inputs, baseline, target) -> (attributions shaped like the inputs, per-example delta or None)``
Attribute = Callable[[Tensor, Baseline, Tensor | None], tuple[Tensor, Tensor | None]]


@dataclass
class MethodOptions:
    """The options of the methods, one set shared by all of them (each reads its own).

    Attributes
    ----------
    rule:
        DeepLIFT's nonlinearity rule: ``"rescale"``, ``"reveal_cancel"`` or ``"genomics_default"``
        (also used by ``deeplift-shap``).
    n_steps:
        Integrated Gradients' quadrature nodes.
    nt_samples:
        Noisy copies per example of the NoiseTunnel methods.
    stdevs:
        Standard deviation of their Gaussian noise; ``None``: ``noise_fraction`` of each
        example's input range.
    noise_fraction:
        Noise as a fraction of ``max - min`` of each example (SmoothGrad's 10-20 %), used when
        ``stdevs`` is ``None``.
    layer:
        Module path of the Grad-CAM layer (``"features.7"``); ``None``: the last convolution module run.
    window, stride:
        Occlusion's window side and step, in pixels (or positions); ``stride=None``: the window.
    shap_references:
        Noisy copies of the reference forming the background of ``deeplift-shap`` and
        ``gradient-shap`` (drawn with ``seed``), unless the reference has several rows.
    seed:
        Seed of every random draw (noise, background sample).
    """

    rule: str = "rescale"
    n_steps: int = 50
    nt_samples: int = 10
    stdevs: float | None = None
    noise_fraction: float = 0.15
    layer: str | None = None
    window: int = 4
    stride: int | None = None
    shap_references: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in RULE_CHOICES:
            raise ValueError(f"rule must be one of {', '.join(RULE_CHOICES)}, got {self.rule!r}")
        for name in ("n_steps", "nt_samples", "window", "shap_references"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.stride is not None and (not isinstance(self.stride, int) or not 1 <= self.stride <= self.window):
            raise ValueError(f"stride must be between 1 and the window ({self.window}), got {self.stride!r}")
        if self.stdevs is not None and not self.stdevs > 0:
            raise ValueError(f"stdevs must be positive, got {self.stdevs!r}")
        if not 0 < self.noise_fraction:
            raise ValueError(f"noise_fraction must be positive, got {self.noise_fraction!r}")


@dataclass
class Context:
    """What a method may need beyond one batch: the model, all the inputs, the options."""

    model: nn.Module
    inputs: Tensor
    options: MethodOptions
    batch_size: int = 64
    #: The reference (``--baseline``): a number, or a tensor that broadcasts to the inputs.
    reference: Baseline = 0.0
    #: A background ``(K, ...)`` shared by every example, overriding :meth:`shap_background`.
    background: Tensor | None = None

    def _several_references(self) -> bool:
        reference = self.reference
        return isinstance(reference, Tensor) and reference.ndim == self.inputs.ndim and len(reference) > 1

    def shap_background(self, x: Tensor) -> Tensor:
        """The background of ``deeplift-shap`` and ``gradient-shap`` for the examples ``x``.

        SHAP values are expectations over a background distribution of references (Lundberg &
        Lee 2017, section 4.2, DeepLIFT averaged over a background sample).  Here the background
        never depends on the other inputs explained with ``x`` and never contains the example:

        - :attr:`background`, when given: that ``(K, ...)``, shared by every example;
        - a reference of several rows ``(K, ...)`` (a ``--baseline`` file): those ``K`` rows, shared;
        - otherwise the reference ``x0`` (a number, or one row) plus Gaussian noise, the "Gaussian
          baseline" of Sturmfels, Lundberg & Lee (2020): ``b_{i,k} = x0 + s_i * eps_k``, ``k < K =
          shap_references``, ``eps_k ~ N(0, I)`` drawn with ``seed`` by
          :func:`deltalift.references.noise` (the same ``eps_k`` for every example), ``s_i =
          stdevs``, else ``noise_fraction * (max x_i - min x_i)``; shape ``(len(x), K, ...)``.
        """
        if self.background is not None:
            return self.background
        if self._several_references():
            assert isinstance(self.reference, Tensor)
            return self.reference.to(device=x.device, dtype=x.dtype)
        from deltalift import references

        options = self.options
        center = torch.as_tensor(self.reference, dtype=x.dtype, device=x.device).expand_as(x)
        rows = []
        for i in range(len(x)):
            std = (
                options.stdevs
                if options.stdevs is not None
                else options.noise_fraction * float(x[i].max() - x[i].min())
            )
            rows.append(references.noise(center[i : i + 1].contiguous(), options.shap_references, std, options.seed)[0])
        return torch.stack(rows)

    def shap_settings(self) -> dict[str, Any]:
        """What :meth:`shap_background` uses, for the reports."""
        options = self.options
        if self.background is not None:
            return {"background": f"given ({len(self.background)} references)"}
        if self._several_references():
            return {"background": f"the reference's {len(self.reference)} rows"}  # type: ignore[arg-type]
        std = options.stdevs if options.stdevs is not None else f"{options.noise_fraction} x each example's range"
        return {
            "background": "reference + Gaussian noise",
            "references": options.shap_references,
            "noise_std": std,
            "background_seed": options.seed,
        }


@dataclass(frozen=True)
class MethodSpec:
    """One method of the table: its name, title, and how to build it.

    Attributes
    ----------
    name:
        The command line's name (``--method NAME``), also the file suffix
        (``attributions-NAME.npy``).
    title:
        What figures and reports call it.
    make:
        ``(context) -> (attribute function, settings)``.
    aliases:
        Other names accepted for it.
    uses_baseline:
        Whether the reference (``--baseline``) enters the method.
    delta:
        What the method's convergence delta is, or ``""`` when it has none.
    """

    name: str
    title: str
    make: Callable[[Context], tuple[Attribute, dict[str, Any]]] = field(repr=False)
    aliases: tuple[str, ...] = ()
    uses_baseline: bool = False
    delta: str = ""

    def build(self, context: Context) -> tuple[Attribute, dict[str, Any]]:
        """The method's attribute function and its settings (for reports)."""
        return self.make(context)


def last_conv_layer(model: nn.Module, inputs: Tensor) -> str:
    """The module path of the last ``nn.Conv1d/2d/3d`` of ``model`` in the forward on ``inputs``.

    Grad-CAM weighs the feature maps of "the last convolutional layer", those with the
    highest-level semantics (Selvaraju et al. 2017, section 3).  Registration order
    (``named_modules``) is not the forward's, and the forward's last call may be a side branch:
    in torchvision's ResNet the shortcut's 1x1 convolution ``layer4.0.downsample.0`` is
    registered (one block per stage) or run after the main path's ``layer4.0.conv2``.  So the
    graph that :func:`deltalift.capture.capture` records on ``inputs[:1]`` is read: among the
    convolution nodes that the output depends on, the one with the most convolutions before it
    on a path from the inputs (the deepest), the last in execution order among equals, mapped to
    its module by the node's ``nn_module_stack``.  ``resnet18`` gives ``layer4.1.conv2``, the
    one-block-per-stage ResNet ``layer4.0.conv2``.  The model is not changed.

    Raises
    ------
    ValueError
        No convolution module in the graph: name the layer (or see :func:`last_conv_node`).
    """
    from deltalift.capture import capture

    modules = dict(model.named_modules())
    if not any(isinstance(module, nn.modules.conv._ConvNd) for module in modules.values()):
        raise ValueError("the model has no convolution layer for Grad-CAM: name one with --layer PATH (layer=...)")
    graph = capture(model, (inputs[:1],), 1).graph
    nodes = list(graph.nodes)
    needed: set[torch.fx.Node] = set()
    stack = [node for node in nodes if node.op == "output"]
    while stack:
        node = stack.pop()
        if node not in needed:
            needed.add(node)
            stack.extend(node.all_input_nodes)
    depth: dict[torch.fx.Node, int] = {}
    best: tuple[int, int, str] | None = None
    for order, node in enumerate(nodes):
        before = max((depth[n] for n in node.all_input_nodes if n in depth), default=0)
        depth[node] = before
        if node.op != "call_function" or "conv" not in getattr(node.target, "__name__", str(node.target)):
            continue
        depth[node] = before + 1
        stack_meta = list(node.meta.get("nn_module_stack", {}).values())
        path = stack_meta[-1][0] if stack_meta else None
        if node in needed and isinstance(modules.get(path), nn.modules.conv._ConvNd):
            assert path is not None
            best = max(best or (0, -1, ""), (depth[node], order, path))
    if best is None:
        raise ValueError("the model has no convolution layer for Grad-CAM: name one with --layer PATH (layer=...)")
    return best[2]


def last_conv_node(model: nn.Module, inputs: Tensor) -> str:
    """``"node:NAME"``: the last convolution of the graph deltalift captures from ``model`` on ``inputs``,
    for models whose convolutions are not modules (exported programs, ``.pt2``).

    Raises
    ------
    ValueError
        The graph has no convolution either: name the layer.
    """
    from deltalift.capture import capture

    program = capture(model, (inputs[:1],), 1)
    found = [
        node.name
        for node in program.graph.nodes
        if node.op == "call_function" and "conv" in getattr(node.target, "__name__", str(node.target))
    ]
    if not found:
        raise ValueError("the model has no convolution for Grad-CAM: name a layer with --layer PATH (layer=...)")
    return "node:" + found[-1]


def _layer(context: Context) -> str:
    """``--layer``, else the last convolution module, else the last convolution of the captured graph."""
    modules = dict(context.model.named_modules())
    layer = context.options.layer
    if layer is None:
        try:
            return last_conv_layer(context.model, context.inputs)
        except ValueError:
            return last_conv_node(context.model, context.inputs)
    if layer not in modules and not layer.startswith("node:"):
        raise ValueError(f"--layer {layer!r} is not a module of the model; e.g. {', '.join(list(modules)[1:6])}")
    return layer


def _grad_cam_mode(inputs: Tensor) -> str:
    return {3: "linear", 4: "bilinear", 5: "trilinear"}.get(inputs.ndim, "nearest")


def _deeplift(context: Context) -> tuple[Attribute, dict[str, Any]]:
    method = DeepLift(context.model, rule=context.options.rule, reuse_reference=True)  # one reference, every batch

    def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
        a, d = method.attribute(x, baselines=baseline, target=target, return_convergence_delta=True)
        return a, d

    return attribute, {"rule": context.options.rule}


def _deeplift_shap(context: Context) -> tuple[Attribute, dict[str, Any]]:
    method = DeepLiftShap(context.model, rule=context.options.rule, batch_size=context.batch_size)

    def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
        background = context.shap_background(x)  # (K, ...) shared or (len(x), K, ...)
        a, d = method.attribute(x, baselines=background, target=target, return_convergence_delta=True)
        return a, d.reshape(len(x), -1).mean(1)

    return attribute, {"rule": context.options.rule, **context.shap_settings()}


def _gradient_shap(context: Context) -> tuple[Attribute, dict[str, Any]]:
    method = GradientShap(context.model)
    options = context.options

    done = 0  # examples explained so far: example i draws with seed + i, whatever the batches

    def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
        nonlocal done
        rows = []
        background = context.shap_background(x)
        shared = background.ndim == x.ndim  # (K, ...) for every example, else (len(x), K, ...)
        numpy_state = np.random.get_state()  # GradientShap draws with numpy's and torch's global generators
        try:
            for i in range(len(x)):
                with torch.random.fork_rng(devices=[]):
                    np.random.seed(options.seed + done + i)
                    torch.manual_seed(options.seed + done + i)
                    row_target = None if target is None else target[i : i + 1]
                    rows.append(
                        method.attribute(
                            x[i : i + 1],
                            baselines=background if shared else background[i],
                            n_samples=options.nt_samples,
                            target=row_target,
                        )
                    )
        finally:
            np.random.set_state(numpy_state)
        done += len(x)
        return torch.cat(rows), None

    return attribute, {
        **context.shap_settings(),
        "n_samples": options.nt_samples,
        "seed": f"{options.seed} + example index",
    }


def _integrated_gradients(context: Context) -> tuple[Attribute, dict[str, Any]]:
    method = IntegratedGradients(context.model)
    n_steps = context.options.n_steps

    def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
        a, d = method.attribute(x, baselines=baseline, target=target, n_steps=n_steps, return_convergence_delta=True)
        return a, d

    return attribute, {"n_steps": n_steps, "method": "gausslegendre"}


def _gradient_method(cls: Any, **kwargs: Any) -> Callable[[Context], tuple[Attribute, dict[str, Any]]]:
    def make(context: Context) -> tuple[Attribute, dict[str, Any]]:
        method = cls(context.model)

        def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
            return method.attribute(x, target=target, **kwargs), None

        return attribute, dict(kwargs)

    return make


def _noise_tunnel(nt_type: str) -> Callable[[Context], tuple[Attribute, dict[str, Any]]]:
    def make(context: Context) -> tuple[Attribute, dict[str, Any]]:
        options = context.options
        method = NoiseTunnel(Saliency(context.model))
        noise: dict[str, Any] = (
            {"stdevs": options.stdevs} if options.stdevs is not None else {"noise_fraction": options.noise_fraction}
        )

        done = 0  # examples explained so far: example i draws with seed + i, whatever the batches

        def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
            nonlocal done
            rows = [
                method.attribute(
                    x[i : i + 1],
                    nt_type=nt_type,
                    nt_samples=options.nt_samples,
                    random_state=options.seed + done + i,
                    target=None if target is None else target[i : i + 1],
                    abs=False,
                    **noise,
                )
                for i in range(len(x))
            ]
            done += len(x)
            return torch.cat(rows), None

        settings = {"base": "saliency (abs=False)", "nt_samples": options.nt_samples, **noise}
        return attribute, {**settings, "seed": f"{options.seed} + example index"}

    return make


def _grad_cam(context: Context) -> tuple[Attribute, dict[str, Any]]:
    layer = _layer(context)
    method = LayerGradCam(context.model, layer)

    def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
        cam = method.attribute(x, target=target)
        if isinstance(cam, tuple):
            raise ValueError(f"the Grad-CAM layer {layer!r} has several activation tensors; name another --layer")
        if cam.ndim == x.ndim and cam.ndim >= 3:
            cam = interpolate(cam, tuple(x.shape[2:]), _grad_cam_mode(x))
        return cam, None

    return attribute, {"layer": layer, "upsampling": _grad_cam_mode(context.inputs), "relu": False}


def _guided_grad_cam(context: Context) -> tuple[Attribute, dict[str, Any]]:
    layer = _layer(context)
    method = GuidedGradCam(context.model, layer)

    def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return method.attribute(x, target=target), None

    return attribute, {"layer": layer, "interpolate_mode": "nearest"}


def occlusion_window(shape: Sequence[int], side: int) -> tuple[int, ...]:
    """The window over one example of ``shape`` (no batch): all of dimension 0 (the channels) and
    ``side`` (at most the dimension) along each further one; ``(side,)`` for a vector."""
    if len(shape) == 1:
        return (min(side, shape[0]),)
    return (shape[0],) + tuple(min(side, n) for n in shape[1:])


def _occlusion(context: Context) -> tuple[Attribute, dict[str, Any]]:
    options = context.options
    method = Occlusion(context.model)
    shape = tuple(context.inputs.shape[1:])
    window = occlusion_window(shape, options.window)
    stride = occlusion_window(shape, options.stride or options.window)

    def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
        a = method.attribute(x, sliding_window_shapes=window, strides=stride, baselines=baseline, target=target)
        assert isinstance(a, Tensor)  # one input tensor, one attribution tensor
        return a, None

    return attribute, {"window": window, "strides": stride}


def _lrp(composite: str) -> Callable[[Context], tuple[Attribute, dict[str, Any]]]:
    def make(context: Context) -> tuple[Attribute, dict[str, Any]]:
        settings: dict[str, Any] = {"composite": composite}
        if composite == "epsilon_gamma_box":
            low, high = float(context.inputs.min()), float(context.inputs.max())
            method = LRP(context.model, EpsilonGammaBox(low=low, high=high))
            settings.update(low=low, high=high)
        else:
            method = LRP(context.model, composite)

        def attribute(x: Tensor, baseline: Baseline, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
            a, d = method.attribute(x, target=target, return_convergence_delta=True)
            return a, d

        return attribute, settings

    return make


DEEPLIFT_DELTA = "sum of attributions - (t(x) - t(x0))"
LRP_DELTA = "sum of relevances - t(x)"

#: Every method by its command line name, in the order of ``--help``.
METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("deeplift", "DeepLIFT", _deeplift, uses_baseline=True, delta=DEEPLIFT_DELTA),
        MethodSpec(
            "deeplift-shap",
            "DeepLIFT-SHAP",
            _deeplift_shap,
            uses_baseline=True,
            delta=DEEPLIFT_DELTA + ", mean over references",
        ),
        MethodSpec("gradient-shap", "GradientSHAP", _gradient_shap, uses_baseline=True),
        MethodSpec(
            "ig",
            "Integrated Gradients",
            _integrated_gradients,
            ("integrated-gradients",),
            uses_baseline=True,
            delta=DEEPLIFT_DELTA,
        ),
        MethodSpec("saliency", "Saliency", _gradient_method(Saliency, abs=True)),
        MethodSpec("input-x-gradient", "Input x Gradient", _gradient_method(InputXGradient)),
        MethodSpec("smoothgrad", "SmoothGrad", _noise_tunnel("smoothgrad")),
        MethodSpec("smoothgrad-sq", "SmoothGrad-Sq", _noise_tunnel("smoothgrad_sq")),
        MethodSpec("vargrad", "VarGrad", _noise_tunnel("vargrad")),
        MethodSpec("guided-backprop", "Guided Backprop", _gradient_method(GuidedBackprop)),
        MethodSpec("deconvolution", "Deconvolution", _gradient_method(Deconvolution)),
        MethodSpec("gradcam", "Grad-CAM", _grad_cam, ("grad-cam",)),
        MethodSpec("guided-gradcam", "Guided Grad-CAM", _guided_grad_cam, ("guided-grad-cam",)),
        MethodSpec("occlusion", "Occlusion", _occlusion, uses_baseline=True),
        MethodSpec("lrp-epsilon", "LRP-epsilon", _lrp("epsilon"), ("lrp",), delta=LRP_DELTA),
        MethodSpec("lrp-epsilon-plus", "LRP epsilon-plus", _lrp("epsilon_plus"), delta=LRP_DELTA),
        MethodSpec(
            "lrp-alpha-beta",
            "LRP epsilon-alpha2-beta1",
            _lrp("epsilon_alpha2_beta1"),
            ("lrp-epsilon-alpha2-beta1",),
            delta=LRP_DELTA,
        ),
        MethodSpec("lrp-epsilon-plus-flat", "LRP epsilon-plus-flat", _lrp("epsilon_plus_flat"), delta=LRP_DELTA),
        MethodSpec(
            "lrp-epsilon-alpha2-beta1-flat",
            "LRP epsilon-alpha2-beta1-flat",
            _lrp("epsilon_alpha2_beta1_flat"),
            delta=LRP_DELTA,
        ),
        MethodSpec("lrp-epsilon-gamma-box", "LRP epsilon-gamma-box", _lrp("epsilon_gamma_box"), delta=LRP_DELTA),
    )
}

_BY_ALIAS = {alias: spec for spec in METHODS.values() for alias in spec.aliases}


def method_names() -> list[str]:
    """The methods' names, as ``--method`` takes them."""
    return list(METHODS)


def parse_methods(methods: str | Sequence[str]) -> list[MethodSpec]:
    """The specs of ``"deeplift,ig,gradcam"`` or ``["deeplift", "ig"]`` (case-insensitive, ``_`` as ``-``).

    Raises
    ------
    ValueError
        An unknown name (the message lists the known ones), a name given twice, or no name.
    """
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    specs: list[MethodSpec] = []
    for raw in names:
        if not isinstance(raw, str):
            raise TypeError(f"method names must be strings, got {type(raw).__name__}")
        name = raw.strip().lower().replace("_", "-")
        if not name:
            continue
        spec = METHODS.get(name) or _BY_ALIAS.get(name)
        if spec is None:
            raise ValueError(f"unknown method {raw.strip()!r}; methods: {', '.join(METHODS)}")
        if spec in specs:
            raise ValueError(f"method {spec.name!r} is given twice")
        specs.append(spec)
    if not specs:
        raise ValueError(f"no method given; methods: {', '.join(METHODS)}")
    return specs


def options_settings(options: MethodOptions) -> dict[str, Any]:
    """The options as a plain dict."""
    return asdict(options)
