"""CPU acceleration of the image encoder and of the process runtime.

Nothing here changes what a model computes in the default (``"fp32"``) mode; it changes how:

* :class:`FastTinyViT` runs the TinyViT encoder of MobileSAM / LiteMedSAM from a snapshot of its
  weights with BatchNorm folded into the convolutions, channels-last convolutions through
  oneDNN (bias, residual add and GELU fused into the kernel), window
  attention with the relative-position bias as an additive mask (in float32 a compiled kernel,
  :mod:`~mobile_sam_core.window_attention`, where a C++ compiler is present, else the
  ``scaled_dot_product_attention`` flash kernel), the qkv and output projections computed on
  real tokens only, and attention over real tokens only: the padding tokens of a partial window share one key and value
  (those of a zero token), so they enter as one key with a log-sum-exp bias and ask no queries.
  Embeddings agree with the module's own forward to ~1e-6 relative.
* ``precision="bf16"`` runs the same graph in bfloat16 (AVX-512 BF16 / AMX where the CPU has
  it): about 2x faster, approximate (embedding error ~1e-2 relative; see docs/benchmarks.md for
  the mask IoU it costs). Opt-in only.
* bf16 runs through OpenVINO when the ``openvino`` package is installed (5-9% faster than
  this graph in PyTorch: fused window attention; :mod:`mobile_sam_core.openvino_encoder`),
  and through :class:`FastTinyViT` otherwise or with ``backend="torch"``.
* ``backend="onnx"`` exports the encoder once to ONNX (cached under the weights cache directory,
  keyed by a hash of the weights) and runs it with ONNX Runtime; optional, falls back to torch
  when onnxruntime is missing.
* :func:`configure_cpu_runtime` keeps glibc from returning large blocks to the OS after every
  tensor (each fresh 4-64 MB tensor otherwise costs thousands of page faults, which dominate on
  virtual machines) and sets thread counts. :class:`~mobile_sam_core.SamPredictor` applies the
  allocator part once per process unless ``MOBILE_SAM_NO_RUNTIME_TUNING=1``.

The snapshot is cached on the model object and rebuilt automatically when the model's weights
change (tracked through tensor version counters), so ``load_state_dict`` keeps working.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from .openmp_env import runtime_tuning_disabled
from .openvino_encoder import OpenVinoEncoder, openvino_available
from .tensor_versions import weights_fingerprint
from .window_attention import native_window_attention, window_tables

log = logging.getLogger(__name__)

__all__ = [
    "ENCODER_PRECISIONS",
    "ENCODER_BACKENDS",
    "FastTinyViT",
    "configure_cpu_runtime",
    "encoder_runner",
    "onnx_available",
    "physical_cores",
]

ENCODER_PRECISIONS = ("fp32", "bf16")
ENCODER_BACKENDS = ("auto", "torch", "onnx", "openvino", "reference")

_MK = torch.ops.mkldnn


def _mkldnn_ok() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(_MK, "_convolution_pointwise")
    except Exception:  # pragma: no cover
        return False


_MKLDNN = _mkldnn_ok()
_MKLDNN_LINEAR = _MKLDNN and hasattr(_MK, "_linear_pointwise")


# ---------------------------------------------------------------------------------- runtime

_runtime_lock = threading.Lock()
_runtime_state: Dict[str, Any] = {}


def physical_cores() -> int:
    """Cores this process may use, counting SMT siblings once."""
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        avail = os.cpu_count() or 1
    try:
        import psutil

        phys = psutil.cpu_count(logical=False) or avail
        logical = psutil.cpu_count(logical=True) or avail
        if logical > phys:  # SMT: scale the allowed CPUs down to cores
            avail = max(1, round(avail * phys / logical))
    except Exception:
        pass
    return max(1, avail)


def _tune_malloc() -> bool:
    """glibc: serve big tensors from a heap that is reused instead of fresh mmaps."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1
        ok &= libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1
        # One arena: big blocks requested from worker threads (web servers) use the same heap.
        ok &= libc.mallopt(m_arena_max, 1) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def configure_cpu_runtime(threads: Optional[int] = None, *, malloc: bool = True, set_threads: bool = True) -> Dict[str, Any]:
    """Process-wide CPU settings for fast inference; idempotent, returns what was applied.

    * ``malloc``: glibc keeps freed blocks for reuse (no ``mmap``/page faults per tensor) and
      uses one arena for all threads. Peak memory is unchanged; memory is not returned to the OS
      between requests.
    * ``set_threads``: PyTorch intra-op and OpenCV threads = ``threads`` (default: physical
      cores available to the process), one inter-op thread. More threads than cores only
      slows matrix products down on a shared machine.
    """
    with _runtime_lock:
        if malloc and "malloc" not in _runtime_state:
            _runtime_state["malloc"] = _tune_malloc()
        if set_threads:
            n = int(threads or physical_cores())
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
            try:
                import cv2

                cv2.setNumThreads(n)
            except Exception:
                pass
            _runtime_state["threads"] = n
        return dict(_runtime_state)


def auto_configure_runtime() -> None:
    """Allocator tuning once per process (what SamPredictor calls); see configure_cpu_runtime."""
    if "malloc" in _runtime_state or runtime_tuning_disabled():
        return
    configure_cpu_runtime(malloc=True, set_threads=False)


def fused_linear(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor] = None,
                 gelu: bool = False, relu: bool = False) -> torch.Tensor:
    """``F.linear`` (then exact GELU when ``gelu``, ReLU when ``relu``), through oneDNN with the
    activation fused when available."""
    if _MKLDNN_LINEAR:
        if gelu:
            return _MK._linear_pointwise(x, w, b, "gelu", [], "none")
        if relu:
            return _MK._linear_pointwise(x, w, b, "relu", [], "")
        return _MK._linear_pointwise(x, w, b, "none", [], "")
    y = F.linear(x, w, b)
    return F.gelu(y) if gelu else (F.relu(y) if relu else y)


# ---------------------------------------------------------------------------------- TinyViT

def _fold(conv_norm: torch.nn.Module, dtype: torch.dtype) -> Dict[str, Any]:
    """Conv+BatchNorm (timm ``ConvNorm``) folded into one convolution."""
    c, bn = conv_norm.conv, conv_norm.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = c.weight * scale[:, None, None, None]
    b = bn.bias - bn.running_mean * scale
    if c.bias is not None:
        b = b + c.bias * scale
    return dict(w=w.detach().to(dtype).contiguous(), b=b.detach().to(dtype).contiguous(),
                stride=list(c.stride), pad=list(c.padding), groups=c.groups)


def _window_blocks(h: int, w: int, ws: int) -> Iterator[Tuple[tuple, Tuple[int, int, int, int]]]:
    """The real (H, W) region of a window grid in up to four blocks of equal windows: whole
    windows, then the partial last column, the partial last row and the corner.

    Yields ``(index, (windows down, rows per window, windows across, columns per window))``:
    ``t[index]`` of a ``(B, H, W, ...)`` tensor, unflattened to that shape on dims 1 and 3.
    """
    def parts(n: int) -> list:
        whole, rest = divmod(n, ws)
        out = [(slice(0, whole * ws), whole, ws)] if whole else []
        return out + ([(slice(whole * ws, n), 1, rest)] if rest else [])

    for rows, nr, lr in parts(h):
        for cols, nc, lc in parts(w):
            yield (slice(None), rows, cols), (nr, lr, nc, lc)


def _window_bias(bias: torch.Tensor, ws: int, rows: int, cols: int) -> torch.Tensor:
    """Relative-position bias ``(heads, ws*ws, ws*ws)`` of a window whose real tokens are its
    top-left ``rows x cols``: ``(heads, rows*cols, rows*cols + 1)`` for a partial window.

    The padding tokens of a partial window all carry the same key and value (those of a zero
    token), so they act as one key whose weight is the sum of theirs: ``exp(s) * sum_j exp(b_j)``
    = ``exp(s + logsumexp_j b_j)``. That one key gets bias ``logsumexp`` over the padding columns
    and is appended last; queries are the real tokens only (the padding rows' outputs are dropped).
    """
    idx = torch.arange(ws * ws).view(ws, ws)
    real = idx[:rows, :cols].reshape(-1)
    b = bias[:, real]
    if rows == ws and cols == ws:
        return b[:, :, real].contiguous()
    pad = torch.ones(ws * ws, dtype=torch.bool)
    pad[real] = False
    merged = torch.logsumexp(b[:, :, pad].double(), dim=-1, keepdim=True).to(bias.dtype)
    return torch.cat([b[:, :, real], merged], dim=-1).contiguous()


class FastTinyViT:
    """Inference-only TinyViT encoder (see module docstring). Call with a preprocessed image."""

    def __init__(self, encoder: torch.nn.Module, dtype: torch.dtype = torch.float32, native: bool = True) -> None:
        """``native``: float32 window attention through the compiled kernel of
        :mod:`~mobile_sam_core.window_attention` where it builds (PyTorch's SDPA otherwise)."""
        from .modeling.tiny_vit import TinyViTEncoder, _PointwisePatchEmbed

        if not isinstance(encoder, TinyViTEncoder):
            raise TypeError("FastTinyViT needs a mobile_sam_core TinyViTEncoder")
        self.dtype = dtype
        self.native = native_window_attention() if native and dtype == torch.float32 else None
        # Attention kernel (measured): fp32 -> flash SDPA; bf16 -> SDPA for 14x14 windows,
        # explicit matmuls with a float32 softmax for 7x7 windows.
        self.sdpa_min_tokens = 0 if dtype == torch.float32 else 100
        with torch.no_grad():
            pe = encoder.patch_embed
            self.pointwise_stem = isinstance(pe, _PointwisePatchEmbed)
            self.stem = [_fold(pe.conv1, dtype), _fold(pe.conv2, dtype)]
            self.stage0 = [[_fold(b.conv1, dtype), _fold(b.conv2, dtype), _fold(b.conv3, dtype)]
                           for b in encoder.stages[0].blocks]
            self.stages = []
            for st in list(encoder.stages)[1:]:
                ds = st.downsample
                down = [_fold(ds.conv1, dtype), _fold(ds.conv2, dtype), _fold(ds.conv3, dtype)]
                self.stages.append((down, [self._block(b, dtype) for b in st.blocks]))
            n = encoder.neck
            self.neck = dict(
                w1=n[0].weight.detach()[:, :, 0, 0].to(dtype).contiguous(),
                ln1=(n[1].weight.detach().to(dtype), n[1].bias.detach().to(dtype), n[1].eps),
                w2=n[2].weight.detach().to(dtype).contiguous(),
                ln2=(n[3].weight.detach().to(dtype), n[3].bias.detach().to(dtype), n[3].eps),
            )

    @staticmethod
    def _block(b: torch.nn.Module, dtype: torch.dtype) -> Dict[str, Any]:
        a = b.attn
        heads, kd, vd = a.num_heads, a.key_dim, a.val_dim
        c = b.dim
        w = a.qkv.weight.view(heads, 2 * kd + vd, c)
        bias = a.qkv.bias.view(heads, 2 * kd + vd)
        # Rows reordered to [q of all heads | k of all heads | v of all heads].
        wqkv = torch.cat([w[:, :kd].reshape(-1, c), w[:, kd:2 * kd].reshape(-1, c), w[:, 2 * kd:].reshape(-1, c)])
        bqkv = torch.cat([bias[:, :kd].reshape(-1), bias[:, kd:2 * kd].reshape(-1), bias[:, 2 * kd:].reshape(-1)])
        ln = a.norm
        m = b.mlp
        d = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
        return dict(
            ws=b.window_size, heads=heads, kd=kd, vd=vd, c=c, scale=a.scale,
            ln=(d(ln.weight), d(ln.bias), ln.eps),
            wqkv=d(wqkv), bqkv=d(bqkv),
            # qkv of a zero (padding) token: LayerNorm(0) = beta
            pad_qkv=d(F.linear(ln.bias, wqkv, bqkv)),
            bias=d(a.attention_biases[:, a.attention_bias_idxs]),  # heads, N, N
            window_bias={},  # (rows, cols) of a window's real tokens -> _window_bias, filled on first use
            window_tables={},  # (batch, H, W) -> WindowTables for the native kernel, filled on first use
            wproj=d(a.proj.weight), bproj=d(a.proj.bias),
            local=_fold(b.local_conv, dtype),
            mln=(d(m.norm.weight), d(m.norm.bias), m.norm.eps),
            w1=d(m.fc1.weight), b1=d(m.fc1.bias), w2=d(m.fc2.weight), b2=d(m.fc2.bias),
        )

    # -- primitives (oneDNN when available, plain torch otherwise)
    def _conv(self, x: torch.Tensor, p: Dict[str, Any], gelu: bool = False) -> torch.Tensor:
        if _MKLDNN:
            # GELU as oneDNN's post-op: one pass over the (often 4x expanded) activations instead
            # of two; measured 14-19 ms faster per fp32 encode than a separate gelu_.
            if gelu:
                return _MK._convolution_pointwise(x, p["w"], p["b"], p["pad"], p["stride"], [1, 1], p["groups"],
                                                  "gelu", [], "none")
            return _MK._convolution_pointwise(x, p["w"], p["b"], p["pad"], p["stride"], [1, 1], p["groups"], "none", [], "")
        y = F.conv2d(x, p["w"], p["b"], p["stride"], p["pad"], 1, p["groups"])
        return torch.ops.aten.gelu_(y) if gelu else y

    def _conv_add(self, x: torch.Tensor, other: torch.Tensor, p: Dict[str, Any]) -> torch.Tensor:
        if _MKLDNN:
            return _MK._convolution_pointwise.binary(x, other, p["w"], p["b"], p["pad"], p["stride"], [1, 1],
                                                     p["groups"], "add", 1.0, None, [], None)
        return F.conv2d(x, p["w"], p["b"], p["stride"], p["pad"], 1, p["groups"]) + other

    @staticmethod
    def _linear_add(x: torch.Tensor, other: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if _MKLDNN:
            return _MK._linear_pointwise.binary(x, other, w, b, "add")
        return F.linear(x, w, b) + other

    def _mbconv_tiled(self, x: torch.Tensor, c1: Dict[str, Any], c2: Dict[str, Any], c3: Dict[str, Any],
                      rows: int = 16) -> torch.Tensor:
        """MBConv (1x1 expand, 3x3 depthwise, 1x1 project + residual) in horizontal strips.

        The 4x-expanded intermediates of a strip (plus one halo row above and below for the
        depthwise conv) stay in cache instead of making 64 MB round trips through memory, and
        the peak working set shrinks accordingly. Every output value is computed exactly as in
        the untiled version (the halo rows supply the depthwise conv's neighbours).
        """
        h = x.shape[2]
        if h <= rows:
            y = self._conv(self._conv(x, c1, gelu=True), c2, gelu=True)
            return torch.ops.aten.gelu_(self._conv_add(y, x, c3))
        out = torch.empty_like(x)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, b = max(0, r0 - 1), min(h, r1 + 1)
            y = self._conv(x[:, :, a:b], c1, gelu=True)
            y = self._conv(y, c2, gelu=True)[:, :, r0 - a: r0 - a + (r1 - r0)]
            out[:, :, r0:r1] = torch.ops.aten.gelu_(self._conv_add(y, x[:, :, r0:r1], c3))
        return out

    @staticmethod
    def _cached_window_bias(p: Dict[str, Any], rows: int, cols: int) -> torch.Tensor:
        """:func:`_window_bias` of block ``p`` for a window of ``rows x cols`` real tokens, computed once."""
        bias = p["window_bias"].get((rows, cols))
        if bias is None:
            bias = p["window_bias"][(rows, cols)] = _window_bias(p["bias"], p["ws"], rows, cols)
        return bias

    def _window_attention(self, qkv: torch.Tensor, p: Dict[str, Any]) -> torch.Tensor:
        """Window attention of real tokens: qkv ``(B, H, W, 3*heads*d)`` -> ``(B*H*W, heads*d)``.

        The windows are taken in up to four blocks of equal shape (:func:`_window_blocks`); in a
        block of partial windows the padding tokens are one merged key (:func:`_window_bias`), so
        neither their queries nor their repeated keys are computed. Same values as padding,
        partitioning and attending over full windows, up to float rounding.
        """
        bn, h, w, _ = qkv.shape
        ws, heads, kd, vd = p["ws"], p["heads"], p["kd"], p["vd"]
        if self.native is not None and qkv.dtype == torch.float32:
            tables = p["window_tables"].get((bn, h, w))
            if tables is None:
                tables = p["window_tables"][(bn, h, w)] = window_tables(
                    bn, h, w, ws, lambda rows, cols: self._cached_window_bias(p, rows, cols))
            if self.native.supports(tables, kd, vd):
                return self.native(qkv, p["pad_qkv"], tables, heads, p["scale"])
        hk = heads * kd
        out = qkv.new_empty(bn, h, w, heads * vd)
        for image_index, (nr, rows, nc, cols) in _window_blocks(h, w, ws):
            n = rows * cols
            bias = self._cached_window_bias(p, rows, cols)
            keys = bias.shape[-1]  # n, or n + 1 with the merged padding key
            bw = bn * nr * nc
            # one copy: real tokens into (B, nr, nc, window tokens) order, the padding key last
            buf = qkv.new_empty(bn, nr, nc, keys, qkv.shape[-1])
            src = qkv[image_index].unflatten(1, (nr, rows)).unflatten(3, (nc, cols))  # B, nr, rows, nc, cols, D
            buf[:, :, :, :n].view(bn, nr, nc, rows, cols, -1).copy_(src.permute(0, 1, 3, 2, 4, 5))
            if keys > n:
                buf[:, :, :, n] = p["pad_qkv"]
            buf = buf.view(bw, keys, -1)
            q = buf[:, :n, :hk].view(bw, n, heads, kd).transpose(1, 2)
            k = buf[:, :, hk:2 * hk].view(bw, keys, heads, kd).transpose(1, 2)
            v = buf[:, :, 2 * hk:].view(bw, keys, heads, vd).transpose(1, 2)
            if n >= self.sdpa_min_tokens:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None], scale=p["scale"])
            else:
                att = torch.baddbmm(bias.expand(bw, heads, n, keys).reshape(bw * heads, n, keys),
                                    q.reshape(bw * heads, n, kd), k.transpose(-2, -1).reshape(bw * heads, kd, keys),
                                    alpha=p["scale"])
                att = torch.softmax(att, -1, dtype=torch.float32).to(att.dtype)
                o = torch.bmm(att, v.reshape(bw * heads, keys, vd)).view(bw, heads, n, vd)
            o = o.view(bn, nr, nc, heads, rows, cols, vd).permute(0, 1, 4, 2, 5, 3, 6)  # B, nr, rows, nc, cols, h, d
            out[image_index].unflatten(1, (nr, rows)).unflatten(3, (nc, cols)).copy_(
                o.reshape(bn, nr, rows, nc, cols, heads * vd))
        return out.view(bn * h * w, heads * vd)

    def _attn_block(self, x: torch.Tensor, p: Dict[str, Any]) -> torch.Tensor:
        """One TinyViT block on x (B, H, W, C) contiguous."""
        bn, h, w, c = x.shape
        xn = F.layer_norm(x, (c,), p["ln"][0], p["ln"][1], p["ln"][2])
        o = self._window_attention(fused_linear(xn, p["wqkv"], p["bqkv"]), p)  # qkv of real tokens only
        x = self._linear_add(o, x.reshape(bn * h * w, c), p["wproj"], p["bproj"]).view(bn, h, w, c)
        xc = self._conv(x.permute(0, 3, 1, 2), p["local"])  # depthwise conv on a channels-last view
        x = xc.permute(0, 2, 3, 1).reshape(bn * h * w, c)
        hdn = F.layer_norm(x, (c,), p["mln"][0], p["mln"][1], p["mln"][2])
        hdn = fused_linear(hdn, p["w1"], p["b1"], gelu=True)
        x = self._linear_add(hdn, x, p["w2"], p["b2"])
        return x.view(bn, h, w, c)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` preprocessed image -> ``(B, 256, 64, 64)`` float32 embedding."""
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        x = self._conv(x, self.stem[0], gelu=True)
        x = self._conv(x, self.stem[1])
        for c1, c2, c3 in self.stage0:
            x = self._mbconv_tiled(x, c1, c2, c3)
        for down, blocks in self.stages:
            x = self._conv(x, down[0], gelu=True)
            x = self._conv(x, down[1], gelu=True)
            x = self._conv(x, down[2])
            x = x.permute(0, 2, 3, 1)
            if not x.is_contiguous():
                x = x.contiguous()
            for p in blocks:
                x = self._attn_block(x, p)
            x = x.permute(0, 3, 1, 2)
        nk = self.neck
        xh = x.permute(0, 2, 3, 1)
        y = fused_linear(xh, nk["w1"])
        y = F.layer_norm(y, (y.shape[-1],), nk["ln1"][0], nk["ln1"][1], nk["ln1"][2])
        y = F.conv2d(y.permute(0, 3, 1, 2), nk["w2"], padding=1)
        yh = y.permute(0, 2, 3, 1)
        yh = F.layer_norm(yh, (yh.shape[-1],), nk["ln2"][0], nk["ln2"][1], nk["ln2"][2])
        return yh.permute(0, 3, 1, 2).float().contiguous()


# ---------------------------------------------------------------------------------- ONNX

def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
    except Exception:
        return False
    return True


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def converted_encoder_path(encoder: torch.nn.Module, name: str, engine: str, suffix: str) -> Path:
    """Where ``engine``'s converted copy of ``encoder`` is cached:
    ``<weights cache>/<engine>/<name>-<input size>-<weights hash><suffix>`` (new weights, new file)."""
    from .weights import cache_dir

    return Path(cache_dir()) / engine / f"{name}-{int(encoder.img_size)}-{weights_digest(encoder)[:20]}{suffix}"


class OnnxEncoder:
    """The encoder exported once to ONNX (cached by weight hash) and run by ONNX Runtime (fp32)."""

    def __init__(self, encoder: torch.nn.Module, name: str = "encoder") -> None:
        import onnxruntime as ort

        size = int(encoder.img_size)
        path = converted_encoder_path(encoder, name, "onnx", ".onnx")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(encoder, (torch.zeros(1, 3, size, size),), str(tmp), input_names=["x"],
                                  output_names=["y"], opset_version=17, dynamo=False)
            os.replace(tmp, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"x": x.detach().float().contiguous().numpy()})[0]
        return torch.from_numpy(out)


# ---------------------------------------------------------------------------------- selection

_enc_lock = threading.Lock()


def encoder_runner(model: Any, precision: str = "fp32", backend: str = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable mapping a preprocessed ``(1, 3, S, S)`` image to the image embedding.

    ``precision``: ``"fp32"`` (exact path) or ``"bf16"`` (opt-in, approximate).
    ``backend``: ``"auto"`` (TinyViT encoders: OpenVINO for bf16 when it is installed, the
    fast torch path otherwise; other encoders: the module), ``"torch"`` (the fast torch path),
    ``"onnx"`` (ONNX Runtime, fp32 only), ``"openvino"`` (OpenVINO, fp32 or bf16) or
    ``"reference"`` (the module's own forward). A missing or failing optional engine falls back
    to the torch path with a warning.
    """
    if precision not in ENCODER_PRECISIONS:
        raise ValueError(f"encoder precision must be one of {ENCODER_PRECISIONS}, got {precision!r}")
    if backend not in ENCODER_BACKENDS:
        raise ValueError(f"encoder backend must be one of {ENCODER_BACKENDS}, got {backend!r}")
    from .modeling.tiny_vit import TinyViTEncoder

    enc = model.image_encoder
    tiny = isinstance(enc, TinyViTEncoder)
    if any(t.device.type != "cpu" for t in enc.parameters()):
        return enc  # the fast paths are CPU implementations
    if backend == "onnx" and precision != "fp32":
        raise ValueError("the onnx backend runs fp32 only")
    if backend == "onnx" and not onnx_available():
        log.warning("onnxruntime is not installed; using the torch encoder path")
        backend = "torch"
    if backend == "openvino" and not (tiny and openvino_available()):
        log.warning("the OpenVINO encoder needs the openvino package and a TinyViT encoder; using the torch path")
        backend = "torch"
    if backend == "reference" or (not tiny and backend != "onnx"):
        if precision == "fp32":
            return enc
        return lambda x: _autocast_bf16(enc, x)
    if backend == "auto":
        # Measured: OpenVINO is 5-9% faster in bf16 and no faster in fp32 (README, Performance).
        backend = "openvino" if precision == "bf16" and openvino_available() else "torch"
    key = (precision, backend)
    fp = weights_fingerprint(enc)
    with _enc_lock:
        store = model.__dict__.setdefault("_msc_encoders", {})
        hit = store.get(key)
        if hit is not None and hit[0] == fp:
            return hit[1]
    name = getattr(model, "model_name", "encoder")
    runner: Optional[Callable] = None
    if backend == "onnx":
        runner = OnnxEncoder(enc, name)
    elif backend == "openvino":
        try:
            runner = OpenVinoEncoder(enc, name, precision)
        except Exception as exc:  # conversion or compilation failed: the torch path still works
            log.warning("OpenVINO encoder unavailable (%s: %s); using the torch path", type(exc).__name__, exc)
    if runner is None:
        runner = FastTinyViT(enc, torch.bfloat16 if precision == "bf16" else torch.float32)
    with _enc_lock:
        store[key] = (fp, runner)
    return runner


def _autocast_bf16(enc: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return enc(x).float()


def encode(model: Any, input_image: torch.Tensor, precision: str = "fp32", backend: str = "auto") -> torch.Tensor:
    """Image embedding of a preprocessed image through :func:`encoder_runner`."""
    # no_grad, not inference_mode: inference tensors cannot be used in autograd later and
    # carry no version counter (used to cache per-image decoder state).
    with torch.no_grad():
        return encoder_runner(model, precision, backend)(input_image)
