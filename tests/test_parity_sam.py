"""SAM ViT-B through our registry, loader and predictor against Meta's segment-anything."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor as ReferencePredictor
from segment_anything import sam_model_registry as reference_registry

from mobile_sam_core import SamPredictor, sam_model_registry
from tests.conftest import make_photo_like, perturb_state_dict


@pytest.fixture(scope="module")
def vit_b_pair(tmp_path_factory):
    torch.manual_seed(0)
    reference = reference_registry["vit_b"]()
    state = perturb_state_dict(reference.state_dict(), seed=2)
    path = tmp_path_factory.mktemp("vit_b") / "sam_vit_b_random.pth"
    torch.save(state, path)
    reference.load_state_dict(state)
    reference.eval()
    ours = sam_model_registry["vit_b"](checkpoint=str(path))
    return ours, reference


def test_vit_b_predictions_match(vit_b_pair):
    ours, reference = vit_b_pair
    image = make_photo_like(200, 300, seed=11)
    p_ours, p_ref = SamPredictor(ours, cache=False), ReferencePredictor(reference)
    p_ours.set_image(image)
    p_ref.set_image(image)
    a, b = p_ours.get_image_embedding(), p_ref.get_image_embedding()
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    prompts = [
        dict(point_coords=np.array([[120.0, 80.0]]), point_labels=np.array([1])),
        dict(box=np.array([30, 40, 250, 180]), point_coords=np.array([[100.0, 100.0]]), point_labels=np.array([0])),
    ]
    for kwargs in prompts:
        m_o, iou_o, lr_o = p_ours.predict(**kwargs)
        m_r, iou_r, lr_r = p_ref.predict(**kwargs)
        logits_r, _, _ = p_ref.predict(**kwargs, return_logits=True)
        np.testing.assert_allclose(iou_o, iou_r, atol=1e-4)
        assert np.abs(lr_o - lr_r).max() <= 1e-4 * max(1.0, np.abs(lr_r).max())
        differ = m_o != m_r
        assert np.all(np.abs(logits_r[differ]) < 1e-3)
