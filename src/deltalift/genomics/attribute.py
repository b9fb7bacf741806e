"""DeepLIFT-SHAP for DNA sequence models, a drop-in for ``tangermeme.deep_lift_shap.deep_lift_shap``.

Each one-hot sequence ``(A, L)`` (``A = 4`` for DNA) is explained against ``K`` references (by
default ``K = 20`` dinucleotide-shuffled copies of itself) and the hypothetical contributions are
averaged, ``hyp(x) = 1/K sum_k hyp(x, x0_k)`` (Shrikumar et al. 2017; Lundberg & Lee 2017;
:mod:`deltalift.genomics.hypothetical`). As in tangermeme, the default result is that average
times the one-hot input (non-zero only at the bases the sequence holds: per position, DeepLIFT's
contribution ``sum_c m_c (x_c - x0_c)`` averaged over the references), and ``hypothetical=True``
returns the average itself, the input TF-MoDISco wants.

The signature is tangermeme's (version 1.6), names, defaults and positional order alike, so that
``from deltalift.genomics import deep_lift_shap`` replaces ``from tangermeme.deep_lift_shap import
deep_lift_shap``; deltalift's own options (the rule, ``eps``, ``strict``, signed convergence
deltas, ...) are keyword-only after them. Where the two differ it is said in the docstring of
:func:`deep_lift_shap`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from deltalift.errors import ConvergenceWarning
from deltalift.genomics.hypothetical import hypothetical_contributions
from deltalift.genomics.references import dinucleotide_shuffled, shuffled
from deltalift.genomics.shuffle import RandomState, dinucleotide_shuffle, shuffle
from deltalift.methods.deeplift_shap import DeepLiftShap

Tensor = torch.Tensor

__all__ = ["AttributionReferences", "ConvergenceThresholdWarning", "deep_lift_shap"]

#: deltalift's shufflers: called once per sequence, with ``n=n_shuffles`` and a numpy generator
#: seeded by ``random_state`` and the sequence itself. Any other callable is called as tangermeme calls it.
DELTALIFT_SHUFFLERS: tuple[Callable[..., Tensor], ...] = (
    dinucleotide_shuffle,
    shuffle,
    dinucleotide_shuffled,
    shuffled,
)


class AttributionReferences(NamedTuple):
    """What ``return_references=True`` returns (tangermeme's ``AttributionReferencesResult``):
    unpacks as ``attributions, references = ...``."""

    attributions: Tensor
    references: Tensor


class ConvergenceThresholdWarning(ConvergenceWarning, RuntimeWarning):
    """A convergence delta exceeds ``warning_threshold`` (a ``RuntimeWarning``, as tangermeme's)."""


def deep_lift_shap(
    model: nn.Module | Callable[..., Tensor],
    X: Tensor,
    args: Any = None,
    target: Any = 0,
    batch_size: int = 32,
    references: Tensor | Callable[..., Tensor] | None = dinucleotide_shuffle,
    n_shuffles: int = 20,
    return_references: bool = False,
    hypothetical: bool = False,
    warning_threshold: float | None = 0.001,
    additional_nonlinear_ops: dict[Any, Any] | None = None,
    print_convergence_deltas: bool = False,
    raw_outputs: bool = False,
    only_warn: bool = False,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    random_state: RandomState = None,
    verbose: bool = False,
    *,
    return_convergence_delta: bool = False,
    additional_forward_args: Any = None,
    show_progress: bool = False,
    **options: Any,
) -> Any:
    """DeepLIFT-SHAP attributions of one-hot sequences, as ``tangermeme.deep_lift_shap``.

    A sequence's result depends only on the sequence, ``random_state``, its own references and its
    own rows of ``args``, never on the other sequences of the call, its place among them, or
    ``batch_size``: ``deep_lift_shap(model, X, random_state=0)[i:j]`` equals
    ``deep_lift_shap(model, X[i:j], random_state=0)`` (exactly on the CPU; on a GPU up to the
    rounding of kernels chosen by batch size), so a data set can be split into any parts.

    Parameters
    ----------
    model:
        The sequence model, taking ``(N, A, L)`` (and ``args``) and returning ``(N, n_outputs)``.
        An ``nn.Module`` is put in eval mode and moved to ``device`` for the call, then put back
        (device and each submodule's training flag) as tangermeme does; a plain function is
        called as it is.
    X:
        One-hot sequences ``(N, A, L)`` (``A = 4``, ACGT, for DNA), of any dtype: each batch is
        converted to ``dtype``. All-zero columns (N) are allowed; other values raise a ValueError
        (a warning with ``only_warn``). A tangermeme ``PackedSequence`` is not accepted: pass
        ``X.to_one_hot()``.
    args:
        Additional arguments of the model, not explained: a tuple of tensors with one row per
        sequence (a lone tensor is taken as a 1-tuple). Each batch gets the rows of its sequences,
        repeated once per reference; floating ones are converted to ``dtype``, and all are moved
        to ``device`` (tangermeme converts integer ones too; deltalift leaves them integers).
        Values that are not tensors are passed as they are.
    target:
        The output explained: an int (the column of ``model(X)``, tangermeme's ``[:, target]``),
        one target per sequence (a list or a tensor), ``None`` for a model with a single output, or
        any other target :class:`~deltalift.DeepLiftShap` takes (a callable of the output returning
        one value per example, captured with the model).
    batch_size:
        (sequence, reference) pairs evaluated at once (tangermeme's meaning; default 32). The
        result does not depend on it beyond rounding.
    references:
        deltalift's :func:`~deltalift.genomics.shuffle.dinucleotide_shuffle` (the default; also
        ``None``, or :func:`~deltalift.genomics.shuffle.shuffle` and the wrappers
        ``dinucleotide_shuffled`` and ``shuffled``): ``n_shuffles`` references per sequence, drawn
        once per sequence ``i`` by ``references(X[i:i+1], n=n_shuffles, random_state=g_i)`` with a
        numpy generator ``g_i`` seeded by ``random_state`` and a 128-bit hash of the sequence (so
        equal sequences get equal references, wherever they are in ``X``). deltalift's dinucleotide shuffle
        is uniform over the sequences with the same dinucleotide counts and keeps N columns in
        place (see :mod:`deltalift.genomics.shuffle`); tangermeme's reaches only some of them, so
        the default references, and attributions, differ from tangermeme's in their random
        draws.

        Any other callable is called as tangermeme 1.6 calls it, so functions written for
        tangermeme (``tangermeme.ersatz.dinucleotide_shuffle`` included) give the references they
        give there: with an int ``random_state``, reference ``k`` of sequence ``i`` is
        ``references(X[i:i+1], n=1, random_state=random_state + k)[:, 0]``; with ``None``, the
        function is called with ``n=1`` and no ``random_state`` on the batch's pair rows (each
        sequence repeated once per reference). It must return ``(rows, 1, A, L)``.

        Or a tensor ``(N, K, A, L)`` of references per sequence (``n_shuffles`` is then ``K``).
        Unlike tangermeme's, references need not be one-hot (a background ``0.25`` works).
    n_shuffles:
        References per sequence when ``references`` is a function (default 20).
    return_references:
        Also return the references used, ``(N, K, A, L)``: the result is then
        ``AttributionReferences(attributions, references)``, which unpacks as a pair.
    hypothetical:
        ``False`` (default): the averaged hypothetical contributions times the one-hot input, as
        tangermeme (and ``(result).sum(1)`` is DeepLIFT-SHAP's per-position contribution).
        ``True``: the hypothetical contributions, what each base would contribute at each position
        (TF-MoDISco's input).
    warning_threshold:
        Warn (:class:`ConvergenceThresholdWarning`, a ``RuntimeWarning``) when the absolute
        convergence delta ``|sum_i C_i - (t(x) - t(x0))|`` of any (sequence, reference) pair exceeds
        it (default ``1e-3``, tangermeme's); ``None`` never warns. deltalift also checks every pair
        against a tolerance relative to the output change (its ``ConvergenceWarning``; ``strict=True``
        raises instead).
    additional_nonlinear_ops:
        tangermeme's hook-based rules for module types. deltalift attributes the operations of the
        captured graph, not modules, so only ``None`` (or an empty dict) is accepted; a rule for an
        operation is registered once with :func:`deltalift.register_rule`.
    print_convergence_deltas:
        Print each batch's absolute convergence deltas, as tangermeme.
    raw_outputs:
        Return the multipliers ``m = dC/d(x - x0)`` of every (sequence, reference) pair,
        ``(N, K, A, L)``, instead of the attributions (``hypothetical`` does not apply), as
        tangermeme.
    only_warn:
        Warn instead of raising when ``X`` is not one-hot (tangermeme's option).
    dtype:
        The dtype computed in (and returned); ``None``: the model's floating parameters' dtype
        (float32 for a model without any). deltalift does not autocast: a dtype other than the
        model's raises a ValueError (convert the model with ``model.to(dtype)``).
    device:
        Where to compute. ``None`` (tangermeme's default): CUDA when it is available and the model
        is on the CPU, else the model's device. ``"cuda"`` when CUDA is not available falls back
        to the model's device with a ``UserWarning`` (tangermeme would fail). The model is moved
        there for the call and moved back afterwards; results come back on the CPU, as
        tangermeme's.
    random_state:
        ``None`` (fresh entropy: references differ on every call), an ``int`` seed (``>= 0`` for
        deltalift's shufflers), or a ``numpy.random.Generator`` (one draw from it seeds the call).
        With an int seed, two identical calls give identical results.
    verbose:
        A tqdm progress bar over the (sequence, reference) pairs (needs ``tqdm``).
    return_convergence_delta:
        Also return the signed convergence delta ``sum_i C_i - (t(x) - t(x0))`` of every pair,
        ``(N * K,)``, sequence-major (``i * K + k``), last in the result.
    additional_forward_args:
        Captum's name for ``args`` (give one or the other).
    show_progress:
        The same as ``verbose``.
    options:
        Any option of :class:`~deltalift.DeepLift`: ``rule="rescale"`` (default),
        ``"genomics_default"`` or ``"reveal_cancel"``, ``eps``, ``strict``, ``tolerance``, ...

    Returns
    -------
    ``(N, A, L)`` attributions (``(N, K, A, L)`` multipliers with ``raw_outputs``) on the CPU in
    ``dtype``; ``AttributionReferences(attributions, references)`` with ``return_references``;
    with ``return_convergence_delta``, a tuple ending in the deltas: ``(attributions, deltas)`` or
    ``(attributions, references, deltas)``.
    """
    if additional_nonlinear_ops:
        raise TypeError(
            "additional_nonlinear_ops is tangermeme's hook-based extension for module types; deltalift "
            "attributes the operations of the captured graph instead. Register a rule for the operation "
            "once, e.g. deltalift.register_rule(torch.ops.aten.OP, deltalift.rules.rescale) for an "
            "element-wise nonlinearity (deltalift.rules.linear for an affine op), and call deep_lift_shap "
            "with additional_nonlinear_ops=None; an op without a rule raises MissingRuleError naming it."
        )
    if additional_forward_args is not None:
        if args is not None:
            raise TypeError("give args or additional_forward_args, not both")
        args = additional_forward_args
    X = _check_sequences(X, only_warn)
    n_sequences = X.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if references is None:
        references = dinucleotide_shuffle
    if isinstance(references, Tensor):
        if references.ndim != 4 or references.shape[0] != n_sequences or references.shape[2:] != X.shape[1:]:
            raise ValueError(
                f"references must have shape (N, K, A, L) = ({n_sequences}, K, {X.shape[1]}, {X.shape[2]}), "
                f"got {tuple(references.shape)}"
            )
        n_refs = references.shape[1]
        if n_refs == 0:
            raise ValueError("references holds no reference (K = 0)")
    elif callable(references):
        if isinstance(n_shuffles, bool) or not isinstance(n_shuffles, int | np.integer) or n_shuffles < 1:
            raise ValueError(f"n_shuffles must be a positive int, got {n_shuffles!r}")
        n_refs = int(n_shuffles)
    else:
        raise TypeError(f"references must be a tensor (N, K, A, L) or a function, got {type(references).__name__}")
    extra = _check_args(args, n_sequences)
    targets = _check_target(target, n_sequences)
    draw = _reference_drawer(references, n_refs, random_state)
    compute_dtype = _resolve_dtype(model, dtype, X)
    target_device = _resolve_device(device, model, X)
    per_chunk = max(1, batch_size // n_refs)

    attributions: list[Tensor] = []
    kept_references: list[Tensor] = []
    deltas: list[Tensor] = []
    progress = _progress(n_sequences * n_refs, verbose or show_progress)
    try:
        with _attributing(model, target_device):
            explainer = DeepLiftShap(model, batch_size=int(batch_size), **options)
            for start in range(0, n_sequences, per_chunk):
                index = torch.arange(start, min(start + per_chunk, n_sequences))
                x = X[index.to(X.device)].cpu().to(dtype=compute_dtype)  # drawn from on the CPU, as tangermeme
                refs = draw(x, index).to(dtype=compute_dtype)
                if return_references:
                    kept_references.append(refs.detach().cpu())
                recorded: list[Tensor] = []
                custom = _recorder(recorded) if raw_outputs else hypothetical_contributions
                result, delta = explainer.attribute(
                    x.to(target_device),
                    refs.to(target_device),
                    target=_rows(targets, index, target_device),
                    additional_forward_args=tuple(_chunk_arg(a, index, compute_dtype, target_device) for a in extra),
                    return_convergence_delta=True,
                    custom_attribution_func=custom,
                )
                if raw_outputs:
                    result = torch.cat(recorded).unflatten(0, (len(index), n_refs))
                elif not hypothetical:
                    result = result * x.to(result.device)
                attributions.append(result.detach().cpu())
                delta = delta.detach().cpu()
                deltas.append(delta)
                if print_convergence_deltas:
                    print(delta.abs())
                progress.update(len(index) * n_refs)
    finally:
        progress.close()
    all_deltas = torch.cat(deltas)
    exceeding = int((all_deltas.abs() > warning_threshold).sum()) if warning_threshold is not None else 0
    if exceeding:
        worst = int(all_deltas.abs().argmax())
        sequence, reference = divmod(worst, n_refs)
        warnings.warn(
            f"convergence deltas of {exceeding} of {all_deltas.numel()} (sequence, reference) pairs exceed "
            f"warning_threshold={warning_threshold:g}: the largest, {float(all_deltas[worst].abs()):.3g}, at "
            f"sequence {sequence}, reference {reference}",
            ConvergenceThresholdWarning,
            stacklevel=2,
        )
    out = torch.cat(attributions)
    if return_references:
        pair = AttributionReferences(out, torch.cat(kept_references))
        return (*pair, all_deltas) if return_convergence_delta else pair
    return (out, all_deltas) if return_convergence_delta else out


# --------------------------------------------------------------------------------------------------
# Checks


def _check_sequences(X: Any, only_warn: bool) -> Tensor:
    """``X`` as a tensor ``(N, A, L)`` with ``N >= 1``; one-hot along dim 1 (N columns allowed)."""
    if not isinstance(X, Tensor):
        hint = "; for a tangermeme PackedSequence pass X.to_one_hot()" if hasattr(X, "to_one_hot") else ""
        raise TypeError(f"X must be a torch.Tensor of one-hot sequences (N, A, L), got {type(X).__name__}{hint}")
    if X.ndim != 3:
        raise ValueError(f"X must be one-hot sequences of shape (N, A, L), got {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError("deep_lift_shap needs at least one sequence; X has shape[0] == 0")
    one_hot = not X.is_complex() and bool(((X == 0) | (X == 1)).all()) and bool((X.sum(dim=1) <= 1).all())
    if not one_hot:
        message = "X must be one-hot along dim 1: entries 0 or 1, at most one 1 per position"
        if not only_warn:
            raise ValueError(message + " (only_warn=True to go on anyway)")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return X.detach()


def _check_args(args: Any, n_sequences: int) -> tuple[Any, ...]:
    if args is None:
        return ()
    values = tuple(args) if isinstance(args, tuple | list) else (args,)
    for i, value in enumerate(values):
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] != n_sequences:
            raise ValueError(
                f"args[{i}] has {value.shape[0]} rows; each additional argument needs one row per sequence "
                f"({n_sequences}), as tangermeme's"
            )
    return values


def _per_sequence(target: Any) -> bool:
    """Whether ``target`` gives one target per sequence (a list, or a tensor of several entries);
    anything else (an int, a tuple indexing the output, a callable) is one target for all."""
    return isinstance(target, list) or (isinstance(target, Tensor) and target.ndim >= 1 and target.numel() != 1)


def _check_target(target: Any, n_sequences: int) -> Any:
    if _per_sequence(target) and len(target) != n_sequences:
        raise ValueError(f"target has {len(target)} entries; give one target, or one per sequence ({n_sequences})")
    return target


def _rows(value: Any, index: Tensor, device: torch.device) -> Any:
    """A per-sequence target's entries for the sequences ``index``; any other target as it is."""
    if isinstance(value, list):
        return [value[i] for i in index.tolist()]
    if _per_sequence(value):
        return value[index.to(value.device)].to(device)
    return value


def _chunk_arg(value: Any, index: Tensor, dtype: torch.dtype, device: torch.device) -> Any:
    if not isinstance(value, Tensor):
        return value
    rows = value[index.to(value.device)] if value.ndim > 0 else value
    return rows.to(device=device, dtype=dtype if rows.is_floating_point() else None)


# --------------------------------------------------------------------------------------------------
# References


def _reference_drawer(references: Any, n_refs: int, random_state: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """``draw(x, index)``: the ``(len(index), K, A, L)`` references of the sequences ``X[index] = x``."""
    if isinstance(references, Tensor):
        given = references.detach()
        return lambda x, index: given[index.to(given.device)].to(device=x.device)
    if any(references is shuffler for shuffler in DELTALIFT_SHUFFLERS):
        base = _base_entropy(random_state)

        def draw_own(x: Tensor, index: Tensor) -> Tensor:
            parts = [
                references(x[j : j + 1], n=n_refs, random_state=np.random.default_rng([base, _fingerprint(x[j])]))
                for j in range(len(x))
            ]
            return _checked_references(torch.cat(parts), len(index), n_refs, x)

        return draw_own
    seed = _int_seed(random_state)

    def draw_tangermeme_style(x: Tensor, index: Tensor) -> Tensor:
        if seed is None:  # one call on the pair rows, as tangermeme's unseeded batches
            rows = x.repeat_interleave(n_refs, 0)
            refs = _checked_references(references(rows, n=1), len(rows), 1, x)[:, 0]
        else:  # one call per (sequence, reference), reference k seeded random_state + k
            refs = torch.cat(
                [
                    _checked_references(references(x[j : j + 1], n=1, random_state=seed + k), 1, 1, x)[:, 0]
                    for j in range(len(x))
                    for k in range(n_refs)
                ]
            )
        return refs.unflatten(0, (len(x), n_refs))

    return draw_tangermeme_style


def _checked_references(refs: Any, rows: int, n: int, x: Tensor) -> Tensor:
    expected = (rows, n, *x.shape[1:])
    if not isinstance(refs, Tensor) or tuple(refs.shape) != expected:
        got = tuple(refs.shape) if isinstance(refs, Tensor) else type(refs).__name__
        raise ValueError(
            f"the references function returned {got}, expected {expected}: it is called as "
            "references(X, n=..., random_state=...) and must return (len(X), n, A, L), as tangermeme's"
        )
    return refs.to(device=x.device)


def _fingerprint(sequence: Tensor) -> int:
    """A 128-bit hash of a one-hot sequence ``(A, L)``: its letters (``A`` for an all-zero column) and shape."""
    letters = torch.where(sequence.any(0), sequence.argmax(0), sequence.shape[0]).to(torch.int64).numpy()
    digest = hashlib.blake2b(np.asarray(sequence.shape, dtype=np.int64).tobytes(), digest_size=16)
    digest.update(letters.tobytes())
    return int.from_bytes(digest.digest(), "little")


def _check_random_state(random_state: Any) -> None:
    if isinstance(random_state, bool) or not (
        random_state is None or isinstance(random_state, int | np.integer | np.random.Generator)
    ):
        raise TypeError(
            f"random_state must be None, an int or a numpy.random.Generator, got {type(random_state).__name__}"
        )


def _base_entropy(random_state: Any) -> int:
    """The entropy that, with a sequence's fingerprint, seeds its references."""
    _check_random_state(random_state)
    if random_state is None:
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if random_state < 0:
        raise ValueError(f"random_state must be >= 0, got {random_state}")
    return int(random_state)


def _int_seed(random_state: Any) -> int | None:
    """The int tangermeme-style functions are seeded with (``None`` for none)."""
    _check_random_state(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31))
    return None if random_state is None else int(random_state)


# --------------------------------------------------------------------------------------------------
# Model, dtype, device


def _resolve_dtype(model: Any, dtype: str | torch.dtype | None, X: Tensor) -> torch.dtype:
    own = _model_dtype(model)
    if dtype is None:
        return own or torch.float32
    wanted = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if not isinstance(wanted, torch.dtype) or not wanted.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    if own is not None and wanted != own:
        raise ValueError(
            f"dtype={wanted} differs from the model's {own}; deltalift does not autocast (tangermeme's mixed "
            f"precision): convert the model with model.to({wanted}), or pass dtype=None"
        )
    return wanted


def _model_dtype(model: Any) -> torch.dtype | None:
    if not isinstance(model, nn.Module):
        return None
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def _model_device(model: Any) -> torch.device | None:
    if not isinstance(model, nn.Module):
        return None
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return None


def _normalise(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _resolve_device(device: str | torch.device | None, model: Any, X: Tensor) -> torch.device:
    """``device`` as tangermeme resolves it, except that CUDA, when unavailable, falls back to the model's device."""
    home = _model_device(model) or X.device
    if device is None:
        if home.type == "cpu" and torch.cuda.is_available():
            return _normalise(torch.device("cuda"))
        return home
    wanted = torch.device(device)
    if wanted.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"device={str(device)!r} but CUDA is not available: computing on the model's device, {home}",
            UserWarning,
            stacklevel=3,
        )
        return home
    return _normalise(wanted)


@contextmanager
def _attributing(model: Any, device: torch.device) -> Iterator[None]:
    """The model in eval mode on ``device`` for the call; its device and training flags put back after."""
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    tensors = list(model.parameters()) + list(model.buffers())
    home = tensors[0].device if tensors else None
    moved = any(t.device != device for t in tensors)
    try:
        if moved:
            model.to(device)
        model.eval()
        yield
    finally:
        if moved and home is not None:
            model.to(home)
        for module, training in flags:
            module.training = training


def _recorder(recorded: list[Tensor]) -> Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]:
    """A ``custom_attribution_func`` that keeps each batch's per-pair multipliers (DeepLiftShap's
    batches come sequence-major, each sequence's references in order)."""

    def record(multipliers: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        recorded.append(multipliers[0].detach().cpu())
        return multipliers

    return record


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError("verbose=True draws a progress bar with tqdm: pip install tqdm") from exc
    return tqdm(total=total, desc="DeepLIFT-SHAP", unit="pair")
