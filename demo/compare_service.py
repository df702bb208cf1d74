"""Services of the Compare tab: the shared model pool, the model choices, and running two models.

Models come from one :class:`mobile_sam_core.model_pool.ModelPool` per process (per model
configuration): loaded when first chosen, kept under ``MOBILE_SAM_MODEL_BUDGET_MB`` with the least
recently used one unloaded first. A request holds one model at a time (model A, then model B), so
two visitors comparing different pairs never wait on each other for memory.
Nothing here keeps visitor data.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .config import DemoConfig
from .core import (
    ModelAvailability,
    ModelPool,
    ModelTooLargeError,
    PoolBusyError,
    PromptError,
    WeightsUnavailableError,
    default_embedding_cache,
    format_memory,
    format_size,
    image_digest,
    mask_iou,
    mask_to_rle,
    overlay_masks,
    pairwise_iou,
    run_everything,
    run_prompts,
)

__all__ = [
    "COLOR_A",
    "COLOR_B",
    "CompareError",
    "PairResult",
    "EverythingPair",
    "shared_pool",
    "adopt_served",
    "model_choices",
    "default_pair",
    "weights_note",
    "compare_pair",
    "compare_everything_pair",
    "render_pair",
]

COLOR_A = (30, 144, 255)  # dodger blue
COLOR_B = (255, 140, 0)  # dark orange


class CompareError(RuntimeError):
    """A comparison that cannot run (weights missing, over the memory budget, pool busy)."""


# ----------------------------------------------------------------------------------------- pool

_pools: dict[tuple, ModelPool] = {}
_pools_lock = threading.Lock()


def shared_pool(config: DemoConfig) -> ModelPool:
    """The process-wide pool for this configuration (the app's ``--checkpoint`` is used for its
    ``--model``; ``--random-weights`` without a checkpoint gives every model random weights)."""
    checkpoints = {config.model: config.checkpoint} if config.checkpoint else {}
    random_weights = bool(config.random_weights and not config.checkpoint)
    key = (tuple(sorted(checkpoints.items())), random_weights)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ModelPool(checkpoints=checkpoints, random_weights=random_weights)
        return pool


def adopt_served(pool: ModelPool, served: Any) -> None:
    """Let the pool serve the model the other tabs already loaded (``ModelService``), so the
    Compare tab shares its memory and its image embeddings instead of loading a second copy."""
    if served is not None and served.name in pool.names() and not pool.is_loaded(served.name):
        pool.adopt(served.name, served.model, source=served.source, path=served.path)


# -------------------------------------------------------------------------------------- choices


def _label(a: ModelAvailability) -> str:
    if a.usable:
        return f"{a.title} · {format_memory(a.estimated_bytes)}"
    if a.available:
        return f"{a.title} · needs {format_memory(a.estimated_bytes)}, over the memory budget"
    if a.downloadable:
        return f"{a.title} · not downloaded ({format_size(a.download_bytes)})"
    return f"{a.title} · weights missing"


def model_choices(pool: ModelPool) -> tuple[list[tuple[str, str]], dict[str, ModelAvailability]]:
    """Dropdown choices ``(label, name)``: usable models first, then the missing ones."""
    avail = pool.available()
    ordered = sorted(avail.values(), key=lambda a: (not a.usable, not a.available))
    return [(_label(a), a.name) for a in ordered], avail


def default_pair(avail: dict[str, ModelAvailability]) -> tuple[str, str]:
    """MobileSAM against SAM ViT-B when possible; otherwise the best usable pair."""
    usable = [n for n, a in avail.items() if a.usable]
    a = "vit_t" if "vit_t" in usable else (usable[0] if usable else "vit_t")
    for b in ("vit_b", "lite_medsam", "vit_l", "vit_h", "vit_t"):
        if b != a and b in usable:
            return a, b
    return a, "vit_b"  # not usable: the tab then says how to get it


def weights_note(avail: dict[str, ModelAvailability], names: list[str]) -> str:
    """Markdown about the chosen models that cannot be used now and what to do about it."""
    lines = []
    for name in dict.fromkeys(names):
        a = avail.get(name)
        if a is None or a.usable:
            continue
        if a.downloadable:
            by_hand = f", or {a.how_to}" if a.how_to else f". {a.message}"
            lines.append(f"**{a.title}** is not downloaded yet: press *Download {a.title}* below{by_hand}")
        else:
            lines.append(f"**{a.title}** cannot be used here. {a.message}")
    return "\n\n".join(lines)


# ------------------------------------------------------------------------------------ comparing

# First measured encoder time per (model, image), so that a repeated comparison served from the
# embedding cache can still show what encoding cost.
_encoder_memo: OrderedDict[tuple[str, str], float] = OrderedDict()
_memo_lock = threading.Lock()


def _remember_encoder(model: Any, digest: str, ms: float, cached: bool) -> float | None:
    key = (str(getattr(model, "cache_token", id(model))), digest)
    with _memo_lock:
        if not cached:
            _encoder_memo[key] = ms
            _encoder_memo.move_to_end(key)
            while len(_encoder_memo) > 512:
                _encoder_memo.popitem(last=False)
            return ms
        return _encoder_memo.get(key)


def _lease(pool: ModelPool, name: str, progress: Callable[[float, str], None] | None):
    try:
        return pool.acquire(name, progress)
    except KeyError as exc:
        raise CompareError(f"Unknown model {name!r}; choose one of {', '.join(pool.names())}.") from exc
    except (WeightsUnavailableError, ModelTooLargeError, PoolBusyError) as exc:
        raise CompareError(str(exc)) from exc


def _check_usable(pool: ModelPool, names: list[str]) -> None:
    problems = []
    for name in dict.fromkeys(names):
        if name not in pool.names():
            raise CompareError(f"Unknown model {name!r}; choose one of {', '.join(pool.names())}.")
        if pool.is_loaded(name):
            continue
        a = pool.availability(name)
        if not a.usable:
            problems.append(a.message)
    if problems:
        raise CompareError(" ".join(problems))


@dataclass
class Side:
    """One model's part of a comparison."""

    name: str
    title: str
    masks: np.ndarray
    scores: np.ndarray
    best: int
    encoder_ms: float
    encoder_cached: bool
    encoder_first_ms: float | None  # measured when the embedding was computed (None if unknown)
    decoder_ms: float
    load_s: float

    @property
    def mask(self) -> np.ndarray:
        return self.masks[self.best]

    def summary(self, to_original: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
        mask = to_original(self.mask) if to_original else self.mask
        return {
            "model": self.name, "title": self.title,
            "scores": [round(float(s), 6) for s in self.scores], "best": self.best,
            "mask_area": int(mask.sum()),
            "timings_ms": {"encoder_ms": round(self.encoder_ms, 1), "encoder_cached": self.encoder_cached,
                           "encoder_first_ms": None if self.encoder_first_ms is None else round(self.encoder_first_ms, 1),
                           "decoder_ms": round(self.decoder_ms, 1), "model_load_ms": round(self.load_s * 1000, 1)},
            "mask_rle": mask_to_rle(mask),
        }


@dataclass
class PairResult:
    a: Side
    b: Side
    iou: float
    intersection: int
    union: int


def compare_pair(pool: ModelPool, image: np.ndarray, model_a: str, model_b: str, points: np.ndarray | None,
                 labels: np.ndarray | None, box: np.ndarray | None, *,
                 progress: Callable[[float, str], None] | None = None) -> PairResult:
    """Both models on the same prompts (working-image pixels); IoU of their chosen masks."""
    has_points = points is not None and len(points) > 0
    if not has_points and box is None:
        raise PromptError("No prompt yet: click on the image to add points and/or draw a box (two corner clicks).")
    _check_usable(pool, [model_a, model_b])
    digest = image_digest(image)
    sides = []
    for i, name in enumerate((model_a, model_b)):
        def report(f: float, msg: str, i: int = i) -> None:
            if progress:
                progress((i + f) / 2, msg)

        if progress:
            progress(i / 2, f"model {'AB'[i]}: {pool.title(name)}")
        with _lease(pool, name, report) as lease:
            run = run_prompts(lease.model, image, points if has_points else None, labels if has_points else None,
                              box, cache=default_embedding_cache(), name=name)
            first = _remember_encoder(lease.model, digest, run.encoder_ms, run.encoder_cached)
            sides.append(Side(name, lease.title, run.masks, run.scores, run.best, run.encoder_ms, run.encoder_cached,
                              first, run.decoder_ms, lease.load_seconds))
    a, b = sides
    inter = int(np.count_nonzero(a.mask & b.mask))
    union = int(np.count_nonzero(a.mask | b.mask))
    return PairResult(a, b, mask_iou(a.mask, b.mask), inter, union)


@dataclass
class EverythingPair:
    a: Any  # mobile_sam_core.compare.EverythingRun
    b: Any
    titles: tuple[str, str]
    matched_a: float | None  # mean best IoU of A's masks with B's
    matched_b: float | None


def compare_everything_pair(pool: ModelPool, image: np.ndarray, model_a: str, model_b: str,
                            settings: dict[str, Any], *,
                            progress: Callable[[float, str], None] | None = None) -> EverythingPair:
    """Both models' segment-everything masks (``settings`` as for the Everything tab)."""
    _check_usable(pool, [model_a, model_b])
    runs, titles = [], []
    for i, name in enumerate((model_a, model_b)):
        def on_batch(done: int, total: int, i: int = i, name: str = name) -> None:
            if progress:
                progress((i + done / max(total, 1)) / 2, f"{pool.title(name)}: {done} of {total} grid points")

        def report(f: float, msg: str, i: int = i) -> None:
            if progress:
                progress(i / 2, msg)

        with _lease(pool, name, report) as lease:
            runs.append(run_everything(lease.model, image, name=name, progress=on_batch,
                                       cache=default_embedding_cache(), **settings))
            titles.append(lease.title)
    a, b = runs
    matrix = pairwise_iou(a.masks, b.masks)
    ma = float(matrix.max(axis=1).mean()) if a.count and b.count else None
    mb = float(matrix.max(axis=0).mean()) if a.count and b.count else None
    return EverythingPair(a, b, (titles[0], titles[1]), ma, mb)


def render_pair(image: np.ndarray, result: PairResult, points: np.ndarray | None, labels: np.ndarray | None,
                box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Overlays of model A's mask (blue) and model B's mask (orange) with the prompts drawn."""
    pts = points if points is not None and len(points) else None
    labs = labels if pts is not None else None
    ov_a = overlay_masks(image, [result.a.mask], colors=[COLOR_A], points=pts, labels=labs, box=box)
    ov_b = overlay_masks(image, [result.b.mask], colors=[COLOR_B], points=pts, labels=labs, box=box)
    return ov_a, ov_b
