"""The members every attribution method shares, as Captum's ``Attribution`` base class has them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Union

import torch
from torch import nn

from deltalift.capture import as_module
from deltalift.convergence import convergence_delta
from deltalift.inputs import BaselineType, TargetType, TensorOrTuple, check_inputs, check_model

Tensor = torch.Tensor
Attribution = Union[Tensor, tuple[Tensor, ...]]
Model = Union[nn.Module, Callable[..., Any]]


class AttributionMethod:
    """Base of the method classes: the model, Captum's ``multiplies_by_inputs`` and
    ``has_convergence_delta``, and the formatting of inputs and results.

    Subclasses set :attr:`returns_convergence_delta` and, for a fixed answer,
    :attr:`multiplies_by_inputs_default`; methods with Captum's ``multiply_by_inputs`` argument
    pass it to ``__init__``.
    """

    #: Whether ``attribute`` can return a convergence delta (Captum's ``has_convergence_delta``).
    returns_convergence_delta: ClassVar[bool] = False
    #: Whether the attributions are multiplied by ``inputs - baselines`` unless told otherwise.
    multiplies_by_inputs_default: ClassVar[bool] = True

    def __init__(self, model: Model, multiply_by_inputs: bool | None = None) -> None:
        self.model = model
        self._module = as_module(model)
        self._multiply_by_inputs = (
            self.multiplies_by_inputs_default if multiply_by_inputs is None else multiply_by_inputs
        )

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return self.returns_convergence_delta

    def compute_convergence_delta(
        self,
        attributions: TensorOrTuple,
        start_point: BaselineType,
        end_point: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """Captum's check: ``sum(attributions) - (t(end_point) - t(start_point))`` per example."""
        return convergence_delta(self.model, attributions, start_point, end_point, target, additional_forward_args)

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        """Captum's asynchronous variant (``torch.futures``), which Captum itself leaves
        unimplemented for these methods: raises ``NotImplementedError`` as Captum does; call
        ``attribute``."""
        raise NotImplementedError(
            f"{type(self).__name__}.attribute_future is not implemented (nor in Captum for this method); call attribute"
        )

    def _format_inputs(self, inputs: TensorOrTuple, allow_integer: bool = False) -> tuple[tuple[Tensor, ...], bool]:
        """The inputs as a checked tuple (and the model checked against them), and whether a tuple was
        given; integer inputs only with ``allow_integer`` (methods that attribute to a layer)."""
        tensors, given_tuple = check_inputs(inputs, allow_integer)
        check_model(self._module, tensors)
        return tensors, given_tuple


def format_output(result: tuple[Tensor, ...], given_tuple: bool) -> Attribution:
    """A tuple when a tuple of inputs was given, else the one tensor."""
    return result if given_tuple else result[0]
