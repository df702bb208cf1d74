"""Every fast path stays within its accuracy bound (no timing assertions here; see benchmarks/).

* exact tricks (sparse mask thresholding, stability counts, RLE) are bit-identical;
* the reorganised fp32 encoder and decoder match the reference modules to float32 rounding;
* reduced precision (bf16 encoder, through OpenVINO and through PyTorch) keeps mask IoU >= 0.97
  on LiteMedSAM's real weights.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils.amg import mask_to_rle_pytorch
from segment_anything.utils.amg import rle_to_mask as sam_rle_to_mask

from mobile_sam_core import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from mobile_sam_core import mask_upsample as mu
from mobile_sam_core import mask_kernels
from mobile_sam_core import openvino_encoder as ove
from mobile_sam_core import native
from mobile_sam_core.acceleration import FastTinyViT, _window_bias, encoder_runner, onnx_available
from mobile_sam_core.native import native_status
from mobile_sam_core.window_attention import native_window_attention, reference_window_attention, window_tables
from mobile_sam_core.openvino_encoder import OpenVinoEncoder, OpenVinoGraph, openvino_available
from mobile_sam_core.everything_fast import fast_everything_settings, masks_to_rle, rle_to_mask
from mobile_sam_core.decoder_tail import decoder_tail, reference_decoder_tail
from mobile_sam_core.fast_decoder import FastMaskDecoder, cached_dense_pe, fast_decoder_for, image_context
from mobile_sam_core.upsample import upscale_logits_reference
from tests.conftest import make_photo_like, perturb_state_dict


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def vit_t():
    """MobileSAM with perturbed random weights (our key layout)."""
    torch.manual_seed(0)
    model = sam_model_registry["vit_t"]()
    model.load_state_dict(perturb_state_dict(model.state_dict(), seed=3))
    model.eval()
    return model


@pytest.fixture(scope="module")
def lite(lite_medsam_checkpoint):
    return sam_model_registry["lite_medsam"](checkpoint=str(lite_medsam_checkpoint))


@pytest.fixture(scope="module", autouse=True)
def conversion_cache(tmp_path_factory):
    """Encoders converted for OpenVINO go to a temporary cache, not the user's."""
    path = tmp_path_factory.mktemp("model_cache")
    old = os.environ.get("MOBILE_SAM_CACHE_DIR")
    os.environ["MOBILE_SAM_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MOBILE_SAM_CACHE_DIR", None)
    else:
        os.environ["MOBILE_SAM_CACHE_DIR"] = old


needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")


def _photo(name: str, hw: tuple[int, int]) -> np.ndarray:
    import cv2
    from skimage import data

    img = getattr(data, name)()[..., :3]
    return np.ascontiguousarray(cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return 1.0 if u == 0 else np.count_nonzero(a & b) / u


def _reference_per_plane(low: torch.Tensor, img_size: int, input_size, original_size) -> torch.Tensor:
    """SAM's upscaling applied to each mask plane on its own (PyTorch's CPU kernel rounds the
    same way for every plane count only with more than one thread)."""
    flat = low.reshape(-1, 1, *low.shape[-2:])
    out = torch.cat([upscale_logits_reference(flat[i:i + 1], img_size, input_size, original_size)
                     for i in range(flat.shape[0])])
    return out.reshape(*low.shape[:-2], *out.shape[-2:])


# ----------------------------------------------------------------------------- exact arithmetic

def test_fma32_is_exactly_rounded():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000).astype(np.float32)
    y = rng.random(4000).astype(np.float32)
    z = (rng.standard_normal(4000) * 4).astype(np.float32)
    # constructed ties: z chosen so that x*y + z lands exactly between two float32 values
    x[:100] = np.float32(1.0) + np.float32(2.0 ** -23)
    y[:100] = np.float32(1.0) + np.float32(2.0 ** -23)
    z[:100] = np.float32(0.0)
    got = mu._fma32(x, y, z)
    for i in range(4000):
        exact = Fraction(float(x[i])) * Fraction(float(y[i])) + Fraction(float(z[i]))
        lo = np.float32(float(exact))  # nearest float32 up to double rounding...
        cands = [lo, np.nextafter(lo, np.float32(np.inf)), np.nextafter(lo, np.float32(-np.inf))]
        best = min(cands, key=lambda c: (abs(Fraction(float(c)) - exact), int(np.float32(c).view(np.int32)) & 1))
        assert got[i] == best, (i, x[i], y[i], z[i])


@pytest.mark.skipif(not mu.emulation_available(), reason="this PyTorch build's bilinear arithmetic is not emulated")
@pytest.mark.parametrize("seed,compiled", [(s, True) for s in range(6)] + [(s, False) for s in range(2)])
def test_threshold_upscaled_is_bit_identical(seed, compiled, monkeypatch):
    """Bit for bit, with the compiled loop's values or (without it) OpenCV's deciding which
    pixels need PyTorch's exact arithmetic."""
    if not compiled:
        monkeypatch.setenv("MOBILE_SAM_NO_COMPILED_KERNELS", "1")
    g = torch.Generator().manual_seed(seed)
    for trial in range(5):
        oh, ow = (int(v) for v in torch.randint(3, 700, (2,), generator=g))
        s = 1024 / max(oh, ow)
        in_hw = (int(oh * s + 0.5), int(ow * s + 0.5))
        low = torch.randn(1, 3, 256, 256, generator=g) * 6
        if trial % 2:  # smooth, mask-like logits (few boundary cells) vs noisy ones (dense path)
            low = F.avg_pool2d(low, 9, 1, 4) * 4
        low[..., 40:60, :] = 0.0  # exact zeros sit on the threshold
        ref = _reference_per_plane(low, 1024, in_hw, (oh, ow)) > 0
        got = mu.threshold_upscaled(low, 1024, in_hw, (oh, ow), 0.0)
        assert got.dtype == torch.bool and got.shape == ref.shape
        assert torch.equal(got, ref), f"{int((got != ref).sum())} pixels differ at {(oh, ow)}"


@pytest.mark.skipif(not mu.emulation_available(), reason="this PyTorch build's bilinear arithmetic is not emulated")
def test_threshold_upscaled_large_image_both_paths():
    g = torch.Generator().manual_seed(7)
    smooth = F.avg_pool2d(torch.randn(1, 1, 256, 256, generator=g) * 6, 15, 1, 7) * 6
    noisy = torch.randn(1, 1, 256, 256, generator=g) * 3
    low = torch.cat([smooth, noisy], dim=1)
    ref = _reference_per_plane(low, 1024, (685, 1024), (1500, 2241)) > 0
    assert torch.equal(mu.threshold_upscaled(low, 1024, (685, 1024), (1500, 2241)), ref)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-loop", "opencv"])
def test_threshold_resized_differs_only_within_its_bound(compiled, monkeypatch):
    """The predictor's default (the compiled two-stage loop, or OpenCV's two resizes without a
    compiler): pixels may flip only where the reference value is within ``resize_error_bound`` of
    the threshold (a handful per mask)."""
    if compiled:
        _compiled_loop_or_skip()
    else:
        monkeypatch.setenv("MOBILE_SAM_NO_COMPILED_KERNELS", "1")
    g = torch.Generator().manual_seed(8)
    smooth = F.avg_pool2d(torch.randn(1, 2, 256, 256, generator=g) * 6, 15, 1, 7) * 6
    noisy = torch.randn(1, 2, 256, 256, generator=g) * 3
    low = torch.cat([smooth, noisy], dim=1)
    for in_hw, out_hw, t in (((685, 1024), (1500, 2241), 0.0), ((1024, 683), (900, 600), 0.0),
                             ((685, 1024), (1500, 2241), 0.7)):
        ref = _reference_per_plane(low, 1024, in_hw, out_hw)
        got = mu.threshold_resized(low, 1024, in_hw, out_hw, t)
        assert got.dtype == torch.bool and got.shape == ref.shape
        bound = mu.resize_error_bound(low, 1024, in_hw)
        off = got != (ref > t)
        assert torch.all((ref[off] - t).abs() <= bound), float((ref[off] - t).abs().max())
        assert int(off.sum()) <= 1e-5 * off.numel()
        near = ((ref - t).abs() <= bound).sum()
        assert near > off.sum()  # the bound is not vacuous: most near pixels still agree
    # shortcuts that do not apply fall back to the exact path
    assert torch.equal(mu.threshold_resized(low, 1024, (685, 1024), (685, 1024)),
                       _reference_per_plane(low, 1024, (685, 1024), (685, 1024)) > 0)


def test_compiled_two_stage_values_match_pytorch_closely():
    """The composite taps reproduce SAM's two resizes (also when the second one shrinks, and for
    portrait inputs): the loop's values are within 2e-6 of the largest logit of PyTorch's."""
    g = torch.Generator().manual_seed(12)
    low = F.avg_pool2d(torch.randn(1, 2, 256, 256, generator=g) * 6, 9, 1, 4) * 5
    for in_hw, out_hw in (((685, 1024), (1500, 2241)), ((1024, 683), (600, 400)), ((768, 1024), (768, 1025))):
        crops = mu._low_res_crops(low, 1024, in_hw)
        taps = mu._composite_plan(tuple(crops.shape[1:]), 4, in_hw, out_hw, mu._detect_mode() != "plain")
        assert taps is not None
        by, wy, bx, wx = taps
        np.testing.assert_allclose(wy.sum(1), 1, atol=1e-6)
        np.testing.assert_allclose(wx.sum(1), 1, atol=1e-6)
        assert (wy >= 0).all() and (wx >= 0).all()
        ref = _reference_per_plane(low, 1024, in_hw, out_hw)[0].numpy()
        for i, crop in enumerate(crops):
            # the loop's arithmetic, as values instead of a threshold
            vals = mask_kernels.composite_values(np.pad(crop, ((0, 2), (0, 2)), mode="edge"), by, wy, bx, wx)
            assert np.abs(vals - ref[i]).max() <= 2e-6 * np.abs(crop).max()
            assert mu._two_stage_margin(crop, 4, in_hw) > 2e-6 * np.abs(crop).max()  # inside the bound


def test_compiled_loop_self_check_and_switch(monkeypatch):
    """A loop that disagrees with the NumPy arithmetic is rejected, and the environment switch
    turns the compiled path off."""
    assert not mask_kernels._self_check(lambda *args: None)
    assert mask_kernels._self_check(_compiled_loop_or_skip())
    monkeypatch.setenv("MOBILE_SAM_NO_COMPILED_KERNELS", "1")
    assert mask_kernels.compiled_two_stage_threshold() is None


def test_compiled_loop_is_the_numpy_arithmetic_and_checks_its_arguments():
    """On a real 1500x2241 plan, in two row blocks, the C++ loop's marks equal thresholding
    ``composite_values``, also at thresholds equal to its values (same roundings, no fused
    multiply-adds); layouts or indices the C code would read past are refused with ValueError."""
    kernel = _compiled_loop_or_skip()
    g = torch.Generator().manual_seed(13)
    low = F.avg_pool2d(torch.randn(1, 1, 256, 256, generator=g) * 6, 9, 1, 4) * 5
    in_hw, out_hw = (685, 1024), (1500, 2241)
    crop = mu._low_res_crops(low, 1024, in_hw)[0]
    taps = mu._composite_plan(tuple(crop.shape), 4, in_hw, out_hw, mu._detect_mode() != "plain")
    src = np.pad(crop, ((0, 2), (0, 2)), mode="edge")
    lo, hi = np.float32(-0.05), np.float32(0.05)
    out, rows = np.full(out_hw, 9, np.uint8), np.full(out_hw[0], -1, np.int64)
    n = kernel(src, *taps, lo, hi, out, rows, 0, 701) + kernel(src, *taps, lo, hi, out, rows, 701, out_hw[0])
    want = mask_kernels._reference(src, *taps, lo, hi)
    assert np.array_equal(out, want)
    assert np.array_equal(rows, (want == 2).sum(1)) and n == int((want == 2).sum()) > 0
    assert 0.05 < (want == 1).mean() < 0.95
    # thresholds at exact values tell the arithmetic apart (a build with fused multiply-adds
    # flips ~15% of these)
    vals = mask_kernels.composite_values(src, *taps)
    rng = np.random.default_rng(0)
    for y, x in zip(rng.integers(0, out_hw[0], 64), rng.integers(0, out_hw[1], 64)):
        for t, mark in ((vals[y, x], 0), (np.nextafter(vals[y, x], np.float32(-np.inf)), 1)):
            kernel(src, *taps, t, t, out, rows, y, y + 1)
            assert out[y, x] == mark, (y, x)

    by, wy, bx, wx = taps
    ok = dict(src=src, by=by, wy=wy, bx=bx, wx=wx, lo=lo, hi=hi, out=out, row_undecided=rows, ya=0,
              yb=out_hw[0])
    bad = [dict(src=src[:-3]), dict(src=src[:, :-3]), dict(src=src.astype(np.float64)), dict(src=src.T),
           dict(by=by[::-1].copy()), dict(by=by.astype(np.int32)), dict(wx=wx[:, :2].copy()),
           dict(out=out[:, :-1]), dict(out=out.astype(bool)), dict(row_undecided=rows[:5]),
           dict(ya=-1), dict(yb=out_hw[0] + 1), dict(ya=11, yb=10), dict(lo=hi, hi=lo)]
    for change in bad:
        with pytest.raises(ValueError):
            kernel(**{**ok, **change})
    assert kernel(**ok) == n


def test_threshold_resized_from_concurrent_threads():
    """Server threads share the helper threads: concurrent calls give the single-call results."""
    g = torch.Generator().manual_seed(9)
    cases = [(torch.randn(1, 3, 256, 256, generator=g) * 3, (685, 1024), (900, 1345)),
             (F.avg_pool2d(torch.randn(1, 3, 256, 256, generator=g) * 6, 15, 1, 7) * 6, (1024, 686), (700, 469))]
    want = [mu.threshold_resized(low, 1024, in_hw, out_hw) for low, in_hw, out_hw in cases]

    def run(i):
        low, in_hw, out_hw = cases[i % 2]
        return torch.equal(mu.threshold_resized(low, 1024, in_hw, out_hw), want[i % 2])

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(run, range(12)))


@pytest.mark.skipif(not mu.emulation_available(), reason="this PyTorch build's bilinear arithmetic is not emulated")
def test_threshold_paths_are_exact_from_concurrent_threads():
    """Server threads share the scratch buffers and helper threads: results must not mix, and
    the idle buffers kept stay bounded."""
    g = torch.Generator().manual_seed(5)
    smooth = F.avg_pool2d(torch.randn(1, 3, 256, 256, generator=g) * 6, 15, 1, 7) * 6
    cases = [(torch.randn(1, 3, 256, 256, generator=g) * 3, (685, 1024), (900, 1345)),
             (smooth, (1024, 686), (700, 469)),
             (torch.randn(1, 2, 256, 256, generator=g), (685, 1024), (600, 897))]
    refs = [_reference_per_plane(low, 1024, in_hw, out_hw) > 0 for low, in_hw, out_hw in cases]
    # everything mode's entry point: several maps at the input size, clean and noisy mixed
    planes = torch.cat([smooth[0], cases[0][0][0]])[:, None]  # (6, 1, 256, 256)
    big = torch.cat([mu.upscale_to_input(planes[i:i + 1], 1024, (685, 1024))[:, 0] for i in range(6)])
    big_ref = _reference_per_plane(planes, 1024, (685, 1024), (900, 1345))[:, 0] > 0

    def run(i):
        if i % 4 == 3:
            return torch.equal(mu.threshold_input_maps(big, (900, 1345)), big_ref)
        low, in_hw, out_hw = cases[i % 4]
        return torch.equal(mu.threshold_upscaled(low, 1024, in_hw, out_hw), refs[i % 4])

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(run, range(12)))
    assert len(mu._scratch_free) <= mu._SCRATCH_KEEP


@pytest.mark.skipif(not mu.emulation_available(), reason="this PyTorch build's bilinear arithmetic is not emulated")
def test_count_above_matches_reference_counts():
    g = torch.Generator().manual_seed(11)
    for oh, ow, in_hw in [(900, 1345, (685, 1024)), (300, 201, (1024, 686)), (685, 1024, (685, 1024))]:
        low = F.avg_pool2d(torch.randn(4, 1, 256, 256, generator=g) * 6, 7, 1, 3) * 4
        low[1] = torch.randn(1, 256, 256, generator=g) * 3  # noisy
        big = mu.upscale_to_input(low, 1024, in_hw)[:, 0]
        ref = _reference_per_plane(low, 1024, in_hw, (oh, ow))[:, 0]
        thresholds = [-1.0, 0.0, 1.0, 0.37]
        want = torch.stack([(ref > t).flatten(1).sum(1) for t in thresholds], 1)
        assert torch.equal(mu.count_above(big, (oh, ow), thresholds), want)


def test_rle_round_trip_matches_segment_anything():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 37, 53, generator=g) > 0.5
    masks[0] = True
    masks[1] = False
    assert masks_to_rle(masks) == mask_to_rle_pytorch(masks)
    for rle in mask_to_rle_pytorch(masks):
        a, b = sam_rle_to_mask(rle), rle_to_mask(rle)
        assert np.array_equal(a, b) and a.dtype == b.dtype


# ----------------------------------------------------------------------------- encoder

@pytest.mark.parametrize("name,native", [("vit_t", True), ("vit_t", False), ("lite_medsam", True)])
def test_fast_fp32_encoder_matches_module(name, native, vit_t, lite):
    model = vit_t if name == "vit_t" else lite
    size = model.image_encoder.img_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    enc = FastTinyViT(model.image_encoder, native=native)
    if native:
        assert enc.native is not None or _native_kernel_or_skip()
    with torch.no_grad():
        ref = model.image_encoder(x)
        got = enc(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_fast_encoder_batch_matches_module_per_image(lite):
    """A batch of two images: each embedding as the module computes it, and as the image alone."""
    size = lite.image_encoder.img_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    enc = FastTinyViT(lite.image_encoder)
    with torch.no_grad():
        ref = lite.image_encoder(x)
        got = enc(x)
        single = enc(x[1:])
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (single[0] - got[1]).abs().max() <= 1e-5 * ref.abs().max()


def _compiled_or_skip(kernel, what: str, avx512: bool):
    """``kernel``, or a skip when it could not be built; CI (whose script installs g++) must have
    it, on AVX-512 machines for the ``avx512`` kernels."""
    if kernel is None:
        required = os.environ.get("CI", "").lower() == "true" and (
            not avx512 or "avx512f" in native._cpu_flags().split())
        assert not required, f"{what} missing under CI: {native_status()}"
        pytest.skip(f"{what} unavailable: {native_status()}")
    return kernel


def _compiled_loop_or_skip():
    return _compiled_or_skip(mask_kernels.compiled_two_stage_threshold(), "compiled mask loop", avx512=False)


def _native_kernel_or_skip():
    return _compiled_or_skip(native_window_attention(), "window-attention kernel", avx512=True)


@pytest.mark.parametrize("shape", [(2, 13, 20), (1, 14, 21), (1, 5, 9), (1, 8, 7), (1, 7, 14)])
@pytest.mark.parametrize("path", ["flash-f32", "products-f32", "native-f32", "flash-bf16", "products-bf16"])
def test_window_attention_matches_padded_windows(shape, path):
    """Attention over real tokens with the padding merged into one key equals the module's way:
    pad with the zero token's qkv, partition into full windows, attend, drop the padding.

    Paths: PyTorch's flash kernel, explicit products (the bf16 graph's 7x7 windows), and the
    compiled kernel (float32, 32-wide heads)."""
    bn, h, w = shape
    kind, dtype = path.split("-")
    dtype = torch.float32 if dtype == "f32" else torch.bfloat16
    ws, heads = 7, 2
    kd, vd = (32, 32) if kind == "native" else (4, 3)
    g = torch.Generator().manual_seed(3)
    p = dict(ws=ws, heads=heads, kd=kd, vd=vd, scale=kd ** -0.5, window_bias={}, window_tables={},
             bias=torch.randn(heads, ws * ws, ws * ws, generator=g).to(dtype),
             pad_qkv=torch.randn(heads * (2 * kd + vd), generator=g).to(dtype))
    qkv = torch.randn(bn, h, w, heads * (2 * kd + vd), generator=g).to(dtype)
    ph, pw = -(-h // ws) * ws, -(-w // ws) * ws
    full = p["pad_qkv"].expand(bn, ph, pw, -1).clone()
    full[:, :h, :w] = qkv
    win = full.view(bn, ph // ws, ws, pw // ws, ws, -1).transpose(2, 3).reshape(-1, ws * ws, full.shape[-1]).float()
    q, k, v = (win[..., a:b].unflatten(-1, (heads, -1)).transpose(1, 2)
               for a, b in ((0, heads * kd), (heads * kd, 2 * heads * kd), (2 * heads * kd, None)))
    att = torch.softmax(q @ k.transpose(-2, -1) * p["scale"] + p["bias"].float(), dim=-1)
    o = (att @ v).view(bn, ph // ws, pw // ws, heads, ws, ws, vd).permute(0, 1, 4, 2, 5, 3, 6)
    ref = o.reshape(bn, ph, pw, heads * vd)[:, :h, :w].reshape(bn * h * w, heads * vd)
    enc = FastTinyViT.__new__(FastTinyViT)
    enc.sdpa_min_tokens = 100 if kind == "products" else 0
    enc.native = _native_kernel_or_skip() if kind == "native" else None
    got = enc._window_attention(qkv, p)
    assert got.shape == ref.shape and got.dtype == dtype
    tol = 2e-6 if dtype == torch.float32 else 3e-2
    assert (got.float() - ref).abs().max() <= tol * max(1.0, float(ref.abs().max()))
    assert bool(p["window_tables"]) == (kind == "native")
    if h % ws or w % ws:  # partial windows: one merged padding key
        if kind == "native":
            tables = next(iter(p["window_tables"].values()))
            assert bool((tables.nk == tables.nq + 1).any())
        else:
            assert any(b.shape[-1] == b.shape[-2] + 1 for b in p["window_bias"].values())


@pytest.mark.parametrize("ws,heads,shape", [(7, 3, (2, 13, 20)), (14, 5, (1, 30, 17)), (7, 10, (1, 64, 64))])
def test_native_window_kernel_matches_float64_reference(ws, heads, shape):
    """The kernel on FastTinyViT's own window tables (full, partial and corner windows; 49 and 196
    keys) against the same attention in float64."""
    kernel = _native_kernel_or_skip()
    bn, h, w = shape
    g = torch.Generator().manual_seed(ws + heads)
    bias = torch.randn(heads, ws * ws, ws * ws, generator=g)
    tables = window_tables(bn, h, w, ws, lambda rows, cols: _window_bias(bias, ws, rows, cols))
    assert kernel.supports(tables, 32, 32) and int(tables.nq.sum()) == bn * h * w
    qkv = torch.randn(bn, h, w, 3 * heads * 32, generator=g) * 2
    pad = torch.randn(3 * heads * 32, generator=g)
    got = kernel(qkv, pad, tables, heads, 32 ** -0.5)
    want = reference_window_attention(qkv, pad, tables, heads, 32 ** -0.5)
    assert (got.double() - want).abs().max() <= 2e-6 * want.abs().max()
    one = kernel(qkv, pad, tables, heads, 32 ** -0.5, threads=1)
    assert torch.equal(one, got)  # windows are independent: the thread count changes nothing
    with pytest.raises(ValueError, match="float32 rows"):
        kernel(qkv.bfloat16(), pad, tables, heads, 32 ** -0.5)
    if bn > 1:
        with pytest.raises(ValueError, match="token rows"):
            kernel(qkv[:1], pad, tables, heads, 32 ** -0.5)


def test_native_kernel_build_cache_and_fallbacks(tmp_path, monkeypatch):
    """Built once into the cache (name keyed by source, compiler, flags and CPU), loaded from it
    by a later process, and None (PyTorch path) without a compiler, when disabled, or when the
    self-check fails."""
    _native_kernel_or_skip()
    check = lambda lib: True  # noqa: E731
    monkeypatch.setenv("MOBILE_SAM_CACHE_DIR", str(tmp_path))
    for state in ({}, {}):  # a fresh process state each time
        monkeypatch.setattr(native, "_loaded", state)
        lib = native.load_kernel("window_attention", check)
        assert lib is not None and native.load_kernel("window_attention", check) is lib
    assert native.native_status()["window_attention"].startswith("loaded " + str(tmp_path / "native"))
    built = list((tmp_path / "native").glob("window_attention-*.so"))
    assert len(built) == 1
    source = (native.KERNEL_DIR / "window_attention.cpp").read_bytes()
    cxx = native.compiler()
    assert native._library_path("window_attention", source, cxx, ()) == built[0]
    assert native._library_path("window_attention", source, cxx, ("-O2",)) != built[0]
    monkeypatch.setattr(native, "_cpu_flags", lambda: "another cpu")
    assert native._library_path("window_attention", source, cxx, ()) != built[0]
    assert native._library_path("window_attention", source + b" ", cxx, ()) != built[0]

    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("CXX", "false")
    assert native.load_kernel("window_attention") is None
    assert "failed" in native.native_status()["window_attention"]
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert native.load_kernel("window_attention") is None
    assert native.native_status()["window_attention"].startswith("no C++ compiler")
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(native, "_loaded", {})
    assert native.load_kernel("window_attention", lambda lib: False) is None
    assert "self-check" in native.native_status()["window_attention"]
    monkeypatch.setattr(native, "_loaded", {})
    assert native.load_kernel("window_attention", check, cpu_check=lambda lib: False) is None
    assert native.native_status()["window_attention"].startswith("not used")
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_wrapped", {})
    made = []
    wrap = lambda lib: made.append(lib) or len(made)  # noqa: E731
    assert native.load_wrapped("window_attention", wrap, check) == native.load_wrapped("window_attention", wrap) == 1
    monkeypatch.setattr(native, "_loaded", {})  # a fresh library gets a fresh wrapper
    assert native.load_wrapped("window_attention", wrap, check) == 2
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("MOBILE_SAM_NO_COMPILED_KERNELS", "1")
    assert native.load_kernel("window_attention", check) is None
    assert FastTinyViT(sam_model_registry["vit_t"]().image_encoder).native is None


def test_encoder_runner_follows_weight_changes():
    model = sam_model_registry["vit_t"]()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first = encoder_runner(model)(x)
        # load different weights through the ordinary API: the cached fused copy must follow
        model.load_state_dict(perturb_state_dict(model.state_dict(), seed=5))
        ref = model.image_encoder(x)
        second = encoder_runner(model)(x)
    assert not torch.allclose(first, second)
    assert (second - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert set(model.state_dict()) == set(sam_model_registry["vit_t"]().state_dict())  # layout unchanged


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime not installed")
def test_onnx_backend_matches_module(lite, tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILE_SAM_CACHE_DIR", str(tmp_path))
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = lite.image_encoder(x)
        got = encoder_runner(lite, "fp32", "onnx")(x)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert list((tmp_path / "onnx").glob("*.onnx")), "the exported model is cached"


def test_openvino_graph_is_the_encoder_in_plain_torch(vit_t, lite):
    """The graph handed to OpenVINO computes the module's function (fp32, both stems)."""
    for model in (vit_t, lite):
        size = model.image_encoder.img_size
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            ref = model.image_encoder(x)
            got = OpenVinoGraph(model.image_encoder)(x)
        assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


@needs_openvino
def test_openvino_encoder_fp32_and_bf16_against_the_module(lite, conversion_cache):
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = lite.image_encoder(x)
    exact = OpenVinoEncoder(lite.image_encoder, lite.model_name, "fp32")  # converts (cached for the tests below)
    got = exact(x)  # a batch of two runs image by image
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    fast = OpenVinoEncoder(lite.image_encoder, lite.model_name, "bf16")
    rel = ((fast(x) - ref).norm() / ref.norm()).item()
    assert 1e-4 < rel < 3e-2, rel  # really reduced precision, and close
    assert fast.path == exact.path and fast.path.exists() and fast.path.with_suffix(".bin").exists()
    # a model converted from another version of the graph is never picked up
    assert f"-g{ove.GRAPH_VERSION}-" in exact.path.name


@needs_openvino
def test_openvino_graph_change_does_not_reuse_an_old_conversion(lite, conversion_cache, tmp_path, monkeypatch):
    import openvino as ov

    cached = OpenVinoEncoder(lite.image_encoder, lite.model_name, "fp32")  # converted by the test above
    monkeypatch.setenv("MOBILE_SAM_CACHE_DIR", str(tmp_path))  # own cache: this test deletes files
    (tmp_path / "openvino").mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copy(cached.path.with_suffix(suffix), tmp_path / "openvino" / cached.path.with_suffix(suffix).name)
    first = OpenVinoEncoder(lite.image_encoder, lite.model_name, "fp32")
    assert first.path.parent == tmp_path / "openvino" and f"-g{ove.GRAPH_VERSION}-" in first.path.name
    unversioned = first.path.with_name(first.path.name.replace(f"-g{ove.GRAPH_VERSION}-", "-"))
    unversioned.write_text("<net from graph version 1")  # how the first graph's files were named
    monkeypatch.setattr(ove, "GRAPH_VERSION", ove.GRAPH_VERSION + 1)
    calls = []  # "converting" reads the cached model: this test is about the files, not the graph
    monkeypatch.setattr(ove, "_convert", lambda encoder: calls.append(1) or ov.Core().read_model(str(cached.path)))
    second = OpenVinoEncoder(lite.image_encoder, lite.model_name, "fp32")
    assert calls == [1] and second.path != first.path
    assert second.path.exists() and second.path.with_suffix(".bin").exists()
    # conversions from older graphs are deleted
    assert not first.path.exists() and not first.path.with_suffix(".bin").exists() and not unversioned.exists()


@needs_openvino
def test_openvino_cache_is_reused_and_rebuilt_when_unreadable(lite, conversion_cache, monkeypatch, caplog):
    first = OpenVinoEncoder(lite.image_encoder, lite.model_name, "fp32")
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    expected = first(x)

    def no_conversion(encoder):
        raise AssertionError("converted again although the cache holds the model")

    monkeypatch.setattr(ove, "_convert", no_conversion)
    assert torch.equal(OpenVinoEncoder(lite.image_encoder, lite.model_name, "fp32")(x), expected)
    monkeypatch.undo()
    first.path.write_text("<net truncated")  # e.g. a disk that filled up mid-write
    with caplog.at_level(logging.WARNING, logger="mobile_sam_core.openvino_encoder"):
        again = OpenVinoEncoder(lite.image_encoder, lite.model_name, "fp32")
    assert "unreadable" in caplog.text
    assert torch.equal(again(x), expected)
    assert "<net truncated" not in first.path.read_text()[:100]


@needs_openvino
def test_auto_backend_picks_openvino_for_bf16_and_torch_for_fp32(lite):
    model = lite  # its converted encoder is in the test cache already
    assert isinstance(encoder_runner(model, "bf16"), OpenVinoEncoder)
    assert isinstance(encoder_runner(model, "fp32"), FastTinyViT)
    assert isinstance(encoder_runner(model, "bf16", "torch"), FastTinyViT)
    assert isinstance(encoder_runner(model, "fp32", "openvino"), OpenVinoEncoder)


def test_bf16_falls_back_to_torch_without_openvino(monkeypatch, caplog):
    import mobile_sam_core.acceleration as acc

    model = sam_model_registry["lite_medsam"]()
    monkeypatch.setattr(acc, "openvino_available", lambda: False)
    assert isinstance(encoder_runner(model, "bf16"), FastTinyViT)
    with caplog.at_level(logging.WARNING, logger="mobile_sam_core.acceleration"):
        assert isinstance(encoder_runner(model, "fp32", "openvino"), FastTinyViT)
    assert "openvino package" in caplog.text


@needs_openvino
def test_bf16_falls_back_to_torch_when_openvino_fails(monkeypatch, caplog):
    model = sam_model_registry["lite_medsam"]()

    def broken(encoder):
        raise RuntimeError("conversion exploded")

    monkeypatch.setattr(ove, "_convert", broken)
    with caplog.at_level(logging.WARNING, logger="mobile_sam_core.acceleration"):
        runner = encoder_runner(model, "bf16")
    assert isinstance(runner, FastTinyViT) and runner.dtype == torch.bfloat16
    assert "conversion exploded" in caplog.text


# Boxes around objects (x0, y0, x1, y1) in 342x512 versions of the photos.
OBJECT_BOXES = {
    "coffee": [(145, 15, 350, 260), (65, 60, 410, 335), (275, 55, 365, 280)],
    "astronaut": [(153, 10, 303, 125), (278, 230, 508, 340), (133, 230, 208, 285), (353, 0, 463, 190)],
}


@pytest.mark.parametrize("backend", ["openvino", "torch"])
def test_bf16_encoder_masks_close_to_exact_on_real_weights(lite, backend):
    """LiteMedSAM (real weights, trained with boxes): box masks from the bf16 encoder."""
    if backend == "openvino" and not openvino_available():
        pytest.skip("openvino not installed")
    exact = SamPredictor(lite, cache=False)
    fast = SamPredictor(lite, cache=False, encoder_precision="bf16", encoder_backend=backend)
    ious = []
    for name, boxes in OBJECT_BOXES.items():
        img = _photo(name, (342, 512))
        exact.set_image(img)
        fast.set_image(img)
        rel = (fast.features - exact.features).abs().max() / exact.features.abs().max()
        assert 0 < rel < 0.05
        for box in boxes:
            m1, _, _ = exact.predict(box=np.array(box), multimask_output=False)
            m2, _, _ = fast.predict(box=np.array(box), multimask_output=False)
            ious.append(_iou(m1[0], m2[0]))
    assert min(ious) >= 0.97, ious


def test_embedding_cache_separates_precisions(vit_t):
    from mobile_sam_core import EmbeddingCache

    cache = EmbeddingCache()
    img = make_photo_like(64, 96, seed=1)
    a = SamPredictor(vit_t, cache=cache)
    b = SamPredictor(vit_t, cache=cache, encoder_precision="bf16", encoder_backend="torch")
    a.set_image(img)
    b.set_image(img)
    assert not b.last_set_image_from_cache
    assert not torch.equal(a.features, b.features)


# ----------------------------------------------------------------------------- decoder and predictor

@pytest.mark.parametrize("stacked_heads", [True, False], ids=["stacked_heads", "module_heads"])
def test_fast_decoder_matches_reference_decoder(vit_t, stacked_heads, monkeypatch):
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(1, 256, 64, 64, generator=g)
    pe = cached_dense_pe(vit_t)
    dec = fast_decoder_for(vit_t)
    if not stacked_heads:  # the per-module path taken by heads that do not stack (other layouts)
        monkeypatch.setattr(dec, "_head_stack", lambda ids: None)
    else:
        assert dec._head_stack((1, 2, 3)) is not None and dec._head_stack((0,)) is not None
    ctx = image_context(dec, feats, pe)
    coords = torch.rand(5, 3, 2, generator=g) * 1024
    labels = torch.randint(0, 2, (5, 3), generator=g).int()
    boxes = torch.tensor([[100.0, 200.0, 600.0, 700.0]] * 5)
    with torch.no_grad():
        for points, bx in [((coords, labels), None), (None, boxes), ((coords[:, :1], labels[:, :1]), boxes)]:
            sparse, dense = vit_t.prompt_encoder(points=points, boxes=bx, masks=None)
            for multimask in (True, False):
                ref_m, ref_i = vit_t.mask_decoder(image_embeddings=feats, image_pe=pe, sparse_prompt_embeddings=sparse,
                                                  dense_prompt_embeddings=dense, multimask_output=multimask)
                got_m, got_i = dec(ctx, sparse, multimask)
                assert got_m.shape == ref_m.shape and got_i.shape == ref_i.shape
                assert (got_m - ref_m).abs().max() <= 1e-4 * ref_m.abs().max()
                assert (got_i - ref_i).abs().max() <= 1e-5
                # selecting by IoU returns exactly the pairs above the threshold
                thr = float(ref_i.median())
                iou, low, index = dec.decode(ctx, sparse, multimask, iou_threshold=thr)
                assert torch.equal(index, torch.nonzero(iou > thr))
                assert torch.allclose(low, got_m[index[:, 0], index[:, 1]])


def _decoder_tail_or_skip():
    return _compiled_or_skip(decoder_tail(), "decoder-tail kernel", avx512=True)


def _tail_inputs(rows: int, masks: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return dict(y=torch.randn(rows, 64, generator=g) * 3, ln_w=torch.rand(64, generator=g) + 0.5,
                ln_b=torch.randn(64, generator=g), eps=1e-6, w2=torch.randn(128, 64, generator=g) / 8,
                b2=torch.randn(128, generator=g), hyper=torch.randn(masks, 32, generator=g))


@pytest.mark.parametrize("grid,masks", [((64, 64), 3), ((64, 64), 1), ((3, 5), 4), ((2, 7), 2), ((1, 1), 1)])
def test_decoder_tail_matches_float64_reference(grid, masks):
    """The fused LayerNorm-GELU-linear-GELU-hypernetwork pass against float64 PyTorch, on the
    click's 64x64 grid and on grids whose rows end in a partial block of 16; one thread gives
    the two-thread result bit for bit."""
    tail = _decoder_tail_or_skip()
    h, w = grid
    t = _tail_inputs(4 * h * w, masks, seed=h * 100 + w + masks)
    got = tail(t["y"], w, t["ln_w"], t["ln_b"], t["eps"], t["w2"], t["b2"], t["hyper"], threads=2)
    want = reference_decoder_tail(t["y"].double(), w, t["ln_w"], t["ln_b"], t["eps"], t["w2"], t["b2"], t["hyper"])
    assert got.shape == want.shape == (masks, 4 * h, 4 * w) and got.dtype == torch.float32
    assert (got.double() - want).abs().max() <= 2e-6 * want.abs().max()
    one = tail(t["y"], w, t["ln_w"], t["ln_b"], t["eps"], t["w2"], t["b2"], t["hyper"], threads=1)
    assert torch.equal(one, got)


def test_decoder_tail_gelu_accuracy_and_argument_checks():
    tail = _decoder_tail_or_skip()
    x = torch.linspace(-20, 20, 400001)
    err = (tail.gelu_(x.clone()).double() - F.gelu(x.double())).abs()
    assert torch.all(err <= 3e-7 * x.double().abs().clamp(min=1)), float(err.max())
    t = _tail_inputs(4 * 3 * 5, 3, seed=1)
    args = [t["y"], 5, t["ln_w"], t["ln_b"], t["eps"], t["w2"], t["b2"], t["hyper"]]
    bad = {0: [t["y"][:, :63], t["y"][:-4], t["y"].double()], 1: [0, 7], 5: [t["w2"].T.contiguous().T, t["w2"][:64]],
           7: [torch.randn(5, 32), torch.randn(3, 31), torch.randn(0, 32)]}
    for pos, values in bad.items():
        for v in values:
            with pytest.raises(ValueError):
                tail(*args[:pos], v, *args[pos + 1:])


def test_fast_decoder_with_and_without_compiled_tail(vit_t, monkeypatch):
    """The decoder's masks through the compiled tail equal PyTorch's operations to float32
    rounding (this also checks the kernel's pixel order against the module path)."""
    _decoder_tail_or_skip()
    with_tail, without = FastMaskDecoder(vit_t), FastMaskDecoder(vit_t, native=False)
    assert with_tail.tail is not None and without.tail is None
    g = torch.Generator().manual_seed(21)
    feats = torch.randn(1, 256, 64, 64, generator=g)
    pe = cached_dense_pe(vit_t)
    coords, labels = torch.rand(3, 2, 2, generator=g) * 1024, torch.tensor([[1, 0]] * 3)
    with torch.no_grad():
        sparse, _ = vit_t.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        for multimask in (True, False):
            a_m, a_i = with_tail(image_context(with_tail, feats, pe), sparse, multimask)
            b_m, b_i = without(image_context(without, feats, pe), sparse, multimask)
            assert (a_m - b_m).abs().max() <= 1e-5 * b_m.abs().max()
            assert torch.equal(a_i, b_i)
    monkeypatch.setenv("MOBILE_SAM_NO_COMPILED_KERNELS", "1")
    assert FastMaskDecoder(vit_t).tail is None


def test_fast_decoder_follows_weight_changes():
    model = sam_model_registry["vit_t"]()
    feats = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(6))
    pe = cached_dense_pe(model)
    coords, labels = torch.tensor([[[300.0, 500.0]]]), torch.tensor([[1]])

    def both():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        dec = fast_decoder_for(model)
        ref = model.mask_decoder(image_embeddings=feats, image_pe=pe, sparse_prompt_embeddings=sparse,
                                 dense_prompt_embeddings=dense, multimask_output=True)[0]
        return dec, dec(image_context(dec, feats, pe), sparse, True)[0], ref

    with torch.no_grad():
        dec0, first, _ = both()
        # in place, through the ordinary API (version counters move)
        model.load_state_dict(perturb_state_dict(model.state_dict(), seed=7))
        dec1, second, ref = both()
        assert dec1 is not dec0 and not torch.allclose(first, second)
        assert (second - ref).abs().max() <= 1e-4 * ref.abs().max()
        # a parameter replaced by a new tensor (no version change on the old one)
        mlp = model.mask_decoder.output_hypernetworks_mlps[1].layers[0]
        mlp.weight = torch.nn.Parameter(mlp.weight * 1.5)
        dec2, third, ref = both()
        assert dec2 is not dec1 and not torch.allclose(second, third)
        assert (third - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_predictor_fast_paths_match_reference_paths(vit_t):
    img = make_photo_like(300, 451, seed=9)
    fast = SamPredictor(vit_t, cache=False)
    exact = SamPredictor(vit_t, cache=False, exact_masks=True)
    ref = SamPredictor(vit_t, cache=False, encoder_backend="reference", fast_decoder=False)
    fast.set_image(img)
    exact.set_image(img)
    ref.set_image(img)
    assert (fast.features - ref.features).abs().max() <= 1e-4 * ref.features.abs().max()
    fast.features = exact.features = ref.features  # compare decoders and upsampling on the same embedding
    thr = vit_t.mask_threshold
    for kw in (dict(point_coords=np.array([[200, 150]]), point_labels=np.array([1])),
               dict(box=np.array([50, 40, 400, 280]))):
        m1, s1, l1 = fast.predict(**kw)
        m2, s2, l2 = ref.predict(**kw)
        lg, _, _ = ref.predict(**kw, return_logits=True)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
        assert np.abs(l1 - l2).max() <= 1e-4 * np.abs(l2).max()
        differ = m1 != m2
        assert np.all(np.abs(lg[differ]) < 1e-3)  # only float ties at the threshold
        lf, _, _ = fast.predict(**kw, return_logits=True)
        assert lf.shape == m1.shape and lf.dtype == np.float32
        me, _, le = exact.predict(**kw)
        assert np.array_equal(le, l1)
        assert np.array_equal(lf > thr, me)  # exact_masks: bool masks == thresholded full logits
        # default: OpenCV's resizes; a pixel may differ only within the certified bound of the threshold
        bound = mu.resize_error_bound(torch.from_numpy(l1)[None], 1024, fast.input_size)
        assert 0 < bound < 1e-3
        off = (lf > thr) != m1
        assert np.all(np.abs(lf[off] - thr) <= bound) and off.mean() < 1e-4



def test_predict_best_is_predicts_best_candidate(vit_t):
    img = make_photo_like(210, 333, seed=4)
    pred = SamPredictor(vit_t, cache=False)
    pred.set_image(img)
    for kw in (dict(point_coords=np.array([[100, 80]]), point_labels=np.array([1])),
               dict(box=np.array([30, 20, 300, 190]), multimask_output=False)):
        masks, scores, low = pred.predict(**kw)
        mask, best, scores_b, low_b = pred.predict_best(**kw)
        assert best == int(np.argmax(scores)) and len(scores_b) == len(scores)
        np.testing.assert_array_equal(scores_b, scores)
        np.testing.assert_array_equal(low_b, low)
        assert mask.shape == (210, 333) and mask.dtype == bool
        np.testing.assert_array_equal(mask, masks[best])
    with pytest.raises(ValueError, match="no prompt"):
        pred.predict_best()


def test_set_image_uses_a_given_digest_as_cache_key(vit_t):
    from mobile_sam_core import EmbeddingCache, image_digest

    cache = EmbeddingCache()
    img = make_photo_like(64, 80, seed=2)
    pred = SamPredictor(vit_t, cache=cache)
    pred.set_image(img, digest=image_digest(img))
    other = SamPredictor(vit_t, cache=cache)
    other.set_image(img)  # computes the same digest itself: a hit
    assert other.last_set_image_from_cache
    other.set_image(img[..., ::-1].copy(), image_format="BGR", digest="not-used-for-flipped-input")
    assert other.last_set_image_from_cache  # BGR input is flipped to RGB, then hashed

def test_everything_fast_decoder_gives_identical_records(vit_t):
    img = make_photo_like(120, 170, seed=2)
    kw = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, cache=False)
    a = SamAutomaticMaskGenerator(vit_t, **kw).generate(img)
    gen = SamAutomaticMaskGenerator(vit_t, **kw)
    gen.predictor.fast_decoder = False
    b = gen.generate(img)
    assert len(a) == len(b) > 0
    key = lambda r: (r["bbox"], r["predicted_iou"])  # noqa: E731
    for x, y in zip(sorted(a, key=key), sorted(b, key=key)):
        assert x["bbox"] == y["bbox"]
        assert abs(x["predicted_iou"] - y["predicted_iou"]) < 1e-5
        assert abs(x["stability_score"] - y["stability_score"]) < 1e-3
        assert _iou(x["segmentation"], y["segmentation"]) > 0.999


def test_fast_everything_preset_returns_sam_records(lite):
    img = _photo("coffee", (171, 256))
    settings = fast_everything_settings(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_side=8)
    fast = SamAutomaticMaskGenerator(lite, cache=False, **settings).generate(img)
    exact = SamAutomaticMaskGenerator(lite, cache=False, points_per_side=8, pred_iou_thresh=0.0,
                                      stability_score_thresh=0.0).generate(img)
    assert fast and set(fast[0]) == set(exact[0])
    for r in fast:
        assert r["segmentation"].shape == img.shape[:2] and r["segmentation"].dtype == bool
        assert r["area"] == int(r["segmentation"].sum())
    # every fast mask is one the exact generator also finds (same decoder up to bf16 rounding)
    matched = sum(max(_iou(r["segmentation"], e["segmentation"]) for e in exact) >= 0.8 for r in fast)
    assert matched >= 0.8 * len(fast)


def test_openmp_spin_is_shortened_only_before_torch_loads(monkeypatch):
    import subprocess
    import sys

    from mobile_sam_core import openmp_env

    for var in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "MOBILE_SAM_NO_RUNTIME_TUNING"):
        monkeypatch.delenv(var, raising=False)
    assert not openmp_env.shorten_openmp_spin()  # torch is loaded in this process: too late
    assert "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the user's (or the app's) choice wins
    assert not openmp_env.shorten_openmp_spin() and "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("MOBILE_SAM_NO_RUNTIME_TUNING", "1")
    assert not openmp_env.shorten_openmp_spin() and "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delenv("MOBILE_SAM_NO_RUNTIME_TUNING")
    assert openmp_env.shorten_openmp_spin() and os.environ["GOMP_SPINCOUNT"] == "10000"
    # a fresh process: importing the package first sets it before torch (and libgomp) load
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, sys, mobile_sam_core; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["10000", "True"], out.stderr[-2000:]
