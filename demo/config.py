"""Settings of the demo app: one place for defaults, limits and queue sizes.

Values come from keyword arguments (``python -m demo --port ...``) or, when those are not given,
from ``MOBILE_SAM_DEMO_*`` environment variables, so that Hugging Face Spaces and tests can set
them without touching code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Segment-everything defaults, chosen to finish in seconds on two CPU cores
# (the decoder runs once per grid point: 16x16 = 256 prompts instead of SAM's 32x32 = 1024).
EVERYTHING_DEFAULTS: dict[str, float | int] = {
    "points_per_side": 16,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "min_mask_region_area": 0,
    # The core's fast preset (coarse-to-fine grid that skips covered points, bf16 decoder);
    # False runs SAM's exact algorithm. Accuracy against the exhaustive result: docs/benchmarks.md.
    "fast": True,
}
# Bounds of the controls shown to visitors (and enforced for API callers).
POINTS_PER_SIDE_RANGE = (4, 32)
MIN_REGION_AREA_MAX = 10_000

MAX_POINTS = 32  # prompt points per request; SAM was trained with far fewer
MAX_FILE_SIZE = "20mb"  # upload limit (gradio's launch(max_file_size=...))
# Output files older than this are removed (ours and gradio's copies of them).
OUTPUT_MAX_AGE_S = 3600
# Decoded uploads kept by content (API callers send the same file with every click).
DECODED_CACHE_MB = 64
DELETE_CACHE = (1800, OUTPUT_MAX_AGE_S)  # gradio: (every N seconds, files older than M seconds)

# Queue. Each group below runs at most N events at once, and the groups run side by side:
# - interactive: the UI's clicks, boxes, undo (~0.1 s each). One at a time, so two events of the
#   same visitor never race on their session state;
# - encode: the image encoder after an upload (~1.5 s);
# - api: the stateless /segment_points and /segment_box endpoints (may encode a new image);
# - everything: segment-everything (seconds to minutes), UI and API, one at a time.
# A long everything-run therefore never holds up anyone's clicks, and at most one long job of each
# kind competes for the cores.
INTERACTIVE_CONCURRENCY = 1
ENCODE_CONCURRENCY = 1
API_CONCURRENCY = 1
EVERYTHING_CONCURRENCY = 1


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"MOBILE_SAM_DEMO_{name}")
    return value if value not in (None, "") else default


def _env_bool(name: str, default: bool = False) -> bool:
    """A yes/no variable: unset gives ``default``; otherwise only a clear opposite word flips it."""
    value = (_env(name) or "").lower()
    if not value:
        return default
    return value not in {"0", "false", "no", "off"} if default else value in {"1", "true", "yes", "on"}


@dataclass
class DemoConfig:
    """How to start the app and which model to serve."""

    # GRADIO_SERVER_NAME/PORT are what Hugging Face Spaces sets (0.0.0.0:7860).
    host: str = field(default_factory=lambda: _env("HOST") or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1")
    port: int = field(default_factory=lambda: int(_env("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860))
    # "vit_t" (MobileSAM, falls back to LiteMedSAM when its weights are missing), or any
    # registered model name ("lite_medsam", "vit_b", ...).
    model: str = field(default_factory=lambda: _env("MODEL", "vit_t") or "vit_t")
    checkpoint: str | None = field(default_factory=lambda: _env("CHECKPOINT"))
    # Random weights: for tests and UI work without any checkpoint.
    random_weights: bool = field(default_factory=lambda: _env_bool("RANDOM_WEIGHTS"))
    # Grid of the everything tab; tests use a coarse one to stay fast.
    points_per_side: int = field(
        default_factory=lambda: int(_env("POINTS_PER_SIDE", str(EVERYTHING_DEFAULTS["points_per_side"])) or 16)
    )
    torch_threads: int | None = field(
        default_factory=lambda: int(v) if (v := _env("TORCH_THREADS")) else None
    )
    max_file_size: str = field(default_factory=lambda: _env("MAX_FILE_SIZE", MAX_FILE_SIZE) or MAX_FILE_SIZE)
    examples_dir: str | None = field(default_factory=lambda: _env("EXAMPLES_DIR"))
    # Run the model once on a synthetic image at start-up (about 1 s), so that the first visitor's
    # upload and click do not pay the one-off costs (about 0.4 s of model time measured, more
    # with the web server's own first-request work). MOBILE_SAM_DEMO_WARM_UP=0 turns it off.
    warm_up: bool = field(default_factory=lambda: _env_bool("WARM_UP", default=True))
