"""deltalift.genomics.deep_lift_shap and `deltalift genomics attribute`."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deltalift import DeepLiftShap
from deltalift.cli import main
from deltalift.genomics import (
    deep_lift_shap,
    dinucleotide_shuffle,
    hypothetical_contributions,
    load_modisco_inputs,
    one_hot_encode,
)

DTYPE = torch.float64
SEQUENCES = ["ACGTTGCAAGCTTACGGATCCATGCAGTAC", "TTGACCGTAGGCTAACGTTAGCCATGATCA", "GGGATACCCTAGATTACAGGCATTAGCATC"]


def sequence_model(dtype=DTYPE) -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv1d(4, 6, 7, padding=3),
            nn.ReLU(),
            nn.Conv1d(6, 6, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6 * 30, 8),
            nn.ReLU(),
            nn.Linear(8, 2),
        )
        .to(dtype)
        .eval()
    )


@pytest.fixture(scope="module")
def data():
    X = one_hot_encode(SEQUENCES, dtype=DTYPE)
    refs = dinucleotide_shuffle(X, n=10, random_state=0)
    return sequence_model(), X, refs


def test_equals_deeplift_shap_on_the_same_references(data):
    model, X, refs = data
    ours, delta = deep_lift_shap(model, X, target=1, references=refs, return_convergence_delta=True)
    explainer = DeepLiftShap(model)
    hypothetical = explainer.attribute(X, refs, target=1, custom_attribution_func=hypothetical_contributions)
    torch.testing.assert_close(ours, hypothetical * X, rtol=0, atol=0)
    # per position, the same numbers as the contributions m * (x - x0) summed over the four channels
    torch.testing.assert_close(ours.sum(1), explainer.attribute(X, refs, target=1).sum(1), rtol=1e-10, atol=1e-12)
    assert ours.shape == X.shape and delta.shape == (3 * 10,) and delta.abs().max() < 1e-12


def test_default_references_are_seeded_dinucleotide_shuffles(data):
    model, X, _ = data
    seeded, refs = deep_lift_shap(model, X, n_shuffles=10, random_state=0, return_references=True)
    assert refs.shape == (3, 10, 4, 30) and torch.equal(refs.sum(2), torch.ones(3, 10, 30, dtype=DTYPE))
    torch.testing.assert_close(seeded, deep_lift_shap(model, X, references=refs), rtol=0, atol=0)
    torch.testing.assert_close(seeded, deep_lift_shap(model, X, n_shuffles=10, random_state=0), rtol=0, atol=0)
    assert not torch.equal(seeded, deep_lift_shap(model, X, n_shuffles=10, random_state=1))
    # a function is called as tangermeme calls it: reference k of each sequence with n=1, seed random_state + k
    by_callable = deep_lift_shap(
        model,
        X,
        n_shuffles=10,
        random_state=0,
        references=lambda x, n, random_state: refs[:1, random_state : random_state + n],
    )
    torch.testing.assert_close(
        by_callable, deep_lift_shap(model, X, references=refs[:1].expand(3, -1, -1, -1)), rtol=0, atol=0
    )


def test_hypothetical_times_one_hot_is_the_actual_contribution(data):
    model, X, refs = data
    actual = deep_lift_shap(model, X, references=refs)
    hypothetical = deep_lift_shap(model, X, references=refs, hypothetical=True)
    torch.testing.assert_close(hypothetical * X, actual, rtol=0, atol=0)
    assert not torch.allclose(hypothetical * (1 - X), torch.zeros_like(X))  # other bases get scores too


@pytest.mark.parametrize("rule", ["rescale", "genomics_default", "reveal_cancel"])
def test_summation_per_pair_for_every_rule(data, rule):
    model, X, refs = data
    _, delta = deep_lift_shap(model, X, references=refs, rule=rule, batch_size=7, return_convergence_delta=True)
    assert delta.abs().max() < 1e-12


def test_matches_tangermeme_given_the_same_references(data):
    tangermeme = pytest.importorskip("tangermeme.deep_lift_shap")
    model, X, refs = data
    ours = deep_lift_shap(model, X, target=1, references=refs)
    ours_hyp = deep_lift_shap(model, X, target=1, references=refs, hypothetical=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tangermeme.deep_lift_shap(model, X, target=1, references=refs, device="cpu", dtype=DTYPE)
        theirs_hyp = tangermeme.deep_lift_shap(
            model, X, target=1, references=refs, hypothetical=True, device="cpu", dtype=DTYPE
        )
    # both project the hypothetical contributions onto the observed base (hypothetical x one-hot)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours_hyp * X, theirs, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours_hyp, theirs_hyp, rtol=1e-9, atol=1e-12)


def test_bad_shapes_are_refused(data):
    model, X, refs = data
    with pytest.raises(ValueError, match=r"shape \(N, A, L\)"):
        deep_lift_shap(model, X[0])
    with pytest.raises(ValueError, match=r"references must have shape \(N, K, A, L\) = \(3, K, 4, 30\)"):
        deep_lift_shap(model, X, references=refs[:2])


def test_command_line_writes_modisco_files(tmp_path, capsys):
    model = sequence_model(torch.float32)
    torch.save(model, tmp_path / "model.pt")
    fasta = tmp_path / "seqs.fa"
    fasta.write_text("".join(f">seq{i}\n{s[:15]}\n{s[15:]}\n" for i, s in enumerate(SEQUENCES)))
    status = main(
        [
            "genomics",
            "attribute",
            "--model",
            str(tmp_path / "model.pt"),
            "--fasta",
            str(fasta),
            "--n-shuffles",
            "4",
            "--target",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "modisco motifs -s" in printed and "3 sequences of 30 bp" in printed
    ohe, attr = load_modisco_inputs(tmp_path / "out" / "ohe.npz", tmp_path / "out" / "attr.npz")
    X = one_hot_encode(SEQUENCES)
    torch.testing.assert_close(ohe, X)
    expected = deep_lift_shap(model, X, target=1, n_shuffles=4, random_state=0, hypothetical=True)
    torch.testing.assert_close(attr, expected, rtol=1e-5, atol=1e-6)
    contributions = np.load(tmp_path / "out" / "contributions.npy")
    np.testing.assert_allclose(contributions, (expected * X).numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(np.load(tmp_path / "out" / "deltas.npy")).max() < 1e-4


def test_command_line_reports_a_missing_fasta(tmp_path, capsys):
    torch.save(sequence_model(torch.float32), tmp_path / "model.pt")
    status = main(["genomics", "attribute", "--model", str(tmp_path / "model.pt"), "--fasta", str(tmp_path / "no.fa")])
    assert status == 1
    assert "no.fa" in capsys.readouterr().err
