"""The end of SAM's mask decoder in one compiled pass (``kernels/decoder_tail.cpp``).

After the first transposed convolution, SAM's decoder runs LayerNorm (64 channels), GELU, the
second transposed convolution (64 -> 4 sub-pixels x 32 channels), GELU and a product with each
mask's hypernetwork vector, then rearranges the result into (mask, 4h, 4w) logits. For a click
that is five passes over 16384 x 64-128 floats plus two permutation copies (~3.7 ms on two
cores). :class:`DecoderTail` does it in one pass over blocks of 16 rows held in vector registers
and writes each logit to its pixel (2.3 ms). Its GELU is the exact (erf) one, from a piecewise
polynomial erf accurate to 7e-8; results agree with PyTorch's to float32 rounding (about 1e-6 of
the largest logit).

Used by :class:`~mobile_sam_core.fast_decoder.FastMaskDecoder` for float32 decoding where the kernel
was built with AVX-512 and passed :func:`_self_check`; everywhere else (no compiler, another CPU,
``MOBILE_SAM_NO_COMPILED_KERNELS=1``) PyTorch's operations run as before.
"""

from __future__ import annotations

import ctypes
from typing import Optional

import torch
import torch.nn.functional as F

from .native import flag_check, load_wrapped

__all__ = ["DecoderTail", "MAX_MASKS", "decoder_tail", "reference_decoder_tail"]

C1, C2, MAX_MASKS = 64, 32, 4  # the kernel's channel counts (SAM's 256-wide decoder) and mask limit


def reference_decoder_tail(y: torch.Tensor, grid_w: int, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float,
                           w2: torch.Tensor, b2: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
    """What the kernel computes, in PyTorch (float64 when given float64): ``y`` (rows, 64) ordered
    (token, kh, kw) over a grid ``grid_w`` tokens wide; returns (masks, 4h, 4w)."""
    rows = y.shape[0]
    h, w, m = rows // 4 // grid_w, grid_w, hyper.shape[0]
    a = F.gelu(F.layer_norm(y, (C1,), ln_w.to(y.dtype), ln_b.to(y.dtype), eps))
    z = F.gelu(a @ w2.to(y.dtype).T + b2.to(y.dtype))  # (rows, 4 * 32): (kh2, kw2, channel)
    v = z.view(rows, 4, C2) @ hyper.to(y.dtype).T  # (rows, 4, masks)
    v = v.view(h, w, 2, 2, 2, 2, m)  # y, x, kh, kw, kh2, kw2, mask
    return v.permute(6, 0, 2, 4, 1, 3, 5).reshape(m, 4 * h, 4 * w)


class DecoderTail:
    """The compiled pass behind a PyTorch signature (float32, contiguous, on the CPU)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        fn = lib.msc_decoder_tail
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        fn.argtypes = [p, i64, i64, p, p, ctypes.c_float, p, p, p, i64, p, ctypes.c_int]
        fn.restype = ctypes.c_int
        self._fn = fn
        lib.msc_gelu.argtypes = [p, i64]
        lib.msc_gelu.restype = None

    def __call__(self, y: torch.Tensor, grid_w: int, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float,
                 w2: torch.Tensor, b2: torch.Tensor, hyper: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
        """Low-res logits (masks, 4h, 4w); arguments as for :func:`reference_decoder_tail`."""
        rows = y.shape[0] if y.dim() == 2 else -1
        masks = hyper.shape[0] if hyper.dim() == 2 else -1
        shapes_ok = (y.dim() == 2 and y.shape[1] == C1 and grid_w > 0 and rows > 0 and rows % (4 * grid_w) == 0
                     and ln_w.shape == (C1,) and ln_b.shape == (C1,) and w2.shape == (4 * C2, C1)
                     and b2.shape == (4 * C2,) and hyper.dim() == 2 and hyper.shape[1] == C2
                     and 1 <= masks <= MAX_MASKS)
        if not shapes_ok:
            raise ValueError(f"unsupported shapes: y {tuple(y.shape)}, grid width {grid_w}, w2 {tuple(w2.shape)}, "
                             f"hyper {tuple(hyper.shape)} (need (4*h*w, {C1}), ({4 * C2}, {C1}), (1..{MAX_MASKS}, {C2}))")
        tensors = (y, ln_w, ln_b, w2, b2, hyper)
        if any(t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous() for t in tensors):
            raise ValueError("the decoder tail takes contiguous float32 CPU tensors")
        h = rows // 4 // grid_w
        out = torch.empty(masks, 4 * h, 4 * grid_w)
        n = int(threads or torch.get_num_threads())
        rc = self._fn(y.data_ptr(), rows, grid_w, ln_w.data_ptr(), ln_b.data_ptr(), float(eps), w2.data_ptr(),
                      b2.data_ptr(), hyper.data_ptr(), masks, out.data_ptr(), n)
        if rc != 0:
            raise RuntimeError("the decoder-tail kernel refused its arguments")
        return out

    def gelu_(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel's GELU, in place on a contiguous float32 tensor (for tests)."""
        if x.dtype != torch.float32 or not x.is_contiguous():
            raise ValueError("gelu_ takes a contiguous float32 tensor")
        self.lib.msc_gelu(x.data_ptr(), x.numel())
        return x


def _self_check(lib: ctypes.CDLL) -> bool:
    """The pass on a 3 x 5 token grid (60 rows: three full blocks of 16 and a partial one) with 1
    and 3 masks, and its GELU over [-12, 12], against float64 PyTorch."""
    kernel = DecoderTail(lib)
    gen = torch.Generator().manual_seed(0)
    try:
        x = torch.linspace(-12, 12, 4001)
        if (kernel.gelu_(x.clone()).double() - F.gelu(x.double())).abs().max() > 2e-6:
            return False
        y = torch.randn(60, C1, generator=gen) * 3
        ln_w, ln_b = torch.rand(C1, generator=gen) + 0.5, torch.randn(C1, generator=gen)
        w2, b2 = torch.randn(4 * C2, C1, generator=gen) / 8, torch.randn(4 * C2, generator=gen)
        for masks in (1, 3):
            hyper = torch.randn(masks, C2, generator=gen)
            got = kernel(y, 5, ln_w, ln_b, 1e-6, w2, b2, hyper, threads=2)
            want = reference_decoder_tail(y.double(), 5, ln_w, ln_b, 1e-6, w2, b2, hyper)
            if got.shape != want.shape or (got.double() - want).abs().max() > 1e-5 * want.abs().max():
                return False
    except Exception:
        return False
    return True


def decoder_tail() -> Optional[DecoderTail]:
    """The compiled pass (built on first use, see :mod:`mobile_sam_core.native`), or None."""
    # The kernel is written with AVX-512 intrinsics; other builds hold stubs.
    return load_wrapped("decoder_tail", DecoderTail, _self_check, cpu_check=flag_check("msc_decoder_tail_avx512"))
