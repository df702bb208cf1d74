"""Upscaling of low-resolution mask logits to the original image size.

SAM upsamples the 256x256 decoder output to the padded encoder input (bilinear), crops the
padding, and resizes to the original size (bilinear). :func:`upscale_logits` computes the same
two steps but never computes the padded part of the first one, which is up to half of it for
wide or tall images. The sample positions and weights are identical, so results are bit-equal.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["source_extent", "upscale_logits", "upscale_logits_reference"]


def source_extent(low_hw: Sequence[int], img_size: int, input_size: Sequence[int]) -> tuple:
    """``(rows, cols)`` of the low-res grid that bilinear sampling of the unpadded input region touches."""
    h, w = int(low_hw[0]), int(low_hw[1])
    factor = img_size / h
    return min(h, math.ceil(int(input_size[0]) / factor) + 1), min(w, math.ceil(int(input_size[1]) / factor) + 1)


def upscale_logits_reference(
    low_res: torch.Tensor, img_size: int, input_size: Sequence[int], original_size: Sequence[int]
) -> torch.Tensor:
    """SAM's ``postprocess_masks``, kept as the reference the fast path is tested against."""
    masks = F.interpolate(low_res, (img_size, img_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)


def upscale_logits(
    low_res: torch.Tensor, img_size: int, input_size: Sequence[int], original_size: Sequence[int]
) -> torch.Tensor:
    """Upscale ``(B, C, h, w)`` logits to ``(B, C, *original_size)`` as SAM does, but faster."""
    h, w = low_res.shape[-2:]
    if low_res.numel() == 0:
        return low_res.new_zeros((*low_res.shape[:-2], int(original_size[0]), int(original_size[1])))
    factor = img_size / h
    in_h, in_w = int(input_size[0]), int(input_size[1])
    src_h, src_w = source_extent((h, w), img_size, input_size)
    # Scaling the cropped grid by exactly `factor` samples the same positions as the full resize.
    big = F.interpolate(
        low_res[..., :src_h, :src_w], scale_factor=factor, mode="bilinear", align_corners=False,
        recompute_scale_factor=False,
    )[..., :in_h, :in_w]
    return F.interpolate(big, tuple(int(v) for v in original_size), mode="bilinear", align_corners=False)
