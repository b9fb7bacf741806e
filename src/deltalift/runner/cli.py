"""``deltalift run``: any deltalift method over a folder of ``.npy`` arrays or images, resumable, optionally on Ray."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RUN_EPILOG = """Inputs: a folder of .npy files (one example each, read in name order), one .npy file
whose rows are the examples, or a folder of PNG/JPEG images (--preprocess). The examples are cut
into shards under --out/shards; rerun the same command after an interruption to resume (a run with
other settings refuses the folder unless --overwrite). Writes attributions.npy (shaped like the
inputs), targets.npy and names.txt.

examples:
  deltalift run --model cnn.pt --inputs val/ --method DeepLift --baseline zero --out attr/
  deltalift run --model cnn.pt --inputs x.npy --method IntegratedGradients --attribute-option n_steps=32
  deltalift run --model resnet.pt --inputs images/ --preprocess torchvision --ray --ray-actors 2"""


def _option(text: str) -> tuple[str, Any]:
    """``key=value``, the value read as JSON when it parses (``3``, ``0.5``, ``true``, ``[2, 2]``), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _baseline(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


def add_run_parser(commands: Any) -> None:
    """Add ``run`` to the subcommands ``commands`` of ``deltalift``."""
    from deltalift.cli import _add_common, positive_int

    run = commands.add_parser(
        "run",
        help="explain every example of a data set (a folder of .npy arrays or images), resumably",
        description="Attributions of a saved model for every example of a data set, with any deltalift method, "
        "in resumable shards, in this process or on Ray.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--model", required=True, type=Path, metavar="FILE", help="model file (.pt or .pt2)")
    run.add_argument("--inputs", required=True, type=Path, metavar="PATH", help="folder of .npy/images, or one .npy")
    run.add_argument("--method", default="DeepLift", help="a class of deltalift.methods (default: DeepLift)")
    run.add_argument(
        "--method-option", type=_option, action="append", default=[], metavar="K=V", help="Method(model, K=V)"
    )
    run.add_argument(
        "--attribute-option", type=_option, action="append", default=[], metavar="K=V", help="attribute(..., K=V)"
    )
    run.add_argument("--target", type=int, default=None, help="output index (default: the predicted class)")
    run.add_argument("--baseline", type=_baseline, default="zero", help="zero, a number or a .npy file (default zero)")
    run.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="examples per batch")
    run.add_argument("--preprocess", default="none", help="image preprocessing preset (none, torchvision, timm)")
    run.add_argument("--seed", type=int, default=0, help="seed of random methods, per shard (default 0)")
    run.add_argument("--device", default="cpu", help="torch device to compute on (default: cpu)")
    run.add_argument("--shard-size", type=positive_int, default=256, metavar="N", help="examples per shard")
    run.add_argument("--overwrite", action="store_true", help="discard shards of a run with other settings")
    run.add_argument("--ray", action="store_true", help="run the shards on a local Ray instance")
    run.add_argument("--ray-address", default=None, metavar="ADDRESS", help="run on this Ray cluster ('auto')")
    run.add_argument("--ray-actors", type=positive_int, default=None, help="Ray actors (default: one per GPU, else 2)")
    run.add_argument("--ray-gpus-per-actor", type=float, default=0.0, metavar="G", help="GPUs per actor (default 0)")
    run.add_argument("--ray-cpus-per-actor", type=float, default=1.0, metavar="C", help="CPUs per actor (default 1)")
    _add_common(run, "output folder (default: deltalift-output)")
    run.set_defaults(run=run_arrays)


def ray_options(args: argparse.Namespace) -> Any:
    """The :class:`~deltalift.runner.job.RayOptions` of ``--ray`` / ``--ray-address``, or ``None``."""
    from deltalift.runner.job import RayOptions

    if not args.ray and args.ray_address is None:
        return None
    return RayOptions(
        address=args.ray_address,
        actors=args.ray_actors,
        num_gpus=args.ray_gpus_per_actor,
        num_cpus=args.ray_cpus_per_actor,
    )


def run_arrays(args: argparse.Namespace) -> None:
    """Run ``deltalift run`` with parsed arguments."""
    from deltalift.runner.arrays import attribute_arrays

    result = attribute_arrays(
        args.model,
        args.inputs,
        args.out,
        args.method,
        method_options=dict(args.method_option),
        attribute_options=dict(args.attribute_option),
        target=args.target,
        baseline=args.baseline,
        batch_size=args.batch_size,
        preprocess=args.preprocess,
        random_state=args.seed,
        device=args.device,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        ray=ray_options(args),
        show_progress=not args.no_progress,
    )
    run = result.run
    print(
        f"explained {run.store.n_items} examples with {args.method} ({run.computed} shards computed, {run.skipped} already done)"
    )
    print(f"wrote {', '.join(sorted(p.name for p in result.files.values()))} to {args.out}")
