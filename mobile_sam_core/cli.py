"""Command line: ``python -m mobile_sam_core {segment,everything,models,download,compare}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .build import MODEL_SPECS, CheckpointError, LoadedModel, build_model
from .images import MAX_SIDE, ImageLoadError, PromptError, clip_box, load_image, validate_points
from .render import cutout_rgba, encode_png, mask_to_png_bytes, masks_to_coco_json, overlay_masks
from .weights import WeightsUnavailableError, download_checkpoint, weights_status

__all__ = ["main", "build_parser"]

_EXAMPLES = """\
examples:
  # one foreground click at (x=320, y=150), MobileSAM if its weights are found:
  python -m mobile_sam_core segment examples/coffee.jpg --point 320,150 --out out/
  # a box (x0,y0,x1,y1) refined by a background click:
  python -m mobile_sam_core segment photo.jpg --box 165,10,415,300 --bg-point 370,280
  # segment everything on a 16x16 grid of prompts:
  python -m mobile_sam_core everything examples/chelsea.jpg --points-per-side 16
  # which models have weights here, and fetching one:
  python -m mobile_sam_core models
  python -m mobile_sam_core download vit_t

Coordinates are pixels of the image as you see it (after EXIF rotation), x to the right,
y down. Without MobileSAM weights, `vit_t` falls back to the bundled LiteMedSAM, which works
with boxes, not clicks; the message printed says how to get MobileSAM.
"""


def _pair(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y (e.g. 120,45), got {text!r}") from None
    return x, y


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 (e.g. 10,20,300,240), got {text!r}") from None
    return x0, y0, x1, y1


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_t", choices=sorted(MODEL_SPECS),
                   help="model to run (default: vit_t = MobileSAM)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file (default: env, cache, download, fallback)")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--out", type=Path, default=Path("mobile_sam_out"), help="output folder (default: %(default)s)")
    p.add_argument("--max-side", type=int, default=MAX_SIDE,
                   help="larger images are processed at this longest side; masks are mapped back "
                        "to the original size (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m mobile_sam_core",
        description="Segment objects in an image with MobileSAM (or SAM) on the CPU.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = sub.add_parser(
        "segment", help="mask the object at clicked points and/or inside a box",
        description="Mask one object from foreground/background points and/or a box. Writes "
                    "overlay.png, mask.png (0/255), cutout.png (transparent RGBA) and masks.json "
                    "(COCO RLE of the candidate masks) to --out.",
    )
    seg.add_argument("image", type=Path, help="image file (JPEG, PNG, WebP, TIFF, ...)")
    seg.add_argument("--point", type=_pair, action="append", default=[], metavar="X,Y", help="foreground point (repeatable)")
    seg.add_argument("--bg-point", type=_pair, action="append", default=[], metavar="X,Y", help="background point (repeatable)")
    seg.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="box around the object")
    multi = seg.add_mutually_exclusive_group()
    multi.add_argument("--multimask", dest="multimask", action="store_true", default=None,
                       help="return three candidate masks (default for a single click, where the "
                            "object is ambiguous)")
    multi.add_argument("--single", dest="multimask", action="store_false",
                       help="return one mask (default for a box or several points, as SAM advises)")
    _add_model_args(seg)

    every = sub.add_parser(
        "everything", help="segment everything (automatic mask generation)",
        description="Prompt the model with a grid of points and keep the good, distinct masks. "
                    "Writes overlay.png and masks.json (COCO RLE) to --out.",
    )
    every.add_argument("image", type=Path)
    every.add_argument("--points-per-side", type=int, default=16, help="grid density (default: %(default)s)")
    every.add_argument("--points-per-batch", type=int, default=64)
    every.add_argument("--pred-iou-thresh", type=float, default=0.88)
    every.add_argument("--stability-score-thresh", type=float, default=0.95)
    every.add_argument("--min-area", type=int, default=0, help="remove islands/holes below this many pixels")
    every.add_argument("--crop-layers", type=int, default=0, help="extra crop layers for small objects")
    _add_model_args(every)

    sub.add_parser("models", help="list models and whether their weights are available here")
    dl = sub.add_parser("download", help="download a model's official weights into the cache")
    dl.add_argument("name", choices=[n for n in MODEL_SPECS if n != "lite_medsam"])

    try:
        from .compare_cli import add_compare_parser
    except ImportError:
        pass
    else:
        add_compare_parser(sub)
    return parser


def _load_model(args: argparse.Namespace) -> LoadedModel:
    loaded = build_model(args.model, args.checkpoint, allow_download=False if args.offline else None)
    if loaded.checkpoint is not None and loaded.checkpoint.warning:
        print(f"warning: {loaded.checkpoint.warning}", file=sys.stderr)
    return loaded


def _write(out: Path, files: dict[str, bytes | str]) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = out / name
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    return [str(out / n) for n in files]


def _report(args: argparse.Namespace, summary: dict[str, Any], lines: list[str]) -> None:
    print(json.dumps(summary, indent=2) if args.json else "\n".join(lines))


def _segment(args: argparse.Namespace) -> int:
    from .predictor import SamPredictor

    if not (args.point or args.bg_point or args.box):
        raise PromptError("give at least one --point, --bg-point or --box")
    image = load_image(args.image, max_side=args.max_side)
    h, w = image.original_size
    coords = list(args.point) + list(args.bg_point)
    labels = [1] * len(args.point) + [0] * len(args.bg_point)
    points = validate_points(coords, (h, w)) if coords else None
    box = clip_box(args.box, (h, w)) if args.box else None
    multimask = args.multimask if args.multimask is not None else (len(coords) == 1 and box is None)
    loaded = _load_model(args)

    predictor = SamPredictor(loaded.model)
    t0 = time.perf_counter()
    predictor.set_image(image.array)
    t1 = time.perf_counter()
    masks, scores, _ = predictor.predict(
        point_coords=image.to_working_coords(points) if points is not None else None,
        point_labels=np.array(labels) if points is not None else None,
        box=image.to_working_coords(box) if box is not None else None,
        multimask_output=multimask,
    )
    t2 = time.perf_counter()
    best = int(np.argmax(scores))
    work_points = image.to_working_coords(points) if points is not None else None
    overlay = overlay_masks(image.array, masks[best], points=work_points, labels=labels or None,
                            box=image.to_working_coords(box) if box is not None else None)
    full_masks = image.mask_to_original(masks)
    files = {
        "overlay.png": encode_png(overlay),
        "mask.png": mask_to_png_bytes(full_masks[best]),
        "masks.json": masks_to_coco_json(full_masks, (h, w), scores=scores.tolist(),
                                         extra={"model": loaded.name, "best": best}),
    }
    if masks[best].any():
        files["cutout.png"] = encode_png(cutout_rgba(image.array, masks[best]))
    written = _write(args.out, files)
    summary = {
        "model": loaded.name, "image": image.info, "scores": [round(float(s), 4) for s in scores],
        "best": best, "mask_area": int(full_masks[best].sum()),
        "encoder_ms": round((t1 - t0) * 1e3, 1), "decoder_ms": round((t2 - t1) * 1e3, 1), "files": written,
    }
    lines = [
        f"model      {loaded.name} ({MODEL_SPECS[loaded.name].title})",
        f"image      {image.info}",
        "scores     " + "  ".join(f"{'*' if i == best else ' '}{s:.3f}" for i, s in enumerate(scores)),
        f"mask       {summary['mask_area']:,} pixels",
        f"timing     encoder {summary['encoder_ms']:.0f} ms, decoder {summary['decoder_ms']:.0f} ms",
        *(f"wrote      {p}" for p in written),
    ]
    if not masks[best].any():
        lines.append("note       the best mask is empty, so no cutout.png was written")
    _report(args, summary, lines)
    return 0


def _everything(args: argparse.Namespace) -> int:
    from .automatic_mask_generator import SamAutomaticMaskGenerator

    image = load_image(args.image, max_side=args.max_side)
    loaded = _load_model(args)
    generator = SamAutomaticMaskGenerator(
        loaded.model, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
        min_mask_region_area=args.min_area, crop_n_layers=args.crop_layers,
    )
    t0 = time.perf_counter()
    records = generator.generate(image.array)
    elapsed = time.perf_counter() - t0
    masks = [r["segmentation"] for r in records]
    overlay = overlay_masks(image.array, masks)
    full = [image.mask_to_original(m) for m in masks]
    for record, mask in zip(records, full):
        record["segmentation"] = mask
        if image.downsized:  # boxes, areas and points of the working image -> original pixels
            record["area"] = int(mask.sum())
            x, y, bw, bh = record["bbox"]
            x0, y0, x1, y1 = image.to_original_coords([x, y, x + bw, y + bh])
            record["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            record["point_coords"] = image.to_original_coords(record["point_coords"]).tolist()
    files = {
        "overlay.png": encode_png(overlay),
        "masks.json": masks_to_coco_json(records, image.original_size, extra={"model": loaded.name}),
    }
    written = _write(args.out, files)
    summary = {"model": loaded.name, "image": image.info, "count": len(records),
               "seconds": round(elapsed, 2), "files": written}
    lines = [
        f"model      {loaded.name} ({MODEL_SPECS[loaded.name].title})",
        f"image      {image.info}",
        f"masks      {len(records)} in {elapsed:.2f} s ({args.points_per_side}x{args.points_per_side} grid)",
        *(f"wrote      {p}" for p in written),
    ]
    _report(args, summary, lines)
    return 0


def _models(_: argparse.Namespace) -> int:
    status = weights_status()
    print(f"{'name':<12} {'model':<30} weights")
    for name, spec in MODEL_SPECS.items():
        found = status.get(name)
        if found is None:
            where = "missing (python -m mobile_sam_core download %s)" % name
        elif found.name != name:
            where = f"missing; falls back to {found.name}"
        else:
            where = f"{found.path} ({found.source})"
        print(f"{name:<12} {spec.title:<30} {where}")
    return 0


def _download(args: argparse.Namespace) -> int:
    path = download_checkpoint(args.name, progress=True)
    print(f"saved {path}")
    return 0


_COMMANDS = {"segment": _segment, "everything": _everything, "models": _models, "download": _download}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for bad input or missing weights)."""
    args = build_parser().parse_args(argv)
    # The CLI prints the weights warnings itself, once.
    logging.getLogger("mobile_sam_core").setLevel(logging.ERROR)
    handler = _COMMANDS.get(args.command)
    if handler is None:  # subcommands contributed by other modules carry their own function
        from .compare_cli import run_compare

        handler = run_compare
    try:
        return handler(args)
    except (ImageLoadError, PromptError, CheckpointError, WeightsUnavailableError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
