"""Genomics helpers: one-hot, FASTA, shuffles, hypothetical contributions, modisco files, logos."""

from __future__ import annotations

import collections
import sys

import numpy as np
import pytest
import torch

from deltalift import DeepLift
from deltalift.genomics import (
    decode_one_hot,
    dinucleotide_shuffle,
    hypothetical_contributions,
    load_modisco_inputs,
    one_hot_encode,
    one_hot_encode_fasta,
    plot_logo,
    read_fasta,
    save_modisco_inputs,
    shuffle,
)


def random_dna(rng: np.random.Generator, length: int, letters: str = "ACGT") -> str:
    return "".join(rng.choice(list(letters), length))


def with_n_runs(rng: np.random.Generator, sequence: str) -> str:
    """``sequence`` with one to three runs of 1 to 4 N (at the ends too, sometimes)."""
    chars = list(sequence)
    for _ in range(rng.integers(1, 4)):
        start, width = int(rng.integers(0, len(chars))), int(rng.integers(1, 5))
        chars[start : start + width] = "N" * len(chars[start : start + width])
    return "".join(chars)


def tokens(one_hot: torch.Tensor) -> np.ndarray:
    """Letter indices of one-hot (..., 4, L), 4 for N, the slow way."""
    array = one_hot.numpy()
    return np.where(array.sum(-2) == 0, 4, array.argmax(-2))


def dinucleotide_counts(row: np.ndarray) -> np.ndarray:
    """5 x 5 counts of the adjacent pairs of a token row (N as letter 4)."""
    counts = np.zeros((5, 5), dtype=np.int64)
    np.add.at(counts, (row[:-1], row[1:]), 1)
    return counts


def run_ends(row: np.ndarray) -> list[tuple[int, int]]:
    """``(position, letter)`` of the first and last base of every run of real bases."""
    real = np.pad(row < 4, 1)
    ends = np.flatnonzero(real[1:-1] & ~(real[:-2] & real[2:]))
    return [(int(j), int(row[j])) for j in ends]


def assert_dinucleotide_shuffles(X: torch.Tensor, Y: torch.Tensor, keep_n_positions: bool = True) -> None:
    """Every shuffle in Y (N, n, 4, L) has the dinucleotide counts (incl. those with N) of its X (N, 4, L)."""
    assert Y.shape == (X.shape[0], Y.shape[1], *X.shape[1:])
    x_tokens, y_tokens = tokens(X), tokens(Y)
    for i, original in enumerate(x_tokens):
        expected = dinucleotide_counts(original)
        for shuffled in y_tokens[i]:
            np.testing.assert_array_equal(dinucleotide_counts(shuffled), expected)
            assert shuffled[0] == original[0] and shuffled[-1] == original[-1]
            if keep_n_positions:
                np.testing.assert_array_equal(shuffled == 4, original == 4)
                assert run_ends(shuffled) == run_ends(original)


def all_arrangements(sequence: str) -> list[str]:
    """Every sequence with the first letter and the dinucleotide counts of ``sequence`` (depth-first search)."""
    edges = collections.Counter(zip(sequence, sequence[1:]))
    found: list[str] = []

    def extend(prefix: str) -> None:
        if len(prefix) == len(sequence):
            found.append(prefix)
            return
        for (a, b), count in list(edges.items()):
            if a == prefix[-1] and count:
                edges[(a, b)] -= 1
                extend(prefix + b)
                edges[(a, b)] += 1

    extend(sequence[0])
    return found


# --------------------------------------------------------------------------------------------------
# One-hot encoding


def test_one_hot_encode_values() -> None:
    X = one_hot_encode(["ACGTN", "acgtn"])
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]],
        dtype=torch.float32,
    )
    assert X.shape == (2, 4, 5) and X.dtype == torch.float32
    torch.testing.assert_close(X[0], expected)
    torch.testing.assert_close(X[1], expected)
    assert one_hot_encode("GATTACA").shape == (1, 4, 7)
    assert one_hot_encode("ACGT", dtype=torch.int8).dtype == torch.int8


def test_one_hot_encode_unknown_letters_are_zero_columns() -> None:
    X = one_hot_encode("ARY-.Né?T")
    assert X[0, :, 1:8].abs().sum() == 0
    assert X[0, 0, 0] == 1 and X[0, 3, 8] == 1


def test_one_hot_encode_unequal_lengths_names_them() -> None:
    with pytest.raises(ValueError, match="sequence 0 has length 4 but sequence 2 has length 6"):
        one_hot_encode(["ACGT", "ACGT", "ACGTAC"])


def test_one_hot_encode_other_alphabet_and_empty() -> None:
    X = one_hot_encode("ACGU", alphabet="ACGU")
    torch.testing.assert_close(X[0], torch.eye(4))
    assert one_hot_encode([]).shape == (0, 4, 0)
    with pytest.raises(ValueError, match="distinct"):
        one_hot_encode("ACGT", alphabet="ACGa")


def test_one_hot_round_trip() -> None:
    rng = np.random.default_rng(0)
    sequences = [random_dna(rng, 50, "ACGTacgtNnRY") for _ in range(20)]
    decoded = decode_one_hot(one_hot_encode(sequences))
    expected = ["".join(c if c in "ACGT" else "N" for c in s.upper()) for s in sequences]
    assert decoded == expected
    assert decode_one_hot(one_hot_encode("ACNT")[0]) == ["ACNT"]  # a (4, L) array
    assert decode_one_hot(one_hot_encode("ACNT").numpy()) == ["ACNT"]


@pytest.mark.parametrize(
    ("column", "position"), [([1.0, 1.0, 0.0, 0.0], 2), ([0.5, 0.0, 0.0, 0.0], 2), ([0.0, 0.0, -1.0, 1.0], 2)]
)
def test_decode_one_hot_rejects_columns_that_are_not_one_hot(column: list[float], position: int) -> None:
    X = one_hot_encode(["ACGT", "ACGT"])
    X[1, :, position] = torch.tensor(column)
    with pytest.raises(ValueError, match=f"column {position} of sequence 1 is not one-hot"):
        decode_one_hot(X)


# --------------------------------------------------------------------------------------------------
# FASTA


def test_read_fasta(tmp_path) -> None:
    path = tmp_path / "peaks.fa"
    path.write_bytes(
        b"; a comment\n\n>chr1:100-110 first peak\nACGTA\ncgtAC\n\n>chr2:5-15\r\nNNNNN\r\nTTTTT\r\n>empty\n>last\nGG\nAA"
    )
    assert read_fasta(path) == [
        ("chr1:100-110 first peak", "ACGTAcgtAC"),
        ("chr2:5-15", "NNNNNTTTTT"),
        ("empty", ""),
        ("last", "GGAA"),
    ]


def test_read_fasta_rejects_data_before_header(tmp_path) -> None:
    path = tmp_path / "bad.fa"
    path.write_text("\n\nACGT\n>x\nACGT\n")
    with pytest.raises(ValueError, match="line 3: sequence data before the first '>' header"):
        read_fasta(path)


def test_one_hot_encode_fasta(tmp_path) -> None:
    path = tmp_path / "peaks.fa"
    path.write_text(">a\nACG\nT\n>b\nttnn\n")
    X = one_hot_encode_fasta(str(path))
    assert decode_one_hot(X) == ["ACGT", "TTNN"]
    path.write_text(">a\nACGT\n>b\nACGTA\n")
    with pytest.raises(ValueError, match="record 'a' has length 4 but record 'b' has length 5"):
        one_hot_encode_fasta(path)


# --------------------------------------------------------------------------------------------------
# Dinucleotide shuffle


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 10, 31, 100, 257])
def test_dinucleotide_shuffle_keeps_counts(length: int) -> None:
    rng = np.random.default_rng(length)
    sequences = [random_dna(rng, length) for _ in range(30)]
    sequences += [random_dna(rng, length, "AT") for _ in range(5)] + ["A" * length, ("AC" * length)[:length]]
    X = one_hot_encode(sequences)
    Y = dinucleotide_shuffle(X, n=8, random_state=length)
    assert_dinucleotide_shuffles(X, Y)


@pytest.mark.parametrize("length", [1, 2, 3, 6, 20, 150])
def test_dinucleotide_shuffle_with_n_runs_keeps_n_in_place(length: int) -> None:
    rng = np.random.default_rng(100 + length)
    sequences = [with_n_runs(rng, random_dna(rng, length)) for _ in range(30)]
    sequences += ["N" * length, ("NA" * length)[:length], ("AAN" * length)[:length]]
    X = one_hot_encode(sequences)
    Y = dinucleotide_shuffle(X, n=8, random_state=length)
    assert_dinucleotide_shuffles(X, Y, keep_n_positions=True)


def test_dinucleotide_shuffle_runs_between_n_are_shuffled() -> None:
    rng = np.random.default_rng(3)
    sequence = "NN" + random_dna(rng, 60) + "NNN" + random_dna(rng, 60) + "N"
    Y = dinucleotide_shuffle(one_hot_encode(sequence), n=10, random_state=0)
    shuffled = decode_one_hot(Y[0])
    assert all(s[2:62] != sequence[2:62] and s[65:125] != sequence[65:125] for s in shuffled)


@pytest.mark.parametrize("sequence", ["ACAGATCCAGTA", "TTAGCTAGGCTT", "AACCAACAAGGA"])
def test_dinucleotide_shuffle_is_uniform(sequence: str) -> None:
    """Every sequence with the same dinucleotide counts and ends is drawn equally often.

    The deeplift/tangermeme shuffler keeps the input's last-exit edges and reaches only some of them
    (12 of the 96 for the first sequence), which this test would catch."""
    arrangements = all_arrangements(sequence)
    draws = 20000
    shuffled = decode_one_hot(dinucleotide_shuffle(one_hot_encode(sequence), n=draws, random_state=1)[0])
    counts = collections.Counter(shuffled)
    assert set(counts) == set(arrangements)
    expected = draws / len(arrangements)
    chi2 = sum((counts[a] - expected) ** 2 / expected for a in arrangements)
    dof = len(arrangements) - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof)  # about 6 standard deviations of a chi-square


def test_dinucleotide_shuffle_single_sequence_shape_and_dtype() -> None:
    X = one_hot_encode("ACGTTGCAACGT", dtype=torch.float64)[0]
    Y = dinucleotide_shuffle(X, n=5, random_state=0)
    assert Y.shape == (5, 4, 12) and Y.dtype == torch.float64
    assert_dinucleotide_shuffles(X[None], Y[None])
    assert dinucleotide_shuffle(X.bool(), n=2, random_state=0).dtype == torch.bool
    assert dinucleotide_shuffle(X, n=0).shape == (0, 4, 12)


def test_dinucleotide_shuffle_random_state() -> None:
    rng = np.random.default_rng(5)
    X = one_hot_encode([random_dna(rng, 200) for _ in range(4)])
    first = dinucleotide_shuffle(X, n=6, random_state=7)
    torch.testing.assert_close(dinucleotide_shuffle(X, n=6, random_state=7), first, rtol=0, atol=0)
    assert not torch.equal(dinucleotide_shuffle(X, n=6, random_state=8), first)
    generator = np.random.default_rng(7)
    torch.testing.assert_close(dinucleotide_shuffle(X, n=6, random_state=generator), first, rtol=0, atol=0)
    assert not torch.equal(dinucleotide_shuffle(X, n=6, random_state=generator), first)  # it advanced
    # The shuffles of one sequence differ from each other and from the input.
    strings = decode_one_hot(first[0])
    assert len(set(strings)) == 6 and decode_one_hot(X[0])[0] not in strings
    assert (first != X[:, None]).float().mean() > 0.3
    with pytest.raises(TypeError, match="random_state"):
        dinucleotide_shuffle(X, n=2, random_state=1.5)  # type: ignore[arg-type]


def test_shuffles_reject_bad_input() -> None:
    X = one_hot_encode("ACGT")
    for function in (dinucleotide_shuffle, shuffle):
        with pytest.raises(ValueError, match="one-hot"):
            function(X * 2, n=2)
        with pytest.raises(ValueError, match="one-hot"):
            function(X + X[:, [1, 0, 2, 3]], n=2)
        with pytest.raises(ValueError, match="shape"):
            function(X[0, 0], n=2)
        with pytest.raises(ValueError, match="non-negative int"):
            function(X, n=-1)


# --------------------------------------------------------------------------------------------------
# Plain shuffle


def test_shuffle_keeps_letter_counts_and_n_positions() -> None:
    rng = np.random.default_rng(11)
    sequences = [with_n_runs(rng, random_dna(rng, 40)) for _ in range(10)]
    X = one_hot_encode(sequences)
    Y = shuffle(X, n=7, random_state=3)
    assert Y.shape == (10, 7, 4, 40)
    x_tokens, y_tokens = tokens(X), tokens(Y)
    for original, shuffles in zip(x_tokens, y_tokens):
        for shuffled in shuffles:
            np.testing.assert_array_equal(np.bincount(shuffled, minlength=5), np.bincount(original, minlength=5))
            np.testing.assert_array_equal(shuffled == 4, original == 4)
    torch.testing.assert_close(shuffle(X, n=7, random_state=3), Y, rtol=0, atol=0)
    assert not torch.equal(shuffle(X, n=7, random_state=4), Y)
    assert shuffle(X[0], n=3, random_state=0).shape == (3, 4, 40)


def test_shuffle_is_a_uniform_permutation() -> None:
    """Each letter of ``ACGTT`` lands on each position with probability 1/5 (the T twice as often)."""
    Y = shuffle(one_hot_encode("ACGTT"), n=20000, random_state=0)[0]
    frequencies = Y.mean(0)  # (4, 5): P(letter c at position l)
    expected = torch.tensor([0.2, 0.2, 0.2, 0.4])[:, None].expand(4, 5)
    torch.testing.assert_close(frequencies, expected, atol=0.015, rtol=0)


# --------------------------------------------------------------------------------------------------
# Hypothetical contributions


def slow_hypothetical(m: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """deeplift's loop: for each base b, the contribution sum_c m[c] (e_b[c] - x0[c]) of input e_b."""
    result = torch.zeros_like(m)
    for b in range(m.shape[1]):
        hypothetical_input = torch.zeros_like(m)
        hypothetical_input[:, b] = 1.0
        result[:, b] = ((hypothetical_input - x0) * m).sum(1)
    return result


def test_hypothetical_contributions_formula() -> None:
    torch.manual_seed(0)
    m = torch.randn(3, 4, 25, dtype=torch.float64)
    x = one_hot_encode(["ACGTN" * 5] * 3, dtype=torch.float64)
    gc_reference = torch.tensor([0.3, 0.2, 0.2, 0.3], dtype=torch.float64)[:, None].expand(3, 4, 25)
    shuffled_reference = dinucleotide_shuffle(x, n=1, random_state=0)[:, 0]
    for x0 in (gc_reference, shuffled_reference, torch.zeros_like(x)):
        (hyp,) = hypothetical_contributions((m,), (x,), (x0,))
        torch.testing.assert_close(hyp, slow_hypothetical(m, x0))
        # At the observed base the hypothetical contribution is the actual one.
        actual = (m * (x - x0)).sum(1)
        observed = x.sum(1) == 1
        torch.testing.assert_close((hyp * x).sum(1)[observed], actual[observed])


def test_hypothetical_contributions_with_deeplift() -> None:
    """As DeepLift's custom_attribution_func: (hyp * x).sum(1) gives back the usual attributions."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(4, 6, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.Conv1d(6, 3, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 30, 2),
    ).double()
    rng = np.random.default_rng(1)
    x = one_hot_encode([random_dna(rng, 30) for _ in range(4)], dtype=torch.float64)
    x0 = dinucleotide_shuffle(x, n=1, random_state=0)[:, 0]
    explainer = DeepLift(model)
    attributions = explainer.attribute(x, baselines=x0, target=1)
    hyp = explainer.attribute(x, baselines=x0, target=1, custom_attribution_func=hypothetical_contributions)
    assert hyp.shape == x.shape
    torch.testing.assert_close((hyp * x).sum(1), attributions.sum(1))
    # The other bases carry information the actual contributions do not.
    assert (hyp * (1 - x)).abs().sum() > 0


def test_hypothetical_contributions_checks_arguments() -> None:
    m = torch.zeros(2, 4, 5)
    with pytest.raises(TypeError, match="tuples"):
        hypothetical_contributions(m, (m,), (m,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one of each per input"):
        hypothetical_contributions((m, m), (m,), (m,))
    with pytest.raises(ValueError, match="shaped like the input"):
        hypothetical_contributions((m,), (m[:, :, :4],), (m,))


# --------------------------------------------------------------------------------------------------
# TF-MoDISco files


def test_modisco_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(2)
    X = one_hot_encode([with_n_runs(rng, random_dna(rng, 50)) for _ in range(6)])
    hyp = torch.randn(6, 4, 50)
    ohe_path, attr_path = tmp_path / "ohe.npz", tmp_path / "attr.npz"
    save_modisco_inputs(X, hyp, ohe_path, attr_path)
    # What `modisco motifs -s ohe.npz -a attr.npz` reads: np.load(path)['arr_0'], (N, 4, L).
    with np.load(ohe_path) as archive:
        assert list(archive.keys()) == ["arr_0"]
        np.testing.assert_array_equal(archive["arr_0"], X.numpy())
        assert archive["arr_0"].shape == (6, 4, 50)
    with np.load(attr_path) as archive:
        np.testing.assert_array_equal(archive["arr_0"], hyp.numpy())
    loaded_X, loaded_hyp = load_modisco_inputs(ohe_path, attr_path)
    torch.testing.assert_close(loaded_X, X, rtol=0, atol=0)
    torch.testing.assert_close(loaded_hyp, hyp, rtol=0, atol=0)
    np.save(tmp_path / "ohe.npy", X.numpy())  # modisco also takes .npy
    torch.testing.assert_close(load_modisco_inputs(tmp_path / "ohe.npy", attr_path)[0], X, rtol=0, atol=0)


def test_modisco_validation(tmp_path) -> None:
    X = one_hot_encode(["ACGTA", "CCGTN"])
    hyp = torch.randn(2, 4, 5)
    ohe, attr = tmp_path / "ohe.npz", tmp_path / "attr.npz"
    with pytest.raises(ValueError, match="must match"):
        save_modisco_inputs(X, hyp[:, :, :4], ohe, attr)
    with pytest.raises(ValueError, match=r"\(N, 4, L\)"):
        save_modisco_inputs(X[0], hyp[0], ohe, attr)
    with pytest.raises(ValueError, match="one-hot"):
        save_modisco_inputs(X * 0.5, hyp, ohe, attr)
    with pytest.raises(ValueError, match="NaN"):
        save_modisco_inputs(X, hyp.masked_fill(hyp > 1, float("nan")), ohe, attr)
    with pytest.raises(ValueError, match="'.npz'"):
        save_modisco_inputs(X, hyp, tmp_path / "ohe.npy", attr)
    assert not ohe.exists() and not attr.exists()
    np.savez(ohe, np.ones((2, 4, 5)))
    np.savez(attr, hyp.numpy())
    with pytest.raises(ValueError, match="one-hot"):
        load_modisco_inputs(ohe, attr)


# --------------------------------------------------------------------------------------------------
# Logos


def test_plot_logo_writes_png(tmp_path) -> None:
    pytest.importorskip("logomaker")
    x = one_hot_encode("ACGTACGTTTGCA")
    contributions = x * torch.linspace(-1, 1, 13)
    path = tmp_path / "logo.png"
    ax = plot_logo(contributions, start=2, end=10, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    low, high = ax.get_xlim()
    assert low < 2 < 9 < high and high < 11  # positions 2..9 of the full sequence
    ax2 = plot_logo(contributions[0])  # (4, L) also works
    assert ax2.get_ylabel() == "contribution"
    with pytest.raises(ValueError, match=r"\(4, L\)"):
        plot_logo(torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="select no position"):
        plot_logo(contributions, start=20)


def test_plot_logo_names_the_extra_when_logomaker_is_missing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "logomaker", None)
    with pytest.raises(ImportError, match=r"pip install 'deltalift\[plot\]'"):
        plot_logo(torch.zeros(4, 5))


# --------------------------------------------------------------------------------------------------
# Parity with tangermeme


def test_tangermeme_dinucleotide_shuffle_keeps_the_same_counts() -> None:
    ersatz = pytest.importorskip("tangermeme.ersatz")
    rng = np.random.default_rng(4)
    X = one_hot_encode([random_dna(rng, 120) for _ in range(10)])
    for Y in (ersatz.dinucleotide_shuffle(X, n=8, random_state=0), dinucleotide_shuffle(X, n=8, random_state=0)):
        assert_dinucleotide_shuffles(X, Y)
    # With N, tangermeme shuffles N as a fifth letter: the same counts (with N) but N moves.
    Xn = one_hot_encode([with_n_runs(rng, random_dna(rng, 120)) for _ in range(10)])
    assert_dinucleotide_shuffles(Xn, ersatz.dinucleotide_shuffle(Xn, n=8, random_state=0, allow_N=True), False)
    assert_dinucleotide_shuffles(Xn, dinucleotide_shuffle(Xn, n=8, random_state=0), True)


def test_tangermeme_hypothetical_attributions_agree() -> None:
    deep_lift_shap = pytest.importorskip("tangermeme.deep_lift_shap")
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    m = torch.randn(5, 4, 40)
    x = one_hot_encode([random_dna(rng, 40) for _ in range(5)])
    for x0 in (dinucleotide_shuffle(x, n=1, random_state=0)[:, 0], torch.rand(5, 4, 40)):
        (theirs,) = deep_lift_shap.hypothetical_attributions((m,), (x,), (x0,))
        (ours,) = hypothetical_contributions((m,), (x,), (x0,))
        torch.testing.assert_close(ours, theirs)
