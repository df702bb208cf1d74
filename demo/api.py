"""Stateless API endpoints: ``/segment_points``, ``/segment_box``, ``/segment_everything``.

They keep no session: each call takes an image and prompts in the image's own pixel coordinates
and returns an overlay, the mask files and a JSON summary (scores, timings, model). The
components they use are hidden from the page; the endpoints are listed on the "Use via API" page.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from . import config as cfg
from .image_input import _stem
from .upload import ImageInput
from .services import (
    ImageLoadError,
    LoadedImage,
    PromptError,
    check_box,
    check_points,
    everything_settings,
    read_image,
    render_everything_overlay,
    render_prompt_overlay,
    segment_everything,
    segment_prompts,
)
from .ui import API, EVERYTHING, AppContext


def _image(path: Any) -> LoadedImage:
    try:
        return read_image(path)
    except ImageLoadError as exc:
        raise gr.Error(str(exc), title="Not an image") from exc


def _working(loaded: LoadedImage, coords: np.ndarray) -> np.ndarray:
    return np.asarray(loaded.to_working_coords(coords), dtype=np.float64).reshape(-1, 2) if len(coords) else coords


def _box_working(loaded: LoadedImage, box: np.ndarray) -> np.ndarray:
    corners = _working(loaded, box.reshape(2, 2))
    h, w = loaded.array.shape[:2]
    corners[:, 0] = np.clip(corners[:, 0], 0, w)
    corners[:, 1] = np.clip(corners[:, 1], 0, h)
    return corners.reshape(4)


def _size_info(loaded: LoadedImage) -> dict[str, Any]:
    h, w = loaded.original_size
    wh, ww = loaded.array.shape[:2]
    return {"image_size": [int(h), int(w)], "working_size": [int(wh), int(ww)], "scale": float(loaded.scale)}


_FILE_DESCRIPTIONS = {
    "mask_png": "mask of the best candidate (white = object), at image_size",
    "cutout_png": "RGBA cut-out of the best candidate, cropped, at working_size (none for an empty mask)",
    "rle_json": "COCO RLE of every candidate, at image_size",
}


def _prompt_response(ctx: AppContext, loaded: LoadedImage, stem: str, points_w: np.ndarray, labels: np.ndarray,
                     box_w: np.ndarray | None, multimask: bool, extra: dict[str, Any],
                     want_files: bool = True) -> tuple:
    served = ctx.models.get()
    image = loaded.array
    result = segment_prompts(served, image, points_w if len(points_w) else None,
                             labels if len(points_w) else None, box_w, multimask=multimask,
                             digest=loaded.digest, best_only=not want_files)
    best = result.best
    to_original = loaded.mask_to_original if loaded.scale != 1.0 else None
    files = (ctx.store.write_prompt_outputs(stem, image, result.masks, result.scores, best, to_original=to_original)
             if want_files else None)
    overlay = render_prompt_overlay(image, result.best_mask, points_w if len(points_w) else None, labels,
                                    box_w)
    overlay_path = ctx.store.write_overlay(stem, overlay)
    info = {
        **served.describe(),
        **_size_info(loaded),
        "scores": [round(float(s), 6) for s in result.scores],
        "best": best,
        "mask_area": int(np.count_nonzero(result.best_mask)),
        "timings_ms": result.timings(),
        "files": {name: text for name, text in _FILE_DESCRIPTIONS.items() if getattr(files, name)} if files else {},
        **extra,
    }
    return overlay_path, files.as_list() if files else [], info


def build_api(ctx: AppContext) -> None:
    """Hidden components and the three public endpoints (call inside the Blocks)."""
    with gr.Column(visible=False, elem_id="api-components"):
        image = ImageInput(label="image", type="filepath")
        points = gr.JSON(label="points")
        labels = gr.JSON(label="labels")
        multimask = gr.Checkbox(value=True, label="multimask")
        with_files = gr.Checkbox(value=True, label="files")
        box = gr.JSON(label="box")
        settings = gr.JSON(label="settings")
        overlay = gr.Image(label="overlay", type="filepath", format="jpeg")
        files = gr.File(label="mask files", file_count="multiple")
        info = gr.JSON(label="result")
        trigger_points = gr.Button("segment_points")
        trigger_box = gr.Button("segment_box")
        trigger_everything = gr.Button("segment_everything")

    def segment_points(image: str, points: Any, labels: Any = None, multimask: bool = True,
                       files: bool = True) -> tuple:
        """Segment the object at the given points.

        points: [[x, y], ...] in pixels of the image (JSON list or string); labels: 1 = foreground,
        0 = background (default: all 1); multimask: return three candidates (best first in `best`);
        files: false skips the download files (a live preview: overlay and summary only).
        Returns the overlay JPEG, [mask PNG, cut-out PNG, COCO RLE JSON] and a JSON summary.
        """
        loaded = _image(image)
        try:
            coords, labs = check_points(points, labels, loaded.original_size)
            if not len(coords):
                raise PromptError("No points given: pass points=[[x, y], ...] in image pixels.")
            return _prompt_response(ctx, loaded, _stem(image), _working(loaded, coords), labs, None,
                                    bool(multimask), {"points": coords.tolist(), "labels": labs.tolist()},
                                    want_files=bool(files))
        except PromptError as exc:
            raise gr.Error(str(exc), title="Bad prompt") from exc

    def segment_box(image: str, box: Any, points: Any = None, labels: Any = None, files: bool = True) -> tuple:
        """Segment the object inside a box, optionally refined by points.

        box: [x0, y0, x1, y1] in image pixels (clipped to the image); points/labels and files as in
        /segment_points. Returns the overlay JPEG, [mask PNG, cut-out PNG, COCO RLE JSON] and a JSON
        summary.
        """
        loaded = _image(image)
        try:
            b = check_box(box, loaded.original_size)
            if b is None:
                raise PromptError("No box given: pass box=[x0, y0, x1, y1] in image pixels.")
            coords, labs = check_points(points, labels, loaded.original_size)
            return _prompt_response(ctx, loaded, _stem(image), _working(loaded, coords), labs,
                                    _box_working(loaded, b), False,
                                    {"box": b.tolist(), "points": coords.tolist(), "labels": labs.tolist()},
                                    want_files=bool(files))
        except PromptError as exc:
            raise gr.Error(str(exc), title="Bad prompt") from exc

    def segment_everything_api(image: str, settings: Any = None) -> tuple:
        """Segment everything in the image.

        settings (all optional): points_per_side (4-32, default 16), pred_iou_thresh,
        stability_score_thresh, min_mask_region_area, fast (default true: the core's fast preset;
        false runs SAM's exact algorithm). Returns the overlay JPEG, [union mask PNG,
        cut-out PNG, COCO RLE JSON of every mask] and a JSON summary with one entry per mask.
        """
        loaded = _image(image)
        try:
            if isinstance(settings, str) and settings.strip():
                import json

                settings = json.loads(settings)
            settings = settings or {}
            if not isinstance(settings, dict):
                raise PromptError("settings must be a JSON object, e.g. {\"points_per_side\": 16}.")
            unknown = set(settings) - set(cfg.EVERYTHING_DEFAULTS)
            if unknown:
                raise PromptError(f"Unknown settings: {', '.join(sorted(unknown))}; "
                                  f"known: {', '.join(cfg.EVERYTHING_DEFAULTS)}.")
            if "points_per_side" not in settings:
                settings = {**settings, "points_per_side": ctx.config.points_per_side}
            args = everything_settings(**settings)
        except (PromptError, ValueError) as exc:
            raise gr.Error(str(exc), title="Bad settings") from exc
        served = ctx.models.get()
        image_arr = loaded.array
        result = segment_everything(served, image_arr, args)
        ov = render_everything_overlay(image_arr, result.masks)
        to_original = loaded.mask_to_original if loaded.scale != 1.0 else None
        out = ctx.store.write_everything_outputs(_stem(image), image_arr, result, ov, to_original=to_original,
                                                 original_size=loaded.original_size)
        inv = 1.0 / loaded.scale
        masks = [{"area": round(float(r["area"]) * inv * inv),
                  "bbox": [round(float(v) * inv, 1) for v in r["bbox"]],
                  "predicted_iou": round(float(r["predicted_iou"]), 6),
                  "stability_score": round(float(r["stability_score"]), 6)} for r in result.records]
        info = {**served.describe(), **_size_info(loaded), "count": len(masks), "settings": args,
                "timings_ms": {"total_ms": round(result.total_ms, 1)}, "masks": masks}
        return out.overlay_jpg, out.as_list(), info

    common = dict(concurrency_id=API, concurrency_limit=cfg.API_CONCURRENCY)
    trigger_points.click(segment_points, [image, points, labels, multimask, with_files], [overlay, files, info],
                         api_name="segment_points", **common)
    trigger_box.click(segment_box, [image, box, points, labels, with_files], [overlay, files, info],
                      api_name="segment_box", **common)
    trigger_everything.click(segment_everything_api, [image, settings], [overlay, files, info],
                             api_name="segment_everything", concurrency_id=EVERYTHING,
                             concurrency_limit=cfg.EVERYTHING_CONCURRENCY)
