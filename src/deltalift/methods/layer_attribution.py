"""Layer attributions with Captum's interfaces: ``LayerActivation``, ``LayerGradientXActivation``
and ``LayerIntegratedGradients``.

For a layer activation ``z(x)`` (output or, with ``attribute_to_layer_input``, input of the layer)
and target ``t``:

* ``LayerActivation``: ``z(x)`` itself.
* ``LayerGradientXActivation`` (gradient x input at a layer; Shrikumar et al. 2016, "Not Just a
  Black Box"): ``z_j(x) * dt/dz_j (x)``, or the gradient alone with ``multiply_by_inputs=False``.
* ``LayerIntegratedGradients`` (Integrated Gradients, Sundararajan, Taly & Yan, ICML 2017, at a
  layer; Captum's semantics): the layer's activation is interpolated between its value for the
  baselines and for the inputs, ``z(a) = z(x0) + a (z(x) - z(x0))``, the rest of the network runs
  from ``z(a)``, and::

      LIG_j(x) = (z_j(x) - z_j(x0)) * int_0^1 dt/dz_j (z(a)) da
               ~ (z_j(x) - z_j(x0)) * sum_k w_k dt/dz_j (z(a_k))

  with the quadrature ``(a_k, w_k)`` of :mod:`deltalift.methods.integrated_gradients`.  The
  integral is over the layer's activations, not over the inputs, so the inputs may be integer
  token ids: the usual way to explain a text model is ``LayerIntegratedGradients(model,
  model.embedding)``, the layer's output being float.  Completeness holds for the layer when
  every path from the inputs to the output runs through it, ``sum_j LIG_j = t(x) - t(x0)`` up to
  the quadrature's error (the convergence delta).

The activations are read (and, for Integrated Gradients, replaced) in the captured ATen graph, so
the layer may be a module, a module path (``"features.3"``) or a graph node name (``"linear_1"``,
``"embedding"``): functional layers and one call of a reused module can be chosen.  Along the
path, the inputs are repeated once per step (step-major, as Captum), so sizes the model reads
from the batch stay consistent, and the layer's node is given the interpolated activations.
Paths that bypass the layer see the actual inputs, as with Captum's hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.fx.node import map_arg

from deltalift.convergence import per_example_sum
from deltalift.engine import run_plain, walk_graph
from deltalift.inputs import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    as_tuple,
    check_baselines,
    check_grad_kwargs,
    select_target,
)
from deltalift.layers import LayerSites, LayerType, capture_with_layer_list, eager_layer_values
from deltalift.methods.base import AttributionMethod, Model
from deltalift.methods.grad_cam import _check_layer, _no_device_ids, interpolate
from deltalift.methods.integrated_gradients import integrate_gradients

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------------
# walks at a layer, with inputs of any dtype (token ids too)


def layer_list(layer: Any) -> tuple[list[LayerType], bool]:
    """The layers of a method (Captum's ``layer``: one, or a list of them) and whether a list was
    given (then the results are a list, one entry per layer)."""
    given_list = isinstance(layer, (list, tuple))
    layers = list(layer) if given_list else [layer]
    if given_list and not layers:
        raise ValueError("layer is an empty list; pass a layer or a list of layers")
    for one in layers:
        _check_layer(one)
    return layers, given_list


def per_layer(values: list[tuple[Tensor, ...]], given_list: bool) -> Any:
    """Captum's result shape: per layer a tensor, or a tuple for a layer with several tensors;
    a list of these for a list of layers."""
    shaped = [v[0] if len(v) == 1 else v for v in values]
    return shaped if given_list else shaped[0]


def _sites(
    module: nn.Module, inputs: tuple[Tensor, ...], extra: tuple[Any, ...], layers: list[LayerType], layer_input: bool
) -> LayerSites:
    return capture_with_layer_list(module, inputs + extra, inputs[0].shape[0], layers, len(inputs), layer_input)


def layer_activations(
    module: nn.Module, inputs: tuple[Tensor, ...], extra: tuple[Any, ...], layers: list[LayerType], layer_input: bool
) -> list[tuple[Tensor, ...]]:
    """Each layer's output (or input) activations for ``inputs``, in one walk without autograd; a
    layer the output does not use is read from the model run as it is."""
    sites = _sites(module, inputs, extra, layers, layer_input)
    recorded: dict[torch.fx.Node, Any] = {}

    def keep(node: torch.fx.Node) -> Callable[[Any], Any]:
        def record(value: Any) -> Any:
            recorded[node] = value
            return value

        return record

    taps = [(node, keep(node)) for nodes in sites.nodes for node in nodes]
    last = max((node for node, _ in taps), key=list(sites.program.graph.nodes).index, default=None)
    if taps:
        with torch.no_grad():
            run_plain(sites.program, module, list(inputs) + list(extra), tap=taps, until=last)
    return [
        eager_layer_values(module, sites.unused[i], inputs + extra, layer_input)[0]
        if i in sites.unused
        else tuple(recorded[node] for node in nodes)
        for i, nodes in enumerate(sites.nodes)
    ]


def layer_gradients(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    extra: tuple[Any, ...],
    layers: list[LayerType],
    layer_input: bool,
    target: TargetType,
    replace: Callable[[int, Tensor], Tensor] | None = None,
    grad_kwargs: dict[str, Any] | None = None,
) -> tuple[list[tuple[Tensor, ...]], list[tuple[Tensor, ...]]]:
    """Each layer's activations (detached) and ``dt/dz`` there, from one walk and one backward.

    ``dt/dz`` is the total derivative, also through the other layers of the list (Captum's hooks
    read it so): each activation gets a zero leaf added, ``z + 0``, and the gradient is taken at
    the leaves.  ``replace(k, value)`` instead maps the ``k``-th activation (counted over the
    layers in order) that the inputs give to a fresh leaf the rest of the graph runs from (the path
    points of Integrated Gradients, whose layers must be independent).  An activation that two
    layers of a list share (the same tensor entering both) gets a leaf per layer, each read by its
    own layer's operations only, as Captum's per-module hooks see it.
    ``grad_kwargs`` go to ``torch.autograd.grad``; a layer the output does not use has a zero
    gradient with ``{"materialize_grads": True}`` (Captum's option) and is refused otherwise.
    """
    options = check_grad_kwargs(grad_kwargs)
    sites = _sites(module, inputs, extra, layers, layer_input)
    if sites.unused and not options.get("materialize_grads"):
        path = next(iter(sites.unused.values()))
        raise ValueError(
            f"layer {path} is not used by the model's output, so its gradient is zero. Pass "
            "grad_kwargs={'materialize_grads': True} to get zeros (as Captum), or choose a layer the output uses"
        )
    # one leaf per (layer, activation): an activation two layers share (an input entering both)
    # gets one per layer, and each layer's own uses of it read that layer's version
    order = [(i, node) for i, nodes in enumerate(sites.nodes) for node in nodes]
    owners: dict[torch.fx.Node, list[tuple[int, int]]] = {}
    for k, (i, node) in enumerate(order):
        owners.setdefault(node, []).append((k, i))
    reads: dict[torch.fx.Node, dict[torch.fx.Node, int]] = {}  # user -> {shared activation -> k}
    for node, keys in owners.items():
        for k, i in keys if len(keys) > 1 else ():
            for user in sites.consumers(i, node):
                if node in reads.setdefault(user, {}):
                    raise ValueError(
                        f"{user.name} belongs to two layers of the list that both take {node.name}; "
                        "pass these layers in separate calls"
                    )
                reads[user][node] = k
    leaves: list[Tensor | None] = [None] * len(order)
    versions: list[Tensor | None] = [None] * len(order)
    values: dict[torch.fx.Node, Tensor] = {}

    def version(k: int, node: torch.fx.Node, value: Any) -> Tensor:
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise ValueError(f"the chosen layer's activation ({node.name}) is not a floating tensor")
        values[node] = value.detach()
        if replace is not None:
            leaf = replace(k, value).detach().requires_grad_(True)
            leaves[k] = versions[k] = leaf
        else:
            leaf = torch.zeros_like(value, requires_grad=True)
            leaves[k], versions[k] = leaf, value + leaf
        return versions[k]  # type: ignore[return-value]

    def tap_for(node: torch.fx.Node) -> Callable[[Any], Any]:
        keys = [k for k, _ in owners[node]]

        def tap(value: Any) -> Any:
            made = [version(k, node, value) for k in keys]
            return made[0] if len(keys) == 1 else value  # shared: other users see the value itself

        return tap

    def evaluate(node: torch.fx.Node, args: Any, kwargs: Any, env: dict[torch.fx.Node, Any]) -> Any:
        own = reads.get(node)
        if own:
            pick = lambda a: versions[own[a]] if a in own else env[a]  # noqa: E731
            args, kwargs = map_arg(node.args, pick), map_arg(node.kwargs, pick)
        return node.target(*args, **kwargs)  # type: ignore[operator]

    with torch.enable_grad():
        user_args = list(inputs) + list(extra)
        outputs = walk_graph(sites.program, module, user_args, evaluate, tap=[(n, tap_for(n)) for n in owners])
        if len(outputs) != 1:
            raise ValueError(f"the model returns {len(outputs)} tensors; explain a model with one output tensor")
        t = select_target(outputs[0], target, inputs[0].shape[0])
        wanted = [leaf for leaf in leaves if leaf is not None]
        if len(wanted) != len(leaves):
            raise ValueError("a layer's activation was not reached by the walk over the captured graph")
        grads = torch.autograd.grad(t.sum(), wanted, **{"allow_unused": True, **options}) if wanted else ()
    gradient_at = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(wanted, grads)]
    keys_of = [[k for k, (j, _) in enumerate(order) if j == i] for i in range(len(sites.nodes))]
    activations: list[tuple[Tensor, ...]] = []
    gradients: list[tuple[Tensor, ...]] = []
    for i, nodes in enumerate(sites.nodes):
        if i in sites.unused:
            eager = eager_layer_values(module, sites.unused[i], inputs + extra, layer_input)[0]
            activations.append(eager)
            gradients.append(tuple(torch.zeros_like(v) for v in eager))
        else:
            activations.append(tuple(values[n] for n in nodes))
            gradients.append(tuple(gradient_at[k] for k in keys_of[i]))
    return activations, gradients


def layer_activation(
    module: nn.Module, inputs: tuple[Tensor, ...], extra: tuple[Any, ...], layer: LayerType, layer_input: bool
) -> Tensor:
    """One layer's activation tensor for ``inputs`` (see :func:`layer_activations`)."""
    (values,) = layer_activations(module, inputs, extra, [layer], layer_input)
    return _one_tensor(values, layer)


def layer_gradient(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    extra: tuple[Any, ...],
    layer: LayerType,
    layer_input: bool,
    target: TargetType,
    grad_kwargs: dict[str, Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """One layer's activation tensor (detached) and ``dt/dz`` there (see :func:`layer_gradients`)."""
    (values,), (grads,) = layer_gradients(module, inputs, extra, [layer], layer_input, target, None, grad_kwargs)
    return _one_tensor(values, layer), _one_tensor(grads, layer)


def _one_tensor(values: tuple[Tensor, ...], layer: LayerType) -> Tensor:
    if len(values) != 1:
        raise ValueError(f"the layer {layer!r} has {len(values)} activation tensors; pass one by graph node name")
    return values[0]


def target_change(
    model: Model,
    inputs: tuple[Tensor, ...],
    references: tuple[Tensor, ...],
    target: TargetType,
    extra: tuple[Any, ...],
) -> Tensor:
    """``t(x) - t(x0)`` per example, the model evaluated as it is (inputs of any dtype)."""
    batch = inputs[0].shape[0]
    with torch.no_grad():
        t_end = select_target(model(*inputs, *extra), target, batch)
        t_start = select_target(model(*references, *extra), target, batch)
    return t_end - t_start


def full_references(baselines: BaselineType, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """One reference per input and example, in the input's dtype (integer baselines for token
    ids: a number is the id of the reference token)."""
    references, _ = check_baselines(baselines, inputs)
    return tuple(r.to(x.dtype).expand_as(x).contiguous() for r, x in zip(references, inputs))


class _LayerMethod(AttributionMethod):
    """A method at one layer: the model (Captum's ``forward_func``) and the layer."""

    def __init__(
        self, forward_func: Model, layer: LayerType, device_ids: Any = None, multiply_by_inputs: bool | None = None
    ) -> None:
        _no_device_ids(device_ids)
        self._layers, self._given_list = layer_list(layer)
        super().__init__(forward_func, multiply_by_inputs)
        self.layer = layer
        self.device_ids = device_ids

    @property
    def forward_func(self) -> Model:
        """The model (Captum's name)."""
        return self.model

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims: Any, interpolate_mode: str = "nearest") -> Tensor:
        """Captum's ``LayerAttribution.interpolate``: resize a layer attribution with ``F.interpolate``."""
        return interpolate(layer_attribution, interpolate_dims, interpolate_mode)


# --------------------------------------------------------------------------------------------------
# the methods


class LayerActivation(_LayerMethod):
    """The activation of a layer (Captum's ``LayerActivation``).

    Parameters
    ----------
    forward_func:
        The model: an ``nn.Module`` or a forward function that ``torch.export`` can capture.
    layer:
        A module of the model, a module path (``"features.3"``) or a graph node name
        (``"relu_1"``, as in ``torch.export``'s printout), or a list of them (Captum's list of
        layers: the results are then a list, one entry per layer, in the same order).  A layer
        with several activation tensors (a module returning a tuple, or taking several inputs
        with ``attribute_to_layer_input``) gives a tuple of them.
    device_ids:
        Captum's DataParallel argument; must be ``None``.
    """

    def __init__(self, forward_func: Model, layer: LayerType, device_ids: Any = None) -> None:
        super().__init__(forward_func, layer, device_ids)

    def attribute(
        self,
        inputs: TensorOrTuple,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
    ) -> Tensor:
        """The layer's output (or, with ``attribute_to_layer_input``, input) activation for
        ``model(*inputs, *additional_forward_args)``; inputs may be of any dtype (token ids too).

        Returns
        -------
        A tensor ``(batch, ...)`` shaped like the activation (a tuple for a layer with several
        activation tensors; a list, one entry per layer, for a list of layers).
        """
        tensors, _ = self._format_inputs(inputs, allow_integer=True)
        extra = as_tuple(additional_forward_args)
        values = layer_activations(self._module, tensors, extra, self._layers, attribute_to_layer_input)
        return per_layer(values, self._given_list)


class LayerGradientXActivation(_LayerMethod):
    """Gradient x activation at a layer: ``z_j(x) * dt/dz_j (x)`` (Captum's
    ``LayerGradientXActivation``; gradient x input, Shrikumar et al. 2016, at a layer).

    Parameters
    ----------
    forward_func, layer, device_ids:
        As :class:`LayerActivation`.
    multiply_by_inputs:
        ``True`` (default): gradient x activation; ``False``: the gradient ``dt/dz`` alone.
    memory_efficient:
        Captum's option to save memory on its hooks; accepted for compatibility, with no effect
        here (the captured graph is walked once either way).
    """

    def __init__(
        self,
        forward_func: Model,
        layer: LayerType,
        device_ids: Any = None,
        multiply_by_inputs: bool = True,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)
        self.memory_efficient = memory_efficient

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Tensor:
        """``z * dt/dz`` at the layer's output (or input) activation.

        Parameters
        ----------
        inputs, target, additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`;
            inputs may be integer (token ids), the layer's activation must be floating.
        attribute_to_layer_input:
            Use the activation entering the layer instead of the one leaving it.
        grad_kwargs:
            Further keyword arguments of ``torch.autograd.grad``.

        Returns
        -------
        A tensor shaped like the layer's activation (a tuple, or a list per layer, as
        :meth:`LayerActivation.attribute`).
        """
        tensors, _ = self._format_inputs(inputs, allow_integer=True)
        extra = as_tuple(additional_forward_args)
        activations, gradients = layer_gradients(
            self._module, tensors, extra, self._layers, attribute_to_layer_input, target, grad_kwargs=grad_kwargs
        )
        if self.multiplies_by_inputs:
            gradients = [tuple(g * a for g, a in zip(gs, acts)) for gs, acts in zip(gradients, activations)]
        return per_layer(gradients, self._given_list)


class LayerIntegratedGradients(_LayerMethod):
    """Integrated Gradients at a layer (Sundararajan et al. 2017; Captum's
    ``LayerIntegratedGradients``)::

        LIG_j(x) = (z_j(x) - z_j(x0)) * int_0^1 dt/dz_j (z(x0) + a (z(x) - z(x0))) da

    with the layer's activation ``z`` for the inputs ``x`` and for the baselines ``x0``.  The
    inputs may be integer token ids (``LayerIntegratedGradients(model, model.embedding)``).

    Parameters
    ----------
    forward_func, layer, device_ids:
        As :class:`LayerActivation`.
    multiply_by_inputs:
        ``True`` (default) multiplies by ``z(x) - z(x0)``; ``False`` returns the path-averaged
        gradient alone (Captum's "local" variant).
    """

    returns_convergence_delta = True

    def __init__(
        self, forward_func: Model, layer: LayerType, device_ids: Any = None, multiply_by_inputs: bool = True
    ) -> None:
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Integrated gradients of ``target`` at the layer's output (or input) activation.

        Parameters
        ----------
        inputs:
            A tensor ``(batch, ...)`` or a tuple of them, of any dtype (token ids too).
        baselines:
            As :meth:`DeepLift.attribute <deltalift.methods.deeplift.DeepLift.attribute>`, in the
            inputs' dtype: for token ids, the reference ids (e.g. padding tokens), one sequence
            for all or one per example; a number is one id for every position.
        target, additional_forward_args, n_steps, method, internal_batch_size:
            As :meth:`IntegratedGradients.attribute
            <deltalift.methods.integrated_gradients.IntegratedGradients.attribute>`
            (``internal_batch_size`` counts the rows of the repeated inputs).
        return_convergence_delta:
            Also return ``sum_j LIG_j - (t(x) - t(x0))`` per example (with the multiplied
            attributions, whatever ``multiply_by_inputs`` says).
        attribute_to_layer_input:
            Integrate over the activation entering the layer instead of the one leaving it.
        grad_kwargs:
            Further keyword arguments of ``torch.autograd.grad``.

        Returns
        -------
        A tensor shaped like the layer's activation (a tuple, or a list per layer, as
        :meth:`LayerActivation.attribute`; the layers of a list are interpolated together, and
        the delta sums all their attributions), and the delta when asked.
        """
        tensors, _ = self._format_inputs(inputs, allow_integer=True)
        extra = as_tuple(additional_forward_args)
        references = full_references(baselines, tensors)
        module, layers, n = self._module, self._layers, len(tensors)
        z_input = layer_activations(module, tensors, extra, layers, attribute_to_layer_input)
        z_reference = layer_activations(module, references, extra, layers, attribute_to_layer_input)
        flat_input = tuple(z for values in z_input for z in values)
        flat_reference = tuple(z for values in z_reference for z in values)
        for z in flat_input:
            if not z.is_floating_point():
                raise ValueError(
                    f"the layer's activation has dtype {z.dtype}; Integrated Gradients needs a floating "
                    "activation (for token ids, attribute at the embedding's output)"
                )

        def gradient_at_layers(
            scaled: tuple[Tensor, ...], tgt: TargetType, args: tuple[Any, ...]
        ) -> tuple[Tensor, ...]:
            def path_point(k: int, value: Tensor) -> Tensor:
                if value.shape != scaled[k].shape:
                    raise ValueError(
                        f"the layer's activation for the repeated inputs has shape {tuple(value.shape)}, "
                        f"expected {tuple(scaled[k].shape)} (steps x examples): the layer must keep the batch "
                        "dimension first"
                    )
                return scaled[k].to(value.dtype)

            _, grads = layer_gradients(
                module, args[:n], args[n:], layers, attribute_to_layer_input, tgt, path_point, grad_kwargs
            )
            return tuple(g for values in grads for g in values)

        averaged = integrate_gradients(
            gradient_at_layers,
            flat_input,
            flat_reference,
            target,
            tensors + extra,
            n_steps,
            method,
            internal_batch_size,
        )
        contributions = tuple(g * (z - z0) for g, z, z0 in zip(averaged, flat_input, flat_reference))
        flat = contributions if self.multiplies_by_inputs else averaged
        sizes = [len(values) for values in z_input]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        result = per_layer([flat[a : a + size] for a, size in zip(starts, sizes)], self._given_list)
        if not return_convergence_delta:
            return result
        delta = per_example_sum(contributions) - target_change(module, tensors, references, target, extra)
        return result, delta
