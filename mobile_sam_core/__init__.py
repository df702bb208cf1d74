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
from .embedding_cache import CachedEmbedding, EmbeddingCache, default_embedding_cache
from .predictor import SamPredictor

__all__ = [
    "MODEL_SPECS",
    "CachedEmbedding",
    "CheckpointError",
    "EmbeddingCache",
    "LoadedModel",
    "ModelSpec",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "build_model",
    "build_sam",
    "count_parameters",
    "default_embedding_cache",
    "sam_model_registry",
]
