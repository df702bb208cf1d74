"""Thresholded mask upsampling: SAM's two bilinear resizes, fast, exact where it matters.

SAM turns 256x256 logits into a full-size mask by two bilinear resizes (x4 to the padded encoder
input, crop, then to the original size) and a threshold. Only the sign relative to the
threshold is kept, and it is certain wherever a cheaper approximation is far enough from it.

:func:`threshold_resized` (the predictor's default): both resizes and the threshold in one
compiled pass over the low-res logits (``mask_kernels``, a C++ loop built on first use: per axis
the two resizes are one map of at most three taps, built here from PyTorch's indices and
weights), or without a compiler both resizes by OpenCV and then the threshold. Either computes the same convex combinations of
the same samples as PyTorch with slightly different float32 roundings or weights, so a pixel can
only come out differently where its value is within :func:`resize_error_bound` (certified; ~1e-4
for logits of magnitude ~10) of the threshold: a handful of pixels per full-size mask, all of
them coin flips.

:func:`threshold_upscaled` (bit-identical to thresholding PyTorch's values):

1. Fast values for both resizes: the compiled loop (float32 rounding only; its bound is
   :func:`_composite_margin`, ~4e-6 of the largest logit), or without it OpenCV's
   ``cv2.resize`` (slightly different float32 weights; :func:`_dense_margin` plus the first
   stage's rounding, ~1e-4).
2. That certified bound splits pixels into sure ones and the few near the threshold (tens per
   1500x2241 mask with the compiled loop).
3. Those few get exactly the values PyTorch's CPU kernel computes: the same float32 index and
   weight formulas and the same fused multiply-adds (emulated exactly in float64 with a
   correction for the rare double-rounding tie), for both stages, then the threshold.

:func:`threshold_input_maps` (everything mode, maps already at the encoder's input size) also
has a cell path for clean masks: a bilinearly interpolated value is a convex combination of its
2x2 source samples, so output pixels whose four sources are all clearly on one side need no
arithmetic, and only pixels of "mixed" cells are emulated.

The arithmetic PyTorch uses is detected once per process by comparing against
``torch.nn.functional.interpolate`` on awkward sizes; if no known formula reproduces it bit for
bit (another PyTorch build), everything here falls back to the full computation.
:func:`count_above` counts pixels above thresholds the same way (exact stability scores without
full-size logits).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .mask_kernels import compiled_two_stage_threshold
from .upsample import source_extent

__all__ = [
    "resize_error_bound",
    "threshold_resized",
    "threshold_upscaled",
    "threshold_input_maps",
    "count_above",
    "upscale_to_input",
    "emulation_available",
    "ResizePlan",
]

_U = 2.0 ** -24  # float32 unit roundoff
_TINY = 1e-30


# ------------------------------------------------------------------ exact float32 arithmetic

def _fma32(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add ``x*y + z`` rounded once, computed exactly via float64.

    ``x*y`` is exact in float64; ``s = x*y + z`` is rounded to float64 first, which can only
    change the final float32 rounding when ``s`` lands exactly on a float32 midpoint (a "tie").
    Those rare ties are resolved with the exact two-sum error of ``s``.
    """
    p = x.astype(np.float64) * y
    s = p + z
    r = s.astype(np.float32)
    # A float32 midpoint has the 29 low fraction bits of its float64 form equal to 1000...0 (normal
    # range); below 2^-125 float32 spacing is fixed and that pattern does not apply, so such
    # values are checked the long way too.
    bits = s.view(np.uint64)
    maybe = ((bits & np.uint64(0x1FFFFFFF)) == np.uint64(0x10000000)) | (
        (bits & np.uint64(0x7FF0000000000000)) < np.uint64((1023 - 125) << 52))
    if not maybe.any():
        return r
    idx = np.flatnonzero(maybe)
    sf = s.ravel()[idx]
    rf = r.ravel()[idx]
    r64 = rf.astype(np.float64)
    # s is a midpoint between r and its neighbour o iff o = 2s - r is a float32 different from r.
    o = 2.0 * sf - r64
    tie = (o != r64) & (o.astype(np.float32).astype(np.float64) == o)
    if not tie.any():
        return r
    idx, sf, rf, o = idx[tie], sf[tie], rf[tie], o[tie]
    pf = p.ravel()[idx]
    zf = np.broadcast_to(np.asarray(z, np.float64), s.shape).ravel()[idx]
    bp = sf - pf
    err = (pf - (sf - bp)) + (zf - bp)  # exact rounding error of s (two-sum)
    of = o.astype(np.float32)
    fixed = np.where(err > 0, np.maximum(rf, of), np.where(err < 0, np.minimum(rf, of), rf))
    r = r.copy().ravel()
    r[idx] = fixed
    return r.reshape(s.shape)


class _Axis:
    """Source indices and weights of one axis of an ``align_corners=False`` bilinear resize."""

    def __init__(self, in_size: int, out_size: int, ratio: Optional[float], fma: bool) -> None:
        self.in_size, self.out_size = in_size, out_size
        if in_size == out_size:
            self.i0 = np.arange(out_size, dtype=np.int64)
            self.i1 = self.i0.copy()
            self.w0 = np.ones(out_size, np.float32)
            self.w1 = np.zeros(out_size, np.float32)
        else:
            r = np.float32(ratio) if ratio is not None else np.float32(in_size) / np.float32(out_size)
            d = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
            if fma:
                real = (np.float64(r) * d.astype(np.float64) - 0.5).astype(np.float32)
            else:
                real = (r * d).astype(np.float32) - np.float32(0.5)
            real = np.where(real < 0, np.float32(0), real).astype(np.float32)
            i0 = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
            lam = np.clip(real - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
            self.i0 = i0
            self.i1 = i0 + (i0 < in_size - 1)
            self.w1 = lam
            self.w0 = (np.float32(1) - lam).astype(np.float32)
        # Runs of output positions sharing i0 (i0 is non-decreasing).
        self.counts = np.bincount(self.i0, minlength=in_size).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)


def _interp2(src: np.ndarray, ys: np.ndarray, xs: np.ndarray, ay: _Axis, ax: _Axis, fma: bool,
             row_offset: Optional[np.ndarray] = None) -> np.ndarray:
    """Values PyTorch's bilinear kernel computes at output pixels (ys, xs) of a 2-D ``src``.

    ``row_offset`` (per pixel) selects planes stacked vertically in ``src``.
    """
    y0, y1 = ay.i0[ys], ay.i1[ys]
    if row_offset is not None:
        y0, y1 = y0 + row_offset, y1 + row_offset
    x0, x1 = ax.i0[xs], ax.i1[xs]
    return _combine(src[y0, x0], src[y0, x1], src[y1, x0], src[y1, x1], ys, xs, ay, ax, fma)


def _combine(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, ys: np.ndarray, xs: np.ndarray,
             ay: _Axis, ax: _Axis, fma: bool) -> np.ndarray:
    """PyTorch's bilinear arithmetic on the 2x2 samples (a b / c d) of output pixels (ys, xs)."""
    h0, h1 = ay.w0[ys], ay.w1[ys]
    w0, w1 = ax.w0[xs], ax.w1[xs]
    if fma:
        r0 = _fma32(a, w0, (b * w1).astype(np.float32))
        r1 = _fma32(c, w0, (d * w1).astype(np.float32))
        return _fma32(r0, h0, (r1 * h1).astype(np.float32))
    r0 = (a * w0 + b * w1).astype(np.float32)
    r1 = (c * w0 + d * w1).astype(np.float32)
    return (r0 * h0 + r1 * h1).astype(np.float32)


# ------------------------------------------------------------------ which arithmetic does torch use?

_mode_lock = threading.Lock()
_mode: Optional[str] = None  # "fma", "plain" or "none"


def _detect_mode() -> str:
    global _mode
    with _mode_lock:
        if _mode is not None:
            return _mode
        rng = np.random.default_rng(1234)
        # small cases (the check runs once per process; keep its memory and time low)
        cases = [(37, 53, 100, 77), (64, 48, 29, 200), (97, 131, 411, 530), (171, 256, 300, 449)]
        found = "none"
        for fma in (True, False):
            ok = True
            for (h, w, oh, ow) in cases:
                x = (rng.standard_normal((h, w)) * 8).astype(np.float32)
                ref = F.interpolate(torch.from_numpy(x)[None, None], (oh, ow), mode="bilinear",
                                    align_corners=False)[0, 0].numpy()
                ay, ax = _Axis(h, oh, None, fma), _Axis(w, ow, None, fma)
                yy, xx = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
                got = _interp2(x, yy.ravel(), xx.ravel(), ay, ax, fma).reshape(oh, ow)
                if not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
                    ok = False
                    break
            if ok:
                found = "fma" if fma else "plain"
                break
        _mode = found
        return _mode


def emulation_available() -> bool:
    """True when this PyTorch build's bilinear arithmetic is reproduced bit for bit."""
    return _detect_mode() != "none"


# ------------------------------------------------------------------ plans

class ResizePlan:
    """Index/weight tables of the second resize ``(in_h, in_w) -> (out_h, out_w)``."""

    def __init__(self, in_hw: Tuple[int, int], out_hw: Tuple[int, int], fma: bool) -> None:
        self.in_hw, self.out_hw, self.fma = in_hw, out_hw, fma
        self.ay = _Axis(in_hw[0], out_hw[0], None, fma)
        self.ax = _Axis(in_hw[1], out_hw[1], None, fma)
        self.identity = in_hw == out_hw

    @staticmethod
    def _all4(m: np.ndarray) -> np.ndarray:
        """AND of each cell's 2x2 samples (last row/column pair with themselves, like torch)."""
        out = m.copy()
        out[..., :-1, :] &= m[..., 1:, :]
        out2 = out.copy()
        out2[..., :, :-1] &= out[..., :, 1:]
        return out2

    def classify(self, b: np.ndarray, t: float) -> Tuple[np.ndarray, np.ndarray]:
        """(sure_above, band) boolean cell maps for threshold ``t``; ``b`` is (n, in_h, in_w).

        A cell is sure when all its samples are beyond ``t`` by more than a bound on float32
        rounding (for ``t == 0`` the lower side needs no margin: sums of non-positive terms stay
        non-positive).
        """
        if t == 0.0:
            above = self._all4(b > _TINY)
            below = self._all4(b <= 0.0)
        else:
            mn, mx = self._minmax4(b)
            mag = np.maximum(np.maximum(np.abs(mn), np.abs(mx)), np.float32(abs(t)))
            margin = mag * np.float32(16 * _U) + np.float32(_TINY)
            above = mn > np.float32(t) + margin
            below = mx < np.float32(t) - margin
        return above, ~(above | below)

    @staticmethod
    def _minmax4(b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        mn = b.copy()
        mx = b.copy()
        np.minimum(mn[..., :-1, :], b[..., 1:, :], out=mn[..., :-1, :])
        np.maximum(mx[..., :-1, :], b[..., 1:, :], out=mx[..., :-1, :])
        mn2, mx2 = mn.copy(), mx.copy()
        np.minimum(mn2[..., :, :-1], mn[..., :, 1:], out=mn2[..., :, :-1])
        np.maximum(mx2[..., :, :-1], mx[..., :, 1:], out=mx2[..., :, :-1])
        return mn2, mx2

    def band_pixels(self, band: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Output coordinates (ys, xs) of all pixels whose source cell is in ``band``."""
        rr, cc = np.nonzero(band)
        if rr.size == 0:
            e = np.zeros(0, np.int64)
            return e, e
        ny, nx = self.ay.counts[rr], self.ax.counts[cc]
        n = ny * nx
        keep = n > 0
        rr, cc, ny, nx, n = rr[keep], cc[keep], ny[keep], nx[keep], n[keep]
        total = int(n.sum())
        cell = np.repeat(np.arange(rr.size), n)
        first = np.concatenate([[0], np.cumsum(n)[:-1]])
        local = np.arange(total, dtype=np.int64) - first[cell]
        nxc = nx[cell]
        ys = self.ay.starts[rr][cell] + local // nxc
        xs = self.ax.starts[cc][cell] + local % nxc
        return ys, xs

    def expand(self, cells: np.ndarray) -> np.ndarray:
        """Nearest-expand (..., in_h, in_w) cell maps to the output grid."""
        return np.take(np.take(cells, self.ax.i0, axis=-1), self.ay.i0, axis=-2)


@functools.lru_cache(maxsize=32)
def _plan(in_hw: Tuple[int, int], out_hw: Tuple[int, int], fma: bool) -> ResizePlan:
    return ResizePlan(in_hw, out_hw, fma)


# ------------------------------------------------------------------ public functions

def upscale_to_input(low_res: torch.Tensor, img_size: int, input_size: Sequence[int]) -> torch.Tensor:
    """First step of SAM's upscaling: x(img_size/h) bilinear, cropped to ``input_size``.

    Same sample positions and weights as resizing the full padded grid (see ``upsample.py``).
    """
    h, w = low_res.shape[-2:]
    factor = img_size / h
    in_h, in_w = int(input_size[0]), int(input_size[1])
    src_h, src_w = source_extent((h, w), img_size, input_size)
    return F.interpolate(
        low_res[..., :src_h, :src_w], scale_factor=factor, mode="bilinear", align_corners=False,
        recompute_scale_factor=False,
    )[..., :in_h, :in_w]


def _dense_margin(b: np.ndarray, diff_scale: float = 1.0, extent: Optional[int] = None,
                  rounding: float = 5e-6) -> float:
    """Bound on |approximate - exact| for :func:`_approx_resize` of map ``b``.

    Both OpenCV and PyTorch compute convex combinations of the same 2x2 samples. PyTorch's
    source coordinate ``fma(in/out, d + 0.5, -0.5)`` in float32 is within ``2u * in`` of the exact
    one (u = 2^-24), OpenCV's (double, cast to float32) within ``u * in``; for inputs up to 1024
    samples per axis the fractional weights therefore differ by < 1.9e-4 per axis, and by
    continuity (also when the two land on different sides of a sample) values differ by at most
    1.9e-4 * (max|dx| + max|dy|) plus about ten float32 roundings of max|b| (< 1e-6 max|b|).
    The margin below is 2.5 times that (and scales the coordinate term with larger inputs).
    ``diff_scale`` lets callers pass the low-res logits instead of ``b`` (differences shrink by
    the upscaling factor; max|b| <= max|low-res|) with ``extent``, the largest side of the map
    that is resized; ``rounding`` (times max|b|) can include the rounding of an earlier stage.
    """
    if b.size == 0:
        return _TINY
    dy = float(np.abs(np.diff(b, axis=0)).max()) if b.shape[0] > 1 else 0.0
    dx = float(np.abs(np.diff(b, axis=1)).max()) if b.shape[1] > 1 else 0.0
    scale = max(1.0, (max(b.shape) if extent is None else extent) / 1024.0)
    return 5e-4 * scale * diff_scale * (dx + dy) + rounding * float(np.abs(b).max()) + _TINY


def _cv2() -> Any:
    try:
        import cv2
    except Exception:  # pragma: no cover - opencv is a core dependency
        return None
    return cv2


def _approx_resize(b: np.ndarray, out_hw: Tuple[int, int], dst: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Fast bilinear (half-pixel centres) resize of a float32 map, or None without OpenCV."""
    cv2 = _cv2()
    if cv2 is None:
        return None
    return cv2.resize(b, (out_hw[1], out_hw[0]), dst=dst, interpolation=cv2.INTER_LINEAR)


_scratch_lock = threading.Lock()
_scratch_free: list = []  # idle (float32, bool) buffer pairs, most recently returned last
_SCRATCH_KEEP = 2  # pairs kept between calls (a 1500x2241 pair is 17 MB)
_SCRATCH_MAX_PIXELS = 1 << 24  # larger buffers are not kept


@contextlib.contextmanager
def _scratch(out_hw: Tuple[int, int]) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Float32 and bool buffers of one output size, reused across calls and threads.

    Fresh 13 MB arrays cost thousands of page faults each; a bounded free list (not one pair per
    thread: servers run requests on many threads) keeps memory flat.
    """
    with _scratch_lock:
        idx = next((i for i in range(len(_scratch_free) - 1, -1, -1) if _scratch_free[i][0].shape == out_hw), None)
        bufs = _scratch_free.pop(idx) if idx is not None else None
    if bufs is None:
        bufs = (np.empty(out_hw, np.float32), np.empty(out_hw, np.bool_))
    try:
        yield bufs
    finally:
        if bufs[0].size <= _SCRATCH_MAX_PIXELS:
            with _scratch_lock:
                _scratch_free.append(bufs)
                del _scratch_free[:-_SCRATCH_KEEP]


_helper_lock = threading.Lock()
_helper: Any = None


def _helper_pool() -> Any:
    global _helper
    with _helper_lock:
        if _helper is None:
            from concurrent.futures import ThreadPoolExecutor

            workers = max(1, min(8, torch.get_num_threads()) - 1)
            _helper = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mask-threshold")
        return _helper


def _scan(a: np.ndarray, t: float, margin: float, out: np.ndarray, lo: np.ndarray, split: bool = True) -> np.ndarray:
    """``out = a > t + margin`` (bool); returns the flat indices with ``a`` in ``(t - margin, t + margin]``.

    Values of ``a`` within ``margin`` of the exact ones decide every other pixel. ``lo`` is
    scratch. With ``split`` and more than one thread, the rows are split between this thread
    and a helper (numpy releases the GIL).
    """
    hi_t = np.float32(t) + np.float32(margin)
    lo_t = np.float32(t) - np.float32(margin)

    def part(r0: int, r1: int) -> np.ndarray:
        o, l_ = out[r0:r1], lo[r0:r1]
        np.greater(a[r0:r1], hi_t, out=o)
        np.greater(a[r0:r1], lo_t, out=l_)
        np.not_equal(l_, o, out=l_)
        return np.flatnonzero(l_) + r0 * a.shape[1]

    h = a.shape[0]
    if not split or torch.get_num_threads() < 2 or a.size < (1 << 18):
        return part(0, h)
    half = h // 2
    first = _helper_pool().submit(part, 0, half)
    second = part(half, h)
    return np.concatenate([first.result(), second])


# Above this fraction of output pixels in mixed cells, the dense path (OpenCV resize + exact
# recomputation of near-threshold pixels, ~1 ns per pixel) is cheaper than emulating every pixel
# of the mixed cells (~100 ns each).
_DENSE_BAND_FRACTION = 0.005


def _low_res_crops(low_res: torch.Tensor, img_size: int, in_hw: Tuple[int, int]) -> np.ndarray:
    """(k, sh, sw) contiguous float32: the low-res rows/columns the first resize reads, per map."""
    h, w = low_res.shape[-2:]
    src_h, src_w = source_extent((h, w), img_size, in_hw)
    return np.ascontiguousarray(low_res.float().reshape(-1, h, w)[:, :src_h, :src_w].numpy())


def _cv2_two_stage(crop: np.ndarray, factor: int, in_hw: Tuple[int, int], out_hw: Tuple[int, int],
                   dst: np.ndarray) -> None:
    """SAM's two bilinear resizes of one low-res crop by OpenCV (x``factor``, crop to ``in_hw``,
    then to ``out_hw``), into ``dst``."""
    cv2 = _cv2()
    sh, sw = crop.shape
    b = cv2.resize(crop, (sw * factor, sh * factor), interpolation=cv2.INTER_LINEAR)[:in_hw[0], :in_hw[1]]
    _approx_resize(b, out_hw, dst=dst)


def _two_stage_margin(crop: np.ndarray, factor: int, in_hw: Tuple[int, int]) -> float:
    """Certified bound on |:func:`_cv2_two_stage` - PyTorch's two resizes| for one crop: the
    second resize's :func:`_dense_margin` (differences shrink by ``factor``) plus the first
    stage's rounding (1e-5 max|crop|; see :func:`_threshold_two_stage`)."""
    return _dense_margin(crop, 1.01 / factor, max(in_hw), rounding=5e-6 + 1e-5)


def threshold_resized(
    low_res: torch.Tensor,
    img_size: int,
    input_size: Sequence[int],
    original_size: Sequence[int],
    threshold: float = 0.0,
) -> torch.Tensor:
    """``upscale_logits_reference(low_res, ...) > threshold``, fast.

    ``low_res`` is (B, C, h, w); returns a bool tensor (B, C, *original_size). Pixels can differ
    from the reference only where the reference value is within :func:`resize_error_bound` of
    ``threshold``. Uses the compiled two-stage loop of ``mask_kernels`` where it could be built,
    else OpenCV's resizes; falls back to :func:`threshold_upscaled` (exact) where neither shortcut
    applies (a non-integer first factor, no second resize, neither the loop nor OpenCV).
    """
    out_hw = (int(original_size[0]), int(original_size[1]))
    in_hw = (int(input_size[0]), int(input_size[1]))
    factor = img_size / low_res.shape[-2]
    if low_res.numel() == 0 or in_hw == out_hw or factor != int(factor):
        return threshold_upscaled(low_res, img_size, input_size, original_size, threshold)
    crops = _low_res_crops(low_res, img_size, in_hw)
    out = np.empty((crops.shape[0], *out_hw), dtype=np.bool_)
    t = np.float32(threshold)
    kernel = compiled_two_stage_threshold()
    if kernel is not None and _kernel_two_stage(kernel, crops, int(factor), in_hw, out_hw, t, out) is not None:
        return torch.from_numpy(out).reshape(*low_res.shape[:-2], *out_hw)
    if _cv2() is None:
        return threshold_upscaled(low_res, img_size, input_size, original_size, threshold)

    def one(i: int) -> None:
        with _scratch(out_hw) as (a, _):
            _cv2_two_stage(crops[i], int(factor), in_hw, out_hw, a)
            np.greater(a, t, out=out[i])

    # Maps spread over threads: the comparison is single-threaded and OpenCV's resizes leave
    # cores idle between rows; measured ~2 ms less for a 3-mask click on a 1500x2241 photo.
    _parallel(one, range(crops.shape[0]))
    return torch.from_numpy(out).reshape(*low_res.shape[:-2], *out_hw)


def _composite_taps(first: _Axis, second: _Axis) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """One axis of both resizes as one linear map: per output sample the first low-res index
    ``base`` and the weights of ``base + 0..2`` ((n, 3) float32), from PyTorch's indices and
    weights (products and sums in float64, rounded once). None if a sample would need more taps."""
    base = first.i0[second.i0]
    w = np.zeros((second.i0.size, 3), np.float64)
    rows = np.arange(second.i0.size)
    for i2, w2 in ((second.i0, second.w0), (second.i1, second.w1)):
        for i1, w1 in ((first.i0[i2], first.w0[i2]), (first.i1[i2], first.w1[i2])):
            off = i1 - base
            if off.size and (off.min() < 0 or off.max() > 2):
                return None
            np.add.at(w, (rows, off), w2.astype(np.float64) * w1.astype(np.float64))
    return base.astype(np.int64), w.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _composite_plan(src_hw: Tuple[int, int], factor: int, in_hw: Tuple[int, int], out_hw: Tuple[int, int],
                    fma: bool) -> Optional[Tuple[np.ndarray, ...]]:
    """``(by, wy, bx, wx)``: both axes' composite taps (:func:`_composite_taps`), or None."""
    first_y, first_x = _stage1_axes(src_hw[0], src_hw[1], factor, fma)
    second = _plan(in_hw, out_hw, fma)
    ty, tx = _composite_taps(first_y, second.ay), _composite_taps(first_x, second.ax)
    if ty is None or tx is None:
        return None
    return (*ty, *tx)


def _f32_outward(x: float, up: bool) -> np.float32:
    """``x`` rounded to float32 away from the inside of an interval (up for upper ends)."""
    r = np.float32(x)
    if (up and float(r) < x) or (not up and float(r) > x):
        r = np.nextafter(r, np.float32(np.inf if up else -np.inf))
    return r


def _kernel_two_stage(kernel: Any, crops: np.ndarray, factor: int, in_hw: Tuple[int, int],
                      out_hw: Tuple[int, int], t: np.float32, out: np.ndarray,
                      margins: Optional[Sequence[float]] = None) -> Optional[np.ndarray]:
    """Both resizes and the threshold by the compiled loop of ``mask_kernels``, rows split over
    this thread and the helpers, into ``out`` ((k, out_h, out_w), bool or uint8).

    Without ``margins`` the result is ``value > t``; with a margin per map, pixels within it of
    ``t`` are marked 2 (undecided). Returns the undecided count of every row, (k, out_h), or
    None when the composite taps do not apply.
    """
    taps = _composite_plan(tuple(crops.shape[1:]), factor, in_hw, out_hw, _detect_mode() != "plain")
    if taps is None:
        return None
    out8 = out.view(np.uint8)
    if margins is None:
        bounds = [(t, t)] * len(crops)
    else:  # float32 ends rounded outwards, so "sure" stays sure
        bounds = [(_f32_outward(float(t) - m, False), _f32_outward(float(t) + m, True)) for m in margins]
    padded = np.pad(crops, ((0, 0), (0, 2), (0, 2)), mode="edge")  # taps past the edge have weight 0
    parts = max(1, torch.get_num_threads())
    edges = np.linspace(0, out_hw[0], parts + 1).astype(np.int64)
    jobs = [(i, int(edges[j]), int(edges[j + 1])) for i in range(len(crops)) for j in range(parts)
            if edges[j + 1] > edges[j]]
    rows = np.zeros((len(crops), out_hw[0]), np.int64)  # jobs write disjoint rows
    _parallel(lambda job: kernel(padded[job[0]], *taps, *bounds[job[0]], out8[job[0]], rows[job[0]], job[1], job[2]),
              jobs)
    return rows


def resize_error_bound(low_res: torch.Tensor, img_size: int, input_size: Sequence[int]) -> float:
    """Certified bound on |fast two-stage values - PyTorch's| for each map of ``low_res`` (the
    largest over its maps): where :func:`threshold_resized` may differ from the reference.

    Derived for OpenCV's resizes (:func:`_two_stage_margin`). The compiled loop's values are
    closer: see :func:`_composite_margin` (about 20 float32 roundings of max|crop| in all,
    1.2e-6 max|crop|, under this bound's own rounding term of 1.5e-5 max|crop|)."""
    in_hw = (int(input_size[0]), int(input_size[1]))
    factor = img_size / low_res.shape[-2]
    return max((_two_stage_margin(c, factor, in_hw) for c in _low_res_crops(low_res, img_size, in_hw)), default=_TINY)


def threshold_upscaled(
    low_res: torch.Tensor,
    img_size: int,
    input_size: Sequence[int],
    original_size: Sequence[int],
    threshold: float = 0.0,
) -> torch.Tensor:
    """``upscale_logits_reference(low_res, ...) > threshold``, bit for bit, computed sparsely.

    ``low_res`` is (B, C, h, w); returns a bool tensor (B, C, *original_size). "Bit for bit"
    refers to PyTorch's kernel applied to each mask plane (with one thread and several planes
    PyTorch itself switches to a loop whose roundings differ in the last bit).
    """
    out_hw = (int(original_size[0]), int(original_size[1]))
    if low_res.numel() == 0:
        return torch.zeros((*low_res.shape[:-2], *out_hw), dtype=torch.bool)
    low_res = low_res.float()
    mode = _detect_mode()
    factor = img_size / low_res.shape[-2]
    in_hw = (int(input_size[0]), int(input_size[1]))
    if mode != "none" and in_hw != out_hw and factor == int(factor):
        f = int(factor)
        crops = _low_res_crops(low_res, img_size, in_hw)
        src_h, src_w = crops.shape[-2:]
        out = np.empty((crops.shape[0], *out_hw), dtype=np.uint8)
        plan = _plan(in_hw, out_hw, mode == "fma")
        if _threshold_two_stage(crops, f, plan, _stage1_axes(src_h, src_w, f, mode == "fma"), threshold, out):
            return torch.from_numpy(out.view(np.bool_)).reshape(*low_res.shape[:-2], *out_hw)
    return threshold_input_maps(upscale_to_input(low_res, img_size, input_size), original_size, threshold)


@functools.lru_cache(maxsize=8)
def _stage1_axes(src_h: int, src_w: int, factor: int, fma: bool) -> Tuple[_Axis, _Axis]:
    """Axes of the integer-factor first resize (``scale_factor=factor``: ratio exactly 1/factor)."""
    return (_Axis(src_h, src_h * factor, 1.0 / factor, fma), _Axis(src_w, src_w * factor, 1.0 / factor, fma))


def _threshold_two_stage(crops: np.ndarray, factor: int, plan: ResizePlan, stage1: Tuple[_Axis, _Axis],
                         t: float, out: np.ndarray) -> bool:
    """Fast values for both resizes, PyTorch's exact arithmetic where they could decide the
    threshold either way (module docstring).

    ``crops`` (k, sh, sw) hold the low-res rows/columns the first resize reads. The fast values
    come from the compiled loop (:func:`_composite_margin` bounds them) or, without it, from
    OpenCV (:func:`_two_stage_margin`). Pixels within that bound of ``t`` get PyTorch's exact
    arithmetic for both stages. Writes the 0/1 masks into ``out`` (k, out_h, out_w) uint8 (which
    must be writable in place); False when neither fast path is available.
    """
    kernel = compiled_two_stage_threshold()
    if kernel is not None:
        margins = [_composite_margin(c) for c in crops]
        rows = _kernel_two_stage(kernel, crops, factor, plan.in_hw, plan.out_hw, np.float32(t), out, margins)
        if rows is not None:
            _exact_at(crops, plan, stage1, [_undecided(out[i], rows[i]) for i in range(len(crops))], t, out)
            return True
    if _cv2() is None:
        return False
    hits = []
    with _scratch(plan.out_hw) as (a, lo):
        for i in range(crops.shape[0]):
            _cv2_two_stage(crops[i], factor, plan.in_hw, plan.out_hw, a)
            hits.append(_scan(a, t, _two_stage_margin(crops[i], factor, plan.in_hw), out[i].view(np.bool_), lo))
    _exact_at(crops, plan, stage1, hits, t, out)
    return True


def _undecided(plane: np.ndarray, row_counts: np.ndarray) -> np.ndarray:
    """Flat indices of the pixels marked 2 in ``plane``, reading only rows that have some."""
    rows = np.flatnonzero(row_counts)
    if rows.size == 0:
        return np.zeros(0, np.int64)
    r, c = np.nonzero(plane[rows] == 2)
    return rows[r] * plane.shape[1] + c


def _composite_margin(crop: np.ndarray) -> float:
    """Certified bound on |compiled loop's value - PyTorch's| for one crop.

    Both compute convex combinations (non-negative weights summing to one), so every rounding
    is relative to at most max|crop|. PyTorch's two stages round ~4 times each, plus the first
    stage's error carried through the second (~8). The loop's taps are PyTorch's weights
    multiplied in float64 and rounded once (1 each way), and its two three-term sums round ~5
    times each, the first sum's error carried through the second (~12). About 20 roundings in
    all; the margin is 64 (measured differences: ~3).
    """
    return 64 * _U * float(np.abs(crop).max()) + _TINY if crop.size else _TINY


def _exact_at(crops: np.ndarray, plan: ResizePlan, stage1: Tuple[_Axis, _Axis], hits: Sequence[np.ndarray],
              t: float, out: np.ndarray) -> None:
    """Set ``out[i].flat[hits[i]]`` to PyTorch's exact ``value > t`` (both stages emulated)."""
    sizes = [h.size for h in hits]
    if not sum(sizes):
        return
    k, sh, sw = crops.shape
    idx = np.concatenate(hits)
    plane = np.repeat(np.arange(k), sizes)
    ys, xs = np.divmod(idx, plan.out_hw[1])
    ay, ax = plan.ay, plan.ax
    # the four second-stage samples of every pixel, each computed like PyTorch's first stage
    cy = np.concatenate([ay.i0[ys], ay.i0[ys], ay.i1[ys], ay.i1[ys]])
    cx = np.concatenate([ax.i0[xs], ax.i1[xs], ax.i0[xs], ax.i1[xs]])
    corners = _interp2(crops.reshape(k * sh, sw), cy, cx, stage1[0], stage1[1], plan.fma,
                       row_offset=np.tile(plane * sh, 4))
    c00, c01, c10, c11 = np.split(corners, 4)
    exact = _combine(c00, c01, c10, c11, ys, xs, ay, ax, plan.fma)
    out.reshape(k, -1)[plane, idx] = exact > np.float32(t)


def _parallel(fn: Any, items: Any) -> None:
    """Run ``fn`` over items on this thread and the helper threads (numpy/OpenCV release the GIL)."""
    items = list(items)
    n = min(len(items), max(1, torch.get_num_threads()))
    if n <= 1:
        for it in items:
            fn(it)
        return
    pool = _helper_pool()
    futures = [pool.submit(lambda part=items[k::n]: [fn(it) for it in part]) for k in range(1, n)]
    for it in items[0::n]:
        fn(it)
    for f in futures:
        f.result()


def _threshold_dense(b: np.ndarray, plan: ResizePlan, t: float, out: np.ndarray, split: bool = True) -> bool:
    """OpenCV's resize, then exact values for pixels within the certified bound of ``t``.

    Writes 0/1 into ``out`` (uint8, output size); False without OpenCV.
    """
    if _cv2() is None:
        return False
    with _scratch(plan.out_hw) as (a, lo):
        _approx_resize(b, plan.out_hw, dst=a)
        idx = _scan(a, t, _dense_margin(b), out.view(np.bool_), lo, split)
    if idx.size:
        ys, xs = np.divmod(idx, plan.out_hw[1])
        out.ravel()[idx] = _interp2(b, ys, xs, plan.ay, plan.ax, plan.fma) > t
    return True


def threshold_input_maps(big: torch.Tensor, original_size: Sequence[int], threshold: float = 0.0) -> torch.Tensor:
    """``resize(big, original_size) > threshold`` bit for bit (second half of
    :func:`threshold_upscaled`); ``big`` is (..., in_h, in_w) from :func:`upscale_to_input`."""
    out_hw = (int(original_size[0]), int(original_size[1]))
    in_hw = (int(big.shape[-2]), int(big.shape[-1]))
    if big.numel() == 0:
        return torch.zeros((*big.shape[:-2], *out_hw), dtype=torch.bool)
    if in_hw == out_hw:
        return big > threshold
    mode = _detect_mode()
    if mode == "none":
        flat = big.reshape(-1, 1, *in_hw)
        return (F.interpolate(flat, out_hw, mode="bilinear", align_corners=False) > threshold).reshape(
            *big.shape[:-2], *out_hw)
    plan = _plan(in_hw, out_hw, mode == "fma")
    lead = big.shape[:-2]
    srcs = big.reshape(-1, *in_hw).float().contiguous().numpy()
    out = np.empty((srcs.shape[0], *out_hw), dtype=np.uint8)
    n = srcs.shape[0]
    # several maps: one per thread; a single map: the dense path splits its own rows
    _parallel(lambda i: _threshold_one(srcs[i], plan, threshold, out[i], split=n == 1), range(n))
    return torch.from_numpy(out.view(np.bool_)).reshape(*lead, *out_hw)


def _threshold_one(b: np.ndarray, plan: ResizePlan, t: float, out: np.ndarray, split: bool = True) -> None:
    """One map into ``out``: the cell path for clean masks, the dense path when many pixels
    lie in mixed cells."""
    above, band = plan.classify(b[None], t)
    band_px = float(plan.ay.counts @ band[0].astype(np.float64) @ plan.ax.counts) if band.any() else 0.0
    if band_px > _DENSE_BAND_FRACTION * out.size and _threshold_dense(b, plan, t, out, split):
        return
    out[...] = plan.expand(above[0].view(np.uint8))
    if band_px:
        ys, xs = plan.band_pixels(band[0])
        out[ys, xs] = _interp2(b, ys, xs, plan.ay, plan.ax, plan.fma) > t


def count_above(
    big: torch.Tensor, original_size: Sequence[int], thresholds: Sequence[float]
) -> torch.Tensor:
    """Exact ``(resize(big, original_size) > t).sum()`` per map and threshold.

    ``big`` is (n, in_h, in_w) (the output of :func:`upscale_to_input`); returns int64 (n, len(t)).
    """
    out_hw = (int(original_size[0]), int(original_size[1]))
    n = big.shape[0]
    res = torch.zeros((n, len(thresholds)), dtype=torch.int64)
    if n == 0:
        return res
    in_hw = (int(big.shape[-2]), int(big.shape[-1]))
    if in_hw == out_hw:
        flat = big.reshape(n, -1).float().numpy()
        for j, t in enumerate(thresholds):
            res[:, j] = torch.from_numpy(np.count_nonzero(flat > np.float32(t), axis=1).astype(np.int64))
        return res
    mode = _detect_mode()
    if mode == "none":
        full = F.interpolate(big[:, None].float(), out_hw, mode="bilinear", align_corners=False)[:, 0]
        for j, t in enumerate(thresholds):
            res[:, j] = torch.count_nonzero((full > t).flatten(1), dim=1)
        return res
    plan = _plan(in_hw, out_hw, mode == "fma")
    srcs = big.float().contiguous().numpy()
    ny = plan.ay.counts.astype(np.float64)
    nx = plan.ax.counts.astype(np.float64)
    total = out_hw[0] * out_hw[1]
    sure = np.empty(out_hw, np.bool_)
    with _scratch(out_hw) as (a, lo):
        for i in range(n):
            b = srcs[i]
            margin: Optional[float] = None  # set once ``a`` holds OpenCV's resize of ``b``
            for j, t in enumerate(thresholds):
                above, band = plan.classify(b[None], t)
                band_px = float(ny @ band[0].astype(np.float64) @ nx)
                if band_px > _DENSE_BAND_FRACTION * total and _cv2() is not None:
                    if margin is None:
                        _approx_resize(b, out_hw, dst=a)
                        margin = _dense_margin(b)
                    ys, xs = np.divmod(_scan(a, t, margin, sure, lo), out_hw[1])
                    count = int(np.count_nonzero(sure))
                else:
                    count = int(round(float(ny @ above[0].astype(np.float64) @ nx)))
                    ys, xs = plan.band_pixels(band[0]) if band_px else (np.zeros(0, np.int64),) * 2
                if ys.size:  # pixels left undecided: exact values
                    count += int(np.count_nonzero(_interp2(b, ys, xs, plan.ay, plan.ax, plan.fma) > t))
                res[i, j] = count
    return res
