"""Model-versus-model comparison: the same image and prompts through two models.

Pure functions over already built models (no weights resolution, no UI):

- :func:`run_prompts` / :func:`compare_prompts`: one prompt set (points and/or a box) through
  one or two models, with the encoder (``set_image``) and decoder (``predict``) timed separately
  and the IoU between the two models' chosen masks;
- :func:`run_everything` / :func:`compare_everything`: both models' segment-everything masks,
  counts and times, and how well the two sets of masks match;
- :func:`evaluate`: the paper-style evaluation of MobileSAM against SAM. For each image the
  *reference* model (the first) defines objects: its segment-everything masks, or, when that
  finds nothing, its best mask for a box. From each object mask come a box prompt (the mask's
  bounding box) and ``n_points`` random foreground points (seeded) used as single-point prompts.
  Both models get every prompt; the table reports the mean IoU between the two models' masks
  per prompt type, each model's median encoder and decoder times, and parameter counts
  (:class:`EvalReport`: markdown, CSV and JSON).

Mask IoU is :func:`mobile_sam_core.render.mask_iou` (two empty masks agree: IoU 1.0).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .automatic_mask_generator import SamAutomaticMaskGenerator
from .build import MODEL_SPECS, count_parameters
from .embedding_cache import EmbeddingCache, image_digest
from .predictor import SamPredictor
from .render import mask_bbox, mask_iou

__all__ = [
    "PromptRun",
    "PromptComparison",
    "EverythingRun",
    "EverythingComparison",
    "ModelStats",
    "EvalRecord",
    "EvalReport",
    "mask_iou",
    "pairwise_iou",
    "run_prompts",
    "compare_prompts",
    "run_everything",
    "compare_everything",
    "sample_points",
    "evaluate",
    "model_parameters",
]


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _model_label(model: Any, name: str | None) -> str:
    return name or getattr(model, "model_name", None) or type(model).__name__


# ------------------------------------------------------------------------------------ prompts


@dataclass
class PromptRun:
    """One model's answer to one prompt set."""

    model: str
    masks: np.ndarray  # C x H x W bool
    scores: np.ndarray  # C predicted IoU
    best: int  # index of the highest predicted IoU
    encoder_ms: float  # set_image (preprocessing + image encoder); ~0 when the embedding was cached
    decoder_ms: float  # predict (prompt encoder + mask decoder + upsampling)
    encoder_cached: bool = False

    @property
    def mask(self) -> np.ndarray:
        """The chosen (best-scored) mask."""
        return self.masks[self.best]

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "scores": [round(float(s), 6) for s in self.scores], "best": self.best,
                "mask_area": int(self.mask.sum()), "encoder_ms": round(self.encoder_ms, 1),
                "encoder_cached": self.encoder_cached, "decoder_ms": round(self.decoder_ms, 1)}


@dataclass
class PromptComparison:
    """Two models on the same image and prompts, and how much their chosen masks agree."""

    a: PromptRun
    b: PromptRun
    iou: float

    def summary(self) -> dict[str, Any]:
        return {"iou": round(self.iou, 6), "a": self.a.summary(), "b": self.b.summary()}


def _predictor(model: Any, cache: EmbeddingCache | bool | None) -> SamPredictor:
    return SamPredictor(model, cache=False if cache is None else cache)


def run_prompts(
    model: Any,
    image: np.ndarray,
    points: Any = None,
    labels: Any = None,
    box: Any = None,
    *,
    multimask: bool | None = None,
    cache: EmbeddingCache | bool | None = None,
    name: str | None = None,
    predictor: SamPredictor | None = None,
) -> PromptRun:
    """Encode ``image`` and predict masks for the prompts, timing both steps.

    ``points`` N x 2 (x, y) pixels of ``image`` with ``labels`` (1 foreground, 0 background;
    default all 1), ``box`` [x0, y0, x1, y1]. ``multimask`` defaults to SAM's advice: three
    candidates for a single point without a box, one mask otherwise. ``cache`` is passed to
    :class:`SamPredictor` (default: no cache, so the encoder really runs); a ``predictor`` whose
    image is already set skips the encoder (``encoder_ms`` 0).
    """
    pts = None if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts is not None and len(pts) == 0:
        pts = None
    labs = None
    if pts is not None:
        labs = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    bx = None if box is None else np.asarray(box, dtype=np.float64).reshape(4)
    if pts is None and bx is None:
        raise ValueError("no prompt: give points and/or a box")
    if multimask is None:
        multimask = bx is None and pts is not None and len(pts) == 1
    encoder_s, cached = 0.0, False
    if predictor is None:
        predictor = _predictor(model, cache)
        t0 = time.perf_counter()
        predictor.set_image(image)
        encoder_s = time.perf_counter() - t0
        cached = bool(predictor.last_set_image_from_cache)
    t1 = time.perf_counter()
    masks, scores, _ = predictor.predict(point_coords=pts, point_labels=labs, box=bx, multimask_output=multimask)
    decoder_s = time.perf_counter() - t1
    scores = np.asarray(scores, dtype=np.float64)
    return PromptRun(_model_label(model, name), np.asarray(masks, dtype=bool), scores, int(np.argmax(scores)),
                     _ms(encoder_s), _ms(decoder_s), cached)


def compare_prompts(
    model_a: Any,
    model_b: Any,
    image: np.ndarray,
    points: Any = None,
    labels: Any = None,
    box: Any = None,
    *,
    multimask: bool | None = None,
    cache: EmbeddingCache | bool | None = None,
    names: tuple[str | None, str | None] = (None, None),
) -> PromptComparison:
    """:func:`run_prompts` on both models and the IoU between their best masks."""
    a = run_prompts(model_a, image, points, labels, box, multimask=multimask, cache=cache, name=names[0])
    b = run_prompts(model_b, image, points, labels, box, multimask=multimask, cache=cache, name=names[1])
    return PromptComparison(a, b, mask_iou(a.mask, b.mask))


# --------------------------------------------------------------------------------- everything


@dataclass
class EverythingRun:
    """One model's segment-everything result (masks largest first)."""

    model: str
    records: list[dict]
    encoder_ms: float
    decoder_ms: float  # everything after the encoder: grid prompts, filtering, NMS
    encoder_cached: bool = False

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def total_ms(self) -> float:
        return self.encoder_ms + self.decoder_ms

    @property
    def masks(self) -> list[np.ndarray]:
        return [np.asarray(r["segmentation"], dtype=bool) for r in self.records]

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "count": self.count, "encoder_ms": round(self.encoder_ms, 1),
                "encoder_cached": self.encoder_cached, "decoder_ms": round(self.decoder_ms, 1),
                "total_ms": round(self.total_ms, 1)}


@dataclass
class EverythingComparison:
    """Both models' segment-everything results.

    ``matched_miou_a`` is the mean, over model A's masks, of the best IoU with any of model B's
    masks (and ``matched_miou_b`` the other way round); None when a side has no masks.
    """

    a: EverythingRun
    b: EverythingRun
    matched_miou_a: float | None
    matched_miou_b: float | None

    def summary(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {"a": self.a.summary(), "b": self.b.summary(),
                "matched_miou_a_to_b": r(self.matched_miou_a), "matched_miou_b_to_a": r(self.matched_miou_b)}


def run_everything(model: Any, image: np.ndarray, *, name: str | None = None,
                   progress: Callable[[int, int], None] | None = None, cache: EmbeddingCache | None = None,
                   **generator_kwargs: Any) -> EverythingRun:
    """Segment everything with ``SamAutomaticMaskGenerator(model, **generator_kwargs)``.

    The image is encoded first (timed as the encoder) into ``cache`` (default: a private one,
    so the encoder really runs), where the generator's own ``set_image`` finds it; the rest is
    the decoder's time. With ``crop_n_layers > 0`` the crops are encoded inside the generator
    and count as decoder time.
    """
    cache = cache if cache is not None else EmbeddingCache(max_bytes=64 * 2**20)
    predictor = SamPredictor(model, cache=cache)
    t0 = time.perf_counter()
    predictor.set_image(image)
    encoder_s = time.perf_counter() - t0
    generator = SamAutomaticMaskGenerator(model, output_mode="binary_mask", cache=cache, progress=progress,
                                          **generator_kwargs)
    t1 = time.perf_counter()
    records = generator.generate(image)
    decoder_s = time.perf_counter() - t1
    records = sorted(records, key=lambda r: -int(r["area"]))
    return EverythingRun(_model_label(model, name), records, _ms(encoder_s), _ms(decoder_s),
                         bool(predictor.last_set_image_from_cache))


def pairwise_iou(masks_a: Sequence[np.ndarray], masks_b: Sequence[np.ndarray], *, max_side: int | None = 256
                 ) -> np.ndarray:
    """IoU of every mask in ``masks_a`` with every mask in ``masks_b`` (len(a) x len(b)).

    With ``max_side`` the masks are subsampled (every k-th pixel) so the longest side is at most
    ``max_side``: an approximation that keeps this cheap for hundreds of full-size masks.
    ``None`` computes it exactly. Two empty masks have IoU 1.0, as in :func:`mask_iou`.
    """
    if len(masks_a) == 0 or len(masks_b) == 0:
        return np.zeros((len(masks_a), len(masks_b)), dtype=np.float64)
    shape = np.asarray(masks_a[0]).shape
    step = 1 if max_side is None else max(1, math.ceil(max(shape) / max_side))

    def flat(masks: Sequence[np.ndarray]) -> np.ndarray:
        rows = []
        for m in masks:
            m = np.asarray(m, dtype=bool)
            if m.shape != shape:
                raise ValueError(f"masks differ in shape: {m.shape} vs {shape}")
            rows.append(m[::step, ::step].reshape(-1))
        return np.stack(rows).astype(np.float32)

    fa, fb = flat(masks_a), flat(masks_b)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return iou.astype(np.float64)


def compare_everything(model_a: Any, model_b: Any, image: np.ndarray, *,
                       names: tuple[str | None, str | None] = (None, None), **generator_kwargs: Any
                       ) -> EverythingComparison:
    """:func:`run_everything` on both models and how well their masks match each other."""
    a = run_everything(model_a, image, name=names[0], **generator_kwargs)
    b = run_everything(model_b, image, name=names[1], **generator_kwargs)
    matrix = pairwise_iou(a.masks, b.masks)
    ma = float(matrix.max(axis=1).mean()) if a.count and b.count else None
    mb = float(matrix.max(axis=0).mean()) if a.count and b.count else None
    return EverythingComparison(a, b, ma, mb)


# --------------------------------------------------------------------------------- evaluation


def model_parameters(model: Any) -> dict[str, int]:
    """Parameter counts: whole model, image encoder, prompt encoder + mask decoder."""
    encoder = count_parameters(model.image_encoder)
    return {"params": count_parameters(model), "encoder_params": encoder,
            "decoder_params": count_parameters(model.prompt_encoder) + count_parameters(model.mask_decoder)}


def sample_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct random foreground pixels of ``mask`` as (x, y) (fewer if the mask is smaller)."""
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    if len(xs) == 0 or n <= 0:
        return np.zeros((0, 2), dtype=np.float64)
    idx = rng.choice(len(xs), size=min(n, len(xs)), replace=False)
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float64)


@dataclass
class EvalRecord:
    """One prompt given to both models."""

    image: str
    object: int
    object_source: str  # "everything" or "box"
    prompt: str  # "point" or "box"
    coords: list[float]  # [x, y] or [x0, y0, x1, y1]
    iou: float
    a_decoder_ms: float
    b_decoder_ms: float
    a_score: float
    b_score: float
    a_area: int
    b_area: int


@dataclass
class ModelStats:
    """One model's row of the table."""

    name: str
    title: str
    role: str  # "reference" or "compared"
    checkpoint: str | None
    params: int
    encoder_params: int
    decoder_params: int
    encoder_ms: list[float] = field(default_factory=list)
    decoder_ms: list[float] = field(default_factory=list)

    @property
    def encoder_ms_median(self) -> float | None:
        return statistics.median(self.encoder_ms) if self.encoder_ms else None

    @property
    def decoder_ms_median(self) -> float | None:
        return statistics.median(self.decoder_ms) if self.decoder_ms else None


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _fmt_ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _fmt_iou(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


@dataclass
class EvalReport:
    """Result of :func:`evaluate`: per-prompt records, per-model stats and the summary table."""

    models: tuple[ModelStats, ModelStats]
    records: list[EvalRecord]
    images: list[dict[str, Any]]  # name, size, objects, source, notes
    settings: dict[str, Any]

    def miou(self, prompt: str) -> float | None:
        values = [r.iou for r in self.records if r.prompt == prompt]
        return float(np.mean(values)) if values else None

    def count(self, prompt: str) -> int:
        return sum(1 for r in self.records if r.prompt == prompt)

    def table_rows(self) -> list[dict[str, Any]]:
        """The summary table: one row per model (the mIoU columns repeat: they are pairwise)."""
        rows = []
        for m in self.models:
            rows.append({
                "model": m.name, "title": m.title, "role": m.role,
                "checkpoint": Path(m.checkpoint).name if m.checkpoint else "",
                "params": m.params, "encoder_params": m.encoder_params, "decoder_params": m.decoder_params,
                "encoder_ms_median": None if m.encoder_ms_median is None else round(m.encoder_ms_median, 1),
                "decoder_ms_median": None if m.decoder_ms_median is None else round(m.decoder_ms_median, 1),
                "miou_point": None if self.miou("point") is None else round(self.miou("point"), 4),
                "miou_box": None if self.miou("box") is None else round(self.miou("box"), 4),
                "n_point_prompts": self.count("point"), "n_box_prompts": self.count("box"),
                "n_images": len(self.images),
            })
        return rows

    def to_markdown(self) -> str:
        ref, other = self.models
        lines = [
            "| model | | role | parameters | image encoder | encoder ms (median) | decoder ms (median) |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for m in self.models:
            lines.append(f"| {m.name} | {m.title} | {m.role} | {_fmt_params(m.params)} | "
                         f"{_fmt_params(m.encoder_params)} | {_fmt_ms(m.encoder_ms_median)} | "
                         f"{_fmt_ms(m.decoder_ms_median)} |")
        n_obj = sum(int(i["objects"]) for i in self.images)
        lines += [
            "",
            f"| prompt | mIoU {other.name} vs {ref.name} | prompts |",
            "|---|---:|---:|",
            f"| single point | {_fmt_iou(self.miou('point'))} | {self.count('point')} |",
            f"| box | {_fmt_iou(self.miou('box'))} | {self.count('box')} |",
            "",
            f"{len(self.images)} image(s), {n_obj} object(s) from {ref.name}; "
            f"{self.settings.get('points_per_object')} random foreground point(s) per object, "
            f"seed {self.settings.get('seed')}.",
        ]
        notes = [f"{i['name']}: {i['note']}" for i in self.images if i.get("note")]
        if notes:
            lines += ["", *(f"- {n}" for n in notes)]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The summary table as CSV (one row per model)."""
        rows = self.table_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
        return buf.getvalue()

    def prompts_csv(self) -> str:
        """Every prompt as CSV (image, object, prompt type, coordinates, IoU, decoder times, ...)."""
        buf = io.StringIO()
        names = [f.name for f in EvalRecord.__dataclass_fields__.values()]  # type: ignore[attr-defined]
        writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for r in self.records:
            row = asdict(r)
            row["coords"] = " ".join(f"{v:g}" for v in r.coords)
            row["iou"] = round(r.iou, 6)
            for k in ("a_decoder_ms", "b_decoder_ms"):
                row[k] = round(row[k], 2)
            for k in ("a_score", "b_score"):
                row[k] = round(row[k], 5)
            writer.writerow(row)
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        ref, other = self.models
        return {
            "settings": self.settings,
            "summary": {"reference": ref.name, "compared": other.name,
                        "miou_point": self.miou("point"), "miou_box": self.miou("box"),
                        "n_point_prompts": self.count("point"), "n_box_prompts": self.count("box")},
            "table": self.table_rows(),
            "models": [{**{k: v for k, v in asdict(m).items()}, "encoder_ms_median": m.encoder_ms_median,
                        "decoder_ms_median": m.decoder_ms_median} for m in self.models],
            "images": self.images,
            "records": [asdict(r) for r in self.records],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``table.md``, ``table.csv``, ``prompts.csv`` and ``report.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"markdown": out / "table.md", "csv": out / "table.csv", "prompts_csv": out / "prompts.csv",
                 "json": out / "report.json"}
        files["markdown"].write_text(self.to_markdown())
        files["csv"].write_text(self.to_csv())
        files["prompts_csv"].write_text(self.prompts_csv())
        files["json"].write_text(self.to_json())
        return files


def _default_box(h: int, w: int) -> list[float]:
    """The middle of the image (half its width and height): where a photo's subject usually is."""
    return [w * 0.25, h * 0.25, w * 0.75, h * 0.75]


def evaluate(
    images: Iterable[tuple[str, np.ndarray]],
    reference: Any,
    other: Any,
    *,
    names: tuple[str, str] | None = None,
    checkpoints: tuple[str | None, str | None] = (None, None),
    points_per_object: int = 5,
    seed: int = 0,
    max_objects: int = 5,
    grid: int = 8,
    min_object_fraction: float = 0.001,
    boxes: dict[str, list[Sequence[float]]] | None = None,
    warmup: bool = True,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """The paper-style comparison of ``other`` against ``reference`` on ``images``.

    For each ``(name, HxWx3 uint8 RGB)`` image:

    1. objects: the reference model's segment-everything masks on a ``grid`` x ``grid`` point
       grid (the ``max_objects`` largest covering at least ``min_object_fraction`` of the
       image). If there are none (e.g. LiteMedSAM, random weights), or ``boxes[name]`` is given,
       the reference model's mask for each box (default: the middle of the image) instead;
    2. prompts per object: its bounding box, and ``points_per_object`` random foreground pixels
       of the mask (seeded by ``seed``, the image index and the object index), each a
       single-point prompt (three candidates, the best-scored one kept, as SAM advises);
    3. both models answer every prompt; the IoU of their masks is recorded.

    The encoder is timed once per image and model (no embedding cache), the decoder per prompt.
    With ``warmup`` each model first encodes the first image once untimed, so that one-off
    start-up costs (memory allocation, kernel selection) do not land on whichever model runs first.
    """
    label_a = names[0] if names else _model_label(reference, None)
    label_b = names[1] if names else _model_label(other, None)

    def stats(model: Any, name: str, role: str, ckpt: str | None) -> ModelStats:
        title = MODEL_SPECS[name].title if name in MODEL_SPECS else name
        p = model_parameters(model)
        return ModelStats(name, title, role, ckpt, p["params"], p["encoder_params"], p["decoder_params"])

    sa = stats(reference, label_a, "reference", checkpoints[0])
    sb = stats(other, label_b, "compared", checkpoints[1])
    records: list[EvalRecord] = []
    image_info: list[dict[str, Any]] = []
    say = progress or (lambda message: None)

    for index, (image_name, image) in enumerate(images):
        h, w = image.shape[:2]
        say(f"{image_name}: encoding with {label_a}")
        pa, pb = SamPredictor(reference, cache=False), SamPredictor(other, cache=False)
        if warmup and index == 0:
            say(f"{image_name}: warm-up (untimed encoder run of both models)")
            pa.set_image(image)
            pb.set_image(image)
        t0 = time.perf_counter()
        pa.set_image(image)
        sa.encoder_ms.append(_ms(time.perf_counter() - t0))
        say(f"{image_name}: encoding with {label_b}")
        t0 = time.perf_counter()
        pb.set_image(image)
        sb.encoder_ms.append(_ms(time.perf_counter() - t0))

        objects: list[np.ndarray] = []
        source = "everything"
        note = ""
        given = (boxes or {}).get(image_name)
        if not given and max_objects > 0:
            say(f"{image_name}: segment everything with {label_a} ({grid}x{grid} grid)")
            cache = EmbeddingCache(max_bytes=64 * 2**20)
            cache.put(pa._cache_key(image_digest(image)), pa.get_cached_embedding())
            generator = SamAutomaticMaskGenerator(reference, points_per_side=grid, output_mode="binary_mask",
                                                  cache=cache)
            min_area = min_object_fraction * h * w
            found = [r for r in generator.generate(image) if r["area"] >= min_area]
            found.sort(key=lambda r: -int(r["area"]))
            objects = [np.asarray(r["segmentation"], dtype=bool) for r in found[:max_objects]]
        if not objects:
            source = "box"
            box_list = [list(map(float, b)) for b in given] if given else [_default_box(h, w)]
            if not given:
                note = f"{label_a} found no objects with segment-everything; used its mask for the middle box"
            for b in box_list:
                run = run_prompts(reference, image, box=b, multimask=False, name=label_a, predictor=pa)
                if run.mask.any():
                    objects.append(run.mask)
            if not objects:
                note = f"{label_a} returned empty masks; no prompts from this image"

        for obj_index, obj in enumerate(objects):
            bbox = mask_bbox(obj)
            if bbox is None:
                continue
            rng = np.random.default_rng([seed, index, obj_index])
            prompts: list[tuple[str, np.ndarray]] = [("box", np.asarray(bbox, dtype=np.float64))]
            prompts += [("point", p[None, :]) for p in sample_points(obj, points_per_object, rng)]
            for kind, coords in prompts:
                kwargs: dict[str, Any] = ({"box": coords} if kind == "box" else
                                          {"points": coords, "labels": [1], "multimask": True})
                ra = run_prompts(reference, image, name=label_a, predictor=pa, **kwargs)
                rb = run_prompts(other, image, name=label_b, predictor=pb, **kwargs)
                sa.decoder_ms.append(ra.decoder_ms)
                sb.decoder_ms.append(rb.decoder_ms)
                records.append(EvalRecord(
                    image=image_name, object=obj_index, object_source=source, prompt=kind,
                    coords=[float(v) for v in coords.reshape(-1)], iou=mask_iou(ra.mask, rb.mask),
                    a_decoder_ms=ra.decoder_ms, b_decoder_ms=rb.decoder_ms,
                    a_score=float(ra.scores[ra.best]), b_score=float(rb.scores[rb.best]),
                    a_area=int(ra.mask.sum()), b_area=int(rb.mask.sum()),
                ))
        image_info.append({"name": image_name, "height": int(h), "width": int(w), "objects": len(objects),
                           "object_source": source, "note": note})
        say(f"{image_name}: {len(objects)} object(s)")

    settings = {"points_per_object": points_per_object, "seed": seed, "max_objects": max_objects, "grid": grid,
                "min_object_fraction": min_object_fraction, "warmup": warmup}
    return EvalReport((sa, sb), records, image_info, settings)

