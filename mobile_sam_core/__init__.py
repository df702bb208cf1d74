"""MobileSAM / SAM inference core with segment-anything's API.

>>> from mobile_sam_core import sam_model_registry, SamPredictor
>>> sam = sam_model_registry["vit_t"](checkpoint="mobile_sam.pt")
>>> predictor = SamPredictor(sam)
"""

from .automatic_mask_generator import SamAutomaticMaskGenerator
from .build import (
    MODEL_SPECS,
    CheckpointError,
    LoadedModel,
    ModelSpec,
    build_model,
    build_sam,
    count_parameters,
    sam_model_registry,
)
from .embedding_cache import CachedEmbedding, EmbeddingCache, default_embedding_cache, image_digest
from .images import ImageLoadError, LoadedImage, PromptError, clip_box, load_image, validate_points
from .predictor import SamPredictor, warm_up
from .render import (
    cutout_rgba,
    encode_jpeg,
    encode_png,
    mask_iou,
    mask_to_png_bytes,
    mask_to_rle,
    masks_to_coco_json,
    overlay_masks,
    palette,
)
from .weights import (
    ResolvedCheckpoint,
    WeightsUnavailableError,
    download_checkpoint,
    resolve_checkpoint,
    weights_status,
)

__all__ = [
    "ImageLoadError",
    "LoadedImage",
    "PromptError",
    "ResolvedCheckpoint",
    "WeightsUnavailableError",
    "clip_box",
    "cutout_rgba",
    "download_checkpoint",
    "encode_jpeg",
    "encode_png",
    "load_image",
    "mask_iou",
    "mask_to_png_bytes",
    "mask_to_rle",
    "masks_to_coco_json",
    "overlay_masks",
    "palette",
    "resolve_checkpoint",
    "validate_points",
    "weights_status",
    "MODEL_SPECS",
    "CachedEmbedding",
    "CheckpointError",
    "EmbeddingCache",
    "image_digest",
    "LoadedModel",
    "ModelSpec",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "build_model",
    "build_sam",
    "count_parameters",
    "default_embedding_cache",
    "sam_model_registry",
    "warm_up",
]
