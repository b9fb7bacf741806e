"""LayerDeepLift, NeuronDeepLift, callable targets, custom attribution functions, softmax adjustment."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerDeepLift as CaptumLayerDeepLift
from captum.attr import NeuronDeepLift as CaptumNeuronDeepLift
from torch import nn

from deltalift import DeepLift, LayerDeepLift, NeuronDeepLift

DTYPE = torch.float64


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)).to(DTYPE).eval()
    x, ref = torch.randn(4, 5, dtype=DTYPE), torch.randn(4, 5, dtype=DTYPE)
    return model, x, ref


def captum(cls, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(*args).attribute(**kwargs)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_layer_outputs_match_captum(mlp, index):
    model, x, ref = mlp
    ours, delta = LayerDeepLift(model, model[index], eps=1e-10).attribute(
        x, ref, target=1, return_convergence_delta=True
    )
    theirs = captum(CaptumLayerDeepLift, model, model[index], inputs=x, baselines=ref, target=1)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    assert delta.abs().max() < 1e-12  # every layer of a chain is a cut: summation holds at the layer


@pytest.mark.parametrize("index", [2, 4])
def test_layer_inputs_of_linear_layers_match_captum(mlp, index):
    model, x, ref = mlp
    ours = LayerDeepLift(model, model[index], eps=1e-10).attribute(x, ref, target=2, attribute_to_layer_input=True)
    theirs = captum(
        CaptumLayerDeepLift, model, model[index], inputs=x, baselines=ref, target=2, attribute_to_layer_input=True
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_input_of_a_nonlinearity_is_the_previous_layers_output(mlp):
    """Captum reads the ReLU's input gradient before its own DeepLIFT override (its delta is off);
    here the input of the ReLU is the output of the dense layer before it, and summation holds."""
    model, x, ref = mlp
    at_input, delta = LayerDeepLift(model, model[1]).attribute(
        x, ref, target=1, attribute_to_layer_input=True, return_convergence_delta=True
    )
    torch.testing.assert_close(at_input, LayerDeepLift(model, model[0]).attribute(x, ref, target=1), rtol=0, atol=0)
    assert delta.abs().max() < 1e-12
    _, captum_delta = captum(
        CaptumLayerDeepLift,
        model,
        model[1],
        inputs=x,
        baselines=ref,
        target=1,
        attribute_to_layer_input=True,
        return_convergence_delta=True,
    )
    assert captum_delta.abs().max() > 1e-3


@pytest.mark.parametrize("index, neuron", [(0, 3), (1, 3), (3, 2)])
@pytest.mark.parametrize("to_input", [False, True])
def test_neurons_match_captum(mlp, index, neuron, to_input):
    model, x, ref = mlp
    if to_input and index == 1:
        pytest.skip("Captum is wrong at a nonlinearity's input (see above)")
    ours, delta = NeuronDeepLift(model, model[index], eps=1e-10).attribute(
        x, neuron, ref, attribute_to_neuron_input=to_input, return_convergence_delta=True
    )
    theirs = captum(
        CaptumNeuronDeepLift,
        model,
        model[index],
        inputs=x,
        neuron_selector=neuron,
        baselines=ref,
        attribute_to_neuron_input=to_input,
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    assert delta.abs().max() < 1e-12


def test_layer_by_path_by_node_name_and_functional_layers():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    torch.manual_seed(1)
    model = Functional().to(DTYPE).eval()
    x = torch.randn(3, 4, dtype=DTYPE)
    by_module = LayerDeepLift(model, model.b).attribute(x, target=0, attribute_to_layer_input=True)
    by_path = LayerDeepLift(model, "b").attribute(x, target=0, attribute_to_layer_input=True)
    by_node = LayerDeepLift(model, "relu").attribute(x, target=0)
    assert torch.equal(by_module, by_path) and torch.equal(by_module, by_node)
    assert by_module.sum(1).sub(model(x)[:, 0] - model(torch.zeros(1, 4, dtype=DTYPE))[:, 0]).abs().max() < 1e-12


def test_reused_module_asks_for_a_node_name():
    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.lin(self.act(x))).sum(1, keepdim=True)

    model = Reused().eval()
    with pytest.raises(ValueError, match=r"module act runs 2 times.*relu"):
        LayerDeepLift(model, model.act).attribute(torch.randn(2, 3))
    second = LayerDeepLift(model, "relu_1").attribute(torch.randn(2, 3))
    assert second.shape == (2, 3)


def test_neuron_selector_errors(mlp):
    model, x, ref = mlp
    with pytest.raises(ValueError, match="out of range"):
        NeuronDeepLift(model, model[0]).attribute(x, 8, ref)
    with pytest.raises(ValueError, match="has 2 indices"):
        NeuronDeepLift(model, model[0]).attribute(x, (1, 2), ref)
    by_callable = NeuronDeepLift(model, model[0]).attribute(x, lambda a: a[:, 3], ref)
    torch.testing.assert_close(by_callable, NeuronDeepLift(model, model[0]).attribute(x, 3, ref), rtol=0, atol=0)


def test_callable_target_is_captured_and_exact(mlp):
    """A softmax probability as the target: its ops go through the rules, so summation holds."""
    model, x, ref = mlp
    attr, delta = DeepLift(model, strict=True).attribute(
        x, ref, target=lambda out: torch.softmax(out, 1)[:, 2], return_convergence_delta=True
    )
    p, p0 = torch.softmax(model(x), 1)[:, 2], torch.softmax(model(ref), 1)[:, 2]
    torch.testing.assert_close(attr.sum(1), p - p0, rtol=1e-10, atol=1e-12)
    assert delta.abs().max() < 1e-12
    # the same as explaining a model that ends in softmax
    probabilities = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    torch.testing.assert_close(DeepLift(probabilities).attribute(x, ref, target=2), attr, rtol=1e-12, atol=1e-14)


def test_softmax_adjustment_equals_mean_normalised_final_layer(mlp):
    model, x, ref = mlp
    adjusted = DeepLift(model, softmax_adjustment=True).attribute(x, ref, target=0)
    per_class = torch.stack([DeepLift(model).attribute(x, ref, target=c) for c in range(3)])
    torch.testing.assert_close(adjusted, per_class[0] - per_class.mean(0), rtol=1e-10, atol=1e-13)
    normalised = nn.Sequential(*list(model)[:-1], nn.Linear(6, 3)).to(DTYPE).eval()
    with torch.no_grad():
        normalised[-1].weight.copy_(model[-1].weight - model[-1].weight.mean(0, keepdim=True))
        normalised[-1].bias.copy_(model[-1].bias - model[-1].bias.mean())
    torch.testing.assert_close(DeepLift(normalised).attribute(x, ref, target=0), adjusted, rtol=1e-10, atol=1e-13)


def test_custom_attribution_function_by_arity(mlp):
    model, x, ref = mlp
    method = DeepLift(model)
    multipliers = DeepLift(model, multiply_by_inputs=False).attribute(x, ref, target=1)
    one = method.attribute(x, ref, target=1, custom_attribution_func=lambda m: (m[0] * 2,))
    two = method.attribute(x, ref, target=1, custom_attribution_func=lambda m, i: (m[0] * i[0],))
    three = method.attribute(x, ref, target=1, custom_attribution_func=lambda m, i, b: (m[0] * (i[0] - b[0]),))
    torch.testing.assert_close(one, 2 * multipliers, rtol=0, atol=0)
    torch.testing.assert_close(two, multipliers * x, rtol=0, atol=0)
    torch.testing.assert_close(three, method.attribute(x, ref, target=1), rtol=0, atol=0)
    with pytest.raises(TypeError, match="1, 2 or 3 arguments"):
        method.attribute(x, ref, target=1, custom_attribution_func=lambda: None)


def test_layer_between_a_weighted_op_and_its_reveal_cancel_nonlinearity():
    """A layer tapped between a dense op and the ReLU it feeds must see its multipliers: RevealCancel,
    which sends them to the dense op's own input, does not apply across the tap (the ReLU takes
    Rescale), so the layer's contributions sum to the output change."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).double().eval()
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    ours, delta = LayerDeepLift(net, net[0], rule="reveal_cancel").attribute(x, 0.0, return_convergence_delta=True)
    rescale = LayerDeepLift(net, net[0]).attribute(x, 0.0)
    torch.testing.assert_close(ours, rescale, rtol=1e-12, atol=0)
    assert delta.abs().max() < 1e-12
    change = net(x) - net(torch.zeros_like(x))
    assert abs(float(ours.sum() - change.sum())) < 1e-12
