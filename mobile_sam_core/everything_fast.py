"""Segment-everything on the fast decoder: an exact batch step and an opt-in fast preset.

Exact (used by :class:`~mobile_sam_core.SamAutomaticMaskGenerator` by default):
:func:`process_batch_exact` is SAM's per-batch step with the same filters in the same order,
computed differently:

* the decoder shares per-image work between grid points and runs its output upscaling only for
  points with at least one mask above ``pred_iou_thresh`` (:mod:`.fast_decoder`);
* stability scores count full-resolution pixels above ``0 +- offset`` without materialising
  full-resolution logits, and masks are thresholded near boundaries only
  (:mod:`.mask_upsample`, bit-identical to thresholding SAM's upsampled logits).

Fast preset (opt-in, approximate): :func:`fast_everything_settings` /
``SamAutomaticMaskGenerator(model, fast=True)`` (see :class:`FastEverything`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    is_box_near_crop_edge,
    uncrop_masks,
)

from .fast_decoder import cached_dense_pe, fast_decoder_for, image_context
from .mask_upsample import count_above, threshold_input_maps, upscale_to_input

__all__ = [
    "FAST_EVERYTHING_DEFAULTS",
    "MaskDataNoCopy",
    "fast_everything_settings",
    "generate_fast",
    "masks_to_rle",
    "rle_to_mask",
    "process_batch_exact",
]


class MaskDataNoCopy(MaskData):
    """``MaskData`` whose ``cat`` does not deep-copy lists (RLE counts of noisy masks are long
    lists of ints; copying them dominated segment-everything). Batches are never reused."""

    def cat(self, new_stats: MaskData) -> None:
        for k, v in new_stats.items():
            if k not in self._stats or self._stats[k] is None:
                self._stats[k] = list(v) if isinstance(v, list) else v
            elif isinstance(v, torch.Tensor):
                self._stats[k] = torch.cat([self._stats[k], v], dim=0)
            elif isinstance(v, np.ndarray):
                self._stats[k] = np.concatenate([self._stats[k], v], axis=0)
            elif isinstance(v, list):
                self._stats[k] = self._stats[k] + v
            else:
                raise TypeError(f"MaskData key {k} has an unsupported type {type(v)}.")


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Same as ``segment_anything.utils.amg.rle_to_mask`` without a Python loop over runs."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = (np.arange(counts.size) % 2).astype(bool)
    mask = np.repeat(values, counts)
    if mask.size != h * w:  # malformed RLE: fall back to the reference behaviour
        from segment_anything.utils.amg import rle_to_mask as reference

        return reference(rle)
    return mask.reshape(w, h).transpose()


def masks_to_rle(masks: torch.Tensor) -> List[Dict[str, Any]]:
    """Same output as ``segment_anything.utils.amg.mask_to_rle_pytorch`` (uncompressed RLE in
    column-major order), without its per-mask scan over all change points."""
    b, h, w = masks.shape
    if b == 0:
        return []
    flat = masks.permute(0, 2, 1).reshape(b, h * w)
    change = torch.nonzero(flat[:, 1:] != flat[:, :-1]).numpy()
    rows, cols = change[:, 0], change[:, 1] + 1
    splits = np.searchsorted(rows, np.arange(b + 1))
    first = flat[:, 0].numpy()
    out = []
    for i in range(b):
        bounds = np.concatenate(([0], cols[splits[i]: splits[i + 1]], [h * w]))
        counts = np.diff(bounds).tolist()
        out.append({"size": [h, w], "counts": ([0] + counts) if first[i] else counts})
    return out


def process_batch_exact(
    gen: Any, points: np.ndarray, im_size: Tuple[int, ...], crop_box: List[int], orig_size: Tuple[int, ...]
) -> Optional[MaskData]:
    """``SamAutomaticMaskGenerator._process_batch`` on the fast decoder; None if unsupported."""
    predictor = gen.predictor
    model = predictor.model
    decoder = fast_decoder_for(model) if predictor.features.device.type == "cpu" else None
    if decoder is None:
        return None
    orig_h, orig_w = orig_size
    transformed = predictor.transform.apply_coords(points, im_size)
    in_points = torch.as_tensor(transformed, dtype=torch.float)[:, None, :]
    in_labels = torch.ones(in_points.shape[0], 1, dtype=torch.int)
    sparse, _ = model.prompt_encoder(points=(in_points, in_labels), boxes=None, masks=None)
    ctx = image_context(decoder, predictor.features, cached_dense_pe(model))
    thresh = gen.pred_iou_thresh if gen.pred_iou_thresh > 0.0 else None
    iou, low, index = decoder.decode(ctx, sparse, True, iou_threshold=thresh)
    # Same row order as SAM's flatten(0, 1) followed by the IoU filter.
    data = MaskData(
        iou_preds=iou[index[:, 0], index[:, 1]],
        points=torch.as_tensor(points)[index[:, 0]],
    )
    img_size = model.image_encoder.img_size
    big = upscale_to_input(low[:, None], img_size, predictor.input_size)[:, 0]
    thr, off = model.mask_threshold, gen.stability_score_offset
    counts = count_above(big, predictor.original_size, [thr + off, thr - off]).to(torch.int32)
    data["stability_score"] = counts[:, 0] / counts[:, 1]
    keep = torch.ones(len(counts), dtype=torch.bool)
    if gen.stability_score_thresh > 0.0:
        keep = data["stability_score"] >= gen.stability_score_thresh
        data.filter(keep)
        big = big[keep]
    data["masks"] = threshold_input_maps(big, predictor.original_size, thr)
    data["boxes"] = batched_mask_to_box(data["masks"])
    keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
    if not torch.all(keep):
        data.filter(keep)
    data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
    data["rles"] = masks_to_rle(data["masks"])
    del data["masks"]
    return data


# ---------------------------------------------------------------------------------- fast preset

FAST_EVERYTHING_DEFAULTS: Dict[str, Any] = {
    "points_per_side": 16,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "fast": True,
}


def fast_everything_settings(**overrides: Any) -> Dict[str, Any]:
    """Keyword arguments for ``SamAutomaticMaskGenerator`` selecting the fast preset.

    ``SamAutomaticMaskGenerator(model, **fast_everything_settings())`` is what the demo's
    Everything tab is meant to use: a 16x16 grid with SAM's default thresholds, run by
    :func:`generate_fast`. Any argument can be overridden.
    """
    settings = dict(FAST_EVERYTHING_DEFAULTS)
    settings.update(overrides)
    return settings


def _coarse_first(n_side_h: int, n_side_w: int) -> np.ndarray:
    """Grid indices ordered coarse to fine (every 4th, then every 2nd, then the rest)."""
    ii, jj = np.meshgrid(np.arange(n_side_h), np.arange(n_side_w), indexing="ij")
    level = np.full(ii.shape, 2)
    level[(ii % 2 == 0) & (jj % 2 == 0)] = 1
    level[(ii % 4 == 0) & (jj % 4 == 0)] = 0
    return np.argsort(level.ravel(), kind="stable")


@torch.no_grad()
def generate_fast(gen: Any, image: np.ndarray) -> Optional[MaskData]:
    """Approximate segment-everything (opt-in ``fast=True``); None when not applicable.

    Differences from SAM's algorithm, each trading exactness for time:

    * grid points are visited coarse to fine and a point already inside the smallest accepted
      mask of an earlier point is skipped (SAM decodes every point and lets NMS drop the
      duplicates);
    * the decoder runs in bfloat16 (``gen.fast_decoder_precision``);
    * the stability score is computed on the 256x256 low-res logits (valid region) instead of
      full-resolution logits, and box NMS uses boxes of the low-res masks;
    * full-resolution masks are produced (exactly, from the low-res logits) only for the masks
      that survive NMS.

    Recall against SAM's exhaustive 32x32 result is published in docs/benchmarks.md.
    """
    from torchvision.ops.boxes import batched_nms

    if gen.crop_n_layers > 0 or len(gen.point_grids) != 1:
        return None
    predictor = gen.predictor
    model = predictor.model
    if model.device.type != "cpu":
        return None
    dtype = torch.bfloat16 if gen.fast_decoder_precision == "bf16" else torch.float32
    decoder = fast_decoder_for(model, dtype)
    if decoder is None:
        return None
    orig_h, orig_w = image.shape[:2]
    predictor.set_image(image)
    ctx = image_context(decoder, predictor.features, cached_dense_pe(model))
    img_size = model.image_encoder.img_size
    in_h, in_w = predictor.input_size
    low_side = 4 * ctx.grid[0]
    # valid (unpadded) part of the low-res grid, and the mapping image pixel -> low-res cell
    scale = low_side / img_size
    lh, lw = max(1, int(np.ceil(in_h * scale))), max(1, int(np.ceil(in_w * scale)))
    grid = gen.point_grids[0]
    n = len(grid)
    side = int(round(np.sqrt(n)))
    order = _coarse_first(side, side) if side * side == n else np.arange(n)
    points_all = grid * np.array([[orig_w, orig_h]])
    coords_model = predictor.transform.apply_coords(points_all, (orig_h, orig_w))
    cell_r = np.clip((coords_model[:, 1] * scale).astype(np.int64), 0, lh - 1)
    cell_c = np.clip((coords_model[:, 0] * scale).astype(np.int64), 0, lw - 1)
    covered = np.zeros((lh, lw), dtype=bool)
    thr, off = model.mask_threshold, gen.stability_score_offset
    lows, ious, pts, stabs = [], [], [], []
    done = 0
    for s in range(0, n, gen.points_per_batch):
        batch = order[s: s + gen.points_per_batch]
        batch = batch[~covered[cell_r[batch], cell_c[batch]]]
        done = min(n, s + gen.points_per_batch)
        if batch.size:
            in_points = torch.as_tensor(coords_model[batch], dtype=torch.float)[:, None, :]
            in_labels = torch.ones(len(batch), 1, dtype=torch.int)
            sparse, _ = model.prompt_encoder(points=(in_points, in_labels), boxes=None, masks=None)
            thresh = gen.pred_iou_thresh if gen.pred_iou_thresh > 0.0 else None
            iou, low, index = decoder.decode(ctx, sparse, True, iou_threshold=thresh)
            if len(index):
                lv = low[:, :lh, :lw]
                inter = (lv > thr + off).flatten(1).sum(1)
                union = (lv > thr - off).flatten(1).sum(1)
                stab = inter.float() / union.float()
                keep = stab >= gen.stability_score_thresh if gen.stability_score_thresh > 0.0 else \
                    torch.ones_like(stab, dtype=torch.bool)
                if keep.any():
                    # Mark as covered by each point's smallest accepted mask (the most specific):
                    # points inside it would mostly reproduce the same masks. Larger masks
                    # (wholes, background) do not hide the parts inside them.
                    fg = lv[keep] > thr
                    area = fg.flatten(1).sum(1)
                    owner = index[keep][:, 0]
                    for p_idx in torch.unique(owner):
                        rows = torch.nonzero(owner == p_idx).flatten()
                        covered |= fg[rows[torch.argmin(area[rows])]].numpy()
                    lows.append(low[keep])
                    ious.append(iou[index[:, 0], index[:, 1]][keep])
                    pts.append(torch.as_tensor(points_all[batch])[index[:, 0]][keep])
                    stabs.append(stab[keep])
        if gen.progress is not None:
            gen.progress(done, n)
    if not lows:
        return MaskData()
    low = torch.cat(lows)
    iou = torch.cat(ious)
    # boxes of the low-res masks in image coordinates (for NMS only)
    lr_boxes = batched_mask_to_box(low[:, :lh, :lw] > thr).float()
    factor = torch.tensor([orig_w / (in_w * scale), orig_h / (in_h * scale)] * 2)
    lr_boxes = (lr_boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])) * factor
    keep = batched_nms(lr_boxes, iou, torch.zeros(len(iou)), iou_threshold=gen.box_nms_thresh)
    low = low[keep]
    data = MaskData(iou_preds=iou[keep], points=torch.cat(pts)[keep].double(), stability_score=torch.cat(stabs)[keep])
    masks = threshold_input_maps(upscale_to_input(low[:, None].float(), img_size, (in_h, in_w))[:, 0],
                                 (orig_h, orig_w), thr)
    data["boxes"] = batched_mask_to_box(masks)
    data["rles"] = masks_to_rle(masks)
    data["crop_boxes"] = torch.tensor([[0, 0, orig_w, orig_h]] * len(keep))
    data.to_numpy()
    return data
