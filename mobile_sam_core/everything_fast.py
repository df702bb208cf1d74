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
    mask_to_rle_pytorch,
    uncrop_masks,
)

from .fast_decoder import cached_dense_pe, fast_decoder_for, image_context
from .mask_upsample import count_above, threshold_input_maps, upscale_to_input

__all__ = ["process_batch_exact", "fast_everything_settings", "FAST_EVERYTHING_DEFAULTS"]


def process_batch_exact(
    gen: Any, points: np.ndarray, im_size: Tuple[int, ...], crop_box: List[int], orig_size: Tuple[int, ...]
) -> Optional[MaskData]:
    """``SamAutomaticMaskGenerator._process_batch`` on the fast decoder; None if unsupported."""
    predictor = gen.predictor
    model = predictor.model
    decoder = fast_decoder_for(model)
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
    data["rles"] = mask_to_rle_pytorch(data["masks"])
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
    """Keyword arguments for ``SamAutomaticMaskGenerator`` selecting the fast preset."""
    settings = dict(FAST_EVERYTHING_DEFAULTS)
    settings.update(overrides)
    return settings
