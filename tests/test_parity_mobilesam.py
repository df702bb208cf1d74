"""Parity with the official MobileSAM implementation (PyPI ``mobilesam-mirror``).

Both sides load the same perturbed random checkpoint (saved in the official key layout) and see
the same images and prompts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mobile_sam_core import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from tests.conftest import make_photo_like

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mobile_sam as official

SHAPES = {"square": (320, 320), "landscape": (240, 400), "portrait": (400, 224), "tiny": (12, 9)}


@pytest.fixture(scope="module")
def models(official_vit_t_checkpoint):
    ours = sam_model_registry["vit_t"](checkpoint=str(official_vit_t_checkpoint))
    theirs = official.sam_model_registry["vit_t"]()
    theirs.load_state_dict(torch.load(official_vit_t_checkpoint, weights_only=True))
    theirs.eval()  # after loading: the official attention caches its biases on eval()
    return ours, theirs


def test_encoder_is_built_from_timm_blocks(models):
    # Guards against comparing the oracle with itself (mobile_sam re-registers timm names).
    ours, theirs = models
    assert type(ours.image_encoder.stages[1]).__module__ == "timm.models.tiny_vit"
    assert type(theirs.image_encoder).__module__.startswith("mobile_sam")


@pytest.fixture(scope="module", params=list(SHAPES))
def predictors(request, models):
    ours, theirs = models
    h, w = SHAPES[request.param]
    image = make_photo_like(h, w, seed=h * 7 + w)
    p_ours = SamPredictor(ours, cache=False)
    p_theirs = official.SamPredictor(theirs)
    p_ours.set_image(image)
    p_theirs.set_image(image)
    return p_ours, p_theirs, image


def _prompts(h: int, w: int) -> dict[str, dict]:
    return {
        "point": dict(point_coords=np.array([[w * 0.4, h * 0.5]]), point_labels=np.array([1])),
        "multi_point": dict(
            point_coords=np.array([[w * 0.3, h * 0.3], [w * 0.7, h * 0.6], [w * 0.5, h * 0.9]]),
            point_labels=np.array([1, 1, 0]),
        ),
        "box": dict(box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.9])),
        "box_point": dict(
            box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.9]),
            point_coords=np.array([[w * 0.5, h * 0.5]]),
            point_labels=np.array([0]),
        ),
    }


def test_embeddings_match(predictors):
    p_ours, p_theirs, _ = predictors
    a, b = p_ours.get_image_embedding(), p_theirs.get_image_embedding()
    assert a.shape == b.shape == (1, 256, 64, 64)
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    assert p_ours.input_size == p_theirs.input_size
    assert p_ours.original_size == p_theirs.original_size


@pytest.mark.parametrize("prompt", ["point", "multi_point", "box", "box_point"])
@pytest.mark.parametrize("multimask", [True, False])
def test_predictions_match(predictors, prompt, multimask):
    p_ours, p_theirs, image = predictors
    kwargs = _prompts(*image.shape[:2])[prompt]
    m_o, iou_o, lr_o = p_ours.predict(**kwargs, multimask_output=multimask)
    m_t, iou_t, lr_t = p_theirs.predict(**kwargs, multimask_output=multimask)
    logits_t, _, _ = p_theirs.predict(**kwargs, multimask_output=multimask, return_logits=True)
    assert m_o.shape == m_t.shape == (3 if multimask else 1, *image.shape[:2])
    assert m_o.dtype == bool
    np.testing.assert_allclose(iou_o, iou_t, atol=1e-4)
    assert np.abs(lr_o - lr_t).max() <= 1e-4 * max(1.0, np.abs(lr_t).max())
    # Masks agree except where the official logit sits at the threshold (float ties).
    differ = m_o != m_t
    assert np.all(np.abs(logits_t[differ]) < 1e-3), f"{differ.sum()} pixels differ away from the threshold"
    assert differ.mean() < 1e-3


def test_mask_input_and_return_logits_match(predictors):
    p_ours, p_theirs, image = predictors
    kwargs = _prompts(*image.shape[:2])["point"]
    _, _, lr = p_theirs.predict(**kwargs, multimask_output=False)
    l_o, iou_o, _ = p_ours.predict(**kwargs, mask_input=lr, multimask_output=False, return_logits=True)
    l_t, iou_t, _ = p_theirs.predict(**kwargs, mask_input=lr, multimask_output=False, return_logits=True)
    assert l_o.dtype == np.float32
    np.testing.assert_allclose(iou_o, iou_t, atol=1e-4)
    assert np.abs(l_o - l_t).max() <= 1e-4 * max(1.0, np.abs(l_t).max())


def _match(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    key = lambda r: (r["bbox"], r["predicted_iou"])  # noqa: E731
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key)):
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1)
        np.testing.assert_allclose(a["predicted_iou"], b["predicted_iou"], atol=1e-4)
        np.testing.assert_allclose(a["stability_score"], b["stability_score"], atol=1e-3)
        np.testing.assert_allclose(a["point_coords"], b["point_coords"], atol=1e-6)
        assert a["crop_box"] == b["crop_box"]
        inter = np.logical_and(a["segmentation"], b["segmentation"]).sum()
        union = np.logical_or(a["segmentation"], b["segmentation"]).sum()
        assert inter / max(union, 1) > 0.995


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0),
        dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, crop_n_layers=1,
             min_mask_region_area=30, points_per_batch=16),
    ],
    ids=["grid", "crops_small_regions"],
)
def test_automatic_mask_generator_matches(models, kwargs):
    ours, theirs = models
    image = make_photo_like(160, 224, seed=3)
    res_o = SamAutomaticMaskGenerator(ours, cache=False, **kwargs).generate(image)
    res_t = official.SamAutomaticMaskGenerator(theirs, **kwargs).generate(image)
    assert len(res_t) > 0, "thresholds too strict for a meaningful comparison"
    _match(res_o, res_t)
    assert set(res_o[0]) == set(res_t[0])


def test_automatic_mask_generator_coco_rle_matches(models):
    ours, theirs = models
    image = make_photo_like(96, 128, seed=5)
    kwargs = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="coco_rle")
    res_o = SamAutomaticMaskGenerator(ours, cache=False, **kwargs).generate(image)
    res_t = official.SamAutomaticMaskGenerator(theirs, **kwargs).generate(image)
    assert len(res_o) == len(res_t) > 0
    assert sorted(r["segmentation"]["counts"] for r in res_o) == sorted(r["segmentation"]["counts"] for r in res_t)
