"""The dataset runner: shards, manifest, resume, the chunked .npz writer, and ``deltalift run`` over arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from deltalift import DeepLift, IntegratedGradients, Saliency
from deltalift.cli import main
from deltalift.runner import SettingsMismatchError, ShardStore, run_job
from deltalift.runner.arrays import attribute_arrays, input_names
from deltalift.runner.npz import write_npz_from_chunks


class SquareJob:
    """Items 0..n-1; shard results are their squares (and the shard's first item), counting calls."""

    kind = "squares"

    def __init__(self, n: int, power: int = 2) -> None:
        self.n, self.power = n, power
        self.calls: list[int] = []

    def __len__(self) -> int:
        return self.n

    def settings(self) -> dict:
        return {"power": self.power, "n": self.n}

    def compute(self, start: int, stop: int) -> dict:
        self.calls.append(start)
        items = np.arange(start, stop)
        return {"value": items**self.power, "first": np.full(stop - start, start)}


def test_shards_cover_the_items_and_resume(tmp_path):
    job = SquareJob(10)
    summary = run_job(job, tmp_path, shard_size=4, show_progress=False)
    assert (summary.n_shards, summary.computed, summary.skipped) == (3, 3, 0)
    assert job.calls == [0, 4, 8]
    store = summary.store
    assert [store.bounds(k) for k in range(3)] == [(0, 4), (4, 8), (8, 10)]
    np.testing.assert_array_equal(store.concatenate("value"), np.arange(10) ** 2)
    np.testing.assert_array_equal(store.read(2, "first"), [8, 8])
    info = json.loads((tmp_path / "shards" / "00001" / "shard.json").read_text())
    assert (info["start"], info["stop"], info["arrays"]) == (4, 8, ["first", "value"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["settings"] == {"power": 2, "n": 10} and manifest["shard_size"] == 4
    # a lost shard is recomputed, and only it
    import shutil

    shutil.rmtree(tmp_path / "shards" / "00001")
    job.calls.clear()
    again = run_job(job, tmp_path, shard_size=4, show_progress=False)
    assert job.calls == [4] and (again.computed, again.skipped) == (1, 2)
    np.testing.assert_array_equal(again.store.concatenate("value"), np.arange(10) ** 2)


def test_other_settings_are_refused(tmp_path):
    run_job(SquareJob(10), tmp_path, shard_size=4, show_progress=False)
    with pytest.raises(SettingsMismatchError, match="power: 2 -> 3"):
        run_job(SquareJob(10, power=3), tmp_path, shard_size=4, show_progress=False)
    with pytest.raises(SettingsMismatchError, match="shard_size: 4 -> 5"):
        run_job(SquareJob(10), tmp_path, shard_size=5, show_progress=False)
    redone = run_job(SquareJob(10, power=3), tmp_path, shard_size=4, overwrite=True, show_progress=False)
    np.testing.assert_array_equal(redone.store.concatenate("value"), np.arange(10) ** 3)


def test_an_interrupted_write_leaves_no_partial_shard(tmp_path, monkeypatch):
    store = ShardStore(tmp_path, "squares", {}, n_items=6, shard_size=3)
    calls = []

    def failing_save(file, array, allow_pickle):
        calls.append(file)
        if len(calls) == 2:
            raise KeyboardInterrupt
        np.lib.format.write_array(open(file, "wb"), array)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        store.write(0, {"a": np.zeros(3), "b": np.ones(3)})
    monkeypatch.undo()
    assert not store.is_done(0) and list((tmp_path / "shards").iterdir()) == []
    (tmp_path / "shards" / ".tmp-00001-x").mkdir()  # a leftover of a killed process
    reopened = ShardStore(tmp_path, "squares", {}, n_items=6, shard_size=3)
    assert list((tmp_path / "shards").iterdir()) == [] and reopened.pending() == [0, 1]


def test_store_checks(tmp_path):
    store = ShardStore(tmp_path, "k", {}, n_items=5, shard_size=2)
    with pytest.raises(ValueError, match="leading axis must be the shard's 2 items"):
        store.write(0, {"a": np.zeros(3)})
    with pytest.raises(ValueError, match="identifier"):
        store.write(0, {"a b": np.zeros(2)})
    with pytest.raises(IndexError, match="3 shards"):
        store.bounds(3)
    with pytest.raises(RuntimeError, match="not written"):
        store.concatenate("a")
    with pytest.raises(ValueError, match="shard_size"):
        ShardStore(tmp_path / "x", "k", {}, n_items=5, shard_size=0)
    with pytest.raises(TypeError, match="compute"):
        run_job(object(), tmp_path / "y")


def test_npz_from_chunks_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 4, 7)).astype(np.float32) for n in (3, 1, 5)]
    write_npz_from_chunks(tmp_path / "a.npz", iter(parts), (9, 4, 7), np.float32)
    with np.load(tmp_path / "a.npz") as archive:
        assert archive.files == ["arr_0"]
        np.testing.assert_array_equal(archive["arr_0"], np.concatenate(parts))
    first = (tmp_path / "a.npz").read_bytes()
    write_npz_from_chunks(tmp_path / "a.npz", iter(parts), (9, 4, 7), np.float32)
    assert (tmp_path / "a.npz").read_bytes() == first  # a fixed timestamp: same arrays, same bytes
    with pytest.raises(ValueError, match="8 rows"):
        write_npz_from_chunks(tmp_path / "b.npz", iter(parts[:1] + parts[2:]), (9, 4, 7), np.float32)
    with pytest.raises(ValueError, match="does not fit"):
        write_npz_from_chunks(tmp_path / "b.npz", iter([np.zeros((2, 3))]), (2, 4), np.float32)
    assert not (tmp_path / "b.npz").exists()


# --------------------------------------------------------------------------------------------------
# Any method over arrays


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)
    ).eval()


MODEL = small_cnn()


@pytest.fixture(scope="module")
def examples():
    return torch.from_numpy(np.random.default_rng(0).normal(size=(7, 1, 8, 8)).astype(np.float32))


def test_deeplift_over_a_folder_of_npy_files(tmp_path, examples):
    folder = tmp_path / "val"
    folder.mkdir()
    for i, x in enumerate(examples):
        np.save(folder / f"x{i:02d}.npy", x.numpy())
    result = attribute_arrays(
        MODEL, folder, tmp_path / "out", "DeepLift", shard_size=3, batch_size=2, show_progress=False
    )
    assert result.run.n_shards == 3
    predicted = MODEL(examples).argmax(1)
    expected = DeepLift(MODEL).attribute(examples, torch.zeros(1, 1, 8, 8), target=predicted)
    np.testing.assert_allclose(
        np.load(result.files["attributions.npy"]), expected.detach().numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(np.load(result.files["targets.npy"]), predicted.numpy())
    assert result.files["names.txt"].read_text().split() == [f"x{i:02d}.npy" for i in range(7)]


def test_integrated_gradients_and_saliency_over_one_stack(tmp_path, examples):
    np.save(tmp_path / "x.npy", examples.numpy())
    result = attribute_arrays(
        MODEL,
        tmp_path / "x.npy",
        tmp_path / "ig",
        "IntegratedGradients",
        attribute_options={"n_steps": 16},
        target=2,
        baseline=0.5,
        shard_size=4,
        show_progress=False,
    )
    expected = IntegratedGradients(MODEL).attribute(examples, torch.full((1, 1, 8, 8), 0.5), target=2, n_steps=16)
    np.testing.assert_allclose(
        np.load(result.files["attributions.npy"]), expected.detach().numpy(), rtol=1e-4, atol=1e-6
    )
    saliency = attribute_arrays(MODEL, tmp_path / "x.npy", tmp_path / "s", "Saliency", target=1, show_progress=False)
    np.testing.assert_allclose(
        np.load(saliency.files["attributions.npy"]), Saliency(MODEL).attribute(examples, target=1).numpy(), rtol=1e-5
    )
    assert saliency.files["names.txt"].read_text().split()[:2] == ["x.npy[0]", "x.npy[1]"]


def test_a_random_method_gives_the_same_shards_when_resumed(tmp_path, examples):
    np.save(tmp_path / "x.npy", examples.numpy())
    options = {"method_options": {}, "target": 0, "shard_size": 3, "show_progress": False}
    first = attribute_arrays(MODEL, tmp_path / "x.npy", tmp_path / "a", "GradientShap", baseline=0.0, **options)
    second = attribute_arrays(MODEL, tmp_path / "x.npy", tmp_path / "b", "GradientShap", baseline=0.0, **options)
    assert np.load(first.files["attributions.npy"]).tobytes() == np.load(second.files["attributions.npy"]).tobytes()
    other = attribute_arrays(MODEL, tmp_path / "x.npy", tmp_path / "c", "GradientShap", random_state=1, **options)
    assert not np.array_equal(np.load(other.files["attributions.npy"]), np.load(first.files["attributions.npy"]))


def test_image_folder_through_deltalift_images(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    images = pytest.importorskip("deltalift.images")
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    result = attribute_arrays(model, folder, tmp_path / "out", "DeepLift", target=1, show_progress=False)
    loaded = images.load_images(folder, "none")
    expected = DeepLift(model).attribute(loaded.inputs, torch.zeros(1, 3, 8, 8), target=1)
    np.testing.assert_allclose(
        np.load(result.files["attributions.npy"]), expected.detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_bad_array_inputs(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        input_names(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .npy files"):
        input_names(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(ValueError, match=r"\.npy file"):
        input_names(tmp_path / "x.txt")
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown method 'DeepLyft'"):
        attribute_arrays(MODEL, tmp_path / "x.npy", tmp_path / "o", "DeepLyft", show_progress=False)
    with pytest.raises(ValueError, match="baseline"):
        attribute_arrays(MODEL, tmp_path / "x.npy", tmp_path / "o", baseline="mean", show_progress=False)
    bad = np.zeros((2, 1, 8, 8), dtype=np.float32)
    bad[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="NaN"):
        attribute_arrays(MODEL, tmp_path / "nan.npy", tmp_path / "n", show_progress=False)


def test_command_line_run(tmp_path, examples, capsys):
    np.save(tmp_path / "x.npy", examples.numpy())
    torch.save(MODEL, tmp_path / "model.pt")
    command = [
        "run", "--model", str(tmp_path / "model.pt"), "--inputs", str(tmp_path / "x.npy"), "--method",
        "IntegratedGradients", "--attribute-option", "n_steps=8", "--target", "3", "--shard-size", "4",
        "--out", str(tmp_path / "out"), "--no-progress",
    ]  # fmt: skip
    assert main(command) == 0
    assert (
        "explained 7 examples with IntegratedGradients (2 shards computed, 0 already done)" in capsys.readouterr().out
    )
    expected = IntegratedGradients(MODEL).attribute(examples, torch.zeros(1, 1, 8, 8), target=3, n_steps=8)
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "attributions.npy"), expected.detach().numpy(), rtol=1e-4, atol=1e-6
    )
    assert main(command) == 0 and "0 shards computed, 2 already done" in capsys.readouterr().out
    assert main([*command, "--attribute-option", "n_steps=9"]) == 1 and "other settings" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        main([*command[:-3], "--attribute-option", "bad"])


def test_module_digest_of_a_bfloat16_module_is_the_cav_cache_digest():
    from deltalift.concepts.cache import model_digest
    from deltalift.runner.digests import model_settings, module_digest

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).to(torch.bfloat16)
    digest = module_digest(model)  # numpy has no bfloat16: the tensors are hashed as their bytes
    assert model_digest(model) == digest and model_settings(model)["digest"] == digest
    # the digest follows the values, the dtype and the shape
    changed = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).to(torch.bfloat16)
    changed.load_state_dict(model.state_dict())
    assert module_digest(changed) == digest
    with torch.no_grad():
        changed[0].weight[0, 0] += 1
    assert module_digest(changed) != digest
    # a zero tensor has the same bytes in bfloat16 and float16: the dtype tells them apart
    zeros = {dtype: nn.Linear(2, 2, bias=False).to(dtype) for dtype in (torch.bfloat16, torch.float16)}
    for module in zeros.values():
        nn.init.zeros_(module.weight)
    assert module_digest(zeros[torch.bfloat16]) != module_digest(zeros[torch.float16])


@pytest.mark.parametrize("method", ["GradientShap", "NoiseTunnel"])
def test_random_methods_seed_each_example_whatever_the_shards_and_batches(tmp_path, examples, method):
    import deltalift
    from deltalift import GradientShap, NoiseTunnel
    from deltalift.method_catalog import METHODS, Context, MethodOptions

    np.save(tmp_path / "x.npy", examples.numpy())
    if method == "NoiseTunnel":
        options = {
            "method_options": {"method": "Saliency"},
            "attribute_options": {"nt_type": "smoothgrad", "nt_samples": 3, "stdevs": 0.5, "abs": False},
        }
    else:
        options = {"attribute_options": {"n_samples": 3}, "baseline": 0.0}
    runs = [
        np.load(
            attribute_arrays(
                MODEL, tmp_path / "x.npy", tmp_path / f"{shard}-{batch}", method, target=1, random_state=5,
                shard_size=shard, batch_size=batch, show_progress=False, **options,
            ).files["attributions.npy"]
        )
        for shard, batch in [(7, 7), (3, 2), (2, 1)]
    ]  # fmt: skip
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()
    # example j is seeded with random_state + j, as deltalift.explain seeds example i with seed + i
    if method == "NoiseTunnel":
        explained = deltalift.explain(
            MODEL, examples, "smoothgrad", target=1, nt_samples=3, stdevs=0.5, seed=5, batch_size=4
        ).attributions["smoothgrad"]
        np.testing.assert_array_equal(runs[0], explained)
        tunnel = NoiseTunnel(Saliency(MODEL))
        row = tunnel.attribute(examples[4:5], nt_samples=3, stdevs=0.5, random_state=9, target=1, abs=False)
        np.testing.assert_array_equal(runs[0][4:5], row.detach().numpy())
    else:
        # the catalog's gradient-shap with the runner's one zero reference as its background
        context = Context(MODEL, examples, MethodOptions(nt_samples=3, seed=5), 4, background=torch.zeros(1, 1, 8, 8))
        attribute, _ = METHODS["gradient-shap"].build(context)
        target = torch.ones(7, dtype=torch.int64)
        explained = torch.cat(
            [attribute(examples[:4], 0.0, target[:4])[0], attribute(examples[4:], 0.0, target[4:])[0]]
        )
        np.testing.assert_allclose(runs[0], explained.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.random.seed(9)
        torch.manual_seed(9)
        row = GradientShap(MODEL).attribute(examples[4:5], torch.zeros(1, 1, 8, 8), n_samples=3, target=1)
        np.testing.assert_array_equal(runs[0][4:5], row.detach().numpy())
