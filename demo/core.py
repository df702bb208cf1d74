"""The only module of the demo that imports ``mobile_sam_core``.

Everything the app needs from the core is re-exported here, so the rest of ``demo/`` has a single
place that states its dependency on the core's public API.
"""

from __future__ import annotations

from typing import Any

from mobile_sam_core import (  # noqa: F401  (re-exports)
    MODEL_SPECS,
    CheckpointError,
    EmbeddingCache,
    SamAutomaticMaskGenerator,
    SamPredictor,
    default_embedding_cache,
    sam_model_registry,
    warm_up,
)
from mobile_sam_core.embedding_cache import image_digest  # noqa: F401
from mobile_sam_core.compare import pairwise_iou, run_everything, run_prompts  # noqa: F401  (Compare tab)
from mobile_sam_core.model_pool import (  # noqa: F401  (Compare tab)
    ModelAvailability,
    ModelPool,
    ModelTooLargeError,
    PoolBusyError,
    format_memory,
)
from mobile_sam_core.render import mask_iou, mask_to_rle  # noqa: F401  (Compare tab)
from mobile_sam_core.images import (  # noqa: F401
    ImageLoadError,
    LoadedImage,
    PromptError,
    clip_box,
    load_image,
    validate_points,
)
from mobile_sam_core.render import (  # noqa: F401
    cutout_rgba,
    encode_jpeg,
    encode_png,
    mask_to_png_bytes,
    masks_to_coco_json,
    overlay_masks,
)
from mobile_sam_core.weights import (  # noqa: F401
    ResolvedCheckpoint,
    WeightsUnavailableError,
    WEIGHT_SPECS,
    checkpoint_env_var,
    checkpoint_url,
    format_size,
    resolve_checkpoint,
)


def make_predictor(model: Any, cache: EmbeddingCache | None = None) -> SamPredictor:
    """``SamPredictor`` on the process-wide embedding cache shared by all visitors."""
    return SamPredictor(model, cache=cache if cache is not None else default_embedding_cache())


def make_mask_generator(model: Any, cache: EmbeddingCache | None = None, **kwargs: Any) -> SamAutomaticMaskGenerator:
    """``SamAutomaticMaskGenerator`` whose predictor uses the shared embedding cache."""
    return SamAutomaticMaskGenerator(model, cache=cache if cache is not None else default_embedding_cache(),
                                     **kwargs)
