"""Genome-wide DeepLIFT-SHAP from a genome FASTA and a BED file: outputs, reverse complement, resume, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deltalift.cli import main
from deltalift.genomics import deep_lift_shap, load_modisco_inputs
from deltalift.runner import SettingsMismatchError
from deltalift.runtime import torch_threads

pytest.importorskip("pyfaidx")
pyBigWig = pytest.importorskip("pyBigWig")

from deltalift.genomics.genome import Genome  # noqa: E402
from deltalift.genomics.regions import read_bed  # noqa: E402
from deltalift.runner.genomics import RegionAttributionJob, attribute_regions, reverse_complement  # noqa: E402

WIDTH, K = 24, 3
CHROMS = {"chr1": 160, "chr2": 70, "chrM": 30}


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(4, 5, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * WIDTH, 3), nn.ReLU(), nn.Linear(3, 2)
    ).eval()


def make_inputs(root):
    """A genome FASTA, a narrowPeak file and a saved model in ``root``; returns ``(root, genome)``."""
    rng = np.random.default_rng(0)
    genome = {c: "".join(rng.choice(list("ACGT"), n)) for c, n in CHROMS.items()}
    genome["chr2"] = genome["chr2"][:40] + "N" * 6 + genome["chr2"][46:]
    with open(root / "genome.fa", "w") as handle:
        for chrom, sequence in genome.items():
            handle.write(f">{chrom}\n" + "\n".join(sequence[i : i + 50] for i in range(0, len(sequence), 50)) + "\n")
    (root / "peaks.narrowPeak").write_text(
        "chr1\t10\t60\tp0\t0\t.\t1\t1\t1\t25\n"  # window [23, 47)
        "chr1\t30\t70\tp1\t0\t.\t1\t1\t1\t-1\n"  # midpoint 50: [38, 62), overlaps p0
        "chr2\t30\t50\tp2\t0\t.\t1\t1\t1\t12\n"  # [30, 54), holds the Ns
        "chrM\t0\t20\tp3\t0\t.\t1\t1\t1\t10\n"  # excluded
        "chr2\t60\t70\tp4\t0\t.\t1\t1\t1\t5\n"  # [53, 77) leaves chr2: dropped
        "chr1\t100\t140\tp5\n"  # [108, 132)
        "chr1\t0\t8\tp6\t0\t.\t1\t1\t1\t2\n"  # [-10, 14) dropped
    )
    torch.save(tiny_model(), root / "model.pt")
    return root, genome


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Bitwise equality across batch compositions and workers holds at one thread count: with
    several, the CPU's matrix kernels split a batch's rows by thread, and the rounding of a row
    can depend on its batch-mates. Ray's actors here run one thread each (one CPU per actor)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("genome"))


#: One instance for the tests that pass a module: deltalift captures a model once per instance.
MODEL = tiny_model()


def run(inputs, out, model=MODEL, **options):
    root, _ = inputs
    settings = {"n_shuffles": K, "shard_size": 2, "exclude_chroms": ["chrM"], "show_progress": False}
    return attribute_regions(model, root / "genome.fa", out, WIDTH, root / "peaks.narrowPeak", **(settings | options))


@pytest.fixture(scope="module")
def reference_run(inputs, tmp_path_factory):
    return run(inputs, tmp_path_factory.mktemp("reference") / "out")


def assert_same_but_rounding(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to float32 rounding: explained in other batches (the runner's shards), an example's
    arithmetic is the same but the CPU's convolution kernels may block it differently by batch
    size (bitwise equal on some CPUs, not on others: AVX-512 Xeons differ in the last bits)."""
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_windows_outputs_and_modisco_files(inputs, reference_run):
    root, genome = inputs
    result = reference_run
    assert [(w.chrom, w.start, w.end, w.region) for w in result.windows] == [
        ("chr1", 23, 47, 0),
        ("chr1", 38, 62, 1),
        ("chr2", 30, 54, 2),
        ("chr1", 108, 132, 5),
    ]
    assert result.dropped == 2 and result.run.n_shards == 2 and result.run.computed == 2
    ohe, attr = load_modisco_inputs(result.files["ohe.npz"], result.files["attr.npz"])
    with Genome(root / "genome.fa") as opened:
        X = opened.one_hot(result.windows)
    torch.testing.assert_close(ohe, X, rtol=0, atol=0)
    assert X[2, :, 10:16].sum() == 0  # the Ns of chr2 [40, 46)
    expected, deltas = deep_lift_shap(
        MODEL, X, n_shuffles=K, random_state=0, hypothetical=True, return_convergence_delta=True
    )
    assert_same_but_rounding(attr, expected)  # a sequence's result ignores its batch-mates
    np.testing.assert_allclose(np.load(result.files["deltas.npy"]), deltas.reshape(4, K).numpy(), rtol=0, atol=1e-6)
    assert [(r.chrom, r.start, r.end, r.name) for r in read_bed(result.files["regions.bed"])] == [
        (w.chrom, w.start, w.end, w.name) for w in result.windows
    ]


def test_bigwig_holds_the_mean_contribution_of_covering_windows(reference_run):
    result = reference_run
    ohe, attr = load_modisco_inputs(result.files["ohe.npz"], result.files["attr.npz"])
    per_base = (ohe * attr).sum(1).numpy()
    with pyBigWig.open(str(result.files["contributions.bw"])) as bw:
        assert bw.chroms() == {"chr1": 160, "chr2": 70}
        chr1 = np.asarray(bw.values("chr1", 0, 160))
        np.testing.assert_allclose(chr1[23:38], per_base[0, :15], rtol=1e-6)
        np.testing.assert_allclose(chr1[38:47], (per_base[0, 15:] + per_base[1, :9]) / 2, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(chr1[47:62], per_base[1, 9:], rtol=1e-6)
        np.testing.assert_allclose(chr1[108:132], per_base[3], rtol=1e-6)
        assert np.isnan(chr1[:23]).all() and np.isnan(chr1[62:108]).all() and np.isnan(chr1[132:]).all()
        np.testing.assert_allclose(np.asarray(bw.values("chr2", 30, 54)), per_base[2], rtol=1e-6)


def test_reverse_complement_equals_two_explicit_passes(inputs, tmp_path):
    result = run(inputs, tmp_path / "rc", reverse_complement=True, bigwig=False)
    ohe, attr = load_modisco_inputs(result.files["ohe.npz"], result.files["attr.npz"])
    one_window_a_call = {"n_shuffles": K, "batch_size": K, "random_state": 0, "hypothetical": True}  # as the runner
    forward = deep_lift_shap(MODEL, ohe, **one_window_a_call)
    rc = ohe.flip(1, 2)  # the reverse complement: TGCA order and reversed positions
    assert rc[0, 3, -1] == ohe[0, 0, 0] or rc[0, :, -1].sum() == ohe[0, :, 0].sum()
    backward = deep_lift_shap(MODEL, rc, **one_window_a_call)
    torch.testing.assert_close(attr, (forward + backward.flip(1, 2)) / 2, rtol=0, atol=0)
    assert not torch.allclose(attr, forward)
    assert np.load(result.files["deltas.npy"]).shape == (4, 2 * K)
    torch.testing.assert_close(reverse_complement(reverse_complement(ohe)), ohe)
    with pytest.raises(ValueError, match=r"\(N, 4, L\)"):
        reverse_complement(torch.zeros(2, 5, 3))


def _files(out):
    return {name: (out / name).read_bytes() for name in ("ohe.npz", "attr.npz", "regions.bed", "deltas.npy")}


def test_resume_after_an_interruption_gives_identical_files(inputs, reference_run, tmp_path, monkeypatch):
    original = RegionAttributionJob.compute
    calls = []

    def interrupted(self, start, stop):
        calls.append(start)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, start, stop)

    monkeypatch.setattr(RegionAttributionJob, "compute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(inputs, tmp_path / "out")
    shards = sorted(p.name for p in (tmp_path / "out" / "shards").iterdir())
    assert shards == ["00000"]  # shard 1 was interrupted before it was written: nothing partial left
    calls.clear()
    resumed = run(inputs, tmp_path / "out")
    assert calls == [2] and resumed.run.computed == 1 and resumed.run.skipped == 1
    assert _files(tmp_path / "out") == _files(reference_run.out)
    for shard in ("00000", "00001"):
        for name in ("hypothetical", "contributions", "deltas", "one_hot"):
            a = np.load(tmp_path / "out" / "shards" / shard / f"{name}.npy")
            b = np.load(reference_run.out / "shards" / shard / f"{name}.npy")
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    calls.clear()
    again = run(inputs, tmp_path / "out")  # everything done: nothing recomputed
    assert calls == [] and again.run.computed == 0


def test_other_settings_refuse_to_mix_unless_overwritten(inputs, tmp_path):
    run(inputs, tmp_path / "out", bigwig=False)
    with pytest.raises(SettingsMismatchError, match="n_shuffles: 3 -> 4"):
        run(inputs, tmp_path / "out", n_shuffles=4, bigwig=False)
    with pytest.raises(SettingsMismatchError, match="shard_size"):
        run(inputs, tmp_path / "out", shard_size=3, bigwig=False)
    redone = run(inputs, tmp_path / "out", n_shuffles=4, overwrite=True, bigwig=False)
    assert redone.run.computed == 2 and np.load(redone.files["deltas.npy"]).shape == (4, 4)


def test_bad_job_settings(inputs, tmp_path):
    root, _ = inputs
    with pytest.raises(ValueError, match="random_state"):
        run(inputs, tmp_path / "a", random_state=None)
    with pytest.raises(ValueError, match="no windows"):
        run(inputs, tmp_path / "b", chroms=["chrM"], exclude_chroms=[])  # chrM is shorter than the window
    with pytest.raises(ValueError, match="overlap"):
        run(inputs, tmp_path / "c", overlap="max")


def test_command_line_genome_mode(inputs, reference_run, tmp_path, capsys):
    root, _ = inputs
    command = [
        "genomics", "attribute", "--model", str(root / "model.pt"), "--genome", str(root / "genome.fa"),
        "--regions", str(root / "peaks.narrowPeak"), "--width", str(WIDTH), "--n-shuffles", str(K),
        "--exclude-chroms", "chrM", "--shard-size", "2", "--out", str(tmp_path / "cli"), "--no-progress",
    ]  # fmt: skip
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "explained 4 windows of 24 bp" in printed and "2 windows dropped" in printed and "modisco motifs" in printed
    assert _files(tmp_path / "cli") == _files(reference_run.out)
    assert main(command) == 0 and "0 shards computed, 2 already done" in capsys.readouterr().out
    assert main([*command, "--n-shuffles", "2"]) == 1 and "other settings" in capsys.readouterr().err


def test_command_line_tiles_a_chromosome(inputs, tmp_path, capsys):
    root, _ = inputs
    command = [
        "genomics", "attribute", "--model", str(root / "model.pt"), "--genome", str(root / "genome.fa"), "--tile",
        "--chroms", "chr2", "--windows", "tiled", "--step", "20", "--width", str(WIDTH), "--n-shuffles", "2",
        "--edges", "pad", "--out", str(tmp_path / "tiles"), "--no-progress", "--no-bigwig",
    ]  # fmt: skip
    assert main(command) == 0
    # tiles [0,20), [20,40), [40,60) of chr2 (70 bp) and [50,70) to its end, windows of 24 centred on
    # 10, 30, 50, 60 (the first and last leave chr2 and are padded; BED clips only the negative start)
    assert (tmp_path / "tiles" / "regions.bed").read_text() == (
        "chr2\t0\t22\tchr2\t0\nchr2\t18\t42\tchr2\t0\nchr2\t38\t62\tchr2\t0\nchr2\t48\t72\tchr2\t0\n"
    )
    assert not (tmp_path / "tiles" / "contributions.bw").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tile", "--windows", "tiled"], "not both"),
        (["--windows", "tiled", "--tile", "--regions", "x.bed"], "not both"),
    ],
)
def test_command_line_rejects_conflicting_options(inputs, tmp_path, capsys, extra, message):
    root, _ = inputs
    base = ["genomics", "attribute", "--model", str(root / "model.pt"), "--genome", str(root / "genome.fa")]
    if "--regions" not in extra:
        base += ["--regions", str(root / "peaks.narrowPeak")]
    assert main([*base, *extra, "--out", str(tmp_path / "x")]) == 1
    assert message in capsys.readouterr().err


def test_command_line_fasta_mode_with_reverse_complement(inputs, tmp_path, capsys):
    root, genome = inputs
    sequences = [genome["chr1"][:WIDTH], genome["chr1"][50 : 50 + WIDTH]]
    (tmp_path / "s.fa").write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(sequences)))
    base = ["genomics", "attribute", "--model", str(root / "model.pt"), "--fasta", str(tmp_path / "s.fa")]
    assert (
        main([*base, "--n-shuffles", "2", "--reverse-complement", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    )
    assert "2 sequences of 24 bp" in capsys.readouterr().out
    ohe, attr = load_modisco_inputs(tmp_path / "o" / "ohe.npz", tmp_path / "o" / "attr.npz")
    forward = deep_lift_shap(MODEL, ohe, n_shuffles=2, random_state=0, hypothetical=True)
    backward = deep_lift_shap(MODEL, ohe.flip(1, 2), n_shuffles=2, random_state=0, hypothetical=True)
    assert_same_but_rounding(attr, (forward + backward.flip(1, 2)) / 2)
    assert np.load(tmp_path / "o" / "deltas.npy").shape == (2 * 2 * 2,)
    assert main([*base, "--chroms", "chr1", "--out", str(tmp_path / "p")]) == 1
    assert "--chroms need --genome" in capsys.readouterr().err


def test_bpnet_lite_heads_and_a_pt2_program(tmp_path, inputs):
    bpnet = pytest.importorskip("bpnetlite.bpnet")
    from deltalift.genomics.models import load_sequence_model, sequence_head

    torch.manual_seed(0)
    model = bpnet.BPNet(n_filters=4, n_layers=1, n_outputs=2, n_control_tracks=2, trimming=4, verbose=False).eval()
    X = torch.zeros(3, 4, WIDTH)
    X[:, 1] = 1
    controls = torch.zeros(3, 2, WIDTH)
    profile, counts = model(X, controls)
    torch.testing.assert_close(sequence_head(model)(X), counts)  # count by default, zero control tracks
    torch.testing.assert_close(sequence_head(model, "count")(X), counts)
    logits = profile.flatten(1) - profile.flatten(1).mean(-1, keepdim=True)
    torch.testing.assert_close(sequence_head(model, "profile")(X), (logits * logits.softmax(-1)).sum(-1, keepdim=True))
    with pytest.raises(ValueError, match="head must be"):
        sequence_head(model, "shape")
    with pytest.raises(ValueError, match="bpnet-lite"):
        sequence_head(tiny_model(), "count")
    # a .pt2 program explains as the module it was exported from
    program = torch.export.export(tiny_model(), (torch.zeros(3, 4, WIDTH),))
    torch.export.save(program, tmp_path / "model.pt2")
    torch.testing.assert_close(load_sequence_model(tmp_path / "model.pt2")(X), tiny_model()(X))


def test_by_default_one_window_a_call(inputs, tmp_path, monkeypatch):
    """Without ``batch_size`` each call explains one window's shuffles (at most 64 pairs), in the
    runner and on the command line; a given ``batch_size`` is passed on as it is."""
    import deltalift.runner.genomics as runner_genomics
    from deltalift.runner.genomics import pairs_per_call

    assert pairs_per_call(None, 20) == 20 and pairs_per_call(None, 500) == 64 and pairs_per_call(7, 20) == 7
    seen: list[int] = []

    def spy(*args, batch_size, **kwargs):
        seen.append(batch_size)
        return deep_lift_shap(*args, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(runner_genomics, "deep_lift_shap", spy)
    run(inputs, tmp_path / "default", bigwig=False)
    assert set(seen) == {K}
    run(inputs, tmp_path / "given", bigwig=False, batch_size=5)
    assert set(seen) == {K, 5}
    seen.clear()
    monkeypatch.setattr("deltalift.genomics.deep_lift_shap", spy)  # what the command line's FASTA mode calls
    root, _ = inputs
    fasta = tmp_path / "sequences.fa"
    fasta.write_text(">a\n" + "ACGT" * (WIDTH // 4) + "\n")
    command = [
        "genomics", "attribute", "--model", str(root / "model.pt"), "--fasta", str(fasta), "--n-shuffles", "2",
        "--out", str(tmp_path / "cli"), "--no-progress",
    ]  # fmt: skip
    assert main(command) == 0 and seen == [2]
