"""BED / narrowPeak regions, windows, edges, the indexed genome FASTA and the contribution bigWig."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deltalift.genomics import one_hot_encode
from deltalift.genomics.regions import (
    Region,
    Window,
    chromosome_regions,
    filter_chromosomes,
    place_windows,
    read_bed,
    summit_windows,
    tiled_windows,
    write_bed,
)

pytest.importorskip("pyfaidx")

CHROMS = {"chr1": 130, "chr2": 47, "chrM": 20}


def random_genome(seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    genome = {c: "".join(rng.choice(list("ACGT"), n)) for c, n in CHROMS.items()}
    genome["chr2"] = genome["chr2"][:10] + "NNNNN" + genome["chr2"][15:30].lower() + genome["chr2"][30:]
    return genome


def write_fasta(path, genome: dict[str, str], width: int = 60) -> None:
    with open(path, "w") as handle:
        for chrom, sequence in genome.items():
            handle.write(f">{chrom} some description\n")
            for i in range(0, len(sequence), width):
                handle.write(sequence[i : i + width] + "\n")


# --------------------------------------------------------------------------------------------------
# BED parsing


def test_read_bed_and_narrowpeak(tmp_path):
    bed = tmp_path / "peaks.narrowPeak"
    bed.write_text(
        "track name=peaks\n# a comment\nbrowser position chr1\n\n"
        "chr1\t10\t60\tpeakA\t0\t.\t5.0\t3.0\t2.0\t20\n"
        "chr1\t70\t90\tpeakB\t0\t.\t5.0\t3.0\t2.0\t-1\n"
        "chr2 3 9\n"
    )
    regions = read_bed(bed)
    assert regions == [
        Region("chr1", 10, 60, "peakA", 20),
        Region("chr1", 70, 90, "peakB", None),
        Region("chr2", 3, 9, ".", None),
    ]


def test_bed12_column_10_is_not_a_summit(tmp_path):
    bed = tmp_path / "genes.bed"
    # BED12: column 10 is blockCount (2), not a summit; a narrowPeak line (10 columns) keeps its summit
    bed.write_text(
        "chr1\t100\t200\tgene\t0\t+\t100\t200\t0\t2\t10,20,\t0,80,\nchr1\t100\t200\tpeak\t0\t.\t1\t1\t1\t2\n"
    )
    gene, peak = read_bed(bed)
    assert gene.summit is None and peak.summit == 2
    # the gene's window is centred on its midpoint 150, the peak's on its summit 102
    assert [(w.start, w.end) for w in summit_windows([gene, peak], 20)] == [(140, 160), (92, 112)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chr1\t10\n", "at least 3 columns"),
        ("chr1\tten\t20\n", "start column"),
        ("chr1\t20\t20\n", "0 <= start < end"),
        ("chr1\t-5\t20\n", "0 <= start < end"),
        ("chr1\t10\t20\tp\t0\t.\t0\t0\t0\t10\n", "summit offset 10"),
    ],
)
def test_read_bed_rejects_bad_lines(tmp_path, line, message):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t0\t5\n" + line)
    with pytest.raises(ValueError, match=message) as info:
        read_bed(bed)
    assert "line 2" in str(info.value)


def test_read_bed_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bed"):
        read_bed(tmp_path / "nope.bed")


def test_gzipped_bed(tmp_path):
    import gzip

    with gzip.open(tmp_path / "p.bed.gz", "wt") as handle:
        handle.write("chr1\t1\t4\tx\n")
    assert read_bed(tmp_path / "p.bed.gz") == [Region("chr1", 1, 4, "x")]


def test_chromosome_filters():
    regions = [Region("chr1", 0, 5), Region("chrM", 0, 5), Region("chr2", 0, 5)]
    assert [r.chrom for r in filter_chromosomes(regions, exclude=["chrM"])] == ["chr1", "chr2"]
    assert [r.chrom for r in filter_chromosomes(regions, chroms=["chr2", "chrM"])] == ["chrM", "chr2"]
    with pytest.raises(ValueError, match="both kept and excluded"):
        filter_chromosomes(regions, chroms=["chr1"], exclude=["chr1"])
    assert chromosome_regions(CHROMS, ["chr2"]) == [Region("chr2", 0, 47, "chr2")]
    with pytest.raises(ValueError, match="chrX"):
        chromosome_regions(CHROMS, ["chrX"])


# --------------------------------------------------------------------------------------------------
# Windows


def test_summit_windows_by_hand():
    regions = [Region("chr1", 10, 60, "a", 20), Region("chr1", 70, 91, "b"), Region("chr2", 3, 9, "c", 0)]
    # even width 8: [c - 4, c + 4); odd width 7: [c - 3, c + 4)
    assert summit_windows(regions, 8) == [
        Window("chr1", 26, 34, 0, "a"),  # summit 10 + 20 = 30
        Window("chr1", 76, 84, 1, "b"),  # midpoint (70 + 91) // 2 = 80
        Window("chr2", -1, 7, 2, "c"),  # summit at 3 leaves chr2 on the left
    ]
    assert [(w.start, w.end) for w in summit_windows(regions, 7)] == [(27, 34), (77, 84), (0, 7)]
    # ChromBPNet: [summit - 1057, summit + 1057)
    (window,) = summit_windows([Region("chr1", 5000, 6000, summit=300)], 2114)
    assert (window.start, window.end) == (5300 - 1057, 5300 + 1057)
    with pytest.raises(ValueError, match="width"):
        summit_windows(regions, 0)


def test_tiled_windows_by_hand():
    (region,) = [Region("chr1", 100, 135)]
    # tiles of 10 from 100: [100,110), [110,120), [120,130), and [125,135) aligned to the end for the
    # partial [130,135)
    assert [(w.start, w.end) for w in tiled_windows([region], 10)] == [(100, 110), (110, 120), (120, 130), (125, 135)]
    # windows of 16 centred on the tile centres 105, 115, 125, 130
    assert [(w.start, w.end) for w in tiled_windows([region], 16, step=10)] == [
        (97, 113),
        (107, 123),
        (117, 133),
        (122, 138),
    ]
    assert all(w.region == 0 for w in tiled_windows([region], 16, step=10))
    # a whole number of tiles: nothing added
    assert [(w.start, w.end) for w in tiled_windows([Region("chr1", 100, 130)], 10)] == [
        (100, 110),
        (110, 120),
        (120, 130),
    ]


def test_tiled_windows_cover_each_region_and_chromosome_end():
    regions = [Region("chr1", 0, 23, "a"), Region("chr1", 40, 46, "short"), Region("chr2", 5, 15, "one")]
    windows = tiled_windows(regions, 10)
    # a: [0,10), [10,20), then [13,23) to its end; short (6 < 10 bp): one window centred on 43;
    # one: exactly one tile
    assert [(w.chrom, w.start, w.end, w.region) for w in windows] == [
        ("chr1", 0, 10, 0),
        ("chr1", 10, 20, 0),
        ("chr1", 13, 23, 0),
        ("chr1", 38, 48, 1),
        ("chr2", 5, 15, 2),
    ]
    # every base of every region is in some window
    for index, region in enumerate(regions):
        covered = {b for w in windows if w.region == index for b in range(w.start, w.end)}
        assert set(range(region.start, region.end)) <= covered
    # a whole chromosome of 47 bp tiled by 20 with windows of 24: the last window reaches its end
    (chrom,) = chromosome_regions({"chr2": 47}, ["chr2"])
    tiles = tiled_windows([chrom], 24, step=20)
    assert [(w.start, w.end) for w in tiles] == [(-2, 22), (18, 42), (25, 49)]
    kept, dropped = place_windows(tiles, {"chr2": 47}, "shift")
    assert (kept[-1].start, kept[-1].end, dropped) == (23, 47, 0)


def test_edges_drop_shift_pad():
    windows = [Window("chr2", -1, 7, 0), Window("chr2", 10, 18, 1), Window("chr2", 44, 52, 2), Window("chrM", 5, 30, 3)]
    kept, dropped = place_windows(windows, CHROMS, "drop")
    assert kept == [windows[1]] and dropped == 3
    kept, dropped = place_windows(windows, CHROMS, "shift")
    assert [(w.start, w.end) for w in kept] == [(0, 8), (10, 18), (39, 47)] and dropped == 1  # chrM < 25 bp
    kept, dropped = place_windows(windows, CHROMS, "pad")
    assert kept == windows and dropped == 0
    with pytest.raises(ValueError, match="'chrX'"):
        place_windows([Window("chrX", 0, 4, 0)], CHROMS)
    with pytest.raises(ValueError, match="edges"):
        place_windows(windows, CHROMS, "clip")


def test_write_bed_round_trips(tmp_path):
    windows = [Window("chr1", 26, 34, 0, "a"), Window("chr2", -1, 7, 2, "c")]
    write_bed(windows, tmp_path / "w.bed")
    assert (tmp_path / "w.bed").read_text() == "chr1\t26\t34\ta\t0\nchr2\t0\t7\tc\t2\n"
    assert [(r.chrom, r.start, r.end, r.name) for r in read_bed(tmp_path / "w.bed")] == [
        ("chr1", 26, 34, "a"),
        ("chr2", 0, 7, "c"),
    ]


# --------------------------------------------------------------------------------------------------
# Genome


@pytest.fixture
def fasta(tmp_path):
    genome = random_genome()
    path = tmp_path / "genome.fa"
    write_fasta(path, genome)
    return path, genome


def test_genome_reads_windows_with_n_and_padding(fasta):
    from deltalift.genomics.genome import Genome

    path, genome = fasta
    with Genome(path) as opened:
        assert opened.chrom_sizes() == CHROMS
        assert opened.sequence("chr1", 55, 70) == genome["chr1"][55:70]
        assert opened.sequence("chr2", 8, 20) == genome["chr2"][8:20].upper()  # soft-masked read as upper case
        assert opened.sequence("chr2", -3, 4) == "NNN" + genome["chr2"][:4]
        assert opened.sequence("chr2", 44, 50) == genome["chr2"][44:] + "NNN"
        assert opened.sequence("chrM", 25, 28) == "NNN" and opened.sequence("chrM", -9, -2) == "N" * 7
        windows = [Window("chr2", 8, 20, 0), Window("chr2", -3, 9, 1)]
        X = opened.one_hot(windows)
        expected = one_hot_encode([genome["chr2"][8:20], "NNN" + genome["chr2"][:9]])
        torch.testing.assert_close(X, expected, rtol=0, atol=0)
        assert X[0, :, 2:7].sum() == 0 and X[1, :, :3].sum() == 0  # N columns are all zero
        with pytest.raises(ValueError, match="one width"):
            opened.one_hot([Window("chr1", 0, 4, 0), Window("chr1", 0, 5, 1)])
        with pytest.raises(ValueError, match="chrX"):
            opened.sequence("chrX", 0, 4)
    assert (path.parent / "genome.fa.fai").is_file()


def test_genome_rebuilds_a_stale_index(fasta):
    import os

    from deltalift.genomics.genome import Genome

    path, genome = fasta
    with Genome(path) as opened:
        assert opened.sequence("chr1", 0, 130) == genome["chr1"]
    index = path.parent / "genome.fa.fai"
    old_index = index.read_text()
    # the FASTA rewritten with other bases, other lengths and lines of 50: the old .fai's offsets are wrong
    other = {"chr1": genome["chr1"][::-1][:100], "chr2": random_genome(1)["chr2"], "chrM": genome["chrM"]}
    write_fasta(path, other, width=50)
    stamp = index.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(stamp, stamp))  # the FASTA newer than its index
    with Genome(path) as opened:
        assert opened.chrom_sizes() == {"chr1": 100, "chr2": 47, "chrM": 20}
        for chrom, sequence in other.items():
            assert opened.sequence(chrom, 0, len(sequence)) == sequence.upper()
    assert index.read_text() != old_index


def test_bgzipped_genome_equals_plain(fasta, tmp_path):
    bgzf = pytest.importorskip("Bio.bgzf")
    from deltalift.genomics.genome import Genome

    path, genome = fasta
    compressed = tmp_path / "genome.fa.gz"
    with bgzf.BgzfWriter(str(compressed), "wb") as handle:
        handle.write(path.read_bytes())
    with Genome(compressed) as packed, Genome(path) as plain:
        assert packed.chrom_sizes() == plain.chrom_sizes()
        for chrom, size in CHROMS.items():
            assert packed.sequence(chrom, -2, size + 2) == plain.sequence(chrom, -2, size + 2)


def test_plain_gzip_genome_is_refused(fasta, tmp_path):
    import gzip

    from deltalift.genomics.genome import Genome

    path, _ = fasta
    (tmp_path / "g.fa.gz").write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ValueError, match="not bgzipped"):
        Genome(tmp_path / "g.fa.gz")
    with pytest.raises(FileNotFoundError):
        Genome(tmp_path / "missing.fa")


# --------------------------------------------------------------------------------------------------
# bigWig


def _expected_track(windows, values, sizes, overlap):
    """A slow per-base re-derivation of the track: for each base, the windows covering it."""
    track = {}
    for chrom, size in sizes.items():
        for base in range(size):
            covering = [i for i, w in enumerate(windows) if w.chrom == chrom and w.start <= base < w.end]
            if not covering:
                continue
            if overlap == "mean":
                track[(chrom, base)] = np.mean([values[i][base - windows[i].start] for i in covering])
            else:
                centres = [abs(base + 0.5 - (windows[i].start + windows[i].end) / 2) for i in covering]
                order = sorted(
                    range(len(covering)), key=lambda k: (centres[k], windows[covering[k]].start, covering[k])
                )
                best = covering[order[0]]
                track[(chrom, base)] = values[best][base - windows[best].start]
    return track


@pytest.mark.parametrize("overlap", ["mean", "nearest"])
def test_bigwig_reads_back_the_contributions(tmp_path, overlap):
    pyBigWig = pytest.importorskip("pyBigWig")
    from deltalift.genomics.bigwig import write_contribution_bigwig

    rng = np.random.default_rng(1)
    windows = [
        Window("chr2", 30, 40, 0),
        Window("chr1", 5, 15, 1),
        Window("chr1", 10, 20, 2),  # overlaps the previous one on [10, 15)
        Window("chr1", 12, 22, 3),  # and three windows cover [12, 15)
        Window("chr1", 60, 70, 4),  # a gap [22, 60) without entries
        Window("chr2", -4, 6, 5),  # padded: only [0, 6) is written
        Window("chr2", 41, 51, 6),  # padded on the right: [41, 47)
    ]
    values = rng.normal(size=(len(windows), 10)).astype(np.float32)
    path = tmp_path / "c.bw"
    write_contribution_bigwig(path, windows, values, CHROMS, overlap=overlap)
    expected = _expected_track(windows, values, CHROMS, overlap)
    with pyBigWig.open(str(path)) as bw:
        assert bw.chroms() == {"chr1": 130, "chr2": 47}  # chromosomes with windows, FASTA order
        for chrom, size in bw.chroms().items():
            read = np.asarray(bw.values(chrom, 0, size))
            want = np.array([expected.get((chrom, b), np.nan) for b in range(size)])
            np.testing.assert_allclose(read, want.astype(np.float32), rtol=1e-6, atol=0, equal_nan=True)
    assert expected[("chr1", 13)] != values[1][8]  # the overlap rule matters at this base


def test_bigwig_rejects_bad_values(tmp_path):
    pytest.importorskip("pyBigWig")
    from deltalift.genomics.bigwig import write_contribution_bigwig

    windows = [Window("chr1", 0, 4, 0)]
    with pytest.raises(ValueError, match="not finite"):
        write_contribution_bigwig(tmp_path / "a.bw", windows, np.array([[0, np.nan, 0, 0]]), CHROMS)
    with pytest.raises(ValueError, match="overlap"):
        write_contribution_bigwig(tmp_path / "a.bw", windows, np.zeros((1, 4)), CHROMS, overlap="max")
    with pytest.raises(ValueError, match="chrX"):
        write_contribution_bigwig(tmp_path / "a.bw", [Window("chrX", 0, 4, 0)], np.zeros((1, 4)), CHROMS)
