"""``SamAutomaticMaskGenerator``: segment everything, with segment-anything's arguments and output.

The algorithm is SAM's: prompt the decoder with a grid of single foreground points (optionally
over a pyramid of image crops), keep masks whose predicted IoU and stability are high enough,
remove duplicates with box NMS, optionally clean up small islands and holes. Mask bookkeeping
helpers come from ``segment_anything.utils.amg``.

One reordering makes it cheaper without changing the output: masks are filtered by predicted
IoU *before* their logits are upsampled to full resolution (the IoU prediction does not depend on
the upsampling), so most grid points never cost a full-size upsample.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from torchvision.ops.boxes import batched_nms, box_area

from .everything_fast import MaskDataNoCopy, generate_fast, process_batch_exact
from .everything_fast import rle_to_mask as fast_rle_to_mask
from .predictor import SamPredictor
from .upsample import upscale_logits

__all__ = ["SamAutomaticMaskGenerator"]

_OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class SamAutomaticMaskGenerator:
    """Generate masks for a whole image (arguments as in segment-anything).

    Extra keyword-only arguments:
        cache: embedding cache passed to the internal :class:`SamPredictor`.
        progress: optional callable ``(done, total)`` called after each point batch.
        fast: opt-in approximate preset (``mobile_sam_core.everything_fast.generate_fast``):
            coarse-to-fine grid that skips points inside accepted masks, bfloat16 decoder,
            stability and NMS on low-res masks. Recall against the exhaustive 32x32 result is in
            docs/benchmarks.md. ``fast_everything_settings()`` gives the app's settings. Crop
            layers are not supported in fast mode (the exact algorithm runs instead).
        fast_decoder_precision: decoder precision of the fast preset, ``"bf16"`` or ``"fp32"``.
        encoder_precision: passed to the internal :class:`SamPredictor` (default ``"fp32"``,
            which shares embeddings with clicks on the same image).
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        cache: Any = None,
        progress: Any = None,
        fast: bool = False,
        fast_decoder_precision: str = "bf16",
        encoder_precision: str = "fp32",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Exactly one of points_per_side or point_grids must be provided.")
        if points_per_side is not None:
            if points_per_side < 1:
                raise ValueError("points_per_side must be >= 1")
            self.point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            self.point_grids = point_grids
        if output_mode not in _OUTPUT_MODES:
            raise ValueError(f"Unknown output_mode {output_mode!r}; choose one of {', '.join(_OUTPUT_MODES)}.")
        if points_per_batch < 1:
            raise ValueError("points_per_batch must be >= 1")
        if output_mode == "coco_rle":
            import pycocotools  # noqa: F401  (fail early with a clear ImportError)

        self.predictor = SamPredictor(model, cache=cache, encoder_precision=encoder_precision)
        if fast_decoder_precision not in ("bf16", "fp32"):
            raise ValueError("fast_decoder_precision must be 'bf16' or 'fp32'")
        self.fast = bool(fast)
        self.fast_decoder_precision = fast_decoder_precision
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.progress = progress

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> List[Dict[str, Any]]:
        """Segment everything in an HxWx3 uint8 RGB image.

        Returns one dict per mask with ``segmentation`` (HxW bool array, or RLE dict for the RLE
        output modes), ``area``, ``bbox`` (XYWH), ``predicted_iou``, ``point_coords``,
        ``stability_score`` and ``crop_box`` (XYWH).
        """
        mask_data = None
        if self.fast:
            mask_data = generate_fast(self, image)
            if mask_data is not None and len(mask_data._stats) == 0:
                mask_data = _empty_mask_data()
        if mask_data is None:
            mask_data = self._generate_masks(image)
        if self.min_mask_region_area > 0:
            mask_data = self.postprocess_small_regions(
                mask_data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        if self.output_mode == "coco_rle":
            segmentations = [coco_encode_rle(rle) for rle in mask_data["rles"]]
        elif self.output_mode == "binary_mask":
            segmentations = [fast_rle_to_mask(rle) for rle in mask_data["rles"]]
        else:
            segmentations = mask_data["rles"]
        return [
            {
                "segmentation": segmentations[i],
                "area": area_from_rle(mask_data["rles"][i]),
                "bbox": box_xyxy_to_xywh(mask_data["boxes"][i]).tolist(),
                "predicted_iou": mask_data["iou_preds"][i].item(),
                "point_coords": [mask_data["points"][i].tolist()],
                "stability_score": mask_data["stability_score"][i].item(),
                "crop_box": box_xyxy_to_xywh(mask_data["crop_boxes"][i]).tolist(),
            }
            for i in range(len(mask_data["rles"]))
        ]

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(len(self.point_grids[i]) for i in layer_idxs)
        self._done, self._total = 0, total
        data = MaskDataNoCopy()  # no deep copies of RLE lists when concatenating batches
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size))
        if len(crop_boxes) > 1 and len(data["rles"]) > 0:
            # Prefer masks from smaller crops.
            scores = 1 / box_area(data["crop_boxes"])
            keep = batched_nms(
                data["boxes"].float(), scores, torch.zeros_like(data["boxes"][:, 0]), iou_threshold=self.crop_nms_thresh
            )
            data.filter(keep)
        if len(data._stats) == 0:
            return _empty_mask_data()
        data.to_numpy()
        return data

    def _process_crop(
        self, image: np.ndarray, crop_box: List[int], crop_layer_idx: int, orig_size: Tuple[int, ...]
    ) -> MaskData:
        x0, y0, x1, y1 = crop_box
        cropped_im = image[y0:y1, x0:x1, :]
        cropped_im_size = cropped_im.shape[:2]
        self.predictor.set_image(cropped_im)
        points_scale = np.array(cropped_im_size)[None, ::-1]
        points_for_image = self.point_grids[crop_layer_idx] * points_scale
        data = MaskDataNoCopy()  # no deep copies of RLE lists when concatenating batches
        for (points,) in batch_iterator(self.points_per_batch, points_for_image):
            data.cat(self._process_batch(points, cropped_im_size, crop_box, orig_size))
            self._done += len(points)
            if self.progress is not None:
                self.progress(self._done, self._total)
        self.predictor.reset_image()
        if len(data._stats) == 0 or len(data["rles"]) == 0:
            return MaskData()
        keep = batched_nms(
            data["boxes"].float(), data["iou_preds"], torch.zeros_like(data["boxes"][:, 0]),
            iou_threshold=self.box_nms_thresh,
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["rles"]))])
        return data

    def _process_batch(
        self, points: np.ndarray, im_size: Tuple[int, ...], crop_box: List[int], orig_size: Tuple[int, ...]
    ) -> MaskData:
        if self.predictor.fast_decoder:
            data = process_batch_exact(self, points, im_size, crop_box, orig_size)
            if data is not None:  # same filters and results, computed on the fast decoder
                return data
        orig_h, orig_w = orig_size
        predictor = self.predictor
        model = predictor.model
        transformed = predictor.transform.apply_coords(points, im_size)
        in_points = torch.as_tensor(transformed, dtype=torch.float)[:, None, :]
        in_labels = torch.ones(in_points.shape[0], 1, dtype=torch.int)
        sparse, dense = model.prompt_encoder(points=(in_points, in_labels), boxes=None, masks=None)
        low_res, iou_preds = model.mask_decoder(
            image_embeddings=predictor.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        n_out = low_res.shape[1]
        data = MaskData(
            low_res=low_res.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=torch.as_tensor(points.repeat(n_out, axis=0)),
        )
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        data["masks"] = upscale_logits(
            data["low_res"][:, None], model.image_encoder.img_size, predictor.input_size, predictor.original_size
        )[:, 0]
        del data["low_res"]
        data["stability_score"] = calculate_stability_score(
            data["masks"], model.mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > model.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)
        data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        data["rles"] = mask_to_rle_pytorch(data["masks"])
        del data["masks"]
        return data

    @staticmethod
    def postprocess_small_regions(mask_data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
        """Remove islands and fill holes smaller than ``min_area``; re-run NMS preferring untouched masks."""
        if len(mask_data["rles"]) == 0:
            return mask_data
        new_masks, scores = [], []
        for rle in mask_data["rles"]:
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask).unsqueeze(0))
            scores.append(float(not (changed_holes or changed_islands)))
        masks = torch.cat(new_masks, dim=0)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros_like(boxes[:, 0]), iou_threshold=nms_thresh)
        for i in keep:
            if scores[i] == 0.0:
                mask_data["rles"][i] = mask_to_rle_pytorch(masks[i].unsqueeze(0))[0]
                mask_data["boxes"][i] = boxes[i]
        mask_data.filter(keep)
        return mask_data


def _empty_mask_data() -> MaskData:
    return MaskData(
        rles=[],
        boxes=np.zeros((0, 4)),
        iou_preds=np.zeros((0,)),
        points=np.zeros((0, 2)),
        stability_score=np.zeros((0,)),
        crop_boxes=np.zeros((0, 4)),
    )
