"""``python -m mobile_sam_core compare``: two models on a folder of images, the paper's table.

Also runnable on its own: ``python -m mobile_sam_core.compare_cli [IMAGES...] --models vit_t vit_b``.

For each image the reference model (the first of ``--models``) defines objects (its
segment-everything masks, or its mask for the middle of the image when that finds nothing);
each object gives a box prompt and ``--points`` random foreground points (``--seed``). Both
models answer every prompt. Printed and written to ``--out``: mIoU between the two models'
masks for single-point and box prompts, each model's median encoder and decoder time and its
parameter counts (``table.md``, ``table.csv``, ``prompts.csv``, ``report.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["add_compare_parser", "run_compare", "main", "find_images"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}

_DESCRIPTION = """\
Compare two models on the same images and prompts, like the MobileSAM paper's comparison with SAM:
mIoU between the two models' masks for single-point prompts (random foreground points of the
reference model's masks) and for box prompts, plus each model's median encoder and decoder
times and parameter counts.
"""

_EPILOG = """\
examples:
  # MobileSAM against SAM ViT-B on the bundled example photos:
  python -m mobile_sam_core compare --models vit_t vit_b
  # your own photos, 10 random points per object, fixed seed, results in out/:
  python -m mobile_sam_core compare ~/photos --models vit_t vit_b --points 10 --seed 1 --out out/
  # a fine-tuned checkpoint against the official one:
  python -m mobile_sam_core compare --models vit_t vit_t --checkpoint-b finetuned.pt

The first model is the reference: its masks define the objects and the points. Weights are
found as for the other commands (--checkpoint-a/-b, MOBILE_SAM_CHECKPOINT_<NAME>, the cache,
a download unless --offline or MOBILE_SAM_OFFLINE=1). A model whose weights are missing is an
error (exit code 2) that says how to get them; nothing is replaced by a fallback.
"""


def _default_images() -> Path:
    here = Path("examples")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "examples"


def find_images(paths: Sequence[Path]) -> list[Path]:
    """Image files named directly or found (not recursively) in folders, sorted per folder."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 (e.g. 10,20,300,240), got {text!r}") from None
    return x0, y0, x1, y1


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from .build import MODEL_SPECS

    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE_OR_FOLDER",
                   help="images and/or folders of images (default: the examples/ folder)")
    p.add_argument("--models", nargs=2, metavar=("REFERENCE", "OTHER"), default=["vit_t", "vit_b"],
                   choices=sorted(MODEL_SPECS), help="the two models, reference first (default: vit_t vit_b)")
    p.add_argument("--checkpoint-a", type=Path, help="checkpoint of the first (reference) model")
    p.add_argument("--checkpoint-b", type=Path, help="checkpoint of the second model")
    p.add_argument("--points", type=int, default=5, metavar="N",
                   help="random foreground points per object, each a single-point prompt (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random points (default: %(default)s)")
    p.add_argument("--max-objects", type=int, default=5, metavar="K",
                   help="objects per image from the reference model's segment-everything (default: %(default)s)")
    p.add_argument("--grid", type=int, default=8, metavar="G",
                   help="segment-everything grid of the reference model, G x G points (default: %(default)s)")
    p.add_argument("--box", type=_box, action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="use the reference model's mask for this box as the object, in every image, instead "
                        "of segment-everything (repeatable; pixels of the image as stored)")
    p.add_argument("--max-side", type=int, default=1024,
                   help="larger images are downsized to this longest side first; prompt coordinates in "
                        "prompts.csv are pixels of the downsized image (default: %(default)s)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the untimed first encoder run of each model (faster, but the first model's "
                        "first encoder time then includes one-off start-up costs)")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--out", type=Path, default=Path("compare_out"),
                   help="folder for table.md, table.csv, prompts.csv, report.json (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of the markdown table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "compare", help="compare two models (e.g. MobileSAM vs SAM): mIoU, timings, parameters",
        description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(p)
    p.set_defaults(handler=run_compare)
    return p


def _resolve(name: str, checkpoint: Path | None, offline: bool):
    from .weights import resolve_checkpoint

    return resolve_checkpoint(name, checkpoint, allow_download=False if offline else None, allow_fallback=False,
                              progress=not offline)


def run_compare(args: argparse.Namespace) -> int:
    """Run the comparison described by parsed ``args``; returns the exit code (2: missing input)."""
    import numpy as np

    from .build import MODEL_SPECS, CheckpointError, build_sam
    from .images import ImageLoadError, load_image
    from .weights import WeightsUnavailableError

    def err(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if args.points < 0 or args.max_objects < 0 or args.grid < 1:
        return err("--points and --max-objects must be >= 0 and --grid >= 1")
    try:
        paths = find_images(args.images or [_default_images()])
    except FileNotFoundError as exc:
        return err(str(exc))
    if not paths:
        where = ", ".join(str(p) for p in (args.images or [_default_images()]))
        return err(f"no images found in {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")

    # Weights of both models first, so that a missing one is reported before any work.
    names = list(args.models)
    missing, resolved = [], []
    for name, ckpt in zip(names, (args.checkpoint_a, args.checkpoint_b)):
        try:
            resolved.append(_resolve(name, ckpt, args.offline))
        except WeightsUnavailableError as exc:
            missing.append(f"{name} ({MODEL_SPECS[name].title}): {exc}")
    if missing:
        print("error: missing weights for " + "\n\nerror: missing weights for ".join(missing), file=sys.stderr)
        print("\n(--checkpoint-a/--checkpoint-b PATH use files from elsewhere; `python -m mobile_sam_core "
              "models` lists what is available here; `python -m mobile_sam_core download NAME` fetches "
              "official weights)", file=sys.stderr)
        return 2

    say = (lambda m: None) if args.quiet else (lambda m: print(f"[compare] {m}", file=sys.stderr, flush=True))
    try:
        models = []
        for name, res in zip(names, resolved):
            say(f"loading {name} from {res.path} ({res.source})")
            models.append(build_sam(name, res.path))
        images, boxes = [], {}
        for path in paths:
            loaded = load_image(path, max_side=args.max_side)
            name = path.stem if path.stem not in {n for n, _ in images} else path.name
            images.append((name, loaded.array))
            if args.box:  # pixels of the stored image -> pixels of the (possibly downsized) working image
                boxes[name] = [loaded.to_working_coords(np.asarray(b, dtype=np.float64).reshape(2, 2)).reshape(4)
                               for b in args.box]
    except (CheckpointError, ImageLoadError) as exc:
        return err(str(exc))

    from .compare import evaluate

    labels = tuple(names) if names[0] != names[1] else (f"{names[0]}:a", f"{names[1]}:b")
    report = evaluate(images, models[0], models[1], names=labels,  # type: ignore[arg-type]
                      checkpoints=(str(resolved[0].path), str(resolved[1].path)),
                      points_per_object=args.points, seed=args.seed, max_objects=args.max_objects,
                      grid=args.grid, boxes=boxes or None, warmup=args.warmup, progress=say)
    if labels != tuple(names):  # same architecture twice: titles by checkpoint
        for stats, res in zip(report.models, resolved):
            stats.title = f"{MODEL_SPECS[stats.name.split(':')[0]].title}, {res.path.name}"
    files = report.write(args.out)
    if args.json:
        summary: dict[str, Any] = {**report.to_dict()["summary"], "table": report.table_rows(),
                                   "files": {k: str(v) for k, v in files.items()}}
        print(json.dumps(summary, indent=2))
    else:
        print(report.to_markdown(), end="")
        print("\nwrote " + ", ".join(str(p) for p in files.values()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobile_sam_core.compare_cli``: the compare subcommand on its own."""
    parser = _configure(argparse.ArgumentParser(
        prog="python -m mobile_sam_core.compare_cli", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ))
    args = parser.parse_args(argv)
    logging.getLogger("mobile_sam_core").setLevel(logging.ERROR)
    return run_compare(args)


if __name__ == "__main__":
    sys.exit(main())
