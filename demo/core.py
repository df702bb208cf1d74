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
)
from mobile_sam_core.embedding_cache import image_digest  # noqa: F401
from mobile_sam_core.compare import pairwise_iou, run_everything, run_prompts  # noqa: F401  (Compare tab)
from mobile_sam_core.model_pool import (  # noqa: F401  (Compare tab)
    ModelAvailability,
    ModelPool,
    ModelTooLargeError,
    PoolBusyError,
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
    encode_png,
    mask_to_png_bytes,
    masks_to_coco_json,
    overlay_masks,
)
from mobile_sam_core.weights import (  # noqa: F401
    ResolvedCheckpoint,
    WeightsUnavailableError,
    checkpoint_url,
    resolve_checkpoint,
)


def make_predictor(model: Any, cache: EmbeddingCache | None = None) -> SamPredictor:
    """``SamPredictor`` on the shared embedding cache.

    Works around a core bug: ``SamPredictor`` stores ``cache or None`` and an empty
    ``EmbeddingCache`` is falsy (it has ``__len__``), so no predictor would ever fill the cache.
    Harmless once the core tests ``cache is None`` instead.
    """
    cache = cache if cache is not None else default_embedding_cache()
    predictor = SamPredictor(model, cache=cache)
    if getattr(predictor, "cache", cache) is None:
        predictor.cache = cache
    return predictor


def make_mask_generator(model: Any, cache: EmbeddingCache | None = None, **kwargs: Any) -> SamAutomaticMaskGenerator:
    """``SamAutomaticMaskGenerator`` whose predictor uses the shared embedding cache (see above)."""
    cache = cache if cache is not None else default_embedding_cache()
    generator = SamAutomaticMaskGenerator(model, cache=cache, **kwargs)
    predictor = getattr(generator, "predictor", None)
    if predictor is not None and getattr(predictor, "cache", cache) is None:
        predictor.cache = cache
    return generator
