"""Pure functions that turn masks into pictures and files (shared by the demo and the CLI).

Everything here takes numpy arrays (``H x W x 3`` ``uint8`` RGB images, ``H x W`` boolean
masks; any non-zero mask value counts as inside) and returns new arrays, bytes or strings.
Inputs are never modified. Coordinates are ``(x, y)`` pixels; boxes are XYXY.

Neither gradio nor torch is imported here.
"""

from __future__ import annotations

import colorsys
import io
import json
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

__all__ = [
    "palette",
    "overlay_masks",
    "cutout_rgba",
    "encode_png",
    "mask_to_png_bytes",
    "mask_to_rle",
    "rle_to_mask",
    "masks_to_coco_json",
    "mask_iou",
    "mask_bbox",
]

_GOLDEN = 0.6180339887498949  # successive hues a golden-ratio turn apart never bunch up
_FIRST_HUE = 210.0 / 360.0  # dodger blue, the colour of a single mask in SAM's demo
_SAT = (0.88, 0.70, 0.95)
_VAL = (1.00, 0.90, 0.80)

POSITIVE_COLOR = (40, 200, 60)
NEGATIVE_COLOR = (230, 40, 40)
BOX_COLOR = (60, 235, 60)
CONTOUR_COLOR = (255, 255, 255)


def palette(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct, saturated RGB colours as an ``n x 3`` ``uint8`` array.

    Hue advances by the golden ratio from a clear blue (the first colour for ``seed=0`` is
    about ``(30, 145, 255)``); saturation and brightness cycle through three levels so that
    colours with similar hues still differ. ``seed`` shifts the sequence:
    ``palette(n, seed=k) == palette(n + k)[k:]``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        j = i + int(seed)
        hue = (_FIRST_HUE + j * _GOLDEN) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, _SAT[j % 3], _VAL[(j // 3) % 3])
        out[i] = (round(r * 255), round(g * 255), round(b * 255))
    return out


# ------------------------------------------------------------------------------ input checks


def _as_rgb(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype}")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return img[:, :, :3]
    raise ValueError(f"image must be HxW, HxWx3 or HxWx4, got shape {img.shape}")


def _as_mask(mask: Any, hw: tuple[int, int] | None = None, what: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{what} must be a 2-D HxW array, got shape {m.shape}")
    if hw is not None and m.shape != tuple(hw):
        raise ValueError(f"{what} has shape {m.shape} but the image is {tuple(hw)} (H, W)")
    return m if m.dtype == bool else m != 0


def _mask_list(masks: Any, hw: tuple[int, int] | None = None) -> list[np.ndarray]:
    """A mask, an ``N x H x W`` array or a sequence of masks -> list of bool masks."""
    if masks is None:
        return []
    if isinstance(masks, np.ndarray):
        if masks.ndim == 2:
            return [_as_mask(masks, hw)]
        if masks.ndim == 3:
            return [_as_mask(m, hw, f"mask {i}") for i, m in enumerate(masks)]
        if masks.size == 0:
            return []
        raise ValueError(f"masks must be HxW or NxHxW, got shape {masks.shape}")
    return [_as_mask(m, hw, f"mask {i}") for i, m in enumerate(masks)]


# ---------------------------------------------------------------------------------- overlays


_MAX_TRACED_CONTOURS = 400


def _paint_edge_band(region: np.ndarray, mask_u8: np.ndarray, width: int, color: tuple[int, ...]) -> None:
    """Paint the pixels within about ``width / 2`` of the mask's boundary (both sides) in ``color``."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width + 1, width + 1))
    band = cv2.morphologyEx(mask_u8, cv2.MORPH_GRADIENT, k)
    # Zero the band, then add the colour there (in place: region is a view of the overlay).
    cv2.subtract(region, region, dst=region, mask=band)
    cv2.add(region, (*(int(c) for c in color), 0), dst=region, mask=band)


def overlay_masks(
    image: np.ndarray,
    masks: Any,
    *,
    colors: Sequence[Sequence[int]] | np.ndarray | None = None,
    alpha: float = 0.5,
    contours: bool = True,
    contour_width: int = 2,
    contour_color: Sequence[int] = CONTOUR_COLOR,
    points: Any = None,
    labels: Any = None,
    box: Any = None,
) -> np.ndarray:
    """Blend coloured masks, their outlines, prompt points and boxes onto a copy of ``image``.

    ``masks`` is one ``H x W`` mask, an ``N x H x W`` array or a sequence of masks (may be
    empty). ``colors[i]`` (RGB) colours ``masks[i]``; by default :func:`palette`. Masks are
    drawn largest first, so small masks stay visible on top of the big ones they overlap, and
    each masked pixel becomes ``(1 - alpha) * pixel + alpha * colour``. With ``contours`` every
    mask (holes included) gets an anti-aliased outline, white by default, ``contour_width``
    pixels wide, drawn after all fills. ``points`` (``N x 2`` ``(x, y)``) with ``labels``
    (1 = foreground, drawn as a green dot with a white edge; 0 = background, a red dot;
    other labels such as SAM's ``-1`` padding are not drawn; default all 1) and ``box``
    (XYXY, or ``N x 4``) are drawn last. Pixels outside every mask, outline and marker keep
    their exact values. Returns a new ``H x W x 3`` ``uint8`` array.
    """
    rgb = _as_rgb(image)
    h, w = rgb.shape[:2]
    mlist = _mask_list(masks, (h, w))
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if colors is None:
        cols = palette(len(mlist)).astype(np.float32)
    else:
        cols = np.asarray(colors, dtype=np.float32).reshape(-1, 3)
        if len(cols) < len(mlist):
            raise ValueError(f"got {len(cols)} colours for {len(mlist)} masks")

    areas = [int(np.count_nonzero(m)) for m in mlist]
    order = sorted(range(len(mlist)), key=lambda i: -areas[i])  # stable: ties keep their order
    boxes_xyxy = [mask_bbox(m) if areas[i] else None for i, m in enumerate(mlist)]

    out = np.array(rgb, dtype=np.uint8, copy=True, order="C")
    drawn = [b for b in boxes_xyxy if b is not None]
    if drawn:
        # Blend in float only inside the union of the masks' boxes; pixels outside keep their values.
        ux0, uy0 = min(b[0] for b in drawn), min(b[1] for b in drawn)
        ux1, uy1 = max(b[2] for b in drawn), max(b[3] for b in drawn)
        if len(drawn) == 1:
            # One mask: the blend is a per-channel function of the pixel value, so a 256-entry
            # table (same float32 formula) gives identical bytes at a fraction of the cost.
            i = next(j for j in order if areas[j])
            levels = np.arange(256, dtype=np.float32)[:, None]
            lut = np.rint(levels * np.float32(1.0 - alpha) + cols[i] * np.float32(alpha)).clip(0, 255)
            region = out[uy0:uy1, ux0:ux1]
            blended = cv2.LUT(region, lut.astype(np.uint8).reshape(256, 1, 3))
            cv2.copyTo(blended, mlist[i][uy0:uy1, ux0:ux1].view(np.uint8), region)  # in place (a view of out)
        else:
            out_f = rgb[uy0:uy1, ux0:ux1].astype(np.float32)
            for i in order:
                if areas[i]:
                    m = mlist[i][uy0:uy1, ux0:ux1]
                    out_f[m] = out_f[m] * (1.0 - alpha) + cols[i] * alpha
            out[uy0:uy1, ux0:ux1] = np.rint(out_f).clip(0, 255).astype(np.uint8)

    if contours and contour_width > 0:
        ccol = tuple(int(v) for v in contour_color)
        for i in order:
            if not areas[i]:
                continue
            # Trace on the mask's box grown by one pixel (zeros around the mask give the same contours).
            x0, y0, x1, y1 = boxes_xyxy[i]
            x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(w, x1 + 1), min(h, y1 + 1)
            crop = mlist[i][y0:y1, x0:x1].astype(np.uint8)
            found, _ = cv2.findContours(crop, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE, offset=(x0, y0))
            if len(found) <= _MAX_TRACED_CONTOURS:
                cv2.drawContours(out, found, -1, ccol, int(contour_width), lineType=cv2.LINE_AA)
            else:
                # Speckled masks (thousands of islands): anti-aliased tracing costs ~100 ms per
                # mask; a morphological band of the same width looks alike at that scale.
                _paint_edge_band(out[y0:y1, x0:x1], crop, int(contour_width), ccol)

    marker_r = int(np.clip(round(max(h, w) / 160), 4, 16))
    if box is not None:
        boxes = np.asarray(box, dtype=np.float64).reshape(-1, 4)
        t = max(2, marker_r // 3)
        for x0, y0, x1, y1 in boxes:
            p0 = (int(round(min(x0, x1))), int(round(min(y0, y1))))
            p1 = (int(round(max(x0, x1))) - 1, int(round(max(y0, y1))) - 1)  # XYXY edge -> last pixel
            cv2.rectangle(out, p0, p1, (0, 0, 0), t + 2, lineType=cv2.LINE_AA)
            cv2.rectangle(out, p0, p1, BOX_COLOR, t, lineType=cv2.LINE_AA)

    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labs = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
        if len(labs) != len(pts):
            raise ValueError(f"got {len(pts)} points but {len(labs)} labels")
        edge = max(1, marker_r // 3)
        for (x, y), lab in zip(pts, labs):
            if lab not in (0, 1):
                continue
            c = (int(round(x)), int(round(y)))
            cv2.circle(out, c, marker_r, (255, 255, 255), -1, lineType=cv2.LINE_AA)
            cv2.circle(out, c, marker_r - edge, POSITIVE_COLOR if lab == 1 else NEGATIVE_COLOR, -1,
                       lineType=cv2.LINE_AA)
    return out


def cutout_rgba(image: np.ndarray, mask: np.ndarray, *, crop: bool = True, pad: int = 0) -> np.ndarray:
    """The masked object as ``h x w x 4`` ``uint8`` RGBA, transparent outside the mask.

    Alpha is 255 inside the mask and 0 outside; colour outside the mask is set to 0 so the
    transparent area of a downloaded file does not carry the rest of the photo. With ``crop``
    the result is cut to the mask's bounding box grown by ``pad`` pixels (clipped to the
    image); an empty mask then raises ``ValueError``. Without ``crop`` the result has the
    image's size (fully transparent for an empty mask).
    """
    rgb = _as_rgb(image)
    m = _as_mask(mask, rgb.shape[:2])
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if crop:
        bb = mask_bbox(m)
        if bb is None:
            raise ValueError("The mask is empty, so there is nothing to cut out. Select an object first.")
        h, w = m.shape
        x0, y0, x1, y1 = bb
        x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
        rgb, m = rgb[y0:y1, x0:x1], m[y0:y1, x0:x1]
    out = np.empty(m.shape + (4,), dtype=np.uint8)
    np.multiply(rgb, m[..., None], out=out[..., :3], casting="unsafe")
    out[..., 3] = m
    out[..., 3] *= 255
    return out


# ------------------------------------------------------------------------------------- files


def encode_png(array: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Encode an ``H x W`` (grey; ``bool`` becomes 0/255), ``H x W x 3`` (RGB) or ``H x W x 4``
    (RGBA) ``uint8`` array as PNG bytes. ``compress_level`` 1 favours speed (2 shared CPU
    cores) over a few percent of file size."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8 (or bool) data, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    mode = "L" if a.ndim == 2 else modes.get(a.shape[2]) if a.ndim == 3 else None
    if mode is None or a.size == 0:
        raise ValueError(f"encode_png expects a non-empty HxW, HxWx3 or HxWx4 array, got shape {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_jpeg(array: np.ndarray, *, quality: int = 90) -> bytes:
    """Encode an ``H x W x 3`` RGB ``uint8`` array as JPEG: for previews such as overlays, where
    a photo-sized PNG would take ten times the bytes and twenty times the time."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or a.size == 0:
        raise ValueError(f"encode_jpeg expects a non-empty HxWx3 uint8 array, got {a.dtype} {a.shape}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """A single-channel PNG of ``mask``: 255 inside, 0 outside."""
    return encode_png(_as_mask(mask).astype(np.uint8) * 255)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of an ``H x W`` mask: ``{"size": [H, W], "counts": str}``.

    ``counts`` is a str (not bytes) so the dict is JSON-serialisable; pass it to
    ``pycocotools.mask.decode`` as is (or use :func:`rle_to_mask`).
    """
    m = _as_mask(mask)
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed with str/bytes counts, or uncompressed) to an ``H x W`` bool mask."""
    return mask_utils.decode(_compressed_rle(rle)).astype(bool)


def _compressed_rle(rle: Mapping[str, Any]) -> dict[str, Any]:
    """A pycocotools-ready compressed RLE (bytes counts) from any COCO RLE form."""
    if "counts" not in rle or "size" not in rle:
        raise ValueError("an RLE needs 'size' and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (list, tuple)):  # uncompressed RLE
        return mask_utils.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def masks_to_coco_json(
    masks: Any,
    image_size: Sequence[int] | None = None,
    *,
    scores: Sequence[float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Masks as a COCO-style JSON string.

    ``masks`` is one mask, an ``N x H x W`` array, a sequence of masks, or the list of records
    returned by ``SamAutomaticMaskGenerator.generate`` (``segmentation`` as a mask or an RLE
    dict, plus ``area``, ``bbox``, ``predicted_iou``, ``stability_score``, ``point_coords``,
    ``crop_box``; these are carried over, ``bbox`` and ``area`` as given). ``image_size`` is
    ``(H, W)``; it may be omitted when there is at least one mask. ``scores[i]`` becomes
    ``predicted_iou`` of mask ``i`` (overriding a record's). ``extra`` adds top-level keys
    (e.g. the model name). Output::

        {"image": {"height": H, "width": W},
         "annotations": [{"id": 1, "segmentation": {"size": [H, W], "counts": "..."},
                          "area": 123, "bbox": [x, y, w, h], "predicted_iou": 0.97, ...}],
         ...extra}

    For plain masks ``bbox`` is COCO's: ``w`` and ``h`` count pixels (a one-pixel mask has
    ``w = h = 1``); ids start at 1.
    """
    items: list[Any]
    if isinstance(masks, np.ndarray):
        items = list(_mask_list(masks))
    elif isinstance(masks, Mapping):
        items = [masks]
    else:
        items = list(masks) if masks is not None else []
    if scores is not None:
        scores = [float(s) for s in np.asarray(scores, dtype=np.float64).reshape(-1)]
        if len(scores) != len(items):
            raise ValueError(f"got {len(scores)} scores for {len(items)} masks")

    size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
    annotations = []
    for i, item in enumerate(items):
        record: Mapping[str, Any] = item if isinstance(item, Mapping) else {"segmentation": item}
        if "segmentation" not in record:
            raise ValueError(f"record {i} has no 'segmentation'")
        seg = record["segmentation"]
        if isinstance(seg, Mapping):
            crle = _compressed_rle(seg)
            hw = (int(crle["size"][0]), int(crle["size"][1]))
            counts = crle["counts"]
            rle = {"size": list(hw), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
            area = int(mask_utils.area(crle))
            bbox = [float(v) for v in mask_utils.toBbox(crle)]
        else:
            m = _as_mask(seg, None, f"mask {i}")
            hw = m.shape
            rle = mask_to_rle(m)
            area = int(m.sum())
            bb = mask_bbox(m)
            bbox = [0, 0, 0, 0] if bb is None else [bb[0], bb[1], bb[2] - bb[0], bb[3] - bb[1]]
        if size is None:
            size = (int(hw[0]), int(hw[1]))
        elif tuple(hw) != size:
            raise ValueError(f"mask {i} has size {tuple(hw)} but the image is {size} (H, W)")
        ann: dict[str, Any] = {"id": i + 1, "segmentation": rle,
                               "area": _jsonable(record.get("area", area)),
                               "bbox": _jsonable(list(record.get("bbox", bbox)))}
        for key, value in record.items():
            if key not in ("segmentation", "area", "bbox", "id"):
                ann[str(key)] = _jsonable(value)
        if scores is not None:
            ann["predicted_iou"] = scores[i]
        annotations.append(ann)

    if size is None:
        raise ValueError("image_size (H, W) is required when there are no masks")
    out: dict[str, Any] = {"image": {"height": size[0], "width": size[1]}, "annotations": annotations}
    for key, value in (extra or {}).items():
        if key in out:
            raise ValueError(f"extra may not replace the {key!r} key")
        out[str(key)] = _jsonable(value)
    return json.dumps(out)


# ----------------------------------------------------------------------------------- metrics


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two same-shape masks.

    Two empty masks agree perfectly, so their IoU is defined as 1.0 (not 0/0); an empty and a
    non-empty mask give 0.0.
    """
    ma, mb = _as_mask(a, None, "a"), _as_mask(b, None, "b")
    if ma.shape != mb.shape:
        raise ValueError(f"masks differ in shape: {ma.shape} vs {mb.shape}")
    union = int(np.count_nonzero(ma | mb))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(ma & mb)) / union


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` of a mask, or None when it is empty.

    ``x1`` and ``y1`` are exclusive (one past the last mask column / row), so the box is in
    the same continuous pixel coordinates as a box prompt and ``x1 - x0`` is the width in
    pixels.
    """
    m = _as_mask(mask)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(m.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1

