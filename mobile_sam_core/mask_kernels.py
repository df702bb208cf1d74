"""A compiled loop for the mask step: SAM's two bilinear resizes and the threshold in one pass.

SAM turns each 256x256 logit map into a full-size mask by a x4 bilinear resize, a crop, a second
bilinear resize and a threshold. Along each axis the two resizes together are one linear map in
which every output sample mixes at most three consecutive low-res samples (``mask_upsample``
builds these composite taps from PyTorch's own indices and weights). The loop
(``kernels/two_stage_threshold.cpp``) applies them straight to the low-res crop: the horizontal
taps once per low-res row (a 1500x2241 mask needs 172 such rows), then three vertical taps per
output pixel, writing only the mask. Done with OpenCV instead, each mask costs a full-size
float32 map (13 MB for 1500x2241) written and read back, plus the first resize's map.

The loop's values are :func:`composite_values` exactly (same float32 operations in the same
order, no fused multiply-adds) and differ from PyTorch's only by float32 rounding (about 2e-7 of
the largest logit, measured; see ``mask_upsample.resize_error_bound`` for the certified bound).

The loop is built by :mod:`~mobile_sam_core.native` with the system's C++ compiler, like the
encoder's attention kernel. :func:`compiled_two_stage_threshold` returns None without a compiler,
when the loop fails its self-check, or when ``MOBILE_SAM_NO_COMPILED_KERNELS`` is set; callers then
keep the OpenCV path. A call releases the GIL (ctypes); callers split the rows over their threads.
"""

from __future__ import annotations

import ctypes
from typing import Callable, Optional

import numpy as np

from .native import load_wrapped

__all__ = ["TwoStageThreshold", "compiled_two_stage_threshold", "composite_values"]

# No fused multiply-adds: the loop must round exactly like composite_values (module docstring).
_FLAGS = ("-ffp-contract=off",)


class TwoStageThreshold:
    """The loop of ``kernels/two_stage_threshold.cpp`` behind a NumPy signature."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        fn = lib.msc_two_stage_threshold
        p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        fn.argtypes = [p, i64, p, p, p, p, i64, f32, f32, p, i64, p, i64, i64]
        fn.restype = i64
        self._fn = fn

    def __call__(self, src: np.ndarray, by: np.ndarray, wy: np.ndarray, bx: np.ndarray, wx: np.ndarray,
                 lo: float, hi: float, out: np.ndarray, row_undecided: np.ndarray, ya: int, yb: int) -> int:
        """Rows ``ya:yb`` of ``out`` (uint8 (out_h, out_w)) from the composite resize ``v`` of ``src``:
        1 where ``v > hi``, 2 where ``lo < v <= hi`` (undecided), else 0. Writes the number of
        undecided pixels of each row to ``row_undecided[y]`` and returns their total; with
        ``lo == hi == t`` there are none and ``out`` is ``v > t``.

        Output row ``y`` mixes ``src`` rows ``by[y] + k`` with weights ``wy[y, k]`` (k = 0..2), output
        column ``x`` columns ``bx[x] + k`` with ``wx[x, k]``; ``src`` (float32) is padded by two rows
        and columns so every tap is in range. ``lo <= hi``.
        """
        ya, yb = int(ya), int(yb)
        self._check(src, by, wy, bx, wx, out, row_undecided, ya, yb)
        if not lo <= hi:
            raise ValueError(f"lo ({lo}) must not exceed hi ({hi})")
        n = int(self._fn(src.ctypes.data, src.strides[0] // 4, by.ctypes.data, wy.ctypes.data, bx.ctypes.data,
                         wx.ctypes.data, out.shape[1], lo, hi, out.ctypes.data, out.strides[0],
                         row_undecided.ctypes.data, ya, yb))
        if n < 0:
            raise MemoryError("the mask loop could not allocate its row buffer")
        return n

    @staticmethod
    def _check(src: np.ndarray, by: np.ndarray, wy: np.ndarray, bx: np.ndarray, wx: np.ndarray, out: np.ndarray,
               row_undecided: np.ndarray, ya: int, yb: int) -> None:
        """Layouts and index ranges: the C loop reads and writes without bounds checks."""
        def rows_ok(a: np.ndarray, dtype: type, ndim: int) -> bool:  # rows of contiguous elements
            return a.dtype == dtype and a.ndim == ndim and a.strides[-1] == a.itemsize and a.strides[0] >= 0

        if not (rows_ok(src, np.float32, 2) and rows_ok(out, np.uint8, 2) and src.strides[0] % 4 == 0):
            raise ValueError("src must be 2-D float32 and out 2-D uint8, each with contiguous rows")
        for a, dtype in ((by, np.int64), (bx, np.int64), (row_undecided, np.int64)):
            if not (a.dtype == dtype and a.ndim == 1 and a.flags.c_contiguous):
                raise ValueError("by, bx and row_undecided must be contiguous 1-D int64 arrays")
        for w, n in ((wy, by.size), (wx, bx.size)):
            if not (w.dtype == np.float32 and w.shape == (n, 3) and w.flags.c_contiguous):
                raise ValueError("wy and wx must be contiguous float32 arrays of shape (taps, 3)")
        if out.shape != (by.size, bx.size) or row_undecided.size < by.size or not 0 <= ya <= yb <= by.size:
            raise ValueError(f"out {out.shape} must be (len(by), len(bx)) = ({by.size}, {bx.size}) and "
                             f"0 <= ya <= yb <= {by.size} (got {ya}, {yb})")
        if yb > ya:
            ys = by[ya:yb]
            if ys[0] < 0 or ys[-1] + 3 > src.shape[0] or np.any(ys[1:] < ys[:-1]):
                raise ValueError("vertical taps must not decrease and must stay inside src")
            if bx.size and (bx.min() < 0 or bx.max() + 3 > src.shape[1]):
                raise ValueError("horizontal taps must stay inside src")


def compiled_two_stage_threshold() -> Optional[TwoStageThreshold]:
    """The compiled loop (module docstring), or None where it is unavailable.

    Builds on first use on a machine (about a second; later processes load the cached library).
    """
    return load_wrapped("two_stage_threshold", TwoStageThreshold, lambda lib: _self_check(TwoStageThreshold(lib)),
                        _FLAGS)


def composite_values(src: np.ndarray, by: np.ndarray, wy: np.ndarray, bx: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """The values the loop thresholds, in NumPy (same float32 operations in the same order);
    ``src`` padded as for the loop."""
    g = wx[:, 0] * src[:, bx] + wx[:, 1] * src[:, bx + 1] + wx[:, 2] * src[:, bx + 2]
    return wy[:, :1] * g[by] + wy[:, 1:2] * g[by + 1] + wy[:, 2:] * g[by + 2]


def _reference(src: np.ndarray, by: np.ndarray, wy: np.ndarray, bx: np.ndarray, wx: np.ndarray,
               lo: np.float32, hi: np.float32) -> np.ndarray:
    """The loop's output computed by :func:`composite_values`."""
    v = composite_values(src, by, wy, bx, wx)
    above = v > hi
    return above.astype(np.uint8) + 2 * ((v > lo) & ~above).astype(np.uint8)


def _self_check(kernel: Callable[..., int]) -> bool:
    """The compiled loop against :func:`_reference` on a narrow and a wide case (rows shorter
    and longer than a vector loop's width), in two row blocks, with and without a margin; then
    thresholds at the exact values of sampled pixels, which a loop that rounds differently (fused
    multiply-adds, say) gets wrong for some of them."""
    rng = np.random.default_rng(0)
    narrow = (np.array([0, 0, 1, 1, 2, 3, 4, 4]), np.array([0, 1, 1, 2, 3, 4, 5, 6, 6, 6]), (7, 9))
    wide = (np.sort(rng.integers(0, 10, 21)), np.sort(rng.integers(0, 38, 157)), (12, 40))
    for by, bx, shape in (narrow, wide):
        by, bx = by.astype(np.int64), bx.astype(np.int64)
        src = rng.standard_normal(shape).astype(np.float32)
        wy = rng.random((by.size, 3)).astype(np.float32)
        wx = rng.random((bx.size, 3)).astype(np.float32)
        for lo, hi in ((0.1, 0.1), (-0.15, 0.35)):
            lo, hi = np.float32(lo), np.float32(hi)
            out = np.full((by.size, bx.size), 7, np.uint8)
            rows = np.full(by.size, -1, np.int64)
            try:
                n = sum(int(kernel(src, by, wy, bx, wx, lo, hi, out, rows, a, b)) for a, b in ((0, 3), (3, by.size)))
            except Exception:
                return False
            want = _reference(src, by, wy, bx, wx, lo, hi)
            ok = np.array_equal(out, want) and np.array_equal(rows, (want == 2).sum(1))
            if not ok or n != int((want == 2).sum()) or (lo < hi) != (n > 0):
                return False
        v = composite_values(src, by, wy, bx, wx)
        for y, x in zip(rng.integers(0, by.size, 64), rng.integers(0, bx.size, 64)):
            for t, mark in ((v[y, x], 0), (np.nextafter(v[y, x], np.float32(-np.inf)), 1)):
                try:
                    kernel(src, by, wy, bx, wx, t, t, out, rows, y, y + 1)
                except Exception:
                    return False
                if out[y, x] != mark:
                    return False
    return True
