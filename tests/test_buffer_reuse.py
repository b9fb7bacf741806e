"""The recorded program's element-wise ops written into an argument that dies there
(``deltalift.buffer_reuse``): which ops are rewritten, which storages are never written, and that
the values stay those of the recording run (``tests/test_fast_path.py`` checks the whole
architecture matrix against the interpreter with the rewrite on)."""

from __future__ import annotations

import pytest
import torch

from deltalift import fast_path
from deltalift.buffer_reuse import StorageIdentities, layout

Tensor = torch.Tensor


def _written(program: fast_path.RecordedProgram) -> dict[str, str]:
    """The rewritten ops of the program: op name -> the node it writes into."""
    return {
        str(n.target): n.kwargs["out"].name
        for n in program.module.graph.nodes
        if n.op == "call_function" and isinstance(n.kwargs.get("out"), torch.fx.Node)
    }


def _replays_exactly(program: fast_path.RecordedProgram, inputs: list[Tensor], expected: list[Tensor]) -> None:
    before = [t.clone() for t in inputs]
    for _ in range(3):
        got = program.run(inputs)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    for t, original in zip(inputs, before):  # no input is written
        assert torch.equal(t, original)


def test_a_difference_and_a_quotient_are_written_into_arguments_that_die() -> None:
    """Rescale's secant ``(tanh(x) - tanh(x0)) / (x - x0)``: the numerator goes into ``tanh(x)``
    (read for the last time there), the quotient into the numerator; ``x - x0`` reads two inputs,
    which are never written; ``tanh(x0)`` has the reference's batch size, not the output's."""

    def walk(reference: Tensor, x: Tensor) -> list[Tensor]:
        dx = x - reference
        return [(torch.tanh(x) - torch.tanh(reference)) / dx]

    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 6, generator=g), torch.randn(4, 6, generator=g)]
    expected, program = fast_path.record(walk, inputs, "traced")
    written = _written(program)
    assert set(written) == {"aten.sub.out", "aten.div.out"}
    (tanh_of_x,) = [
        n for n in program.module.graph.nodes if n.target == torch.ops.aten.tanh.default and n.args[0].name == "input_1"
    ]
    assert written["aten.sub.out"] == tanh_of_x.name
    _replays_exactly(program, inputs, expected)


def test_a_value_read_later_through_a_view_is_not_written_into() -> None:
    """``a`` is read for the last time by ``a + 1``, but its transpose is read afterwards: the sum
    gets a buffer of its own."""

    def walk(x: Tensor) -> list[Tensor]:
        a = x * 2.0
        transposed = a.t()
        b = a + 1.0
        return [b, transposed * 3.0]

    x = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    expected, program = fast_path.record(walk, [x], "traced")
    assert "aten.add.out" not in _written(program)
    _replays_exactly(program, [x], expected)


def test_returned_values_and_inputs_are_never_written() -> None:
    """A value the program returns is not written into by a later op that reads it last; neither
    is an input, nor a constant of the program."""

    def walk(x: Tensor, y: Tensor) -> list[Tensor]:
        e = x * y
        f = e + 1.0  # e's last read, but e is returned
        return [e, f, x + y]

    g = torch.Generator().manual_seed(2)
    inputs = [torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)]
    expected, program = fast_path.record(walk, inputs, "traced")
    assert _written(program) == {}
    _replays_exactly(program, inputs, expected)


def test_a_slice_of_a_larger_buffer_is_not_written_into() -> None:
    """Written into, a row of a larger buffer would keep the whole buffer alive as the output."""

    def walk(x: Tensor) -> list[Tensor]:
        wide = x * 2.0
        row = wide[:1]
        return [row + 1.0]

    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    expected, program = fast_path.record(walk, [x], "traced")
    assert _written(program) == {}
    _replays_exactly(program, [x], expected)


def test_a_replay_with_another_memory_layout_gives_the_same_values() -> None:
    """Recorded on a contiguous input, replayed on a channels-last one (the same signature): the
    ops write into their dying arguments in those arguments' layout, the values are unchanged."""

    def walk(reference: Tensor, x: Tensor) -> list[Tensor]:
        y = torch.sigmoid(x) - torch.sigmoid(reference)
        return [y * (x - reference)]

    g = torch.Generator().manual_seed(4)
    reference, x = torch.randn(1, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    _, program = fast_path.record(walk, [reference, x], "traced")
    assert _written(program)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    (got,) = program.run([reference, channels_last])
    torch.testing.assert_close(got, walk(reference, channels_last)[0], rtol=0, atol=0)


def test_an_op_with_tensor_arguments_gets_the_out_overload_of_the_same_arguments() -> None:
    """``clamp`` with tensor bounds (``clamp.Tensor``) is written through ``clamp.Tensor_out``, not
    ``clamp.out``, whose bounds are numbers (the replay would raise and never run)."""

    def walk(low: Tensor, x: Tensor) -> list[Tensor]:
        return [torch.clamp(x * 2.0, min=low) + 1.0]

    g = torch.Generator().manual_seed(6)
    inputs = [torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)]
    expected, program = fast_path.record(walk, inputs, "traced")
    assert {"aten.clamp.Tensor_out", "aten.add.out"} <= set(_written(program))
    _replays_exactly(program, inputs, expected)


def test_a_constant_of_the_program_is_never_written() -> None:
    """A constant read last by an element-wise op of its own layout keeps its values."""
    constant = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
    kept = constant.clone()

    def walk(x: Tensor) -> list[Tensor]:
        return [(x * 2.0) * constant, constant + 1.0]

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(8))
    expected, program = fast_path.record(walk, [x], "traced", constants=[constant])
    _replays_exactly(program, [x], expected)
    assert torch.equal(constant, kept) and torch.equal(program.module._constant_0, kept)


def test_a_view_of_a_kept_reference_value_is_not_written_into(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference side's product is kept between calls; the rest computes a view of it again
    (every element-wise op and view recomputed) and reads the view last in a product: that
    product gets a buffer of its own, and the kept value is the same at every call."""
    monkeypatch.setattr(fast_path, "RECOMPUTED_BYTES", 0)
    monkeypatch.setattr(fast_path, "CHECKS_PER_COMPUTATION", 0.0)  # kept however fast it is

    def walk(weight: Tensor, reference: Tensor, x: Tensor) -> list[Tensor]:
        return [(reference @ weight).view(-1) * 2.0, x @ weight]

    g = torch.Generator().manual_seed(9)
    inputs = [torch.randn(4, 5, generator=g), torch.randn(1, 4, generator=g), torch.randn(3, 4, generator=g)]
    expected, program = fast_path.record(walk, inputs, "traced", reused=([0], [1]))
    side = program.reference_side
    assert side is not None
    _replays_exactly(program, inputs, expected)
    assert side.values is not None
    (kept,) = side.values
    torch.testing.assert_close(kept, inputs[1] @ inputs[0], rtol=0, atol=0)


def test_storages_are_told_apart_by_identity_not_address() -> None:
    """A view shares its base's storage number; a storage freed and another allocated (often at
    the same address) gets a new one."""
    identities = StorageIdentities()
    for size in (1024, 4096, 65536):
        a = torch.randn(size)
        first = identities.of(a)
        assert identities.of(a[3:]) == first and identities.of(a.view(-1, 32)) == first
        address = a.untyped_storage().data_ptr()
        del a
        for _ in range(8):
            b = torch.empty(size)
            assert identities.of(b) != first
            if b.untyped_storage().data_ptr() == address:
                return  # the freed address came back, with a new number
            del b
    pytest.skip("the allocator did not give a freed address back")


@pytest.mark.parametrize(
    ("make", "whole"),
    [
        (lambda: torch.randn(3, 4), True),
        (lambda: torch.randn(3, 4).t(), True),
        (lambda: torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last), True),
        (lambda: torch.randn(6, 4)[:3], False),
        (lambda: torch.randn(6, 4)[::2], False),
        (lambda: torch.randn(1, 4).expand(3, 4), False),
        (lambda: torch.randn(0, 4), False),
    ],
)
def test_layout_says_whether_a_tensor_is_its_whole_storage(make: object, whole: bool) -> None:
    t = make()  # type: ignore[operator]
    assert layout(t) == (tuple(t.shape), t.stride(), t.dtype, t.device, whole)
