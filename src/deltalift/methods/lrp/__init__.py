"""Layer-wise Relevance Propagation (Bach et al. 2015) on the captured graph, with Captum's interface.

The target output's value is the relevance to distribute; each op of the captured ATen graph
passes it back through the rule a :mod:`composite <deltalift.methods.lrp.composites>` gives it
(:mod:`deltalift.methods.lrp.rules`).  Relevance travels through autograd as *relevance per unit
of activation*, ``g = R / a``, so that gradient x input is relevance, ``R = a * g``:

- a weighted linear op (conv, dense; a following eval-mode batch norm merged in, as Zennit's
  ``SequentialMergeBatchNorm``) returns its ordinary value, and its backward turns ``R_out =
  z * g_out`` into ``R_in`` by the rule and returns ``g_in = R_in / a``;
- ``Pass`` (activations) returns ``g_out * y / x``, ``Norm``/``Epsilon`` on ops without weights
  scale ``g_out`` by ``z / stab(z)`` before the op's own backward, ``Uniform`` by one half;
- every other op keeps its gradient: LRP-0 on affine ops (a bias absorbs its share), all to the
  arg-max at max pooling, relevance unchanged through reshapes and slicing.

Rules whose relevance is not proportional to the input (Flat, WSquare, ZBox: the input-layer
rules) send their relevance to the explained inputs directly, through a zero-valued *probe* that
follows the input through reshapes, slicing, padding and element-wise scaling or shifting
(input normalisation), so that inputs equal to zero receive relevance too.

Conservation: with bias-free layers and z+ or alpha-beta rules, the input relevance sums to the
target output; ``return_convergence_delta=True`` returns ``sum(R_in) - t(x)`` per example.

Use::

    from deltalift.methods.lrp import LRP, EpsilonGammaBox

    relevance, delta = LRP(model.eval(), EpsilonGammaBox(low=-3.0, high=3.0)).attribute(
        images, target=labels, return_convergence_delta=True)
    relevance = LRP(model, "epsilon_plus_flat").attribute(images, target=labels)
"""

from __future__ import annotations

from typing import Any

import torch

from deltalift.capture import capture
from deltalift.convergence import per_example_sum
from deltalift.engine import walk_graph
from deltalift.inputs import TargetType, TensorOrTuple, as_tuple, select_target
from deltalift.methods.base import AttributionMethod, Model, format_output
from deltalift.methods.lrp.composites import (
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonComposite,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    as_composite,
)
from deltalift.methods.lrp.plan import plan_rules
from deltalift.methods.lrp.walk import RelevanceWalk

Tensor = torch.Tensor


class LRP(AttributionMethod):
    """Layer-wise Relevance Propagation on any model that ``torch.export`` can capture.

    Parameters
    ----------
    model:
        An ``nn.Module`` (in eval mode) or a forward function.  It is never modified (batch
        norm is merged into the rules' copies of the weights, not into the model).
    composite:
        Which rule each op gets: a :class:`~deltalift.methods.lrp_composites.Composite`
        (e.g. ``EpsilonPlusFlat()``, ``EpsilonGammaBox(low=-3, high=3)``, or ``Composite(
        layer_map=..., name_map=...)``), a composite's name (``"epsilon"``, ``"epsilon_plus"``,
        ``"epsilon_alpha2_beta1"``, ``"epsilon_plus_flat"``, ``"epsilon_alpha2_beta1_flat"``),
        or ``None`` for LRP-epsilon on every layer (Captum's default).
    """

    returns_convergence_delta = True

    def __init__(self, model: Model, composite: Composite | str | None = None) -> None:
        super().__init__(model)
        self.composite = as_composite(composite)

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """The relevance of each input feature for ``target`` of ``model(*inputs, *additional_forward_args)``.

        Parameters
        ----------
        inputs, target, additional_forward_args:
            As :meth:`Saliency.attribute <deltalift.methods.gradients.Saliency.attribute>`; the
            target's value ``t(x)`` is the relevance that is distributed.
        return_convergence_delta:
            Also return ``sum_i R_i - t(x)`` per example (zero where the rules conserve
            relevance; biases, epsilon and dropped relevance make it non-zero).

        Returns
        -------
        Relevances shaped like ``inputs`` (a tuple when a tuple was given), and the delta when asked.
        """
        tensors, given_tuple = self._format_inputs(inputs)
        extra = as_tuple(additional_forward_args)
        batch = tensors[0].shape[0]
        program = capture(self._module, tensors + extra, batch)
        plan = plan_rules(program, len(tensors), self.composite)
        leaves = [x.detach().requires_grad_(True) for x in tensors]
        probes = [torch.zeros_like(x).requires_grad_(True) for x in tensors]
        walk = RelevanceWalk(plan, dict(zip(plan.inputs, probes)))
        with torch.enable_grad():
            outputs = walk_graph(program, self._module, leaves + list(extra), walk.evaluate)
            if len(outputs) != 1 or not isinstance(outputs[0], Tensor):
                raise ValueError("LRP explains a model with one output tensor")
            if not outputs[0].requires_grad:
                raise ValueError("the model's output does not depend on the explained inputs")
            t = select_target(outputs[0], target, batch)
            grads = torch.autograd.grad(t.sum(), leaves + probes, allow_unused=True)
        relevance = tuple(
            x.detach() * _or_zero(g, x) + _or_zero(gp, x)
            for x, g, gp in zip(leaves, grads[: len(leaves)], grads[len(leaves) :])
        )
        delta = per_example_sum(relevance) - t.detach()
        result = format_output(relevance, given_tuple)
        return (result, delta) if return_convergence_delta else result


def _or_zero(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad.detach()


__all__ = [
    "LRP",
    "Composite",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonComposite",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonPlusFlat",
]
