"""Turn whatever a visitor or caller hands us into a bounded RGB ``uint8`` image.

:func:`load_image` accepts a path, bytes, a binary file-like object, a PIL image or a numpy
array, and returns a :class:`LoadedImage`: an ``H x W x 3`` C-contiguous ``uint8`` RGB array at
most ``max_side`` pixels on its longest side, plus what is needed to map points, boxes and
masks between that working image and the (EXIF-oriented) original.

Rules, in the order they are applied:

* The size declared in the file header is checked *before* any pixel is decoded; images with
  more than ``max_pixels`` pixels (or that PIL itself flags as decompression bombs) are refused.
* The first frame is decoded completely inside ``try``; truncated or corrupt files are refused
  instead of coming back partly grey. (If some other code sets PIL's global
  ``ImageFile.LOAD_TRUNCATED_IMAGES = True``, PIL stops reporting truncation and we cannot
  either.)
* EXIF orientation (all 8 values) is applied, so coordinates refer to the image as it is shown.
* Colour modes are converted to RGB: transparency is composited onto **white** (a transparent
  logo on white looks like it does in a browser, and the model never sees black holes);
  CMYK uses the embedded ICC profile when there is one, otherwise Pillow's
  ``R = (255 - C) * (255 - K) / 255`` rule; high bit-depth data is scaled by its real range
  (see :func:`scale_to_uint8`).
* Images longer than ``max_side`` are shrunk with area averaging (``cv2.INTER_AREA``).

Neither gradio nor torch is imported here.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_SIDE",
    "MAX_PIXELS",
    "ImageLoadError",
    "PromptError",
    "LoadedImage",
    "load_image",
    "scale_to_uint8",
    "validate_points",
    "clip_box",
]

#: Longest side of the working image. The SAM family resizes every image to 1024 on its longest
#: side before encoding, so a bigger working image buys no accuracy; masks are upsampled from
#: 256x256 logits to the working size, and 2048 keeps those masks sharp enough for cut-outs
#: while bounding the memory and latency each visitor can cause (one 2048x2048 RGB image is
#: 12 MiB; the float mask upsampling scales with the pixel count).
MAX_SIDE = 2048

#: Largest image (width x height, from the file header) we agree to decode: 100 megapixels,
#: i.e. ~300 MB of RGB pixels. Anything larger is refused before decoding starts.
MAX_PIXELS = 100_000_000

_ORIENTATION_TAG = 0x0112


class ImageLoadError(ValueError):
    """The input is not a usable image. The message is written for a website visitor."""


class PromptError(ValueError):
    """A point or box that cannot be used on this image. The message is meant for the visitor."""


# ------------------------------------------------------------------------------- LoadedImage


@dataclass
class LoadedImage:
    """A decoded, oriented, RGB ``uint8`` image, possibly downsized from its original.

    Attributes:
        array: ``H x W x 3`` ``uint8`` RGB, C-contiguous (the *working* image).
        original_size: ``(H, W)`` of the source after EXIF orientation, before downsizing.
        scale: working longest side / original longest side (1.0 when not downsized).
        info: short human-readable description, e.g.
            ``"2048x1371 JPEG RGB, EXIF-rotated, downsized from 4482x3000"``.
        mode: the PIL mode of the source (for arrays, the mode PIL would give them).

    Coordinates are continuous ``(x, y)`` pixel coordinates, the convention of SAM's
    ``ResizeLongestSide.apply_coords``: a coordinate is multiplied by ``new_size / old_size``
    along its axis, so ``0`` maps to ``0`` and the far edge ``W`` maps to ``W'``. The two axes
    use their own ratio (the rounded working size can differ from ``scale`` by under half a
    pixel), which makes :meth:`to_original_coords` the exact inverse of
    :meth:`to_working_coords`.
    """

    array: np.ndarray
    original_size: tuple[int, int]
    scale: float
    info: str
    mode: str = "RGB"

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the working image."""
        return int(self.array.shape[0]), int(self.array.shape[1])

    @property
    def downsized(self) -> bool:
        """True when the working image is smaller than the original."""
        return self.size != tuple(self.original_size)

    @cached_property
    def digest(self) -> str:
        """Content digest of :attr:`array` (:func:`mobile_sam_core.image_digest`), computed once.

        Pass it to ``SamPredictor.set_image(..., digest=...)`` to skip re-hashing the pixels.
        """
        from .embedding_cache import image_digest

        return image_digest(self.array)

    def _axis_ratios(self) -> tuple[float, float]:
        h, w = self.size
        oh, ow = self.original_size
        return w / ow, h / oh  # working / original, per axis

    def to_working_coords(self, xy: Any) -> np.ndarray:
        """Map points (``(2,)`` or ``N x 2``) or XYXY boxes (``(4,)`` or ``N x 4``) from original
        to working pixel coordinates. Returns a new float64 array of the same shape."""
        sx, sy = self._axis_ratios()
        return _scale_coords(xy, sx, sy)

    def to_original_coords(self, xy: Any) -> np.ndarray:
        """Map points or XYXY boxes from working to original pixel coordinates (float64)."""
        sx, sy = self._axis_ratios()
        return _scale_coords(xy, 1.0 / sx, 1.0 / sy)

    def mask_to_original(self, mask: np.ndarray) -> np.ndarray:
        """Resize a working-size mask (``H x W`` or ``N x H x W``) to ``original_size``.

        The mask is upsampled as 0/255 with bilinear interpolation and thresholded at half
        (``>= 128``): edges follow the object smoothly instead of showing the blocky stair
        steps of nearest-neighbour upsampling, and a mask that was not resized comes back
        unchanged. Any non-zero value counts as inside. Returns a new ``bool`` array.
        """
        m = np.asarray(mask)
        if m.ndim not in (2, 3) or tuple(m.shape[-2:]) != self.size:
            raise ValueError(
                f"mask_to_original expects a mask of the working size {self.size} (H, W), "
                f"got shape {m.shape}"
            )
        m = m != 0 if m.dtype != bool else m
        if not self.downsized:
            return m.copy()
        oh, ow = self.original_size
        if m.ndim == 3:
            return np.stack([self.mask_to_original(one) for one in m]) if len(m) else np.zeros(
                (0, oh, ow), dtype=bool)
        up = cv2.resize(m.astype(np.uint8) * 255, (ow, oh), interpolation=cv2.INTER_LINEAR)
        return up >= 128


def _scale_coords(xy: Any, sx: float, sy: float) -> np.ndarray:
    try:
        arr = np.array(xy, dtype=np.float64)  # a copy: never touch the caller's array
    except (TypeError, ValueError) as exc:
        raise ValueError(f"coordinates must be numbers, got {xy!r}") from exc
    if arr.ndim == 0 or arr.shape[-1] not in (2, 4):
        raise ValueError(
            f"expected points (2,) / (N, 2) or boxes (4,) / (N, 4), got shape {arr.shape}")
    arr[..., 0::2] *= sx
    arr[..., 1::2] *= sy
    return arr


# ------------------------------------------------------------------------------- load_image


def load_image(
    source: Any, *, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS
) -> LoadedImage:
    """Decode ``source`` into a :class:`LoadedImage` (RGB ``uint8``, longest side <= ``max_side``).

    ``source`` may be a path (``str`` / ``Path``), ``bytes`` / ``bytearray`` / ``memoryview``, a
    binary file-like object, a ``PIL.Image.Image`` or a numpy array (``HxW``, ``HxWx1``,
    ``HxWx3`` RGB, ``HxWx4`` RGBA; ``uint8``, ``uint16``, ``bool``, or float in ``[0, 1]`` or
    ``[0, 255]``). Animated images give their first frame. Inputs are never modified.

    Raises :class:`ImageLoadError` (a ``ValueError``) with a message fit to show a visitor for
    empty input, files that are not images, truncated or corrupt files, images over
    ``max_pixels`` pixels (checked from the header before decoding), zero-size images and
    arrays of unusable shape or dtype.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if source is None:
        raise ImageLoadError("No image was given.")
    if isinstance(source, np.ndarray):
        return _load_array(source, max_side=max_side, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        return _load_pil(source, raw=None, max_side=max_side, max_pixels=max_pixels)

    raw: bytes | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(f"The file {path.name!r} does not exist.")
        if not path.is_file():
            raise ImageLoadError(f"{path.name!r} is not a file.")
        try:
            if path.stat().st_size > 0:
                # Check the declared size before reading a possibly huge file into memory.
                with path.open("rb") as fh:
                    with _open_image(fh, lambda: _read_head(path), max_pixels) as probe:
                        _check_size(probe.size[0], probe.size[1], max_pixels)
            raw = path.read_bytes()
        except OSError as exc:
            raise ImageLoadError(f"The file {path.name!r} could not be read ({exc.strerror}).") from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
    elif hasattr(source, "read"):
        try:
            raw = source.read()
        except Exception as exc:  # noqa: BLE001 - any reader failure is a failed upload
            raise ImageLoadError(f"The upload could not be read ({exc}).") from exc
        if isinstance(raw, str):
            raise ImageLoadError("The upload was opened in text mode; images must be read as bytes.")
        raw = bytes(raw or b"")
    else:
        raise ImageLoadError(
            f"Cannot read an image from a {type(source).__name__}; give a file path, bytes, "
            "a file object, a PIL image or a numpy array.")

    if not raw:
        raise ImageLoadError("The file is empty (0 bytes); please upload an image.")
    data = raw
    with _open_image(io.BytesIO(data), lambda: data, max_pixels) as im:
        return _load_pil(im, raw=data, max_side=max_side, max_pixels=max_pixels)


def _read_head(path: Path, n: int = 4096) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)


def _open_image(fp: Any, head: Any, max_pixels: int) -> Image.Image:
    """``Image.open`` (header only) with its failures turned into visitor-facing errors.
    ``head()`` returns the file's first bytes, to say what a non-image file looks like."""
    try:
        return Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"This file is not an image PIL can read ({_sniff(head())}).") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(_too_large_message_from_pil(exc, max_pixels)) from exc
    except Exception as exc:  # noqa: BLE001 - plugins raise SyntaxError, struct.error, ...
        raise ImageLoadError(f"The image file is damaged and cannot be read ({_short(exc)}).") from exc


def _load_pil(im: Image.Image, *, raw: bytes | None, max_side: int, max_pixels: int) -> LoadedImage:
    w0, h0 = im.size  # header size, nothing decoded yet for lazily opened files
    _check_size(w0, h0, max_pixels)
    # PIL keeps only the high byte of 16-bit RGB(A) samples; those are decoded with OpenCV.
    # (Read the raw layout first: load(), which PNG's getexif() may trigger, clears it.)
    high_depth_colour = raw is not None and im.mode in ("RGB", "RGBA") and ";16" in _tile_rawmode(im)
    notes: list[str] = []

    n_frames = int(getattr(im, "n_frames", 1) or 1)
    start_frame = im.tell() if n_frames > 1 else 0
    if n_frames > 1:
        notes.append(f"first of {n_frames} frames")
    try:
        if start_frame:
            im.seek(0)
        return _decode_pil(im, raw=raw, max_side=max_side, max_pixels=max_pixels, notes=notes,
                           high_depth_colour=high_depth_colour)
    finally:
        if start_frame and raw is None:  # leave a caller's image on the frame it was on
            im.seek(start_frame)


def _decode_pil(im: Image.Image, *, raw: bytes | None, max_side: int, max_pixels: int,
                notes: list[str], high_depth_colour: bool) -> LoadedImage:
    src_mode = im.mode
    fmt = im.format or ""
    w0, h0 = im.size

    # JPEG can decode at 1/2, 1/4 or 1/8 scale for a fraction of the time and memory. (The
    # longest-side rule gives the same target whichever way the image is turned.)
    if fmt == "JPEG" and raw is not None:
        th, tw = _target_size(h0, w0, max_side)
        if (tw, th) != (w0, h0):
            try:
                im.draft(None, (tw, th))
            except Exception:  # noqa: BLE001 - draft is an optimisation only
                pass

    try:
        if fmt == "PNG" and raw is not None:
            # PIL does not check PNG chunk checksums while decoding, so a file damaged in the
            # middle would load with a streak of wrong pixels; verify() checks them (cheap).
            with Image.open(io.BytesIO(raw)) as check:
                check.verify()
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(_too_large_message_from_pil(exc, max_pixels)) from exc
    except MemoryError as exc:
        raise ImageLoadError("The image is too large to decode on this server.") from exc
    except Exception as exc:  # noqa: BLE001 - OSError (truncated), SyntaxError, zlib.error, ...
        raise ImageLoadError(
            f"The image file is damaged or incomplete and cannot be decoded ({_short(exc)}). "
            "If it was cut off during upload, please try again.") from exc

    orientation = _orientation(im)
    # The working size follows from the header size, not from how the pixels were decoded.
    oh, ow = (w0, h0) if orientation in (5, 6, 7, 8) else (h0, w0)
    target_hw = _target_size(oh, ow, max_side)

    arr: np.ndarray | None = None
    if high_depth_colour:
        assert raw is not None
        arr, colour_notes = _decode_high_depth_colour(raw)
        if arr is not None:
            if orientation in range(2, 9):
                arr = _orient_array(arr, orientation)
            notes.extend(colour_notes)
    if arr is None:
        oriented = False
        if orientation in range(2, 9):
            try:
                im = ImageOps.exif_transpose(im)
                oriented = True
            except Exception:  # noqa: BLE001 - orient the RGB array below instead
                pass
        arr, colour_notes = _pil_to_rgb(im)
        if orientation in range(2, 9) and not oriented:
            arr = _orient_array(arr, orientation)
        notes.extend(colour_notes)
    if orientation in range(2, 9):
        notes.insert(0, "EXIF-rotated" if orientation in (3, 6, 8) else "EXIF-oriented")

    label = f"{fmt} {src_mode}" if fmt else src_mode
    return _finish(arr, (oh, ow), target_hw, label, src_mode, notes)


def _load_array(a: np.ndarray, *, max_side: int, max_pixels: int) -> LoadedImage:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageLoadError(
            f"An image array must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA); got shape {a.shape}."
            + (" Channels-first arrays must be transposed to HxWxC." if a.ndim == 3 and a.shape[0] in (1, 3, 4) else ""))
    h, w = a.shape[:2]
    _check_size(w, h, max_pixels)
    kind = a.dtype.kind
    notes: list[str] = []
    if kind == "b":
        a8 = a.astype(np.uint8) * 255
        mode = "1"
    elif a.dtype == np.uint8:
        a8 = a
        mode = None
    elif kind in "ui":
        if a.min() < 0:
            raise ImageLoadError(f"An integer image array must not hold negative values (min {a.min()}).")
        a8, note = scale_to_uint8(a)
        if note:
            notes.append(note)
        mode = "I;16" if a.dtype == np.uint16 else "I"
    elif kind == "f":
        if not np.isfinite(a).all():
            raise ImageLoadError("The image array contains NaN or infinite values.")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 255:
            raise ImageLoadError(
                f"A float image array must hold values in [0, 1] or [0, 255]; got [{lo:g}, {hi:g}].")
        a8 = np.rint(a * 255.0 if hi <= 1.0 else a).clip(0, 255).astype(np.uint8)
        mode = "F"
    else:
        raise ImageLoadError(f"Unsupported image array dtype {a.dtype}; use uint8, uint16, bool or float.")
    if a8.ndim == 2:
        rgb = np.repeat(a8[:, :, None], 3, axis=2)
        mode = mode or "L"
    elif a8.shape[2] == 4:
        rgb = _composite_on_white(a8[:, :, :3], a8[:, :, 3])
        notes.append("alpha composited on white")
        mode = "RGBA" if mode in (None, "1") else mode
    else:
        rgb = np.array(a8, copy=True)
        mode = mode or "RGB"
    target = _target_size(h, w, max_side)
    return _finish(rgb, (h, w), target, "array " + str(a.dtype), mode, notes)


def _finish(arr: np.ndarray, original_hw: tuple[int, int], target_hw: tuple[int, int], label: str,
            mode: str, notes: list[str]) -> LoadedImage:
    oh, ow = original_hw
    th, tw = target_hw
    if arr.shape[:2] != (th, tw):
        # INTER_AREA averages the source pixels that fall into each output pixel (no aliasing).
        interp = cv2.INTER_AREA if arr.shape[0] >= th and arr.shape[1] >= tw else cv2.INTER_LINEAR
        arr = cv2.resize(np.ascontiguousarray(arr), (tw, th), interpolation=interp)
    if (th, tw) != (oh, ow):  # (JPEG draft decoding may already have produced the target size)
        notes.append(f"downsized from {ow}x{oh}")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    scale = 1.0 if (th, tw) == (oh, ow) else max(th, tw) / max(oh, ow)
    info = f"{tw}x{th} {label}".strip()
    if notes:
        info += ", " + ", ".join(notes)
    return LoadedImage(array=arr, original_size=(int(oh), int(ow)), scale=float(scale), info=info, mode=mode)


def _target_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    longest = max(h, w)
    if longest <= max_side:
        return h, w
    s = max_side / longest
    if w >= h:
        return max(1, round(h * s)), max_side
    return max_side, max(1, round(w * s))


def _check_size(w: int, h: int, max_pixels: int) -> None:
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"The image has no pixels (its size is {w}x{h}).")
    if w * h > max_pixels:
        raise ImageLoadError(
            f"The image is too large: {w}x{h} is {_mp(w * h)} megapixels, and this service accepts "
            f"at most {_mp(max_pixels)} megapixels. Please upload a smaller image.")


def _mp(n: int) -> str:
    v = n / 1e6
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}".rstrip("0").rstrip(".")


def _too_large_message_from_pil(exc: BaseException, max_pixels: int) -> str:
    m = re.search(r"\((\d+) pixels\)", str(exc))
    size = f" ({_mp(int(m.group(1)))} megapixels)" if m else ""
    return (f"The image is too large{size}; this service accepts at most {_mp(max_pixels)} megapixels "
            "and refuses files that could be decompression bombs. Please upload a smaller image.")


def _short(exc: BaseException, limit: int = 120) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sniff(raw: bytes) -> str:
    """A short guess at what a non-image file is, for the error message."""
    head = raw[:512]
    low = head.lstrip().lower()
    if head.startswith(b"%PDF"):
        return "it looks like a PDF document; export the page as PNG or JPEG"
    if low.startswith(b"<svg") or (low.startswith(b"<?xml") and b"<svg" in raw[:4096].lower()):
        return "SVG vector graphics are not supported; export it as PNG"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypheif", b"ftyphevc", b"ftypavif"):
        return "HEIC/HEIF/AVIF photos are not supported here; export it as JPEG or PNG"
    if head[4:8] == b"ftyp" or head.startswith(b"\x1aE\xdf\xa3"):
        return "it looks like a video; upload a still image"
    if head.startswith(b"PK\x03\x04"):
        return "it looks like a ZIP archive or Office document"
    if low.startswith((b"<!doctype html", b"<html")):
        return "it looks like a web page"
    text = head.decode("utf-8", errors="replace")
    if text and sum(ch.isprintable() or ch in "\t\r\n" for ch in text) / len(text) > 0.95:
        return "it looks like a text file"
    return "unknown file format; use PNG, JPEG, WebP, GIF, BMP or TIFF"


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the stored orientation
        return 1


def _orient_array(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an array (same result as ``ImageOps.exif_transpose``)."""
    ops = {
        2: lambda x: x[:, ::-1],  # mirrored left-right
        3: lambda x: x[::-1, ::-1],  # rotated 180
        4: lambda x: x[::-1],  # mirrored top-bottom
        5: lambda x: x.swapaxes(0, 1),  # transposed
        6: lambda x: np.rot90(x, -1),  # needs 90 degrees clockwise
        7: lambda x: np.rot90(x, 2).swapaxes(0, 1),  # transversed
        8: lambda x: np.rot90(x, 1),  # needs 90 degrees counter-clockwise
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


# --------------------------------------------------------------------------- colour handling


def scale_to_uint8(values: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Scale non-negative integer data with more than 8 bits (16-bit, 32-bit) to ``uint8``.

    Cameras and scientific formats often store 10-, 12- or 14-bit data in 16-bit containers, so
    dividing by 257 (the nominal 16-bit range) would turn a 12-bit image (0..4095) almost black.
    Instead the real range is used: if the largest value is at most 255 the data already fits
    in 8 bits and is kept as is; otherwise every value is multiplied by ``255 / max`` (black
    stays black, the brightest pixel becomes 255). Returns the array and a note for ``info``
    (None when nothing was scaled).
    """
    v = np.asarray(values)
    hi = int(v.max()) if v.size else 0
    if hi <= 255:
        return v.astype(np.uint8), None
    out = np.rint(v.astype(np.float32) * np.float32(255.0 / hi)).clip(0, 255).astype(np.uint8)
    return out, f"{v.dtype.itemsize * 8}-bit range 0..{hi} scaled to 8 bits"


def _float_to_uint8(v: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Float image data (PIL mode F) to uint8: [0, 1] and [0, 255] as they are, else min-max."""
    v = np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1.0:
        return np.rint(v * 255).astype(np.uint8), None
    if lo >= 0 and hi <= 255:
        return np.rint(v).astype(np.uint8), None
    span = hi - lo if hi > lo else 1.0
    return np.rint((v - lo) * (255.0 / span)).clip(0, 255).astype(np.uint8), f"range {lo:g}..{hi:g} stretched"


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb * a + 255 * (1 - a)`` in exact integer arithmetic (a = alpha / 255)."""
    a = alpha.astype(np.uint16)[:, :, None]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(g, dtype=np.uint8)[:, :, None], 3, axis=2)


def _pil_to_rgb(im: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Convert a loaded PIL image of any common mode to an RGB uint8 array."""
    mode = im.mode
    notes: list[str] = []
    has_key = "transparency" in im.info
    if mode == "RGB" and not has_key:
        return np.asarray(im, dtype=np.uint8).copy(), notes
    if mode == "L" and not has_key:
        return _gray_to_rgb(np.asarray(im)), notes
    if mode == "1":
        return _gray_to_rgb(np.asarray(im, dtype=np.uint8) * 255), notes
    if mode.startswith("I;16") or mode == "I":
        data = np.asarray(im)
        data = data.astype(data.dtype.newbyteorder("=")) if data.dtype.byteorder not in ("=", "|") else data
        if data.size and data.min() < 0:
            g, note = _float_to_uint8(data.astype(np.float64))
        else:
            g, note = scale_to_uint8(data)
        if note:
            notes.append(note)
        return _gray_to_rgb(g), notes
    if mode == "F":
        g, note = _float_to_uint8(np.asarray(im))
        if note:
            notes.append(note)
        return _gray_to_rgb(g), notes
    if mode == "CMYK":
        icc = im.info.get("icc_profile")
        if icc:
            try:
                from PIL import ImageCms

                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
                if out is not None:
                    notes.append("CMYK converted with its ICC profile")
                    return np.asarray(out, dtype=np.uint8).copy(), notes
            except Exception:  # noqa: BLE001 - fall back to the plain formula
                pass
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy(), notes
    if mode == "La":  # premultiplied: composite on white is L' + (255 - a)
        la = np.asarray(im, dtype=np.uint16)
        g = np.minimum(la[:, :, 0] + (255 - la[:, :, 1]), 255)
        notes.append("transparency composited on white")
        return _gray_to_rgb(g), notes
    if mode == "LAB":
        try:
            from PIL import ImageCms

            t = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
            return np.asarray(ImageCms.applyTransform(im, t), dtype=np.uint8).copy(), notes
        except Exception as exc:  # noqa: BLE001
            raise ImageLoadError("Images in the LAB colour mode cannot be converted here; please save it as RGB.") from exc
    if mode in ("LA", "PA", "RGBA", "RGBa") or has_key or mode == "P" and _palette_has_alpha(im):
        try:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001
            raise ImageLoadError(f"Images in colour mode {mode} are not supported; please convert it to RGB.") from exc
        if (rgba[:, :, 3] < 255).any():
            notes.append("transparency composited on white")
        return _composite_on_white(rgba[:, :, :3], rgba[:, :, 3]), notes
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy(), notes  # P, YCbCr, RGBX, HSV, ...
    except Exception as exc:  # noqa: BLE001
        raise ImageLoadError(f"Images in colour mode {mode} are not supported; please convert it to RGB.") from exc


def _palette_has_alpha(im: Image.Image) -> bool:
    try:
        return im.palette is not None and im.palette.mode == "RGBA"
    except Exception:  # noqa: BLE001
        return False


def _tile_rawmode(im: Image.Image) -> str:
    """The raw sample layout PIL will decode (read before ``load()``, which clears ``tile``)."""
    try:
        args = im.tile[0].args if im.tile else None
    except Exception:  # noqa: BLE001
        return ""
    if isinstance(args, tuple):
        args = args[0] if args else None
    return args if isinstance(args, str) else ""


def _decode_high_depth_colour(raw: bytes) -> tuple[np.ndarray | None, list[str]]:
    buf = np.frombuffer(raw, dtype=np.uint8)
    try:
        a = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # no EXIF rotation with IMREAD_UNCHANGED
    except cv2.error:
        return None, []
    if a is None or a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in (3, 4):
        return None, []
    a8, note = scale_to_uint8(a)
    notes = [note] if note else []
    if a8.shape[2] == 4:
        rgb = _composite_on_white(a8[:, :, 2::-1], a8[:, :, 3])
        notes.append("transparency composited on white")
    else:
        rgb = a8[:, :, ::-1]
    return np.ascontiguousarray(rgb), notes


# ----------------------------------------------------------------------------- prompt checks


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def validate_points(points: Any, image_hw: Sequence[int]) -> np.ndarray:
    """Check ``(x, y)`` pixel points against an image of ``image_hw = (H, W)``.

    Accepts ``[x, y]`` or ``N x 2``; returns an ``N x 2`` float64 array (``0 x 2`` for no
    points). A point is inside when ``0 <= x < W`` and ``0 <= y < H`` (pixel indices, possibly
    fractional). Raises :class:`PromptError` for malformed input, non-finite values, or a point
    outside the image, e.g. ``"point (700, 20) is outside the 640x480 image"``.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if points is None:
        return np.zeros((0, 2), dtype=np.float64)
    try:
        arr = np.array(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PromptError("Points must be [x, y] pairs of numbers.") from exc
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise PromptError(f"Points must be [x, y] pairs; got an array of shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise PromptError("Point coordinates must be finite numbers.")
    for x, y in arr:
        if not (0 <= x < w and 0 <= y < h):
            raise PromptError(f"point ({_fmt_num(x)}, {_fmt_num(y)}) is outside the {w}x{h} image")
    return arr


def clip_box(box: Any, image_hw: Sequence[int]) -> np.ndarray:
    """Clip an XYXY box to an image of ``image_hw = (H, W)``; returns float64 ``[x0, y0, x1, y1]``.

    Corners may come in any order (a drag from right to left); they are sorted. Edges are
    clipped to ``[0, W]`` x ``[0, H]``, so a drag that starts beside the image (as
    ``gradio_image_annotation`` reports it) still gives a box on the image. Raises
    :class:`PromptError` when the box is malformed, lies entirely outside the image, or has
    zero width or height after clipping.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    try:
        arr = np.array(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise PromptError("A box must be four numbers [x0, y0, x1, y1].") from exc
    if arr.size != 4:
        raise PromptError(f"A box must be four numbers [x0, y0, x1, y1]; got {arr.size}.")
    if not np.isfinite(arr).all():
        raise PromptError("Box coordinates must be finite numbers.")
    x0, x1 = sorted((arr[0], arr[2]))
    y0, y1 = sorted((arr[1], arr[3]))
    desc = f"({_fmt_num(x0)}, {_fmt_num(y0)}, {_fmt_num(x1)}, {_fmt_num(y1)})"
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        if x1 > x0 and y1 > y0:
            raise PromptError(f"box {desc} lies outside the {w}x{h} image; draw it over the object")
    cx0, cx1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
    cy0, cy1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        raise PromptError(f"box {desc} has no area inside the {w}x{h} image; drag to draw a box over the object")
    return np.array([cx0, cy0, cx1, cy1], dtype=np.float64)

