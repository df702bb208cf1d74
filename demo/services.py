"""The thin layer between the UI and ``mobile_sam_core``.

It holds the shared model (one per process, swapped to MobileSAM when its weights appear), checks
prompts coming from visitors or API callers, calls the core, and writes results to files.
Nothing here keeps visitor data: every function takes what it needs and returns new objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import config as cfg
from .core import (
    ImageLoadError,
    LoadedImage,
    MODEL_SPECS,
    PromptError,
    WEIGHT_SPECS,
    WeightsUnavailableError,
    checkpoint_env_var,
    checkpoint_url,
    clip_box,
    cutout_rgba,
    encode_jpeg,
    encode_png,
    format_size,
    load_image,
    make_mask_generator,
    make_predictor,
    mask_to_png_bytes,
    masks_to_coco_json,
    overlay_masks,
    resolve_checkpoint,
    sam_model_registry,
    validate_points,
    warm_up,
)

log = logging.getLogger(__name__)

__all__ = [
    "PromptError",
    "ServedModel",
    "ModelService",
    "PromptResult",
    "EverythingResult",
    "OutputFiles",
    "read_image",
    "image_key",
    "encode_image",
    "check_points",
    "check_box",
    "segment_prompts",
    "segment_everything",
    "everything_settings",
    "OutputStore",
    "render_prompt_overlay",
    "render_everything_overlay",
    "weights_help",
    "ImageLoadError",
    "LoadedImage",
    "WeightsUnavailableError",
]


# --------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ServedModel:
    """The model answering requests, and where its weights came from."""

    name: str  # registry name of the model actually served
    model: Any  # segment_anything.modeling.Sam
    source: str  # explicit | env | cache | download | bundled | fallback | random
    path: str | None
    requested: str
    warning: str | None = None

    @property
    def title(self) -> str:
        return MODEL_SPECS[self.name].title if self.name in MODEL_SPECS else self.name

    @property
    def is_fallback(self) -> bool:
        """LiteMedSAM served because MobileSAM's weights were missing."""
        return self.requested == "vit_t" and self.name == "lite_medsam"

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "title": self.title, "weights": self.source,
                "checkpoint": Path(self.path).name if self.path else None}


class ModelService:
    """Loads the configured model once, shares it between all visitors, upgrades the fallback.

    ``requested="vit_t"`` serves MobileSAM when its weights resolve and LiteMedSAM otherwise;
    :meth:`refresh` (called on every new image) swaps in MobileSAM as soon as its weights exist.
    """

    def __init__(self, requested: str = "vit_t", checkpoint: str | None = None, *,
                 random_weights: bool = False, warm_up: bool = False) -> None:
        if requested not in MODEL_SPECS:
            raise ValueError(f"unknown model {requested!r}; choose one of {', '.join(MODEL_SPECS)}")
        self.requested = requested
        self.checkpoint = checkpoint
        self.random_weights = random_weights
        self.warm_up = warm_up  # run each loaded model once on a synthetic image (core's warm_up)
        self._served: ServedModel | None = None
        self._lock = threading.Lock()

    def get(self) -> ServedModel:
        served = self._served
        if served is None:
            with self._lock:
                if self._served is None:
                    self._served = self._load()
                served = self._served
        return served

    def _load(self) -> ServedModel:
        if self.random_weights:
            model = sam_model_registry[self.requested](checkpoint=self.checkpoint)
            source = "explicit" if self.checkpoint else "random"
            served = ServedModel(self.requested, model, source, self.checkpoint, self.requested)
        else:
            resolved = resolve_checkpoint(self.requested, self.checkpoint, allow_fallback=True)
            model = sam_model_registry[resolved.name](checkpoint=resolved.path)
            served = ServedModel(resolved.name, model, resolved.source, str(resolved.path) if resolved.path else None,
                                 self.requested, getattr(resolved, "warning", None))
        if self.warm_up:
            seconds = warm_up(model)
            log.info("warm-up of %s: %.2f s (encoder, a point and a box on a synthetic image)", served.name, seconds)
        return served

    def refresh(self) -> bool:
        """Switch from the LiteMedSAM fallback to MobileSAM if its weights exist now.

        Cheap when nothing changed (a look at the weights' locations, no download). Returns True
        when the served model changed.
        """
        served = self.get()
        if not served.is_fallback or self.checkpoint:
            return False
        try:
            # Not weights_status(): that also hashes the bundled fallback file on every call.
            status = resolve_checkpoint("vit_t", allow_download=False, allow_fallback=False, progress=False)
        except Exception:  # missing or broken weights must not break uploads
            return False
        if status.name != "vit_t":
            return False
        with self._lock:
            if self._served is not served:
                return True
            try:
                self._served = self._load()
            except Exception:
                return False
            return self._served.name != served.name

    @property
    def current(self) -> ServedModel | None:
        """The served model if already loaded (never loads)."""
        return self._served

    def set_served(self, served: ServedModel) -> None:
        """Replace the served model (tests, or an operator switching models)."""
        with self._lock:
            self._served = served


# --------------------------------------------------------------------------------------- images


def read_image(source: Any) -> LoadedImage:
    """Decode an upload (path, bytes, array, PIL image) with the core's checks.

    Raises :class:`ImageLoadError` with a visitor-friendly message for anything that is not a
    readable image.
    """
    if source is None:
        raise ImageLoadError("No image was given. Upload one or pick an example first.")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError("The uploaded file could not be found on the server; please upload it again.")
        if path.stat().st_size == 0:
            raise ImageLoadError("The uploaded file is empty.")
        return _decoded.get_or_load(path)
    return load_image(source)


class _DecodedUploads:
    """Decoded images keyed by a hash of the file's bytes, least recently used dropped first.

    API callers upload the same photo with every click; hashing ~1 MB of JPEG costs ~1 ms where
    decoding it and hashing its pixels cost ~50 ms. Keyed by content, so a visitor can only get
    back the decoding of bytes they sent themselves. Cached arrays are read-only.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, LoadedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_or_load(self, path: Path) -> LoadedImage:
        try:
            raw = path.read_bytes()  # uploads are bounded by the app's max_file_size
        except OSError as exc:
            raise ImageLoadError(f"The uploaded file could not be read ({exc.strerror}).") from exc
        key = hashlib.blake2b(raw, digest_size=16).hexdigest()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        loaded = load_image(raw)  # the bytes already read, not the file a second time
        loaded.array.flags.writeable = False
        _ = loaded.digest  # computed once, outside the lock
        size = loaded.array.nbytes
        if size <= self.max_bytes:
            with self._lock:
                if key not in self._items:
                    self._items[key] = loaded
                    self._bytes += size
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.array.nbytes
        return loaded


_decoded = _DecodedUploads(cfg.DECODED_CACHE_MB * 2**20)


def image_key(image: LoadedImage) -> str:
    """Short content digest of the working image (identifies it in logs and file names)."""
    return image.digest[:16]


def encode_image(served: ServedModel, image: np.ndarray, digest: str | None = None) -> tuple[float, bool]:
    """Compute (or find in the shared cache) the image embedding. Returns (ms, from_cache).

    ``digest`` is ``image_digest(image)`` when known (``LoadedImage.digest``)."""
    predictor = make_predictor(served.model)
    t0 = time.perf_counter()
    # the core's cache runs one encode per image: a click during the upload's encode waits for it
    predictor.set_image(image, digest=digest)
    return (time.perf_counter() - t0) * 1000.0, bool(getattr(predictor, "last_set_image_from_cache", False))


# -------------------------------------------------------------------------------------- prompts


def _as_float_list(value: Any, what: str) -> list:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{what} must be JSON, e.g. [[120, 80], [200, 150]]; could not parse {text[:60]!r}.") from exc
    if value is None:
        return []
    if isinstance(value, dict):
        raise PromptError(f"{what} must be a list, got an object.")
    try:
        return list(value)
    except TypeError as exc:
        raise PromptError(f"{what} must be a list, got {type(value).__name__}.") from exc


def check_points(points: Any, labels: Any, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate points (N x [x, y] in pixels of an image of ``size`` = (H, W)) and labels.

    Labels default to foreground (1). Raises :class:`PromptError` for malformed input, more than
    :data:`config.MAX_POINTS` points, or a point outside the image.
    """
    pts = _as_float_list(points, "Points")
    coords = validate_points(pts if pts else None, size)
    if len(coords) > cfg.MAX_POINTS:
        raise PromptError(f"At most {cfg.MAX_POINTS} points per request (got {len(coords)}).")
    labs = _as_float_list(labels, "Labels")
    if not labs:
        labs = [1] * len(coords)
    if len(labs) != len(coords):
        raise PromptError(f"Got {len(coords)} points but {len(labs)} labels; give one label per point.")
    try:
        lab = np.asarray(labs, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise PromptError("Labels must be 1 (foreground) or 0 (background).") from exc
    if not np.isin(lab, (0, 1)).all():
        raise PromptError("Labels must be 1 (foreground) or 0 (background).")
    return coords, lab.astype(np.int64)


def check_box(box: Any, size: tuple[int, int]) -> np.ndarray | None:
    """Validate a box [x0, y0, x1, y1] (any corner order) and clip it to the image.

    Returns None for an empty value; raises :class:`PromptError` when the box misses the image.
    """
    if isinstance(box, dict):
        try:
            box = [box["xmin"], box["ymin"], box["xmax"], box["ymax"]]
        except KeyError as exc:
            raise PromptError("A box object needs xmin, ymin, xmax and ymax.") from exc
    values = _as_float_list(box, "Box")
    if not values:
        return None
    return clip_box(values, size)


@dataclass
class PromptResult:
    """Candidate masks for one prompt set, on the working image."""

    masks: np.ndarray | None  # C x H x W bool; None for a preview (best_only)
    scores: np.ndarray  # C predicted IoU
    best: int
    encoder_ms: float
    encoder_cached: bool
    decoder_ms: float
    model: str
    best_mask: np.ndarray  # H x W bool, the candidate with the highest score

    def timings(self) -> dict[str, Any]:
        return {"encoder_ms": round(self.encoder_ms, 1), "encoder_cached": self.encoder_cached,
                "decoder_ms": round(self.decoder_ms, 1)}


def segment_prompts(served: ServedModel, image: np.ndarray, points: np.ndarray | None = None,
                    labels: np.ndarray | None = None, box: np.ndarray | None = None, *,
                    multimask: bool = True, digest: str | None = None, best_only: bool = False) -> PromptResult:
    """Run the predictor on already checked prompts (working-image pixels).

    ``digest``: ``image_digest(image)`` when known (saves hashing the pixels on every click).
    ``best_only``: bring only the best candidate to full size (``masks`` is then None)."""
    has_points = points is not None and len(points) > 0
    if not has_points and box is None:
        raise PromptError("No prompt yet: click on the object (Points tab) or drag a box (Box tab).")
    predictor = make_predictor(served.model)
    t0 = time.perf_counter()
    predictor.set_image(image, digest=digest)
    t1 = time.perf_counter()
    prompts = dict(point_coords=points if has_points else None, point_labels=labels if has_points else None,
                   box=box, multimask_output=multimask)
    if best_only:
        best_mask, best, scores, _ = predictor.predict_best(**prompts)
        masks = None
    else:
        masks, scores, _ = predictor.predict(**prompts)
        masks = np.asarray(masks, dtype=bool)
        best = int(np.argmax(scores))
        best_mask = masks[best]
    t2 = time.perf_counter()
    return PromptResult(
        masks=masks, scores=np.asarray(scores, dtype=np.float64), best=int(best),
        encoder_ms=(t1 - t0) * 1000.0,
        encoder_cached=bool(getattr(predictor, "last_set_image_from_cache", False)),
        decoder_ms=(t2 - t1) * 1000.0, model=served.name, best_mask=np.asarray(best_mask, dtype=bool),
    )


def everything_settings(points_per_side: Any = None, pred_iou_thresh: Any = None,
                        stability_score_thresh: Any = None, min_mask_region_area: Any = None,
                        points_per_batch: Any = None, fast: Any = None) -> dict[str, Any]:
    """Segment-everything arguments with defaults filled in and values kept in range."""
    d = cfg.EVERYTHING_DEFAULTS

    def num(value: Any, default: float, lo: float, hi: float, what: str) -> float:
        if value is None or value == "":
            return float(default)
        try:
            v = float(value)
        except (TypeError, ValueError) as exc:
            raise PromptError(f"{what} must be a number, got {value!r}.") from exc
        if not math.isfinite(v) or not lo <= v <= hi:
            raise PromptError(f"{what} must be between {lo:g} and {hi:g}, got {v:g}.")
        return v

    lo, hi = cfg.POINTS_PER_SIDE_RANGE
    return {
        "points_per_side": int(num(points_per_side, d["points_per_side"], lo, hi, "Grid density (points per side)")),
        "points_per_batch": int(num(points_per_batch, d["points_per_batch"], 1, 1024, "Points per batch")),
        "pred_iou_thresh": num(pred_iou_thresh, d["pred_iou_thresh"], 0.0, 1.0, "IoU threshold"),
        "stability_score_thresh": num(stability_score_thresh, d["stability_score_thresh"], 0.0, 1.0,
                                      "Stability threshold"),
        "min_mask_region_area": int(num(min_mask_region_area, d["min_mask_region_area"], 0,
                                        cfg.MIN_REGION_AREA_MAX, "Minimum region area")),
        "fast": bool(d["fast"]) if fast is None or fast == "" else _flag(fast),
    }


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise PromptError(f"fast must be true or false, got {value!r}.")


@dataclass
class EverythingResult:
    """Segment-everything masks (largest first) and how long it took."""

    records: list[dict]
    total_ms: float
    settings: dict[str, Any]
    model: str

    @property
    def masks(self) -> list[np.ndarray]:
        return [np.asarray(r["segmentation"], dtype=bool) for r in self.records]


def segment_everything(served: ServedModel, image: np.ndarray, settings: dict[str, Any],
                       progress: Callable[[float, str], None] | None = None) -> EverythingResult:
    """Run the automatic mask generator with ``settings`` (see :func:`everything_settings`)."""
    kwargs = dict(settings)
    n = kwargs["points_per_side"] ** 2

    def on_batch(done: int, total: int) -> None:
        if progress:
            progress(done / max(total, 1), f"decoded {done} of {total} grid points")

    generator = make_mask_generator(served.model, output_mode="binary_mask", progress=on_batch, **kwargs)
    if progress:
        progress(0.0, f"segmenting with {n} grid points")
    t0 = time.perf_counter()
    encode_image(served, image)  # through the gate; generate() then finds the embedding cached
    records = generator.generate(image)
    total = (time.perf_counter() - t0) * 1000.0
    records = sorted(records, key=lambda r: -int(r["area"]))
    if progress:
        progress(1.0, f"{len(records)} masks")
    return EverythingResult(records, total, kwargs, served.name)


# -------------------------------------------------------------------------------------- outputs


@dataclass
class OutputFiles:
    """Paths of the files offered for download (None where not applicable)."""

    mask_png: str | None = None
    cutout_png: str | None = None
    rle_json: str | None = None
    overlay_jpg: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def as_list(self) -> list[str]:
        return [p for p in (self.mask_png, self.cutout_png, self.rle_json) if p]


class OutputStore:
    """Per-request folders under the system temp dir, removed after ``max_age_s``.

    Gradio copies returned files into its own cache (cleaned by ``delete_cache``); these
    originals are removed here so that nothing piles up.
    """

    def __init__(self, root: str | Path | None = None, max_age_s: float = cfg.OUTPUT_MAX_AGE_S) -> None:
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / "mobile_sam_demo"
        self.max_age_s = max_age_s
        self._last_prune = 0.0
        self._lock = threading.Lock()

    def new_dir(self, stem: str) -> Path:
        self._maybe_prune()
        path = self.root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:10]}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _maybe_prune(self) -> None:
        now = time.time()
        with self._lock:
            if now - self._last_prune < 60:
                return
            self._last_prune = now
        if not self.root.is_dir():
            return
        for child in self.root.iterdir():
            try:
                if now - child.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(child, ignore_errors=True)
            except OSError:
                continue

    def write_prompt_outputs(self, stem: str, image: np.ndarray, masks: np.ndarray, scores: Sequence[float],
                             chosen: int, *, to_original: Callable[[np.ndarray], np.ndarray] | None = None
                             ) -> OutputFiles:
        """Mask PNG and cut-out PNG of the chosen candidate; COCO RLE JSON of all candidates.

        ``to_original`` maps working-size masks back to the uploaded image's size (for the mask
        PNG and the RLE); the cut-out keeps the working image's pixels. An empty chosen mask has
        no cut-out (``cutout_png`` stays None).
        """
        folder = self.new_dir(stem)
        full = [to_original(m) for m in masks] if to_original else list(masks)
        files = OutputFiles()
        files.mask_png = str(_write(folder / f"{stem}_mask.png", mask_to_png_bytes(full[chosen])))
        if np.any(masks[chosen]):
            cutout = cutout_rgba(image, masks[chosen], crop=True)
            files.cutout_png = str(_write(folder / f"{stem}_cutout.png", encode_png(cutout)))
        rle = masks_to_coco_json(full, tuple(full[0].shape[:2]), scores=[float(s) for s in scores])
        files.rle_json = str(_write(folder / f"{stem}_masks_rle.json", rle.encode()))
        return files

    def write_everything_outputs(self, stem: str, image: np.ndarray, result: EverythingResult,
                                 overlay: np.ndarray, *,
                                 to_original: Callable[[np.ndarray], np.ndarray] | None = None,
                                 original_size: tuple[int, int] | None = None) -> OutputFiles:
        """Union mask PNG, cut-out of all segments, COCO RLE JSON of every mask, overlay JPEG.

        With no masks there is nothing to cut out: ``cutout_png`` stays None (the empty mask PNG
        and the empty RLE list are still written, as for an empty prompt mask).
        """
        folder = self.new_dir(stem)
        masks = result.masks
        union = np.zeros(image.shape[:2], dtype=bool)
        for m in masks:
            union |= m
        full = [to_original(m) for m in masks] if to_original else masks
        size = original_size if to_original and original_size else image.shape[:2]
        files = OutputFiles()
        union_out = to_original(union) if to_original else union
        files.mask_png = str(_write(folder / f"{stem}_all_masks.png", mask_to_png_bytes(union_out)))
        if union.any():
            files.cutout_png = str(_write(folder / f"{stem}_cutout.png",
                                          encode_png(cutout_rgba(image, union, crop=False))))
        records = [{**r, "segmentation": m} for r, m in zip(result.records, full)]
        scores = [float(r.get("predicted_iou", 0.0)) for r in result.records]
        rle = masks_to_coco_json(records, tuple(size), scores=scores)
        files.rle_json = str(_write(folder / f"{stem}_masks_rle.json", rle.encode()))
        files.overlay_jpg = str(_write(folder / f"{stem}_overlay.jpg", encode_jpeg(overlay)))
        return files

    def write_overlay(self, stem: str, overlay: np.ndarray) -> str:
        # JPEG: a preview; the PNG of a 2048-px photo costs ~150 ms and ~3 MB on every click.
        return str(_write(self.new_dir(stem) / f"{stem}_overlay.jpg", encode_jpeg(overlay)))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def render_prompt_overlay(image: np.ndarray, mask: np.ndarray | None, points: Sequence | None = None,
                          labels: Sequence | None = None, box: Sequence | None = None) -> np.ndarray:
    """The image with one mask, the clicked points and the box drawn on it."""
    masks = [mask] if mask is not None else []
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) if points is not None and len(points) else None
    labs = np.asarray(labels) if pts is not None else None
    return overlay_masks(image, masks, points=pts, labels=labs, box=None if box is None else np.asarray(box))


def render_everything_overlay(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Every mask in its own colour (the core's palette), with contours."""
    return overlay_masks(image, masks, alpha=0.55, contours=True)


def weights_help() -> str:
    """How to get MobileSAM's weights (for the fallback banner)."""
    spec = WEIGHT_SPECS["vit_t"]
    url = checkpoint_url("vit_t") or spec.url
    return (f"Put `{spec.filename}` ({format_size(spec.size)}, from {url}) "
            "into the cache folder (`$MOBILE_SAM_CACHE_DIR`, default `~/.cache/mobile_sam_core`) or point "
            f"`{checkpoint_env_var('vit_t')}` at it. The app switches to MobileSAM with the next image.")


