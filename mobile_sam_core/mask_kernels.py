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

__all__ = ["compiled_two_stage_threshold", "compiled_kernels_disabled"]

_lock = threading.Lock()
_kernel: Any = None
_tried = False


def compiled_kernels_disabled() -> bool:
    """True when ``MOBILE_SAM_NO_COMPILED_KERNELS`` is set (to anything but 0)."""
    return os.environ.get("MOBILE_SAM_NO_COMPILED_KERNELS", "") not in ("", "0")


def _two_stage_threshold_py(src, by, wy, bx, wx, t, out, ya, yb):  # pragma: no cover - runs compiled
    """Rows ``ya:yb`` of ``out`` (bool (out_h, out_w)) = composite resize of ``src`` > ``t``.

    Output row ``y`` mixes ``src`` rows ``by[y] + k`` with weights ``wy[y, k]`` (k = 0..2), output
    column ``x`` columns ``bx[x] + k`` with ``wx[x, k]``; ``src`` is padded by two rows and
    columns so every tap is in range.
    """
    ow = out.shape[1]
    lo = by[ya]
    hi = by[yb - 1] + 3
    rows = np.empty((hi - lo, ow), np.float32)
    for r in range(lo, hi):
        s = src[r]
        g = rows[r - lo]
        for x in range(ow):
            j = bx[x]
            g[x] = wx[x, 0] * s[j] + wx[x, 1] * s[j + 1] + wx[x, 2] * s[j + 2]
    for y in range(ya, yb):
        k = by[y] - lo
        a = rows[k]
        b = rows[k + 1]
        c = rows[k + 2]
        w0 = wy[y, 0]
        w1 = wy[y, 1]
        w2 = wy[y, 2]
        o = out[y]
        for x in range(ow):
            o[x] = w0 * a[x] + w1 * b[x] + w2 * c[x] > t


def _reference(src: np.ndarray, by: np.ndarray, wy: np.ndarray, bx: np.ndarray, wx: np.ndarray,
               t: np.float32) -> np.ndarray:
    """The loop's arithmetic in NumPy (same float32 operations in the same order)."""
    g = wx[:, 0] * src[:, bx] + wx[:, 1] * src[:, bx + 1] + wx[:, 2] * src[:, bx + 2]
    return (wy[:, :1] * g[by] + wy[:, 1:2] * g[by + 1] + wy[:, 2:] * g[by + 2]) > t


def _self_check(kernel: Callable[..., None]) -> bool:
    """The compiled loop on a small case (two row blocks) against :func:`_reference`."""
    rng = np.random.default_rng(0)
    src = rng.standard_normal((7, 9)).astype(np.float32)
    by = np.array([0, 0, 1, 1, 2, 3, 4, 4], np.int64)
    bx = np.array([0, 1, 1, 2, 3, 4, 5, 6, 6, 6], np.int64)
    wy = rng.random((by.size, 3)).astype(np.float32)
    wx = rng.random((bx.size, 3)).astype(np.float32)
    t = np.float32(0.1)
    out = np.zeros((by.size, bx.size), np.bool_)
    kernel(src, by, wy, bx, wx, t, out, 0, 3)
    kernel(src, by, wy, bx, wx, t, out, 3, by.size)
    return bool(np.array_equal(out, _reference(src, by, wy, bx, wx, t)))


def _compile() -> Optional[Callable[..., None]]:
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


def compiled_two_stage_threshold() -> Optional[Callable[..., None]]:
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
