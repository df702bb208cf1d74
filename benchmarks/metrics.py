"""Mask matching metrics used by the benchmark (pure numpy)."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

__all__ = ["mask_iou", "recall_at_iou", "best_ious"]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 for two empty masks)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _box(mask: np.ndarray) -> tuple:
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if ys.size == 0:
        return (0, 0, 0, 0)
    return (int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1)


def best_ious(reference: Sequence[np.ndarray], candidates: Sequence[np.ndarray], min_iou: float = 0.0) -> List[float]:
    """For every reference mask, the best IoU with any candidate (0 if none reaches ``min_iou``).

    Pairs that cannot reach ``min_iou`` (area ratio, disjoint boxes) are skipped, so matching
    hundreds of full-size masks stays fast.
    """
    cand = [(np.asarray(c, bool), int(np.count_nonzero(c))) for c in candidates]
    cand_boxes = [_box(c) for c, _ in cand]
    out = []
    for r in reference:
        r = np.asarray(r, bool)
        ra = int(np.count_nonzero(r))
        ry0, rx0, ry1, rx1 = _box(r)
        best = 0.0
        for (c, ca), (cy0, cx0, cy1, cx1) in zip(cand, cand_boxes):
            if ra == 0 and ca == 0:
                best = 1.0
                break
            lo, hi = min(ra, ca), max(ra, ca)
            if hi == 0 or lo / hi < max(min_iou, best):  # IoU <= smaller/larger area
                continue
            if cy0 >= ry1 or ry0 >= cy1 or cx0 >= rx1 or rx0 >= cx1:
                continue
            y0, x0, y1, x1 = min(ry0, cy0), min(rx0, cx0), max(ry1, cy1), max(rx1, cx1)
            iou = mask_iou(r[y0:y1, x0:x1], c[y0:y1, x0:x1])
            best = max(best, iou)
        out.append(best)
    return out


def recall_at_iou(reference: Sequence[np.ndarray], candidates: Sequence[np.ndarray], iou: float = 0.8) -> Dict[str, float]:
    """Share of reference masks matched by some candidate with IoU >= ``iou``."""
    if len(reference) == 0:
        return {"recall": float("nan"), "matched": 0, "reference": 0, "candidates": len(candidates)}
    b = best_ious(reference, candidates, min_iou=iou)
    matched = sum(v >= iou for v in b)
    return {"recall": matched / len(reference), "matched": matched, "reference": len(reference),
            "candidates": len(candidates)}
