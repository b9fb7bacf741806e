"""TCAV (Kim et al., ICML 2018): parity with Captum's TCAV on a fixed CAV, a concept the model
truly uses, CAV classifiers, the disk cache, and layers that module hooks cannot address."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift.concepts import (
    SGDCAV,
    SVMCAV,
    TCAV,
    Concept,
    FastCAV,
    FixedCAV,
    bonferroni,
    concepts_key,
    t_test,
    tcav_significance,
)

pytest.importorskip("sklearn")
pytest.importorskip("scipy")


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).flatten(1))


class Reused(nn.Module):
    """One Linear called twice, functional ReLUs: two call sites of ``inner``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(6, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inner(x))
        h = F.relu(self.inner(h))
        return self.out(h)


def _concepts(shape: tuple[int, ...], n: int = 3, size: int = 12, seed: int = 0) -> list[Concept]:
    g = torch.Generator().manual_seed(seed)
    return [Concept(i, f"c{i}", torch.randn(size, *shape, generator=g) + i) for i in range(n)]


# ------------------------------------------------------------------------------------------------
# parity with Captum on the same model, concepts, layer and fixed CAVs


def test_scores_equal_captums_with_the_same_fixed_cavs(tmp_path: object) -> None:
    captum_concept = pytest.importorskip("captum.concept")
    from captum.concept._utils.classifier import Classifier

    torch.manual_seed(0)
    model = SmallCNN().eval()
    ours = _concepts((1, 6, 6))
    features = 4 * 6 * 6
    vectors = {
        (0, 1): torch.randn(2, features),
        (0, 2): torch.randn(2, features),
        (1, 2): torch.randn(2, features),
    }

    class Fixed(Classifier):
        def __init__(self) -> None:
            self.current: tuple[int, ...] = ()

        def train_and_eval(self, dataloader, **kwargs):  # type: ignore[no-untyped-def]
            labels = torch.cat([y for _, y in dataloader])
            self.current = tuple(sorted(set(labels.tolist())))
            return {"accs": torch.tensor(1.0)}

        def weights(self) -> torch.Tensor:
            return vectors[self.current]  # type: ignore[index]

        def classes(self) -> list[int]:
            return list(self.current)

    theirs = [
        captum_concept.Concept(c.id, c.name, torch.utils.data.DataLoader(c.examples(), batch_size=5)) for c in ours
    ]
    sets_ours = [[ours[0], ours[1]], [ours[0], ours[2]], [ours[1], ours[2]]]
    sets_theirs = [[theirs[0], theirs[1]], [theirs[0], theirs[2]], [theirs[1], theirs[2]]]
    inputs = torch.randn(20, 1, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum_tcav = captum_concept.TCAV(model, ["act"], classifier=Fixed(), save_path=str(tmp_path))
        expected = captum_tcav.interpret(inputs, sets_theirs, target=1)

    class OursFixed(FixedCAV):
        def __init__(self) -> None:
            pass

        def settings(self) -> dict[str, object]:
            return {"classifier": "parity"}

        def fit(self, activations, labels, seed):  # type: ignore[no-untyped-def]
            key = tuple(sorted(set(labels.tolist())))
            return FixedCAV(vectors[key], list(key)).fit(activations, labels, seed)  # type: ignore[index]

    got = TCAV(model, ["act"], classifier=OursFixed()).interpret(inputs, sets_ours, target=1)
    assert set(got) == set(expected) == {"0-1", "0-2", "1-2"}
    for key in expected:
        for score in ("sign_count", "magnitude"):
            torch.testing.assert_close(got[key]["act"][score], expected[key]["act"][score], rtol=1e-5, atol=1e-6)
    # the compared scores are not all alike
    signs = torch.stack([got[k]["act"]["sign_count"] for k in got])
    magnitudes = torch.stack([got[k]["act"]["magnitude"] for k in got])
    assert len(set(signs.flatten().tolist())) > 1 and len(set(magnitudes.flatten().tolist())) == 6


def test_scores_are_the_fraction_of_positive_directional_derivatives() -> None:
    """A slow re-derivation: eager activations and autograd, one example at a time."""
    torch.manual_seed(1)
    model = SmallCNN().eval()
    concepts = _concepts((1, 6, 6), n=2)
    v = torch.randn(2, 4 * 6 * 6)
    tcav = TCAV(model, model.act, classifier=FixedCAV(v, [0, 1]))
    inputs = torch.randn(9, 1, 6, 6)
    got = tcav.interpret(inputs, [concepts], target=2)["0-1"]["act"]
    derivatives = []
    for x in inputs:
        z = model.act(model.conv(x[None])).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model.head(z.flatten(1))[0, 2], z)
        derivatives.append(v @ g.flatten())
    s = torch.stack(derivatives)
    torch.testing.assert_close(got["sign_count"], (s > 0).float().mean(0))
    torch.testing.assert_close(got["magnitude"], s.mean(0), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# a concept the model truly uses


def _concept_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Labels depend on one known concept: the first coordinate exceeding 0.5."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    y = (x[:, 0] > 0.5).long()
    torch.manual_seed(0)
    # two hidden layers: the gradient at the first varies between inputs (at the last hidden
    # layer it would be the output weights for every input, and any CAV's score 0 or 1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), x, y


def test_a_concept_the_label_depends_on_is_significant_and_a_random_one_is_not() -> None:
    model, x, y = _concept_model()
    assert float((model(x).argmax(1) == y).float().mean()) > 0.95
    g = torch.Generator().manual_seed(1)
    shifted = torch.randn(40, 8, generator=g)
    shifted[:, 0] = 1.5 + 0.3 * torch.rand(40, generator=g)  # examples that have the concept
    concept = Concept(0, "first_coordinate_high", shifted)
    random_set = Concept(1, "random_probe", torch.randn(40, 8, generator=g))
    randoms = [Concept(10 + i, f"random_{i}", torch.randn(40, 8, generator=g)) for i in range(10)]
    tcav = TCAV(model, "1", classifier="sgd", seed=0)
    inputs = x[y == 1][:60]
    results = tcav_significance(tcav, inputs, [concept, random_set], randoms, target=1)
    by_name = {r.concept: r for r in results}
    true, probe = by_name["first_coordinate_high"], by_name["random_probe"]
    assert true.mean > 0.9 and true.significant
    assert not probe.significant and probe.corrected_p_value > 0.05
    assert true.corrected_p_value == pytest.approx(min(1.0, 2 * true.p_value))
    assert len(true.scores) == len(true.random_scores) == 10


def test_fastcav_and_svm_find_the_concept_too() -> None:
    model, x, y = _concept_model()
    g = torch.Generator().manual_seed(2)
    shifted = torch.randn(40, 8, generator=g)
    shifted[:, 0] = 1.5
    concept = Concept(0, "high", shifted)
    randoms = [Concept(10 + i, f"r{i}", torch.randn(40, 8, generator=g)) for i in range(10)]
    for classifier in ("fastcav", "svm"):
        tcav = TCAV(model, "1", classifier=classifier)
        (result,) = tcav_significance(tcav, x[y == 1][:60], [concept], randoms, target=1)
        assert result.mean > 0.9 and result.significant, classifier


# ------------------------------------------------------------------------------------------------
# classifiers


def test_fastcav_is_the_normalised_mean_difference() -> None:
    a = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.0, 1.0], [0.0, 1.0]])
    fit = FastCAV().fit(torch.cat([a, b]), torch.tensor([5, 5, 7, 7, 7, 7]), seed=0)
    overall = torch.cat([a, b]).mean(0)  # (4/6, 6/6)
    expected = torch.stack([a.mean(0) - overall, b.mean(0) - overall])
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert fit.classes == [5, 7]
    torch.testing.assert_close(fit.weights, expected)
    assert fit.stats["accs"] == pytest.approx(1.0)


@pytest.mark.parametrize("classifier", [SGDCAV(), SVMCAV()])
def test_linear_classifiers_point_along_the_separating_direction(classifier: object) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    labels = torch.where(x[:, 2] > 0, 3, 1)
    x[:, 2] += torch.where(labels == 3, 1.0, -1.0)  # a margin along coordinate 2
    fit = classifier.fit(x, labels, seed=0)  # type: ignore[attr-defined]
    assert fit.classes == [1, 3]
    torch.testing.assert_close(fit.weights[0], -fit.weights[1])
    w = fit.weights[1] / fit.weights[1].norm()
    assert float(w[2]) > 0.9 and fit.stats["accs"] > 0.95


def test_classifier_and_concept_errors() -> None:
    with pytest.raises(ValueError, match="at least two concepts"):
        FastCAV().fit(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), seed=0)
    with pytest.raises(ValueError, match="unknown CAV classifier"):
        TCAV(nn.Linear(2, 2), "", classifier="forest")
    with pytest.raises(TypeError, match="fit"):
        TCAV(nn.Linear(2, 2), "", classifier=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no examples"):
        Concept(0, "empty", []).examples()
    with pytest.raises(TypeError, match="id must be an int"):
        Concept("0", "x", torch.zeros(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="features"):
        FixedCAV(torch.zeros(2, 3), [0, 1]).fit(torch.randn(4, 5), torch.tensor([0, 0, 1, 1]), 0)
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    a, b = Concept(0, "a", torch.randn(4, 2)), Concept(0, "b", torch.randn(4, 2) + 1)
    with pytest.raises(ValueError, match="same concept id twice"):
        TCAV(model, "1").interpret(torch.randn(3, 2), [[a, a]], target=0)
    with pytest.raises(ValueError, match="two different concepts have the id 0"):
        TCAV(model, "1").interpret(
            torch.randn(3, 2),
            [[a, Concept(1, "c", torch.randn(4, 2))], [b, Concept(2, "d", torch.randn(4, 2))]],
            target=0,
        )
    with pytest.raises(ValueError, match="at least two concepts"):
        TCAV(model, "1").interpret(torch.randn(3, 2), [[a]], target=0)


def test_t_test_and_bonferroni_by_hand() -> None:
    a, b = [0.9, 0.8, 1.0, 0.85], [0.5, 0.4, 0.6, 0.55]
    from scipy.stats import t as student

    ma, mb = sum(a) / 4, sum(b) / 4
    va = sum((v - ma) ** 2 for v in a) / 3
    vb = sum((v - mb) ** 2 for v in b) / 3
    t = (ma - mb) / ((va + vb) / 2 * (1 / 4 + 1 / 4)) ** 0.5  # pooled variance, equal sizes
    assert t_test(a, b) == pytest.approx(2 * student.sf(abs(t), df=6), rel=1e-9)
    assert t_test([1.0, 1.0], [1.0, 1.0]) == 1.0 and t_test([1.0, 1.0], [0.0, 0.0]) == 0.0
    assert bonferroni([0.01, 0.2, 0.6]) == pytest.approx([0.03, 0.6, 1.0])
    with pytest.raises(ValueError, match="at least two"):
        t_test([1.0], [1.0, 2.0])


# ------------------------------------------------------------------------------------------------
# the CAV cache


def test_cavs_are_cached_on_disk_by_their_settings(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "cavs"
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    concepts = _concepts((3,), n=2, size=10)
    first = TCAV(model, "1", save_path=folder, seed=3)
    cavs = first.compute_cavs([concepts])
    assert first.cache is not None and (first.cache.hits, first.cache.misses) == (0, 1)
    assert len(list(folder.glob("*.pt"))) == 1
    again = TCAV(model, "1", save_path=folder, seed=3)
    loaded = again.compute_cavs([concepts])
    assert again.cache is not None and (again.cache.hits, again.cache.misses) == (1, 0)
    torch.testing.assert_close(loaded["0-1"]["1"].weights, cavs["0-1"]["1"].weights)
    for changed in (
        TCAV(model, "1", save_path=folder, seed=4),  # another seed
        TCAV(model, "1", save_path=folder, seed=3, classifier="svm"),  # another classifier
        TCAV(model, "2", save_path=folder, seed=3),  # another layer
    ):
        changed.compute_cavs([concepts])
        assert changed.cache is not None and (changed.cache.hits, changed.cache.misses) == (0, 1)
    other_data = [concepts[0], Concept(1, "c1", concepts[1].examples() + 0.5)]
    miss = TCAV(model, "1", save_path=folder, seed=3)
    miss.compute_cavs([other_data])
    assert miss.cache is not None and miss.cache.misses == 1
    with torch.no_grad():
        model[0].weight.add_(0.1)  # the model changed: its CAVs are not reused
    retrained = TCAV(model, "1", save_path=folder, seed=3)
    retrained.compute_cavs([concepts])
    assert retrained.cache is not None and retrained.cache.misses == 1
    fixed = [
        FixedCAV(torch.ones(2, 4), [0, 1]),
        FixedCAV(torch.ones(2, 4), [0, 1]),
        FixedCAV(-torch.ones(2, 4), [0, 1]),
    ]
    hits = []
    for classifier in fixed:  # equal fixed vectors hit, other vectors miss
        cached = TCAV(model, "1", save_path=folder, classifier=classifier)
        cached.compute_cavs([concepts])
        assert cached.cache is not None
        hits.append(cached.cache.hits)
    assert hits == [0, 1, 0]
    forced = TCAV(model, "1", save_path=folder, seed=3)
    forced.compute_cavs([concepts], force_train=True)
    assert forced.cache is not None and forced.cache.hits == 0


# ------------------------------------------------------------------------------------------------
# functional code and reused modules


def _manual_sensitivity(model: Reused, x: torch.Tensor, call: int, v: torch.Tensor, target: int) -> torch.Tensor:
    """Eager re-derivation at the output of the ``call``-th ``relu(inner(.))``."""
    z = F.relu(model.inner(x))
    if call == 2:
        z = F.relu(model.inner(z))
    z = z.detach().requires_grad_(True)
    rest = z if call == 2 else F.relu(model.inner(z))
    (g,) = torch.autograd.grad(model.out(rest)[:, target].sum(), z)
    return g @ v.T


def test_layers_inside_functional_code_and_each_call_of_a_reused_module() -> None:
    torch.manual_seed(0)
    model = Reused().eval()
    concepts = _concepts((6,), n=2, size=8)
    v = torch.randn(2, 6)
    inputs = torch.randn(15, 6)
    tcav = TCAV(model, ["relu", "relu_1"], classifier=FixedCAV(v, [0, 1]))
    sens = tcav.sensitivities(inputs, [concepts], target=1)["0-1"]
    torch.testing.assert_close(sens["relu"], _manual_sensitivity(model, inputs, 1, v, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sens["relu_1"], _manual_sensitivity(model, inputs, 2, v, 1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(sens["relu"], sens["relu_1"])
    # the concept activations are read at the same call sites
    first = F.relu(model.inner(concepts[0].examples()))
    torch.testing.assert_close(tcav.concept_activations(concepts[0], "relu"), first.detach())
    torch.testing.assert_close(tcav.concept_activations(concepts[0], "relu_1"), F.relu(model.inner(first)).detach())
    with pytest.raises(ValueError, match="runs 2 times"):
        TCAV(model, model.inner).interpret(inputs, [concepts], target=1)


def test_a_plain_forward_function_as_the_model() -> None:
    torch.manual_seed(0)
    w1, w2 = torch.randn(6, 5), torch.randn(2, 6)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.tanh(F.linear(x, w1)), w2)

    concepts = _concepts((5,), n=2, size=8)
    v = torch.randn(2, 6)
    inputs = torch.randn(7, 5)
    sens = TCAV(forward, "tanh", classifier=FixedCAV(v, [0, 1])).sensitivities(inputs, [concepts], target=0)
    z = torch.tanh(F.linear(inputs, w1)).requires_grad_(True)
    (g,) = torch.autograd.grad(F.linear(z, w2)[:, 0].sum(), z)
    torch.testing.assert_close(sens["0-1"]["tanh"], g @ v.T, rtol=1e-5, atol=1e-6)
    assert concepts_key(concepts) == "0-1"


def test_inputs_with_unusual_strides_of_a_size_one_channel() -> None:
    """NumPy's ``images[:, None]`` gives strides (64, 1, 8, 1): convolutions then return
    channels-last outputs; the concept examples and inputs are copied to row-major strides."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    odd = torch.randn(10, 36).as_strided((10, 1, 6, 6), (36, 1, 6, 1))
    assert odd.is_contiguous()
    concept = Concept(0, "odd", odd)
    assert concept.examples().stride() == (36, 36, 6, 1)
    torch.testing.assert_close(concept.examples(), odd)
    v = torch.randn(2, 4 * 6 * 6)
    tcav = TCAV(model, "head", attribute_to_layer_input=True, classifier=FixedCAV(v, [0, 1]))
    sens = tcav.sensitivities(odd, [[concept, Concept(1, "b", torch.randn(5, 1, 6, 6))]], target=0)["0-1"]["head"]
    g = model.head.weight[0].detach()
    torch.testing.assert_close(sens, (g @ v.T).expand(10, 2), rtol=1e-5, atol=1e-6)


def test_hooks_see_one_call_of_a_reused_module_the_graph_sees_each() -> None:
    """Captum's hooks on ``inner`` (called twice) silently keep the second call's activation; the
    graph names both calls (``addmm`` and ``addmm_1``) and refuses the ambiguous module."""
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = Reused().eval()
    x = torch.randn(5, 6)
    first = model.inner(x)
    second = model.inner(F.relu(first))
    hooked = captum_attr.LayerActivation(model, model.inner).attribute(x)
    assert torch.allclose(hooked, second) and not torch.allclose(hooked, first)
    concepts = _concepts((6,), n=2, size=8)
    tcav = TCAV(model, ["addmm", "addmm_1"], classifier=FixedCAV(torch.randn(2, 6), [0, 1]))
    examples = concepts[0].examples()
    torch.testing.assert_close(tcav.concept_activations(concepts[0], "addmm"), model.inner(examples).detach())
    torch.testing.assert_close(
        tcav.concept_activations(concepts[0], "addmm_1"), model.inner(F.relu(model.inner(examples))).detach()
    )


def test_gradients_run_where_the_models_buffers_are() -> None:
    """A model with buffers only (no parameters) on another device (``meta``, available without
    a GPU): TCAV finds the device from the buffers and moves the inputs there."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.ones(3, 2))
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(x) @ self.w

    model = Scaled().to("meta")
    gradient = TCAV(model, model.act, classifier="fastcav").layer_gradients(torch.randn(4, 3), "act", target=1)
    assert gradient.device.type == "meta" and gradient.shape == (4, 3)
