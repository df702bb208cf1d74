"""Behaviour of mobile_sam_core.images: every source kind and colour mode, EXIF orientation,
refusals (not images, truncated files, decompression bombs), downsizing and coordinate maps."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from mobile_sam_core.images import (
    ImageLoadError,
    LoadedImage,
    PromptError,
    clip_box,
    load_image,
    scale_to_uint8,
    validate_points,
)


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb(values) -> np.ndarray:
    return np.array(values, dtype=np.uint8)


def check_loaded(res: LoadedImage, h: int, w: int) -> None:
    assert isinstance(res, LoadedImage)
    assert res.array.dtype == np.uint8 and res.array.shape == (h, w, 3)
    assert res.array.flags.c_contiguous


# ------------------------------------------------------------------------------ colour modes


def test_rgb_png_exact():
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    res = load_image(encode(Image.fromarray(a)))
    check_loaded(res, 5, 7)
    assert np.array_equal(res.array, a)
    assert res.original_size == (5, 7) and res.scale == 1.0 and res.mode == "RGB"
    assert res.info.startswith("7x5 PNG RGB")


def test_grey_l():
    g = np.array([[0, 50, 255], [1, 128, 254]], dtype=np.uint8)
    res = load_image(encode(Image.fromarray(g, mode="L")))
    assert np.array_equal(res.array, np.repeat(g[:, :, None], 3, axis=2))
    assert res.mode == "L"


def test_la_composited_on_white():
    im = Image.new("LA", (3, 1))
    im.putdata([(100, 255), (100, 0), (0, 128)])
    res = load_image(encode(im))
    # opaque keeps 100; transparent becomes white; half-transparent black: 255*(255-128)/255 = 127
    assert res.array[0].tolist() == [[100] * 3, [255] * 3, [127] * 3]
    assert "white" in res.info


def test_rgba_composited_on_white():
    im = Image.new("RGBA", (4, 1))
    im.putdata([(255, 0, 0, 255), (0, 0, 255, 0), (0, 0, 0, 128), (200, 100, 0, 255)])
    res = load_image(encode(im))
    assert res.array[0].tolist() == [[255, 0, 0], [255, 255, 255], [127, 127, 127], [200, 100, 0]]
    assert res.mode == "RGBA"


@pytest.mark.parametrize("via_file", [False, True])
def test_palette_with_transparency(via_file):
    im = Image.new("P", (3, 1))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    im.putdata([0, 1, 2])
    im.info["transparency"] = 1  # green is the transparent index
    src = encode(im, transparency=1) if via_file else im
    res = load_image(src)
    assert res.array[0].tolist() == [[255, 0, 0], [255, 255, 255], [0, 0, 255]]
    assert res.mode == "P"


def test_palette_without_transparency():
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 100, 50])
    im.putdata([1, 0])
    assert load_image(encode(im)).array[0].tolist() == [[200, 100, 50], [10, 20, 30]]


def test_one_bit():
    im = Image.new("1", (3, 2), 0)
    im.putpixel((1, 0), 1)
    im.putpixel((2, 1), 1)
    res = load_image(encode(im))
    assert res.array[..., 0].tolist() == [[0, 255, 0], [0, 0, 255]]
    assert (res.array[..., 0] == res.array[..., 2]).all()


def test_i16_small_range_is_not_black():
    v = np.array([[0, 1000, 2000, 4095]], dtype=np.uint16)  # 12-bit data in a 16-bit PNG
    im = Image.fromarray(v)
    assert im.mode.startswith("I;16")
    res = load_image(encode(im))
    expected = np.rint(v * 255.0 / 4095).astype(np.uint8)  # [0, 62, 125, 255]
    assert res.array[..., 0].tolist() == expected.tolist()
    assert res.array.max() == 255
    assert "0..4095" in res.info


def test_i16_big_endian_and_32_bit():
    v = np.array([[0, 300, 600]], dtype=np.uint16)
    im_b = Image.frombytes("I;16B", (3, 1), v.astype(">u2").tobytes())
    assert load_image(im_b).array[0, :, 0].tolist() == [0, 128, 255]
    im_i = Image.fromarray(np.array([[0, 50000, 100000]], dtype=np.int32), mode=None)
    assert im_i.mode == "I"
    assert load_image(im_i).array[0, :, 0].tolist() == [0, 128, 255]


def test_sixteen_bit_data_that_fits_in_eight_bits_is_kept():
    v = np.array([[0, 7, 200]], dtype=np.uint16)
    out, note = scale_to_uint8(v)
    assert out.tolist() == [[0, 7, 200]] and note is None


def test_sixteen_bit_rgb_png_keeps_low_bits():
    rgb16 = np.zeros((2, 2, 3), dtype=np.uint16)
    rgb16[0, 0] = (4095, 0, 0)  # red at 12-bit full scale
    rgb16[1, 1] = (0, 2048, 0)
    ok, buf = cv2.imencode(".png", rgb16[:, :, ::-1])  # OpenCV writes BGR
    assert ok
    res = load_image(buf.tobytes())
    assert res.array[0, 0].tolist() == [255, 0, 0]
    assert res.array[1, 1].tolist() == [0, 128, 0]


def test_float_f_mode():
    im = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode=None)
    assert im.mode == "F"
    assert load_image(im).array[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    "cmyk, expected",
    [
        ((255, 0, 0, 0), (0, 255, 255)),  # cyan
        ((0, 255, 0, 0), (255, 0, 255)),  # magenta
        ((0, 0, 255, 0), (255, 255, 0)),  # yellow
        ((0, 0, 0, 255), (0, 0, 0)),  # black
        ((0, 0, 0, 0), (255, 255, 255)),  # paper white
    ],
)
def test_cmyk_pure_colours(cmyk, expected):
    im = Image.new("CMYK", (2, 2), cmyk)
    res = load_image(encode(im, "TIFF"))
    assert res.mode == "CMYK"
    assert (res.array == rgb(expected)).all()


def test_cmyk_jpeg_close():
    im = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    res = load_image(encode(im, "JPEG", quality=95))
    assert np.abs(res.array.astype(int) - [0, 255, 255]).max() <= 6


def test_ycbcr():
    im = Image.new("YCbCr", (2, 2), (128, 128, 128))  # neutral grey
    res = load_image(im)
    assert np.abs(res.array.astype(int) - 128).max() <= 1


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    res = load_image(data)
    assert (res.array == rgb((255, 0, 0))).all()
    assert "first of 3 frames" in res.info
    im = Image.open(io.BytesIO(data))
    im.seek(2)
    assert (load_image(im).array == rgb((255, 0, 0))).all()
    assert im.tell() == 2  # a caller's image is left on its frame


# ---------------------------------------------------------------------------------- sources


def test_path_file_like_bytearray_and_pil(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    data = encode(Image.fromarray(a))
    p = tmp_path / "x.png"
    p.write_bytes(data)
    for src in (p, str(p), io.BytesIO(data), bytearray(data), memoryview(data), Image.open(io.BytesIO(data))):
        assert np.array_equal(load_image(src).array, a)


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.array([[0, 255]], np.uint8), [[0, 0, 0], [255, 255, 255]]),
        (np.array([[[7], [9]]], np.uint8), [[7, 7, 7], [9, 9, 9]]),
        (np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8), [[1, 2, 3], [4, 5, 6]]),
        (np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], np.uint8), [[10, 20, 30], [255, 255, 255]]),
        (np.array([[True, False]]), [[255, 255, 255], [0, 0, 0]]),
        (np.array([[0.0, 1.0]], np.float32), [[0, 0, 0], [255, 255, 255]]),
        (np.array([[0.0, 127.6, 255.0]], np.float64), [[0, 0, 0], [128, 128, 128], [255, 255, 255]]),
        (np.array([[0, 2000, 4000]], np.uint16), [[0, 0, 0], [128, 128, 128], [255, 255, 255]]),
    ],
)
def test_arrays(arr, expected):
    before = arr.copy()
    res = load_image(arr)
    assert res.array[0].tolist() == expected
    assert np.array_equal(arr, before)
    assert not np.shares_memory(res.array, arr)


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((3, 4, 5), np.uint8),  # channels-first
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((2, 2, 2, 3), np.uint8),
        np.zeros((5,), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((4, 4), np.complex64),
        np.array([["a", "b"]]),
        np.array([[0.0, np.nan]]),
        np.array([[0.0, 300.0]]),
        np.array([[-1, 5]], np.int16),
    ],
)
def test_bad_arrays(arr):
    with pytest.raises(ImageLoadError):
        load_image(arr)


def test_zero_size_pil_image():
    with pytest.raises(ImageLoadError, match="no pixels"):
        load_image(Image.new("RGB", (0, 3)))


# ------------------------------------------------------------------------------------- EXIF

BASE = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
     [[255, 255, 0], [0, 255, 255], [255, 0, 255]]],
    dtype=np.uint8,
)  # 2 rows x 3 columns, every pixel different: any flip or turn shows

# What the EXIF spec says each value means, written independently of PIL:
EXPECTED = {
    1: BASE,
    2: BASE[:, ::-1],  # mirrored horizontally
    3: BASE[::-1, ::-1],  # rotated 180
    4: BASE[::-1, :],  # mirrored vertically
    5: BASE.transpose(1, 0, 2),  # row 0 is the left side, column 0 the top: transpose
    6: np.rot90(BASE, k=-1),  # row 0 is the right side: turn 90 degrees clockwise to view
    7: BASE[::-1, ::-1].transpose(1, 0, 2),  # row 0 is the right side, column 0 the bottom
    8: np.rot90(BASE, k=1),  # row 0 is the left side, column 0 the bottom: turn counter-clockwise
}


def with_orientation(im: Image.Image, fmt: str, orientation: int, **kw) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, fmt, exif=exif, **kw)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_exact(orientation):
    res = load_image(with_orientation(Image.fromarray(BASE), "PNG", orientation))
    expected = EXPECTED[orientation]
    assert np.array_equal(res.array, expected)
    assert res.original_size == expected.shape[:2]
    assert ("EXIF" in res.info) == (orientation != 1)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_jpeg(orientation):
    # 8x8 blocks of the BASE colours survive JPEG compression well enough to recognise
    big = np.kron(BASE, np.ones((8, 8, 1), dtype=np.uint8))
    res = load_image(with_orientation(Image.fromarray(big), "JPEG", orientation, quality=95))
    expected = np.kron(EXPECTED[orientation], np.ones((8, 8, 1), dtype=np.uint8))
    assert res.array.shape == expected.shape
    centres = res.array[4::8, 4::8].astype(int)
    assert np.abs(centres - expected[4::8, 4::8]).max() < 40


def test_exif_orientation_with_downsizing_maps_coordinates():
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, :10] = 255  # a white stripe on the stored left edge
    res = load_image(with_orientation(Image.fromarray(a), "PNG", 6), max_side=150)
    # orientation 6: stored left edge becomes the top; 300x100 (W x H) becomes 100x300, then 50x150
    assert res.original_size == (300, 100)
    assert res.array.shape == (150, 50, 3)
    assert res.array[:4].min() == 255 and res.array[10:].max() == 0


# ---------------------------------------------------------------------------------- refusals


def test_empty_inputs(tmp_path):
    for src in (b"", io.BytesIO(b""), bytearray()):
        with pytest.raises(ImageLoadError, match="empty"):
            load_image(src)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError):
        load_image(None)
    with pytest.raises(ImageLoadError):
        load_image(12345)


def test_text_and_pdf_are_not_images(tmp_path):
    txt = tmp_path / "notes.png"  # a misleading extension changes nothing
    txt.write_text("hello, this is not a picture\n" * 10)
    with pytest.raises(ImageLoadError) as err:
        load_image(txt)
    assert str(err.value).startswith("This file is not an image PIL can read (")
    assert "text" in str(err.value)
    with pytest.raises(ImageLoadError, match="This file is not an image PIL can read .*PDF"):
        load_image(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")


def test_truncated_jpeg_errors_instead_of_grey():
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    assert load_image(data).array.shape == (64, 64, 3)
    with pytest.raises(ImageLoadError, match="damaged or incomplete"):
        load_image(data[: len(data) // 2])


def test_truncated_and_corrupt_png():
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise))
    with pytest.raises(ImageLoadError):
        load_image(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    with pytest.raises(ImageLoadError):
        load_image(bytes(corrupt))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (8-bit palette) but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", bytes(3))
            + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))


def test_decompression_bomb_refused_quickly():
    data = png_header_only(30000, 30000)
    assert len(data) < 200
    t0 = time.perf_counter()
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(data)
    assert time.perf_counter() - t0 < 1.0


def test_bomb_path_refused(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_only(30000, 30000))
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(p)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(png_header_only(20, 10), max_pixels=100)


def test_own_pixel_limit_checked_before_decoding():
    # 11000 x 10000 = 110 MP: under PIL's hard limit, over ours (100 MP). If the pixels were
    # decoded, the missing image data would give a "damaged" error instead of "too large".
    data = png_header_only(11000, 10000)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageLoadError, match="too large: 11000x10000 is 110 megapixels"):
            load_image(data)
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(png_header_only(2000, 1000), max_pixels=1_000_000)


def test_bomb_warning_turned_error_is_caught():
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageLoadError, match="too large"):
            load_image(png_header_only(11000, 10000))


# ------------------------------------------------------------------------------- downsizing


def test_downsizing_keeps_aspect_and_maps_coordinates():
    a = np.zeros((200, 300, 3), np.uint8)
    a[50:150, 60:120] = 255
    res = load_image(a, max_side=100)
    assert res.array.shape == (67, 100, 3)  # 200 * 100/300 = 66.7 -> 67
    assert res.original_size == (200, 300) and res.size == (67, 100)
    assert res.scale == pytest.approx(100 / 300)
    assert "downsized from 300x200" in res.info
    # the far corner maps to the far corner on both axes
    assert res.to_working_coords([300, 200]).tolist() == pytest.approx([100, 67])
    assert res.to_original_coords([100, 67]).tolist() == pytest.approx([300, 200])
    pts = np.array([[0, 0], [60.5, 50.25], [299.9, 199.9]])
    back = res.to_original_coords(res.to_working_coords(pts))
    np.testing.assert_allclose(back, pts, rtol=0, atol=1e-9)
    box = np.array([60, 50, 120, 150])
    np.testing.assert_allclose(res.to_original_coords(res.to_working_coords(box)), box, atol=1e-9)
    np.testing.assert_allclose(res.to_working_coords(box), [20, 50 * 67 / 200, 40, 150 * 67 / 200])
    assert res.to_working_coords(np.zeros((3, 4))).shape == (3, 4)
    with pytest.raises(ValueError):
        res.to_working_coords([1, 2, 3])


def test_no_downsizing_is_identity():
    a = np.zeros((20, 30, 3), np.uint8)
    res = load_image(a, max_side=30)
    assert res.scale == 1.0 and not res.downsized
    np.testing.assert_array_equal(res.to_original_coords([[3, 4]]), [[3, 4]])
    m = np.zeros((20, 30), bool)
    m[2:5, 3:9] = True
    np.testing.assert_array_equal(res.mask_to_original(m), m)


def test_mask_to_original():
    res = load_image(np.zeros((200, 300, 3), np.uint8), max_side=100)
    m = np.zeros(res.size, bool)
    m[10:40, 20:60] = True
    up = res.mask_to_original(m)
    assert up.shape == (200, 300) and up.dtype == bool
    # the working rectangle [20, 60) x [10, 40) covers original x in [60, 180), y in ~[29.9, 119.4)
    assert up[35:115, 65:175].all()
    assert not up[:25].any() and not up[125:].any() and not up[:, :55].any() and not up[:, 185:].any()
    assert res.mask_to_original(np.stack([m, ~m])).shape == (2, 200, 300)
    with pytest.raises(ValueError):
        res.mask_to_original(np.zeros((10, 10), bool))


def test_large_jpeg_is_downsized():
    a = np.full((1200, 1600, 3), (30, 120, 200), np.uint8)
    res = load_image(encode(Image.fromarray(a), "JPEG", quality=90), max_side=400)
    assert res.array.shape == (300, 400, 3)
    assert res.original_size == (1200, 1600) and res.scale == pytest.approx(0.25)
    assert "downsized from 1600x1200" in res.info
    assert np.abs(res.array.astype(int) - [30, 120, 200]).max() <= 3


# ------------------------------------------------------------------------------------ prompts


def test_validate_points():
    np.testing.assert_array_equal(validate_points([[0, 0], [639, 479.5]], (480, 640)), [[0, 0], [639, 479.5]])
    assert validate_points([10, 20], (480, 640)).shape == (1, 2)
    assert validate_points([], (480, 640)).shape == (0, 2)
    with pytest.raises(PromptError, match=r"point \(700, 20\) is outside the 640x480 image"):
        validate_points([[10, 10], [700, 20]], (480, 640))
    for bad in ([[-1, 5]], [[5, 480]], [[float("nan"), 1]], [[1, 2, 3]], "abc"):
        with pytest.raises(PromptError):
            validate_points(bad, (480, 640))


def test_clip_box():
    np.testing.assert_array_equal(clip_box([10, 20, 100, 200], (480, 640)), [10, 20, 100, 200])
    # a drag that starts beside the image is clipped, not rejected
    np.testing.assert_array_equal(clip_box([-35, 10, 100, 600], (480, 640)), [0, 10, 100, 480])
    np.testing.assert_array_equal(clip_box([700, 300, 600, -5], (480, 640)), [600, 0, 640, 300])
    with pytest.raises(PromptError, match="outside the 640x480 image"):
        clip_box([650, 10, 700, 50], (480, 640))
    with pytest.raises(PromptError, match="no area"):
        clip_box([10, 10, 10, 50], (480, 640))
    with pytest.raises(PromptError):
        clip_box([1, 2, 3], (480, 640))
    with pytest.raises(PromptError):
        clip_box([0, 0, float("inf"), 5], (480, 640))


def test_loaded_image_digest_is_the_pixel_digest_computed_once():
    from mobile_sam_core import image_digest, load_image

    arr = np.zeros((20, 30, 3), np.uint8)
    arr[5:9, 4:20] = 200
    loaded = load_image(arr)
    assert loaded.digest == image_digest(loaded.array)
    assert loaded.digest is loaded.digest  # cached
    other = load_image(arr.copy())
    other.array[0, 0, 0] = 1
    assert load_image(other.array).digest != loaded.digest
