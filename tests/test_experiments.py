"""deltalift.experiments: the registry and report writer, the MNIST IDX loader, the DNA simulator,
the models of the experiments, and end-to-end quick runs through the command line."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from deltalift.cli import main
from deltalift.experiments import Experiment, ExperimentRun, all_experiments, get, register, run_experiment
from deltalift.experiments.digits import PaperCNN, load_mnist_idx, read_idx
from deltalift.experiments.registry import unregister
from deltalift.experiments.report import jsonable
from deltalift.experiments.simulation import BACKGROUND, load_motif, simulate_sequences

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def no_disk_capture_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTALIFT_CACHE", "0")


# ---------------------------------------------------------------- registry and report


def test_registry() -> None:
    names = [e.name for e in all_experiments()]
    assert names == sorted(names)
    assert {"toy", "digits-erasure", "genomics-simulation", "sanity", "axioms", "internal-influence"} <= set(names)
    assert get("toy").name == "toy"
    with pytest.raises(ValueError, match="known experiments are: .*digits-erasure"):
        get("no-such-experiment")
    with pytest.raises(ValueError, match="registered already"):
        register(Experiment("toy", "again", lambda run: None))
    with pytest.raises(ValueError, match="one word"):
        register(Experiment("two words", "", lambda run: None))


def test_experiment_run_writes_report_figures_and_nested_results(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    def body(run: ExperimentRun) -> None:
        run.text("A paragraph.")
        run.table(["method", "value"], [["a|b", 0.123456], ["c", float("nan")]], caption="numbers")
        figure, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        assert run.figure("line", figure, caption="a line") == run.out / "line.png"
        run.record("a/b/c", np.float32(1.5))
        run.record("a/b/d", torch.tensor([1.0, float("inf")]))
        run.record("list", (np.int64(3), Path("x")))
        with pytest.raises(ValueError, match="holds a value"):
            run.record("a/b/c/e", 1)
        with pytest.raises(ValueError, match="cells"):
            run.table(["one"], [[1, 2]])
        with pytest.raises(ValueError, match="written already"):
            run.figure("line", plt.figure())
        assert list(run.progress([1, 2], desc="x")) == [1, 2]

    register(Experiment("unit-test-experiment", "a test's experiment", body))
    try:
        report = run_experiment("unit-test-experiment", tmp_path / "out", quick=True, seed=4, show_progress=False)
    finally:
        unregister("unit-test-experiment")
    text = report.read_text()
    assert "A paragraph." in text and "| a\\|b | 0.123 |" in text and "| c | — |" in text
    assert "![a line](line.png)" in text and (tmp_path / "out" / "line.png").stat().st_size > 1000
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["a"] == {"b": {"c": 1.5, "d": [1.0, None]}}
    assert results["list"] == [3, "x"]
    assert (results["experiment"], results["seed"], results["quick"]) == ("unit-test-experiment", 4, True)
    with pytest.raises(TypeError, match="cannot record"):
        jsonable(object())


# ---------------------------------------------------------------- MNIST IDX files


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(folder: Path, n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train_images = rng.integers(0, 256, (n_train, 28, 28))
    train_labels = np.arange(n_train) % 10
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", train_images, compress=True)
    write_idx(folder / "train-labels-idx1-ubyte", train_labels, compress=False)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), compress=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, compress=True)
    return train_images, train_labels


def test_mnist_idx_loader(tmp_path: Path) -> None:
    images, labels = write_mnist(tmp_path, 12, 5)
    data = load_mnist_idx(tmp_path)
    assert data.train_images.shape == (12, 1, 28, 28) and data.test_images.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(data.train_images[:, 0].numpy(), images / 255.0, rtol=1e-6)
    assert data.train_labels.tolist() == labels.tolist() and data.test_labels.dtype == torch.long
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").tolist() == [0, 1, 2, 3, 4]
    bad = tmp_path / "bad"
    bad.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="10 bytes of data"):
        read_idx(bad)
    bad.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist_idx(tmp_path / "empty")


# ---------------------------------------------------------------- the DNA simulation


def test_motifs_are_encode_matrices() -> None:
    gata, tal = load_motif("GATA_disc1"), load_motif("TAL1_known1")
    assert gata.shape == (10, 4) and tal.shape == (16, 4)
    np.testing.assert_allclose(gata.sum(1), 1.0)
    assert "".join("ACGT"[i] for i in gata.argmax(1)[3:9]) == "GATAAG"  # the WGATAR core
    assert "".join("ACGT"[i] for i in tal.argmax(1)[5:11]) == "CAGATG"  # the E-box CAGCTG/CAGATG
    with pytest.raises(ValueError, match="unknown motif"):
        load_motif("CTCF")


def test_simulator_counts_positions_labels_and_background() -> None:
    sim = simulate_sequences(800, random_state=3)
    assert sim.X.shape == (800, 4, 200) and torch.all(sim.X.sum(1) == 1)
    assert np.bincount(sim.group).tolist() == [200, 200, 200, 200]
    expected_labels = {0: [0, 0, 0], 1: [1, 0, 0], 2: [0, 1, 0], 3: [1, 1, 1]}
    widths = (10, 16)
    tokens = sim.X.argmax(1).numpy()
    for i in range(800):
        assert sim.y[i].tolist() == expected_labels[int(sim.group[i])]
        counts = np.bincount([m for m, _ in sim.positions[i]], minlength=2)
        for m in range(2):
            present = m in {1: [0], 2: [1], 3: [0, 1]}.get(int(sim.group[i]), [])
            assert (1 <= counts[m] <= 3) if present else counts[m] == 0
            assert sim.instances[i, m].sum() == counts[m] * widths[m]  # no two instances overlap
        for m, start in sim.positions[i]:
            assert sim.instances[i, m, start : start + widths[m]].all()
            if m == 0:  # positions of probability 1 in GATA_disc1: G A T at 3, 4, 5
                assert "".join("ACGT"[t] for t in tokens[i, start + 3 : start + 6]) == "GAT"
            else:  # C A G at 5, 6, 7 of TAL1_known1
                assert "".join("ACGT"[t] for t in tokens[i, start + 5 : start + 8]) == "CAG"
    # every count 1, 2, 3 occurs; background frequencies within 4 standard errors
    all_counts = [sum(1 for m, _ in p if m == 0) for p, g in zip(sim.positions, sim.group) if g in (1, 3)]
    assert set(all_counts) == {1, 2, 3}
    background = tokens[sim.group == 0].ravel()
    frequencies = np.bincount(background, minlength=4) / background.size
    standard_error = np.sqrt(BACKGROUND * (1 - BACKGROUND) / background.size)
    assert np.all(np.abs(frequencies - BACKGROUND) < 4 * standard_error), frequencies
    assert torch.equal(simulate_sequences(8, random_state=3).X, simulate_sequences(8, random_state=3).X)
    with pytest.raises(ValueError, match="multiple of 4"):
        simulate_sequences(10)


# ---------------------------------------------------------------- the experiments' models


def test_paper_cnn_shapes_and_the_functional_twins() -> None:
    from deltalift.experiments.digits_checks import duplicate_hidden_units
    from deltalift.experiments.toy import Minimum, TwinOne, TwinTwo

    torch.manual_seed(0)
    for size in (8, 28):
        model = PaperCNN(image_size=size).eval()
        assert model(torch.rand(3, 1, size, size)).shape == (3, 10)
        assert model.conv1.stride == (2, 2) and model.conv2.stride == (2, 2)
        # a value: with the convolutions and the dense weights zero, every image gets
        # output.weight @ relu(dense.bias) + output.bias
        with torch.no_grad():
            for layer in (model.conv1, model.conv2, model.dense):
                layer.weight.zero_()
            expected = model.output.weight @ torch.relu(model.dense.bias) + model.output.bias
            torch.testing.assert_close(model(torch.rand(3, 1, size, size)), expected.expand(3, 10))
    model = PaperCNN().eval()
    x = torch.rand(5, 1, 8, 8)
    twin = duplicate_hidden_units(model)
    assert twin.dense.out_features == 2 * model.dense.out_features
    torch.testing.assert_close(twin(x), model(x))
    points = torch.randn(200, 2, dtype=torch.float64) * 3
    torch.testing.assert_close(TwinOne()(points), TwinTwo()(points))
    torch.testing.assert_close(Minimum().double()(points)[:, 0], points.min(1).values)


def test_genomics_erasure_and_ablation_pieces_at_a_small_scale() -> None:
    from deltalift.evaluate import localisation
    from deltalift.experiments.genomics_simulation import SimulationCNN, train_simulation_model
    from deltalift.experiments.internal_influence import ablation_drop

    sim = simulate_sequences(16, random_state=0)
    model = train_simulation_model(sim.X, sim.y, epochs=1, seed=0, show_progress=False)
    assert isinstance(model, SimulationCNN) and not model.training
    assert model(sim.X).shape == (16, 3)
    # a value: the training is seeded (the same seed, the same model)
    again = train_simulation_model(sim.X, sim.y, epochs=1, seed=0, show_progress=False)
    with torch.no_grad():
        torch.testing.assert_close(again(sim.X), model(sim.X), rtol=0, atol=0)
    # a perfect score map localises perfectly
    truth = sim.instances[:, 0][sim.group == 1]
    assert localisation(truth.astype(float), truth).summary()["auroc"] == pytest.approx(1.0)
    # ablating units ranked by their exact effect on a linear head removes that effect
    cnn = PaperCNN().eval()
    images = torch.rand(3, 1, 8, 8)
    scores = torch.zeros(3, 32, 2, 2)
    drops = ablation_drop(cnn, images, torch.tensor([0, 1, 2]), scores, [0, 128])
    np.testing.assert_allclose(drops[:, 0], 0.0, atol=1e-6)
    with torch.no_grad():
        full = cnn(images)[torch.arange(3), torch.tensor([0, 1, 2])] - cnn(torch.zeros(1, 1, 8, 8))[0, [0, 1, 2]]
    np.testing.assert_allclose(drops[:, 1], full.numpy(), rtol=1e-5, atol=1e-5)


def test_the_lineups_share_one_list_of_methods() -> None:
    from deltalift.experiments.lineup import METHODS, check_methods, digits_methods, lineup, toy_methods
    from deltalift.experiments.toy import Minimum

    digits = [name for name, _ in digits_methods(True, 0)]
    assert digits[:4] == [
        "DeepLIFT Rescale",
        "DeepLIFT RevealCancel",
        "DeepLIFT Rescale + softmax adj.",
        "DeepLIFT RevealCancel + softmax adj.",
    ]
    assert "Integrated Gradients (5 steps)" in digits and "Integrated Gradients (50 steps)" not in digits
    assert [name for name, _ in check_methods(True, 0)] == [
        "DeepLIFT Rescale",
        "Integrated Gradients (20 steps)",
        "gradient",
        "Guided Backprop",
    ]
    assert set(n.split(" (")[0] for n, _ in toy_methods(False, 0)) <= set(METHODS)
    # the rule of each entry is the one its name says: min(3, 1) = 3 - relu(3 - 1), reference 0
    # (Shrikumar et al. 2017, section 3.5.3): Rescale gives x_1 all of it, RevealCancel splits it
    toy = dict(toy_methods(True, 0))
    x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    model = Minimum().double().eval()
    np.testing.assert_allclose(toy["DeepLIFT Rescale"](model, x, 0), [[0.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(toy["DeepLIFT RevealCancel"](model, x, 0), [[0.5, 0.5]], atol=1e-12)
    with pytest.raises(ValueError, match="no method"):
        lineup(["DeepLIFT Rescale", "nonexistent"])


def test_digits_erasure_changes_match_the_hand_case() -> None:
    from deltalift.experiments.digits_erasure import _changes

    model = torch.nn.Linear(4, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.0, -1.0, 1.0, 0.5]], dtype=torch.float64))
        model.bias.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
    images = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    scores = torch.stack([model.weight[c].detach() * images for c in range(2)])  # exact contributions (2, 1, 4)
    # S_diff = [1, 6, -6, 0]: features 1 and 0 are erased; the log-odds fall from 1.5 to -5.5
    changes = _changes(model, images, torch.tensor([0]), scores, [(0, 1)], 3)
    np.testing.assert_allclose(changes.numpy(), [7.0])
    np.testing.assert_allclose(_changes(model, images, torch.tensor([0]), scores, [(0, 1)], 1).numpy(), [6.0])


# ---------------------------------------------------------------- end to end


def test_cli_lists_and_runs_the_toy_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "list"]) == 0
    listed = capsys.readouterr().out
    assert "digits-erasure" in listed and "genomics-simulation" in listed
    assert main(["experiment", "run", "toy", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "threshold_and_saturation.png" in report and (tmp_path / "threshold_and_saturation.png").exists()
    results = json.loads((tmp_path / "results.json").read_text())
    x = np.array(results["threshold"]["x"])
    output = np.maximum(x - 10.0, 0.0)
    # DeepLIFT's contribution is the output change (summation-to-delta); the gradient is a step at 10
    np.testing.assert_allclose(results["threshold"]["DeepLIFT Rescale"], output, atol=1e-9)
    np.testing.assert_allclose(results["threshold"]["gradient"], (x > 10).astype(float))
    np.testing.assert_allclose(results["saturating"]["gradient"][-1], 0.0)  # saturated
    np.testing.assert_allclose(results["saturating"]["DeepLIFT Rescale"][-1], 0.5)  # half of 1 - 0
    # min(i1, i2) at (3, 1): Rescale gives all to i2, RevealCancel splits it
    np.testing.assert_allclose(results["minimum"]["DeepLIFT Rescale"][0], [0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(results["minimum"]["DeepLIFT RevealCancel"][0], [0.5, 0.5], atol=1e-9)
    assert results["twins"]["DeepLIFT Rescale"]["max_difference"] == pytest.approx(0.5)
    assert results["twins"]["gradient"]["max_difference"] == 0.0
    assert main(["experiment", "run", "nonexistent", "--quick", "--out", str(tmp_path)]) == 1
    assert "known experiments" in capsys.readouterr().err


def test_cli_runs_internal_influence_on_mnist_idx_files(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", 60, 20)
    out = tmp_path / "out"
    assert (
        main(
            [
                "experiment",
                "run",
                "internal-influence",
                "--quick",
                "--mnist",
                str(tmp_path / "mnist"),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["agreement"]["LayerDeepLift"]["LayerDeepLift"] == pytest.approx(1.0)
    ablation = results["ablation"]
    assert set(ablation) == {"Internal Influence", "LayerDeepLift", "LRP-epsilon", "random"}
    assert "ablation.png" in (out / "report.md").read_text()
