"""Thresholded mask upsampling that is bit-identical to SAM's, without computing every logit.

SAM turns 256x256 logits into a full-size mask by two bilinear resizes (to the padded encoder
input, crop, to the original size) and a threshold. A bilinearly interpolated value is a convex
combination of its 2x2 source samples, so an output pixel whose four sources are all clearly
above (or all at/below) the threshold has that side of it without being computed. Only pixels in
"mixed" cells along mask boundaries need their exact value.

:func:`threshold_upscaled` does exactly that for the second (largest) resize:

1. The first resize (x4) is done by ``torch`` as in :func:`upsample.upscale_logits`.
2. For every source cell of the second resize, min/max of its 2x2 samples decide: all above
   ``threshold + margin`` -> True, all below ``threshold - margin`` -> False (for threshold 0 no
   margin is needed on the lower side), otherwise "band". ``margin`` bounds float32 rounding.
3. Sure cells are expanded to full size with two gathers of a uint8 map.
4. Band pixels get the exact value PyTorch's CPU kernel would compute: the same float32 index
   and weight formulas and the same fused multiply-adds (emulated exactly in float64 with a
   correction for the rare double-rounding tie), then the threshold.

Noisy masks (e.g. from random weights) can have 10-30% of pixels in mixed cells; then a dense
path is cheaper: OpenCV's bilinear resize (the same convex combinations, slightly different
float32 weights) with a certified bound on its difference from PyTorch's values, and the exact
emulation only for pixels within that bound of the threshold.

The arithmetic PyTorch uses is detected once per process by comparing against
``torch.nn.functional.interpolate`` on awkward sizes; if no known formula reproduces it bit for
bit (another PyTorch build), everything here falls back to the full computation.
:func:`count_above` counts pixels above thresholds the same way (exact stability scores without
full-size logits).
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
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
    r64 = r.astype(np.float64)
    # s is a midpoint between r and its neighbour o iff o = 2s - r is a float32 different from r.
    o = 2.0 * s - r64
    cand = (o != r64) & (o.astype(np.float32).astype(np.float64) == o)
    if np.any(cand):
        idx = np.nonzero(cand.ravel())[0]
        pf = p.ravel()[idx]
        zf = np.broadcast_to(np.asarray(z, np.float64), s.shape).ravel()[idx]
        sf = s.ravel()[idx]
        bp = sf - pf
        err = (pf - (sf - bp)) + (zf - bp)  # exact rounding error of s (two-sum)
        rf = r.ravel()[idx]
        of = o.ravel()[idx].astype(np.float32)
        fixed = np.where(err > 0, np.maximum(rf, of), np.where(err < 0, np.minimum(rf, of), rf))
        r = r.copy().ravel()
        r[idx] = fixed
        r = r.reshape(s.shape)
    return r


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


def _interp2(src: np.ndarray, ys: np.ndarray, xs: np.ndarray, ay: _Axis, ax: _Axis, fma: bool) -> np.ndarray:
    """Values PyTorch's bilinear kernel computes at output pixels (ys, xs) of a 2-D ``src``."""
    y0, y1 = ay.i0[ys], ay.i1[ys]
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
    src_h = min(h, math.ceil(in_h / factor) + 1)
    src_w = min(w, math.ceil(in_w / factor) + 1)
    return F.interpolate(
        low_res[..., :src_h, :src_w], scale_factor=factor, mode="bilinear", align_corners=False,
        recompute_scale_factor=False,
    )[..., :in_h, :in_w]


def _dense_margin(b: np.ndarray, diff_scale: float = 1.0) -> float:
    """Bound on |approximate - exact| for :func:`_approx_resize` of map ``b``.

    Both OpenCV and PyTorch compute convex combinations of the same 2x2 samples. PyTorch's
    source coordinate ``fma(in/out, d + 0.5, -0.5)`` in float32 is within ``2u * in`` of the exact
    one (u = 2^-24), OpenCV's (double, cast to float32) within ``u * in``; for inputs up to 1024
    samples per axis the fractional weights therefore differ by < 1.9e-4 per axis, and by
    continuity (also when the two land on different sides of a sample) values differ by at most
    1.9e-4 * (max|dx| + max|dy|) plus about ten float32 roundings of max|b| (< 1e-6 max|b|).
    The margin below is 2.5 times that (and scales the coordinate term with larger inputs).
    ``diff_scale`` lets callers pass the low-res logits instead of ``b`` (differences shrink by
    the upscaling factor; max|b| <= max|low-res|).
    """
    if b.size == 0:
        return _TINY
    dy = float(np.abs(np.diff(b, axis=0)).max()) if b.shape[0] > 1 else 0.0
    dx = float(np.abs(np.diff(b, axis=1)).max()) if b.shape[1] > 1 else 0.0
    scale = max(1.0, max(b.shape) / 1024.0)
    return 5e-4 * scale * diff_scale * (dx + dy) + 5e-6 * float(np.abs(b).max()) + _TINY


def _approx_resize(b: np.ndarray, out_hw: Tuple[int, int]) -> Optional[np.ndarray]:
    """Fast bilinear (half-pixel centres) resize of a float32 map, or None without OpenCV."""
    try:
        import cv2
    except Exception:  # pragma: no cover - opencv is a core dependency
        return None
    return cv2.resize(b, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)


def _uncertain(a: np.ndarray, t: float, margin: float) -> np.ndarray:
    """Flat indices where ``a`` is within ``margin`` of ``t``."""
    lo, hi = np.float32(t) - np.float32(margin), np.float32(t) + np.float32(margin)
    return np.flatnonzero((a >= lo) & (a <= hi))


# Above this fraction of output pixels in mixed cells (noisy masks, e.g. random weights), the
# dense path (OpenCV resize + exact recomputation of near-threshold pixels) is cheaper.
_DENSE_BAND_FRACTION = 0.04


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
    h, w = low_res.shape[-2:]
    factor = img_size / h
    in_hw = (int(input_size[0]), int(input_size[1]))
    if mode == "none" or in_hw == out_hw or factor != int(factor):
        return threshold_input_maps(upscale_to_input(low_res, img_size, input_size), original_size, threshold)
    src_h = min(h, math.ceil(in_hw[0] / factor) + 1)
    src_w = min(w, math.ceil(in_hw[1] / factor) + 1)
    lead = low_res.shape[:-2]
    flat = low_res.reshape(-1, h, w)
    crops = flat[:, :src_h, :src_w].numpy()
    noisy = [_noisy(pl, threshold) for pl in crops]
    # Bound for the dense path from the low-res logits: the x``factor`` resize is a convex
    # combination (max|b| <= max|low|) whose neighbouring outputs differ by at most
    # max|neighbouring low-res difference| / factor.
    margins = [_dense_margin(pl, 1.01 / factor) if n else None for pl, n in zip(crops, noisy)]
    big = upscale_to_input(flat[:, None], img_size, in_hw)[:, 0]
    return threshold_input_maps(big, original_size, threshold, dense_margins=margins).reshape(*lead, *out_hw)


def _parallel(fn: Any, items: Any) -> None:
    """Run ``fn`` over items on up to torch's intra-op thread count (numpy/OpenCV release the GIL)."""
    items = list(items)
    n = min(len(items), max(1, torch.get_num_threads()))
    if n <= 1:
        for it in items:
            fn(it)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n) as pool:
        for _ in pool.map(fn, items):
            pass


def _noisy(low: np.ndarray, t: float) -> bool:
    """True when many low-res 2x2 cells straddle the threshold (mask boundaries everywhere)."""
    if low.shape[0] < 2 or low.shape[1] < 2:
        return False
    pos = low > t
    mixed = (pos[:-1, :-1] != pos[1:, :-1]) | (pos[:-1, :-1] != pos[:-1, 1:]) | (pos[:-1, :-1] != pos[1:, 1:])
    return float(mixed.mean()) > _NOISY_LOWRES_FRACTION


# Above this share of mixed low-res cells the dense two-stage path is cheaper than cell classification.
_NOISY_LOWRES_FRACTION = 0.02


def _threshold_dense(b: np.ndarray, plan: ResizePlan, t: float, margin: Optional[float] = None) -> Optional[np.ndarray]:
    """OpenCV's resize, then exact values for pixels within the certified bound of ``t``."""
    a = _approx_resize(b, plan.out_hw)
    if a is None:
        return None
    res = (a > np.float32(t)).view(np.uint8)
    idx = _uncertain(a, t, _dense_margin(b) if margin is None else margin)
    if idx.size:
        ys, xs = np.divmod(idx, plan.out_hw[1])
        res.ravel()[idx] = _interp2(b, ys, xs, plan.ay, plan.ax, plan.fma) > t
    return res


def threshold_input_maps(big: torch.Tensor, original_size: Sequence[int], threshold: float = 0.0, *,
                         dense_margins: Optional[Sequence[Optional[float]]] = None) -> torch.Tensor:
    """``resize(big, original_size) > threshold`` bit for bit (second half of
    :func:`threshold_upscaled`); ``big`` is (..., in_h, in_w) from :func:`upscale_to_input`.

    ``dense_margins`` (one per map, optional): a number sends that map straight to the dense
    path with this certified margin (noisy masks); None lets the map's cells decide."""
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
    total = out_hw[0] * out_hw[1]

    def work(i: int) -> None:
        margin = dense_margins[i] if dense_margins is not None else None
        out[i] = _threshold_one(srcs[i], plan, threshold, total, dense=margin is not None, margin=margin)

    _parallel(work, range(srcs.shape[0]))
    return torch.from_numpy(out.view(np.bool_)).reshape(*lead, *out_hw)


def _threshold_one(b: np.ndarray, plan: ResizePlan, t: float, total: int, dense: bool = False,
                   margin: Optional[float] = None) -> np.ndarray:
    """One map: the cell path for clean masks, the dense path for noisy ones (``dense``, or
    when the cells say so)."""
    if dense:
        res = _threshold_dense(b, plan, t, margin)
        if res is not None:
            return res
    above, band = plan.classify(b[None], t)
    band_px = float(plan.ay.counts @ band[0].astype(np.float64) @ plan.ax.counts) if band.any() else 0.0
    if band_px > _DENSE_BAND_FRACTION * total:
        res = _threshold_dense(b, plan, t)
        if res is not None:
            return res
    full = plan.expand(above[0].view(np.uint8))
    if band_px:
        ys, xs = plan.band_pixels(band[0])
        full[ys, xs] = _interp2(b, ys, xs, plan.ay, plan.ax, plan.fma) > t
    return full


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
    for i in range(n):
        b = srcs[i]
        dense: Optional[np.ndarray] = None
        margin = None
        for j, t in enumerate(thresholds):
            above, band = plan.classify(b[None], t)
            band_px = float(ny @ band[0].astype(np.float64) @ nx)
            if band_px > _DENSE_BAND_FRACTION * total:
                if dense is None:
                    dense = _approx_resize(b, out_hw)
                    margin = _dense_margin(b)
                if dense is not None:
                    count = int(np.count_nonzero(dense > np.float32(t)))
                    idx = _uncertain(dense, t, margin)
                    if idx.size:
                        ys, xs = np.divmod(idx, out_hw[1])
                        exact = _interp2(b, ys, xs, plan.ay, plan.ax, plan.fma) > t
                        count += int(np.count_nonzero(exact)) - int(np.count_nonzero(dense.ravel()[idx] > np.float32(t)))
                    res[i, j] = count
                    continue
            count = int(round(float(ny @ above[0].astype(np.float64) @ nx)))
            if band_px:
                ys, xs = plan.band_pixels(band[0])
                count += int(np.count_nonzero(_interp2(b, ys, xs, plan.ay, plan.ax, plan.fma) > t))
            res[i, j] = count
    return res
