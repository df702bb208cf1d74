"""Behaviour of mobile_sam_core.render: overlays, cut-outs, PNG bytes, COCO RLE JSON, metrics."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mobile_sam_core.render import (
    cutout_rgba,
    encode_png,
    mask_bbox,
    mask_iou,
    mask_to_png_bytes,
    mask_to_rle,
    masks_to_coco_json,
    overlay_masks,
    palette,
    rle_to_mask,
)

# pycocotools' compiled decode trips a NumPy 2 deprecation warning inside the library itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 40, 60


def make_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def rect(x0: int, y0: int, x1: int, y1: int, shape=(H, W)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def decode_png(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(data)))


# ------------------------------------------------------------------------------------ palette


def test_palette():
    p = palette(12)
    assert p.shape == (12, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == 12
    r, g, b = (int(v) for v in p[0])
    assert b > 200 and b > g > r  # a clear blue first
    assert (p.max(axis=1).astype(int) - p.min(axis=1) > 100).all()  # saturated, no greys
    np.testing.assert_array_equal(palette(5, seed=2), palette(7)[2:])
    assert palette(0).shape == (0, 3)


# ------------------------------------------------------------------------------------ overlay


def test_overlay_without_contours_blends_only_masked_pixels():
    img = make_image()
    before = img.copy()
    m = rect(10, 5, 30, 25)
    m_before = m.copy()
    out = overlay_masks(img, m, colors=[(0, 0, 255)], alpha=0.5, contours=False)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~m], img[~m])
    expected = np.rint(img[m] * 0.5 + np.array([0, 0, 255]) * 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[m], expected)
    np.testing.assert_array_equal(img, before)  # inputs untouched
    np.testing.assert_array_equal(m, m_before)
    assert not np.shares_memory(out, img)


def test_overlay_contours_on_the_border():
    img = np.full((H, W, 3), 60, np.uint8)
    m = rect(10, 5, 30, 25)
    plain = overlay_masks(img, m, contours=False)
    out = overlay_masks(img, m, contours=True, contour_width=2)
    # the mask's outermost pixels carry the (white) outline
    border = m & ~np.pad(m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:], 1)
    assert border.sum() == 2 * (20 + 20) - 4
    assert (out[border] == 255).all()
    # well inside the mask and well outside it nothing changes
    np.testing.assert_array_equal(out[10:20, 15:25], plain[10:20, 15:25])
    far = np.ones((H, W), bool)
    far[2:28, 7:33] = False
    np.testing.assert_array_equal(out[far], img[far])


def test_overlay_draws_large_masks_first():
    img = np.zeros((H, W, 3), np.uint8)
    small, big = rect(20, 10, 30, 20), rect(5, 5, 50, 35)
    colors = [(255, 0, 0), (0, 0, 255)]
    # the small mask comes first in the list, but is drawn last so it stays visible
    out = overlay_masks(img, [small, big], colors=colors, alpha=1.0, contours=False)
    assert (out[small] == (255, 0, 0)).all()
    assert (out[big & ~small] == (0, 0, 255)).all()
    out3 = overlay_masks(img, np.stack([small, big]), colors=colors, alpha=1.0, contours=False)
    np.testing.assert_array_equal(out, out3)


def test_overlay_points_and_box():
    img = np.full((200, 300, 3), 128, np.uint8)
    out = overlay_masks(img, [], points=[[50, 50], [250, 150]], labels=[1, 0], box=[100, 40, 200, 160])
    g = out[50, 50].astype(int)
    assert g[1] > 150 and g[0] < 100 and g[2] < 100  # green positive point
    r = out[150, 250].astype(int)
    assert r[0] > 200 and r[1] < 80  # red negative point
    ring = out[50, 50 - 4].astype(int)  # the dot's white edge
    assert ring.min() > 200
    assert out[40, 150, 1] > 200 and out[100, 100, 1] > 200  # box edges
    assert (out[100, 150] == 128).all() and (out[10, 10] == 128).all()  # inside and outside
    # SAM's padding label (-1) draws nothing; labels default to foreground
    np.testing.assert_array_equal(overlay_masks(img, None, points=[[50, 50]], labels=[-1]), img)
    np.testing.assert_array_equal(overlay_masks(img, [], points=[[50, 50]]), overlay_masks(img, [], points=[[50, 50]], labels=[1]))


def test_overlay_rejects_bad_input():
    img = make_image()
    with pytest.raises(ValueError):
        overlay_masks(img, np.zeros((H + 1, W), bool))
    with pytest.raises(ValueError):
        overlay_masks(img.astype(np.float32), rect(0, 0, 5, 5))
    with pytest.raises(ValueError):
        overlay_masks(img, rect(0, 0, 5, 5), points=[[1, 1]], labels=[1, 0])


# ------------------------------------------------------------------------------------ cut-out


def test_cutout_alpha_equals_mask():
    img = make_image(1)
    m = rect(10, 5, 30, 25) | rect(40, 30, 45, 38)
    full = cutout_rgba(img, m, crop=False)
    assert full.shape == (H, W, 4)
    np.testing.assert_array_equal(full[..., 3], m.astype(np.uint8) * 255)
    np.testing.assert_array_equal(full[m][:, :3], img[m])
    assert (full[~m] == 0).all()  # nothing of the photo left in the transparent part

    crop = cutout_rgba(img, m)
    assert crop.shape == (38 - 5, 45 - 10, 4)
    np.testing.assert_array_equal(crop[..., 3], m[5:38, 10:45].astype(np.uint8) * 255)

    padded = cutout_rgba(img, m, pad=8)
    assert padded.shape == (min(H, 38 + 8) - 0, min(W, 45 + 8) - 2, 4)


def test_cutout_empty_mask():
    img = make_image()
    with pytest.raises(ValueError, match="empty"):
        cutout_rgba(img, np.zeros((H, W), bool))
    assert (cutout_rgba(img, np.zeros((H, W), bool), crop=False) == 0).all()


# -------------------------------------------------------------------------------------- PNGs


def test_png_round_trips():
    rgb = make_image(2)
    np.testing.assert_array_equal(decode_png(encode_png(rgb)), rgb)
    rgba = np.dstack([rgb, np.arange(H * W, dtype=np.uint8).reshape(H, W)])
    back = Image.open(io.BytesIO(encode_png(rgba)))
    assert back.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(back), rgba)
    grey = rgb[..., 0]
    back = Image.open(io.BytesIO(encode_png(grey)))
    assert back.mode == "L"
    np.testing.assert_array_equal(np.asarray(back), grey)
    with pytest.raises(ValueError):
        encode_png(rgb.astype(np.float32))


def test_mask_png():
    m = rect(3, 4, 20, 30)
    back = Image.open(io.BytesIO(mask_to_png_bytes(m)))
    assert back.mode == "L"
    np.testing.assert_array_equal(np.asarray(back), m.astype(np.uint8) * 255)


# --------------------------------------------------------------------------------------- RLE


def test_rle_round_trip():
    rng = np.random.default_rng(4)
    m = rng.random((H, W)) > 0.6
    rle = mask_to_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [H, W]
    json.dumps(rle)
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), m)
    np.testing.assert_array_equal(rle_to_mask(rle), m)


def test_coco_json_from_arrays():
    masks = np.stack([rect(10, 5, 30, 25), rect(0, 0, 1, 1)])
    text = masks_to_coco_json(masks, (H, W), scores=[0.9, 0.5], extra={"model": "vit_t"})
    doc = json.loads(text)
    assert doc["image"] == {"height": H, "width": W}
    assert doc["model"] == "vit_t"
    a0, a1 = doc["annotations"]
    assert (a0["id"], a1["id"]) == (1, 2)
    assert a0["area"] == 400 and a0["bbox"] == [10, 5, 20, 20]
    assert a1["area"] == 1 and a1["bbox"] == [0, 0, 1, 1]
    assert a0["predicted_iou"] == pytest.approx(0.9)
    for ann, m in zip(doc["annotations"], masks):
        np.testing.assert_array_equal(rle_to_mask(ann["segmentation"]), m)
    # image size inferred from the masks; a list works as well as an array
    assert json.loads(masks_to_coco_json(list(masks)))["image"] == {"height": H, "width": W}


def test_coco_json_from_generator_records():
    m0, m1 = rect(10, 5, 30, 25), rect(40, 30, 50, 40)
    rle1 = mask_to_rle(m1)
    records = [
        {"segmentation": m0, "area": 400, "bbox": [10, 5, 19, 19], "predicted_iou": np.float32(0.95),
         "point_coords": [[20.0, 15.0]], "stability_score": 0.97, "crop_box": [0, 0, W, H]},
        {"segmentation": {"size": rle1["size"], "counts": rle1["counts"].encode()}, "area": 100,
         "bbox": [40, 30, 9, 9], "predicted_iou": 0.9, "point_coords": np.array([[45.0, 35.0]]),
         "stability_score": np.float64(0.96), "crop_box": [0, 0, W, H]},
    ]
    doc = json.loads(masks_to_coco_json(records, (H, W)))
    a0, a1 = doc["annotations"]
    assert a0["predicted_iou"] == pytest.approx(0.95) and a1["stability_score"] == pytest.approx(0.96)
    assert a0["bbox"] == [10, 5, 19, 19]  # carried over as the generator gave it
    assert a1["point_coords"] == [[45.0, 35.0]] and a0["crop_box"] == [0, 0, W, H]
    np.testing.assert_array_equal(rle_to_mask(a0["segmentation"]), m0)
    np.testing.assert_array_equal(rle_to_mask(a1["segmentation"]), m1)
    # explicit scores win
    doc = json.loads(masks_to_coco_json(records, (H, W), scores=[0.1, 0.2]))
    assert [a["predicted_iou"] for a in doc["annotations"]] == pytest.approx([0.1, 0.2])


def test_coco_json_errors_and_empty():
    assert json.loads(masks_to_coco_json([], (H, W)))["annotations"] == []
    with pytest.raises(ValueError):
        masks_to_coco_json([])
    with pytest.raises(ValueError):
        masks_to_coco_json([rect(0, 0, 2, 2)], (H + 1, W))
    with pytest.raises(ValueError):
        masks_to_coco_json([rect(0, 0, 2, 2)], (H, W), scores=[0.1, 0.2])


# ------------------------------------------------------------------------------------ metrics


def test_mask_iou_by_hand():
    a = rect(0, 0, 10, 10)  # 100 pixels
    b = rect(5, 5, 15, 15)  # 100 pixels, overlapping a in x 5..9, y 5..9 = 25 pixels
    # IoU = 25 / (100 + 100 - 25) = 25 / 175 = 1/7
    assert mask_iou(a, b) == pytest.approx(1 / 7)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, rect(20, 20, 30, 30)) == 0.0
    empty = np.zeros((H, W), bool)
    assert mask_iou(empty, empty) == 1.0  # defined: two empty masks agree
    assert mask_iou(empty, a) == 0.0
    with pytest.raises(ValueError):
        mask_iou(a, np.zeros((5, 5), bool))


def test_mask_bbox():
    assert mask_bbox(rect(10, 5, 30, 25)) == (10, 5, 30, 25)
    assert mask_bbox(rect(3, 4, 4, 5)) == (3, 4, 4, 5)
    assert mask_bbox(np.zeros((H, W), bool)) is None
    assert mask_bbox(rect(10, 5, 30, 25).astype(np.uint8)) == (10, 5, 30, 25)


def test_encode_jpeg_round_trips_closely_and_rejects_bad_input():
    import io

    from PIL import Image

    from mobile_sam_core.render import encode_jpeg

    yy, xx = np.mgrid[0:64, 0:96]
    img = np.stack([xx * 2, yy * 3, (xx + yy)], axis=-1).astype(np.uint8)
    data = encode_jpeg(img)
    assert data[:2] == b"\xff\xd8"
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert back.shape == img.shape and np.abs(back - img).mean() < 3
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((4, 4), np.uint8))


def test_overlay_leaves_pixels_outside_the_masks_box_untouched():
    img = np.full((50, 80, 3), 100, np.uint8)
    m = np.zeros((50, 80), bool)
    m[10:20, 30:40] = True
    out = overlay_masks(img, m, contours=False)
    assert (out[m] != 100).any() and (out[~m] == 100).all()
    with_contour = overlay_masks(img, m)
    changed = np.argwhere((with_contour != img).any(-1))
    # the outline hugs the mask: nothing changes more than a few pixels away from it
    assert changed[:, 0].min() >= 7 and changed[:, 0].max() <= 22
    assert changed[:, 1].min() >= 27 and changed[:, 1].max() <= 42


def test_overlay_outlines_speckled_masks_with_a_band():
    # Thousands of islands take the morphological outline path instead of traced contours.
    rng = np.random.default_rng(3)
    img = np.full((240, 320, 3), 100, np.uint8)
    m = np.zeros((240, 320), bool)
    m[40:200, 40:280] = rng.random((160, 240)) > 0.5
    plain = overlay_masks(img, m, contours=False)
    out = overlay_masks(img, m, contours=True, contour_width=2)
    changed = np.any(out != plain, axis=2)
    assert np.all(out[changed] == 255)  # white outline pixels only
    assert changed[40:200, 40:280].mean() > 0.5  # dense boundaries, most pixels touch one
    assert not changed[:30].any() and not changed[210:].any()  # nothing far from the mask
    solid = np.zeros_like(m)
    solid[60:180, 60:260] = True
    ring = np.any(overlay_masks(img, solid) != overlay_masks(img, solid, contours=False), axis=2)
    assert ring[60, 100] and ring[120, 60] and not ring[120, 160]  # traced outline for a plain mask
