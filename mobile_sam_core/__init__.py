"""MobileSAM / SAM inference core with segment-anything's API.

>>> from mobile_sam_core import sam_model_registry, SamPredictor
>>> sam = sam_model_registry["vit_t"](checkpoint="mobile_sam.pt")
>>> predictor = SamPredictor(sam)

Importing this package before ``torch`` lets it shorten OpenMP's spin-wait (see ``openmp_env``).
"""

from .openmp_env import shorten_openmp_spin

shorten_openmp_spin()  # must run before the imports below load torch

from .automatic_mask_generator import SamAutomaticMaskGenerator  # noqa: E402
from .build import (  # noqa: E402
    MODEL_SPECS,
    CheckpointError,
    LoadedModel,
    ModelSpec,
    build_model,
    build_sam,
    count_parameters,
    sam_model_registry,
)
from .embedding_cache import CachedEmbedding, EmbeddingCache, default_embedding_cache, image_digest  # noqa: E402
from .images import ImageLoadError, LoadedImage, PromptError, clip_box, load_image, validate_points  # noqa: E402
from .predictor import SamPredictor, warm_up  # noqa: E402
from .render import (  # noqa: E402
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
from .weights import (  # noqa: E402
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
