"""A compiled loop for the mask step: SAM's two bilinear resizes and the threshold in one pass.

SAM turns each 256x256 logit map into a full-size mask by a x4 bilinear resize, a crop, a second
bilinear resize and a threshold. Along each axis the two resizes together are one linear map in
which every output sample mixes at most three consecutive low-res samples (``mask_upsample``
builds these composite taps from PyTorch's own indices and weights). :func:`two_stage_threshold`
applies them straight to the low-res crop: the horizontal taps once per low-res row (a 1500x2241
mask needs 172 such rows), then three vertical taps per output pixel, writing only the boolean
mask. Done with OpenCV instead, each mask costs a full-size float32 map (13 MB for 1500x2241)
written and read back, plus the first resize's map.

The loop's values differ from PyTorch's only by float32 rounding (about 2e-7 of the largest
logit, measured; see ``mask_upsample.resize_error_bound`` for the certified bound).

numba is optional: :func:`compiled_two_stage_threshold` returns None when it is missing, the
compiled loop fails its self-check, or ``MOBILE_SAM_NO_COMPILED_KERNELS`` is set, and callers keep
the OpenCV path. The loop releases the GIL; callers split the rows over their own threads.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["compiled_two_stage_threshold", "compiled_kernels_disabled", "composite_values"]

_lock = threading.Lock()
_kernel: Any = None
_tried = False


def compiled_kernels_disabled() -> bool:
    """True when ``MOBILE_SAM_NO_COMPILED_KERNELS`` is set (to anything but 0)."""
    return os.environ.get("MOBILE_SAM_NO_COMPILED_KERNELS", "") not in ("", "0")


def _two_stage_threshold_py(src, by, wy, bx, wx, lo, hi, out, row_undecided, ya, yb):  # pragma: no cover - runs compiled
    """Rows ``ya:yb`` of ``out`` (uint8 (out_h, out_w)) from the composite resize ``v`` of ``src``:
    1 where ``v > hi``, 2 where ``lo < v <= hi`` (undecided), else 0. Writes the number of
    undecided pixels of each row to ``row_undecided[y]`` and returns their total; with
    ``lo == hi == t`` there are none and ``out`` is ``v > t``.

    Output row ``y`` mixes ``src`` rows ``by[y] + k`` with weights ``wy[y, k]`` (k = 0..2), output
    column ``x`` columns ``bx[x] + k`` with ``wx[x, k]``; ``src`` is padded by two rows and
    columns so every tap is in range.
    """
    ow = out.shape[1]
    first = by[ya]
    rows = np.empty((by[yb - 1] + 3 - first, ow), np.float32)
    for r in range(first, first + rows.shape[0]):
        s = src[r]
        g = rows[r - first]
        for x in range(ow):
            j = bx[x]
            g[x] = wx[x, 0] * s[j] + wx[x, 1] * s[j + 1] + wx[x, 2] * s[j + 2]
    undecided = 0
    for y in range(ya, yb):
        k = by[y] - first
        a = rows[k]
        b = rows[k + 1]
        c = rows[k + 2]
        w0 = wy[y, 0]
        w1 = wy[y, 1]
        w2 = wy[y, 2]
        o = out[y]
        n = 0
        for x in range(ow):
            v = w0 * a[x] + w1 * b[x] + w2 * c[x]
            above = np.uint8(v > hi)
            near = np.uint8(v > lo) - above
            o[x] = above + (near << 1)
            n += near
        row_undecided[y] = n
        undecided += n
    return undecided


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
    """The compiled loop on a small case (two row blocks, with and without a margin) against
    :func:`_reference`."""
    rng = np.random.default_rng(0)
    src = rng.standard_normal((7, 9)).astype(np.float32)
    by = np.array([0, 0, 1, 1, 2, 3, 4, 4], np.int64)
    bx = np.array([0, 1, 1, 2, 3, 4, 5, 6, 6, 6], np.int64)
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
    return True


def _compile() -> Optional[Callable[..., int]]:
    try:
        import numba
    except Exception:
        return None
    try:
        try:
            kernel = numba.njit(nogil=True, cache=True, boundscheck=False)(_two_stage_threshold_py)
        except RuntimeError:  # no writable cache location: compile in every process
            kernel = numba.njit(nogil=True, boundscheck=False)(_two_stage_threshold_py)
        return kernel if _self_check(kernel) else None  # the first call compiles
    except Exception:
        return None


def compiled_two_stage_threshold() -> Optional[Callable[..., int]]:
    """The compiled loop (module docstring), or None where it is unavailable.

    Compiles on first use (about a second; later processes load numba's on-disk cache).
    """
    global _kernel, _tried
    if compiled_kernels_disabled():
        return None
    with _lock:
        if not _tried:
            _tried = True
            _kernel = _compile()
        return _kernel
